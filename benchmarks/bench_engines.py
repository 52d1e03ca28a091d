"""``--engine llama.cpp`` against ``--engine hf`` on the same model, through our Engine (issue 32's figures).

    python benchmarks/bench_engines.py --model_dir models/lawgpt-demo --outtypes f16,q8_0 --questions heldout.jsonl

1. **Single stream**: the ``--rag`` prompt of one legal question (law_rag, 3 retrieved articles), greedy, exactly
   ``--new_tokens`` new tokens (EOS ignored, no stop strings, repetition penalty off), through ``Engine.generate``
   — our template, row logic and processors on top of each engine. tokens/s = new tokens ÷ wall time of prompt +
   answer; rounds alternate the engines and each keeps its best of ``--repeats`` (the machines are shared). Threads:
   torch's default (every core) for hf, ``--threads`` for llama.cpp.
2. **The same answer**: every question of ``--questions`` (bench_answers.py questions) answered with ``--rag`` and
   the default settings (repetition penalty 1.1, ``--answer_tokens``), by hf and by each GGUF: how many answers are
   identical to hf's.
3. **``--rag`` overhead** per request: retrieval (rag.prepare) and the citation checks of the answer (rag.finalize),
   ms, the same code in front of every engine.

GGUF files are exported once into ``--gguf_dir`` with tools/export_gguf.py. Writes ``--output_json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import export_gguf  # noqa: E402
from utils.inference.engine import Engine, GenerationParams  # noqa: E402
from utils.inference.engines import EngineChoice  # noqa: E402
from utils.legal import rag  # noqa: E402

QUESTION = "甲深夜入户盗窃他人财物价值五千元，被当场抓获。请问甲构成什么罪，应当如何量刑？"


def gguf_file(model_dir: Path, outtype: str, gguf_dir: Path) -> Path:
    path = gguf_dir / f"{model_dir.name}-{outtype}.gguf"
    if not path.is_file():
        gguf_dir.mkdir(parents=True, exist_ok=True)
        export_gguf.main(["--model_dir", str(model_dir), "--output", str(path), "--outtype", outtype])
    return path


def timed(engine: Engine, prompt: str, new_tokens: int) -> float:
    params = GenerationParams(max_new_tokens=new_tokens, ignore_eos=True, repetition_penalty=1.0, stop=())
    start = time.perf_counter()
    generation = engine.generate([prompt], params)[0]
    seconds = time.perf_counter() - start
    assert generation.new_tokens == new_tokens, generation
    return new_tokens / seconds


def main(model_dir: str = "models/lawgpt-demo", outtypes: str = "f16,q8_0", threads: int = 2, new_tokens: int = 128,
         repeats: int = 3, questions: str | None = None, answer_tokens: int = 128, gguf_dir: str = "outputs/bench/gguf",
         output_json: str = "outputs/bench/engines.json") -> dict:
    """Run the comparison; see the module docstring."""
    model = Path(model_dir)
    listed = outtypes if isinstance(outtypes, (list, tuple)) else str(outtypes).split(",")  # fire: "a,b" is a tuple
    types = [str(t).strip() for t in listed if str(t).strip()]
    engines = {"hf": Engine.from_pretrained(str(model), prompt_template=rag.RAG_TEMPLATE, device="cpu", dtype="float32")}
    for outtype in types:
        choice = EngineChoice("llama.cpp", gguf=str(gguf_file(model, outtype, Path(gguf_dir))), engine_threads=threads)
        engines[outtype] = Engine.from_pretrained(str(model), prompt_template=rag.RAG_TEMPLATE, choice=choice)
    context = rag.prepare(QUESTION, 3)
    prompt = engines["hf"].prompt(QUESTION, context.input)
    best: dict[str, float] = {}
    for round_ in range(repeats):
        for name in engines if round_ % 2 == 0 else list(engines)[::-1]:
            best[name] = max(best.get(name, 0.0), timed(engines[name], prompt, new_tokens))
        print(f"[bench] round {round_ + 1}/{repeats}: " + ", ".join(f"{k} {v:.2f} tok/s" for k, v in best.items()),
              flush=True)
    result = {"model_dir": str(model), "new_tokens": new_tokens, "prompt_tokens": engines["hf"].count_tokens(prompt),
              "threads": threads, "cpus": os.cpu_count(), "tokens_per_second": best,
              "vs_hf": {k: v / best["hf"] for k, v in best.items()}}
    if questions:
        items = [json.loads(line) for line in Path(questions).read_text(encoding="utf-8").splitlines() if line.strip()]
        params = GenerationParams(max_new_tokens=answer_tokens)
        answers: dict[str, list[str]] = {name: [] for name in engines}
        retrieval_ms, check_ms = [], []
        for item in items:
            start = time.perf_counter()
            ctx = rag.prepare(item["instruction"], 3)
            retrieval_ms.append(1000 * (time.perf_counter() - start))
            for name, engine in engines.items():
                answers[name].append(engine.generate([engine.prompt(item["instruction"], ctx.input)], params)[0].text)
            start = time.perf_counter()
            rag.finalize(answers["hf"][-1], ctx)
            check_ms.append(1000 * (time.perf_counter() - start))
        result["same_answer_as_hf"] = {name: sum(a == b for a, b in zip(answers[name], answers["hf"]))
                                       for name in engines if name != "hf"}
        result["questions"] = len(items)
        result["rag_ms"] = {"retrieval_p50": statistics.median(retrieval_ms), "checks_p50": statistics.median(check_ms),
                            "retrieval_mean": statistics.mean(retrieval_ms), "checks_mean": statistics.mean(check_ms)}
        result["answers"] = answers
        print(f"[bench] same answer as hf: {result['same_answer_as_hf']} of {len(items)}; --rag ms: {result['rag_ms']}",
              flush=True)
    out = Path(output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "answers"}, ensure_ascii=False, indent=1))
    for engine in engines.values():
        engine.close()
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda result: None)
