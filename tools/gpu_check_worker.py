"""One path of tools/gpu_check.py, in its own process: runs it and appends JSON records to RECORDS.

    python tools/gpu_check_worker.py RECORDS train_clm <train_clm.py arguments>        (or finetune)
    torchrun --nproc_per_node=N tools/gpu_check_worker.py RECORDS train_clm <arguments + --deepspeed/--fsdp …>
    python tools/gpu_check_worker.py RECORDS merge ADAPTER OUTPUT_DIR [--load_4bit]
    python tools/gpu_check_worker.py RECORDS generate MODEL_DIR DTYPE [PROMPTS [MAX_NEW_TOKENS [BATCH]]]
    python tools/gpu_check_worker.py RECORDS api MODEL_DIR DTYPE [CLIENTS [REQUESTS_EACH [MAX_TOKENS]]]
    python tools/gpu_check_worker.py RECORDS random_model OUTPUT_DIR SHAPE        (llama-1b, llama-7b)

The training scripts run unchanged: a Trainer callback (added to transformers' default callbacks in this process
only) records the model's shape once and, after every optimizer step, the time and the tokens and samples seen
so far (summed over all processes; SFT padding not counted). Every path records its peak GPU memory (torch's allocator, this process) and, on failure, one ``error`` line before exiting non-zero.
Records (one JSON object a line, written by rank 0 only)::

    {"kind": "model", "matmul_params", "layers", "attn_width", "lora", "world_size", "dtype"}
    {"kind": "step", "step", "time", "tokens", "samples"}
    {"kind": "generate", "tokens", "seconds", "requests"}
    {"kind": "note", "text"}      {"kind": "memory", "peak_bytes"}      {"kind": "error", "message"}
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Records:
    """Appends JSON records to one file; only rank 0 (or a process outside torchrun) writes."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.main = os.environ.get("RANK", "0") == "0"

    def write(self, kind: str, **fields) -> None:
        if self.main:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"kind": kind, **fields}, ensure_ascii=False) + "\n")


def model_shape(model) -> dict:
    """What the FLOPs formula needs (utils/training/throughput.py): weights that multiply activations, layers, attention width."""
    import torch

    # bitsandbytes layers are Linears too; LoRA's own matrices are left out (negligible), and so is the frozen copy
    # peft keeps of a modules_to_save layer (only its trained copy runs)
    matmul = sum(m.in_features * m.out_features for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lora_" not in name and "original_module" not in name)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {"matmul_params": matmul, "layers": config.num_hidden_layers, "attn_width": heads * head_dim,
            "lora": hasattr(model, "peft_config"), "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}


def step_recorder(records: Records):
    """A TrainerCallback writing the ``model`` record at the start and a ``step`` record after every step."""
    import torch
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            records.write("model", **model_shape(model), world_size=args.world_size)

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the optimizer step is queued, not done, when this is called
            per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            records.write("step", step=state.global_step, time=time.perf_counter(),
                          tokens=state.num_input_tokens_seen, samples=state.global_step * per_step)

    return StepRecorder()


def train(records: Records, script: str, argv: list[str]) -> None:
    """``script``'s own parse() and main() on ``argv``, with the step recorder among the Trainer's callbacks."""
    import transformers.trainer

    module = importlib.import_module(script)  # train_clm or finetune
    args = module.parse(argv)
    # The Trainer counts (and gathers over processes) the tokens: packed pretraining blocks have no padding, SFT
    # batches do and carry an attention mask to count the real ones by.
    args[-1].include_num_input_tokens_seen = "all" if script == "train_clm" else "non_padding"
    recorder = step_recorder(records)
    transformers.trainer.DEFAULT_CALLBACKS.append(recorder)
    try:
        module.main(*args)
    finally:
        transformers.trainer.DEFAULT_CALLBACKS.remove(recorder)


def merge(records: Records, adapter: str, output_dir: str, load_4bit: bool = False) -> None:
    """merge_lora.py into a full-precision base (its own logits check inside); for a QLoRA adapter also how far the
    merged model is from the 4-bit base + adapter it was trained as (the quantisation error)."""
    import merge_lora
    from utils.model.loader import load_for_inference, load_model, read_run_info

    result = merge_lora.main(lora_model=adapter, output_dir=output_dir, overwrite=True, dtype="float32")
    records.write("note", text=f"merged (fp32) vs adapter: max logit diff {result['max_abs_diff']:.2g}")
    if load_4bit:
        quantised = load_for_inference(None, adapter, load_4bit=True)
        ids = merge_lora.verification_prompt_ids(quantised.tokenizer, read_run_info(adapter).get("prompt_template"))
        trained = merge_lora.logits_of(quantised.model, ids)
        del quantised
        merged = load_model(output_dir, dtype="float32")
        diff = (merge_lora.logits_of(merged, ids) - trained).abs().max().item()
        scale = trained.abs().max().item()
        records.write("note", text=f"vs the 4-bit model it trained as: {diff:.2g} (logits up to {scale:.3g})")


# Random-weight models in the shapes of real ones, for a machine that has no model to check with (the project's lent
# GPU machines reach no model hub): throughput, memory and MFU depend on the shape, not on the weights.
RANDOM_SHAPES = {
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                 "num_key_value_heads": 4, "vocab_size": 32000},  # TinyLlama-1.1B's shape
    "llama-7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 32, "vocab_size": 32000},  # LLaMA-7B's shape (the original LaWGPT's base)
}


