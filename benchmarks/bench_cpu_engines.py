"""CPU speed, single stream: our engine (transformers, fp32) vs llama.cpp on the same model exported to GGUF.

    python benchmarks/bench_cpu_engines.py                                    # Gemma-3-270M, GGUF f32 and q8_0
    python benchmarks/bench_cpu_engines.py --model_dir models/lawgpt-demo --outtypes q8_0 --threads 1,2,4
    bash scripts/install_llama_cpp.sh   # llama.cpp's part (optional; builds llama.cpp once, ~3-4 min)

The model directory is exported with tools/export_gguf.py (llama.cpp's converter) into --gguf_dir once per
--outtypes type. One prompt (the law_template prompt of a legal question, the same token ids for both), greedy,
exactly --new_tokens new tokens (EOS ignored, no stop strings, repetition penalty off in both); tokens/s = new
tokens / wall time of prompt + generation. Every round runs each engine × thread count once, in turn (the machines
are shared and noisy); each keeps its best of --repeats rounds, and ratios are taken within the run.

Before timing, what llama.cpp reads from each file is checked against transformers: token ids of 300 statute
articles and legal questions (new vocabulary included), logits on the prompt (max abs difference, same argmax) and the greedy answer. Without
llama-cpp-python the llama.cpp columns are skipped with the reason; ours is measured anyway. Writes
--output_json with every figure.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tiny_model import statute_sample  # noqa: E402

from tools import export_gguf  # noqa: E402
from utils.export.gguf import CONVERTER_PACKAGE  # noqa: E402
from utils.export.gguf_check import SAMPLE_TEXTS  # noqa: E402
from utils.inference.batching import Request  # noqa: E402
from utils.inference.engine import Engine, GenerationParams  # noqa: E402

QUESTION = "甲深夜入户盗窃他人财物价值五千元，被当场抓获。请问甲构成什么罪，应当如何量刑？请引用《刑法》条文。"


def llama_cpp_or_reason():
    try:
        import llama_cpp
    except ImportError as e:
        return None, (f"llama-cpp-python is not installed ({e}): bash scripts/install_llama_cpp.sh "
                      "(builds llama.cpp from source)")
    return llama_cpp, None


def export(model_dir: Path, outtype: str, gguf_dir: Path) -> Path:
    path = gguf_dir / f"{model_dir.name}-{outtype}.gguf"
    if not path.is_file():
        export_gguf.main(["--model_dir", str(model_dir), "--output", str(path), "--outtype", outtype])
    return path


def run_ours(engine: Engine, prompt: str, new_tokens: int, threads: int) -> tuple[float, str]:
    import torch

    # torch's thread count belongs to the OS thread (OpenMP's per-thread setting): set here, it would never
    # reach the engine's batcher thread, which keeps the default (all cores). So the engine's own generation
    # step (Batcher._run, what engine.generate queues) runs on this thread.
    torch.set_num_threads(threads)
    params = GenerationParams(max_new_tokens=new_tokens, ignore_eos=True, repetition_penalty=1.0, stop=())
    request = Request(engine.encode(prompt), params, ())
    start = time.perf_counter()
    engine.batcher._run([request])
    generation = request.wait()
    seconds = time.perf_counter() - start
    assert generation.new_tokens == new_tokens, generation
    return new_tokens / seconds, generation.text


def run_llama_cpp(llm, ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    out = []
    start = time.perf_counter()
    llm.reset()  # else generate() reuses the previous round's KV cache of the prompt and skips its prefill
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == new_tokens:
            break
    return new_tokens / (time.perf_counter() - start), out


def check_llama_cpp(llama_cpp, gguf: Path, engine: Engine, ids: list[int]) -> dict:
    """What llama.cpp reads from the file, against transformers on the model directory."""
    import numpy as np
    import torch

    tokenizer = engine.tokenizer
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=len(ids) + 8, logits_all=True, verbose=False)
    texts = [*statute_sample(limit=300, stride=87, offset=3), *SAMPLE_TEXTS, QUESTION]
    same_ids = same_tokens = total = 0
    for text in texts:
        want, got = tokenizer(text)["input_ids"], llm.tokenize(text.encode(), add_bos=True, special=False)
        same_ids += want == got
        total += len(want)
        same_tokens += sum(m.size for m in difflib.SequenceMatcher(a=want, b=got, autojunk=False).get_matching_blocks())
    llm.eval(ids)
    theirs = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    with torch.inference_mode():
        ours = engine.model(input_ids=torch.tensor([ids])).logits[0, :, : theirs.shape[1]].float().numpy()
    return {
        "texts_tokenized_identically": f"{same_ids}/{len(texts)}",
        "tokens_identical": round(same_tokens / total, 4),
        "prompt_logits_max_abs_diff": float(np.abs(ours - theirs).max()),
        "max_abs_logit": float(np.abs(ours).max()),
        "argmax_agreement": float((ours.argmax(-1) == theirs.argmax(-1)).mean()),
        "chat_template_in_file": "tokenizer.chat_template" in llm.metadata,
    }


def _items(value) -> list[str]:
    """A comma list from the command line (fire turns ``1,2`` into a tuple, ``f32,q8_0`` stays a string)."""
    values = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in values if str(v).strip()]


def main(
    model_dir: str = "models/base_models/gemma-3-270m",
    outtypes: str = "f32,q8_0",
    threads: str = "1,2",
    new_tokens: int = 128,
    repeats: int = 3,
    gguf_dir: str = "outputs/bench/gguf",
    output_json: str = "outputs/bench/cpu_engines.json",
) -> dict:
    """Run the comparison; see the module docstring."""
    model = Path(model_dir)
    types = _items(outtypes)
    thread_counts = [int(t) for t in _items(threads)]
    engine = Engine.from_pretrained(base_model=str(model), device="cpu", dtype="float32", max_batch_size=1)
    prompt = engine.prompt(QUESTION)
    ids = engine.encode(prompt)
    llama_cpp, reason = llama_cpp_or_reason()
    files, checks, llms = {}, {}, {}
    if llama_cpp is None:
        print(f"[bench] llama.cpp skipped: {reason}", flush=True)
    else:
        for outtype in types:
            files[outtype] = export(model, outtype, Path(gguf_dir))
            checks[outtype] = check_llama_cpp(llama_cpp, files[outtype], engine, ids)
            print(f"[bench] {files[outtype].name}: {json.dumps(checks[outtype])}", flush=True)
            for n in thread_counts:
                llms[(outtype, n)] = llama_cpp.Llama(model_path=str(files[outtype]), n_ctx=len(ids) + new_tokens + 8,
                                                     n_threads=n, n_threads_batch=n, verbose=False)
    best: dict[str, float] = {}
    answers: dict[str, str] = {}
    for round_ in range(repeats):
        for n in thread_counts:
            rate, answers["ours"] = run_ours(engine, prompt, new_tokens, n)
            best[f"ours/{n}"] = max(best.get(f"ours/{n}", 0.0), rate)
            for outtype in files:
                rate, out = run_llama_cpp(llms[(outtype, n)], ids, new_tokens)
                best[f"{outtype}/{n}"] = max(best.get(f"{outtype}/{n}", 0.0), rate)
                answers[outtype] = engine.tokenizer.decode(out, skip_special_tokens=True).strip()
        print(f"[bench] round {round_ + 1}/{repeats}: " + ", ".join(f"{k} {v:.1f}" for k, v in best.items()), flush=True)
    for outtype in files:
        same = os.path.commonprefix([answers["ours"], answers[outtype]])
        checks[outtype]["greedy_answer_common_prefix_chars"] = f"{len(same)}/{len(answers['ours'])}"
    result = {
        "model_dir": str(model), "new_tokens": new_tokens, "prompt_tokens": len(ids), "repeats": repeats,
        "tokens_per_second": best, "checks": checks, "answers": answers,
        "llama_cpp": getattr(llama_cpp, "__version__", None), "llama_cpp_skipped": reason,
        "converter": CONVERTER_PACKAGE, "load_average_at_end": os.getloadavg(), "cpus": os.cpu_count(), "gguf_files": {k: [str(v), v.stat().st_size] for k, v in files.items()},
    }
    Path(output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(output_json).write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(table(result))
    engine.close()
    return result


def table(result: dict) -> str:
    best = result["tokens_per_second"]
    threads = sorted({int(k.split("/")[1]) for k in best})
    engines = ["ours"] + [k for k in result["gguf_files"]]
    lines = ["| engine | file | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in threads) + " |",
             "|---|---|" + "---:|" * len(threads)]
    for name in engines:
        label = "ours (transformers, fp32)" if name == "ours" else f"llama.cpp {result['llama_cpp']}"
        size = "safetensors" if name == "ours" else f"GGUF {name}, {result['gguf_files'][name][1] / 1e6:.0f} MB"
        cells = []
        for n in threads:
            rate = best[f"{name}/{n}"]
            cells.append(f"{rate:.1f}" + ("" if name == "ours" else f" ({rate / best[f'ours/{n}']:.1f}×)"))
        lines.append(f"| {label} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda result: None)
