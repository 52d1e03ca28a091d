"""Generation throughput: utils/inference/engine.py at batch 1/8/16 vs the original LaWGPT's one-at-a-time loop.

    python benchmarks/bench_generate.py                      # ~28M-param random LLaMA, 16 questions x 64 tokens
    python benchmarks/bench_generate.py --threads 2          # on a quiet machine
    python benchmarks/bench_generate.py --model_dir DIR      # any local model instead

Same model, same 16 prompts, one process; the runs are interleaved over --repeats rounds and each
keeps its best time (the machines are shared). Greedy decoding with a fixed budget: EOS is masked
(``min_new_tokens = max_new_tokens``) so every answer has exactly ``max_new_tokens`` tokens and the
token counts are equal for all runs; repetition penalty off for both. The baseline is the original's
infer.py loop: per question, tokenize, ``model.generate`` with ``GenerationConfig(temperature=0.1,
top_p=0.75, top_k=40, num_beams=1)``, ``return_dict_in_generate=True, output_scores=True``, decode.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from utils.inference.engine import Engine, GenerationParams  # noqa: E402

QUESTIONS = [
    "酒驾撞人怎么判刑？", "请介绍赌博罪的定义。", "请问加班工资怎么算？", "民间借贷受国家保护的合法利息是多少？",
    "欠了信用卡的钱还不上要坐牢吗？", "你能否写一段抢劫罪罪名的案情描述？", "入户盗窃价值三千元的财物，应当如何量刑？",
    "公司不与我签订书面劳动合同，我可以要求什么赔偿？", "离婚时夫妻共同财产如何分割？", "交通事故中对方全责但拒不赔偿怎么办？",
    "未成年人犯罪是否承担刑事责任？", "房东提前解除租赁合同需要承担什么责任？", "网络诈骗的立案标准是多少？",
    "正当防卫的构成要件有哪些？请结合刑法第二十条说明。", "遗嘱继承和法定继承哪个优先？", "商标侵权的赔偿数额如何确定？",
]


def build_model(directory: Path, hidden: int, layers: int) -> Path:
    """A randomly initialised LLaMA with the test tokenizer (vocabulary 2000): nothing downloaded."""
    import torch
    from tiny_model import build_tiny_model
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tiny_model(directory)  # writes the tokenizer (and a tiny model we replace)
    config = LlamaConfig.from_pretrained(str(directory))
    config.update({"hidden_size": hidden, "intermediate_size": hidden * 11 // 4, "num_hidden_layers": layers,
                   "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 64, "head_dim": 64})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory


def original_loop(engine: Engine, prompts: list[str], max_new_tokens: int) -> tuple[float, int]:
    """The original infer.py's evaluate(), one question at a time (our tokenizer/model objects)."""
    import torch
    from transformers import GenerationConfig

    model, tokenizer = engine.model, engine.tokenizer
    tokens = 0
    start = time.perf_counter()
    for prompt in prompts:
        input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(engine.device)
        config = GenerationConfig(temperature=0.1, top_p=0.75, top_k=40, num_beams=1,
                                  min_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, generation_config=config, return_dict_in_generate=True,
                                 output_scores=True, max_new_tokens=max_new_tokens)
        tokenizer.decode(out.sequences[0])
        tokens += out.sequences.shape[1] - input_ids.shape[1]
    return time.perf_counter() - start, tokens


def engine_run(engine: Engine, prompts: list[str], params: GenerationParams, batch_size: int) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = sum(g.new_tokens for batch in engine.generate_batched(prompts, params, batch_size) for _, g in batch)
    return time.perf_counter() - start, tokens


def main(model_dir: str | None = None, max_new_tokens: int = 64, hidden: int = 512, layers: int = 8,
         batch_sizes: tuple[int, ...] = (1, 8, 16), repeats: int = 2, threads: int = 1,
         output: str | None = None) -> dict:
    """Print a Markdown table of tokens/s (best of --repeats rounds); --output writes the numbers as JSON too.

    --threads 1 by default: on a shared 2-core machine, 2 OpenMP threads competing with other jobs slowed
    single generations 4-9x (measured), which would swamp the comparison.
    """
    import torch

    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(model_dir) if model_dir else build_model(Path(tmp) / "model", hidden, layers)
        engine = Engine.from_pretrained(str(path))
        n_params = sum(p.numel() for p in engine.model.parameters())
        prompts = [engine.prompt(q) for q in QUESTIONS]
        params = GenerationParams(max_new_tokens=max_new_tokens, repetition_penalty=1.0, ignore_eos=True)
        runs = {"original loop (one at a time)": lambda: original_loop(engine, prompts, max_new_tokens)}
        for bs in batch_sizes:
            runs[f"engine, batch {bs}"] = lambda bs=bs: engine_run(engine, prompts, params, bs)
        engine.generate(prompts[:2], params.replace(max_new_tokens=4))  # warm-up
        # The machine is shared: rounds interleave the runs and each keeps its best time.
        best: dict[str, tuple[float, int]] = {}
        for _ in range(repeats):
            for name, fn in runs.items():
                seconds, tokens = fn()
                print(f"[bench] {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, tokens)
        rows = [(name, *best[name]) for name in runs]
    expected = len(prompts) * max_new_tokens
    base_rate = rows[0][2] / rows[0][1]
    print(f"model: {'random LLaMA' if not model_dir else model_dir}, {n_params / 1e6:.1f}M parameters, "
          f"{torch.get_num_threads()} threads; {len(prompts)} prompts x {max_new_tokens} new tokens, greedy\n")
    print("| run | seconds | new tokens | tokens/s | vs original |")
    print("|---|---|---|---|---|")
    results = []
    for name, seconds, tokens in rows:
        rate = tokens / seconds
        if tokens != expected:
            raise SystemExit(f"{name}: generated {tokens} tokens, expected {expected}: runs are not comparable")
        print(f"| {name} | {seconds:.1f} | {tokens} | {rate:.1f} | {rate / base_rate:.2f}x |")
        results.append({"run": name, "seconds": seconds, "tokens": tokens, "tokens_per_s": rate,
                        "speedup": rate / base_rate})
    summary = {"params_millions": n_params / 1e6, "max_new_tokens": max_new_tokens, "prompts": len(prompts),
               "threads": torch.get_num_threads(), "results": results}
    if output:
        Path(output).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda result: None)