def random_model(records: Records, out_dir: str, shape: str | dict, tokenizer_vocab: int = 8000,
                 documents: int | None = None) -> None:
    """A LlamaForCausalLM of ``shape`` (a RANDOM_SHAPES name or LlamaConfig fields) with random bf16 weights and a
    LLaMA-style sentencepiece tokenizer of ``tokenizer_vocab`` pieces trained on the statutes (the first
    ``documents`` current articles; all by default), saved into ``out_dir`` like any base model. The model keeps
    its shape's vocabulary rows (more than the tokenizer uses: nothing is resized)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaTokenizer

    from utils.legal.statutes import StatuteStore
    from utils.model.vocabulary import train_sentencepiece

    fields = RANDOM_SHAPES[shape] if isinstance(shape, str) else shape
    out = Path(out_dir)
    work = out / "sentencepiece"
    work.mkdir(parents=True, exist_ok=True)
    texts = [a.text for a in StatuteStore.load().current_articles()[:documents]]
    train_sentencepiece(texts, work / "tokenizer", tokenizer_vocab)
    tokenizer = LlamaTokenizer.from_pretrained(str(work), add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(str(out))
    shutil.copy(work / "tokenizer.model", out / "tokenizer.model")
    shutil.rmtree(work)
    config = LlamaConfig(**fields, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # initialising 7B on CPU takes minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    count = sum(p.numel() for p in model.parameters())
    records.write("note", text=f"random weights in the shape {shape if isinstance(shape, str) else 'given'}: "
                               f"{count / 1e9:.2f}B parameters, tokenizer of {len(tokenizer)} pieces")


def questions(count: int) -> list[str]:
    from utils.common.datafiles import load_instruction_data

    items = [item["instruction"] for item in load_instruction_data(ROOT / "resources" / "example_infer_data.json",
                                                                  require_output=False)]
    return [items[i % len(items)] + ("" if i < len(items) else f"（第{i + 1}问）") for i in range(count)]


def generate(records: Records, model_dir: str, dtype: str, prompts: int = 32, max_new_tokens: int = 128,
             batch: int = 16) -> None:
    """Batched generation through the engine; EOS ignored so every answer has max_new_tokens tokens."""
    from utils.inference.engine import Engine, GenerationParams

    engine = Engine.from_pretrained(model_dir, dtype=dtype, max_batch_size=batch)
    try:
        params = GenerationParams(max_new_tokens=max_new_tokens, ignore_eos=True, repetition_penalty=1.0, stop=())
        texts = [engine.prompt(q) for q in questions(prompts)]
        engine.generate(texts[:batch], params.replace(max_new_tokens=8))  # warm-up
        started = time.perf_counter()
        tokens = sum(g.new_tokens for batch_ in engine.generate_batched(texts, params, batch) for _, g in batch_)
        records.write("generate", tokens=tokens, seconds=time.perf_counter() - started, requests=len(texts))
        records.write("note", text=f"{len(texts)} prompts, batches of {batch}, {max_new_tokens} new tokens each")
    finally:
        engine.close()


def api(records: Records, model_dir: str, dtype: str, clients: int = 16, each: int = 2, max_tokens: int = 128) -> None:
    """api.py's app (uvicorn in a thread, loopback) under ``clients`` concurrent OpenAI clients."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn
    from openai import OpenAI

    from utils.inference.api_app import APISettings, build_api
    from utils.inference.engine import Engine

    engine = Engine.from_pretrained(model_dir, dtype=dtype, max_batch_size=clients)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_api(engine, APISettings("check")), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start within 60 s")
            time.sleep(0.05)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
        asks = questions(clients)

        def one(i: int) -> tuple[int, float]:
            done, latency = 0, 0.0
            for _ in range(each):
                sent = time.perf_counter()
                reply = client.chat.completions.create(model="check", max_tokens=max_tokens, temperature=0,
                                                       messages=[{"role": "user", "content": asks[i]}])
                done += reply.usage.completion_tokens
                latency = max(latency, time.perf_counter() - sent)
            return done, latency

        one(0)  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(clients)))
        seconds = time.perf_counter() - started
        records.write("generate", tokens=sum(t for t, _ in results), seconds=seconds, requests=clients * each)
        records.write("note", text=f"{clients} clients x {each} requests, slowest {max(t for _, t in results):.1f} s")
    finally:
        server.should_exit = True
        thread.join(10)
        engine.close()


def main(argv: list[str]) -> int:
    """``RECORDS MODE ARGS…`` (see the module docstring): 0 when the mode ran, 1 when it failed (an ``error`` record
    written, the traceback on stderr), 2 for a usage error."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    records, mode, rest = Records(argv[0]), argv[1], argv[2:]
    try:
        if mode in ("train_clm", "finetune"):
            train(records, mode, rest)
        elif mode == "merge":
            merge(records, rest[0], rest[1], load_4bit="--load_4bit" in rest[2:])
        elif mode == "generate":
            generate(records, rest[0], rest[1], *map(int, rest[2:]))
        elif mode == "api":
            api(records, rest[0], rest[1], *map(int, rest[2:]))
        elif mode == "random_model":
            random_model(records, rest[0], rest[1])
        else:
            raise ValueError(f"unknown mode {mode!r}: train_clm, finetune, merge, generate, api, random_model")
    except Exception as e:  # any failure is the row's reason (a worker reports, never hides); traceback on stderr
        import traceback

        traceback.print_exc()
        lines = [line for line in str(e).splitlines() if line.strip()]
        records.write("error", message=f"{type(e).__name__}: {lines[0] if lines else ''}".strip())
        return 1
    finally:
        import torch

        if torch.cuda.is_available():
            records.write("memory", peak_bytes=torch.cuda.max_memory_allocated())
        # Under torchrun a process group left alive is torn down by the interpreter's exit, where its threads can
        # abort the process ("terminate called without an active exception", SIGABRT: the FSDP row failed so once in
        # a CI run on 2026-12-07); ended here, on every rank, it ends cleanly.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def run(argv: list[str]):
    """:func:`main`, then utils/common/entry.exit_process: under torchrun the rank leaves without the interpreter's
    teardown, where threads torch leaves behind can abort it after its work is recorded (records are closed per line)."""
    from utils.common.entry import exit_process

    exit_process(main(argv))


if __name__ == "__main__":
    run(sys.argv[1:])
