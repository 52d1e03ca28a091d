"""Answer legal questions with a model (+ LoRA): a whole file in batches, or interactively.

    python infer.py --base_model models/base_models/gemma-3-270m --lora_weights outputs/sft-x \
        --infer_data_path resources/example_infer_data.json --output_path outputs/infer/example.jsonl
    python infer.py --lora_weights outputs/sft-x                 # no data file: interactive chat
    bash scripts/infer.sh

Batch mode: ``--infer_data_path`` is a .json array or .jsonl of {instruction, input, output
(reference, optional), history (optional)}. Every line is validated (file:line errors) and every
prompt length-checked before the first token is generated. Answers go to ``--output_path`` (JSONL:
instruction, input, reference, answer, finish_reason, answer_ids = the generated token ids, timing), appended
and flushed one by one; running the same command again after a crash skips the answers already there. A
summary is printed at the end; ``benchmarks/bench_answers.py`` rates the file (ending, loops, citations).

Interactive mode (no, a missing or an empty data file): type a question; the answer streams.
Multi-turn: earlier turns are part of the prompt (oldest dropped when the context is full).
``/reset`` forgets the conversation, ``/exit`` (or end of input) quits.

A model trained on retrieved statutes (template law_rag, as the demo model is) retrieves them for every question
unless --no_rag; the model and retrieval flags are shared with webui.py, api.py and evaluate.py
(utils/inference/frontend.py).

The original's flags keep working: --load_8bit --base_model --lora_weights --prompt_template
--infer_data_path.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError, load_instruction_data  # noqa: E402
from utils.common.entry import fire_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.common.results_log import ResultsLog, item_key  # noqa: E402
from utils.inference.engine import Engine, GenerationParams, PromptTooLongError  # noqa: E402
from utils.inference.frontend import ModelOptions, RetrievalOptions, open_engine, with_model_flags  # noqa: E402

EXAMPLES_SHOWN = 3


def read_questions(path: str | None) -> tuple[list[dict] | None, str]:
    """The questions of --infer_data_path, or (None, why) when interactive mode should start instead.

    A missing or empty file means "no batch"; a malformed one is an error (file:line) — never a
    silent switch to interactive mode.
    """
    if not path:
        return None, "no --infer_data_path given"
    p = Path(path)
    if not p.is_file():
        return None, f"--infer_data_path {path}: no such file"
    if not p.read_bytes().strip():
        return None, f"--infer_data_path {path}: the file is empty"
    items = load_instruction_data(p, require_output=False)
    if not items:
        return None, f"--infer_data_path {path}: holds no questions"
    return items, ""


class RagHook:
    """--rag: statutes retrieved for each question go into the prompt (templates/law_rag.json), and each
    answer's record gets the articles used and the verdict on every citation in it (utils/legal/rag.py)."""

    def __init__(self, rag, top_k: int, retriever: str = "auto"):
        self.rag, self.top_k, self.retriever = rag, top_k, retriever

    def context(self, instruction: str, input: str | None):
        question = f"{instruction}\n{input}" if input else instruction  # case material helps retrieval too
        return self.rag.prepare(question, self.top_k, retriever=self.retriever)

    def annotate(self, answer: str, context) -> dict:
        checked = self.rag.finalize(answer, context)
        return {key: checked[key] for key in ("articles", "citations", "citation_summary")}


def run_fingerprint(engine: Engine, params: GenerationParams, rag: bool, rag_top_k: int,
                    rag_retriever: str = "bm25") -> str:
    """Identifies model + settings, so a rerun never mixes answers of two different configurations."""
    loaded = engine.loaded

    def where(path):  # models/x and /abs/models/x, run from different folders, are one model
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    what = {"base_model": where(loaded.base_model), "lora_weights": where(loaded.lora_weights),
            "template": engine.prompter.name,
            "params": asdict(params), "rag": rag, "rag_top_k": rag_top_k if rag else None}
    if rag and rag_retriever != "bm25":  # absent for BM25, so runs made before hybrid existed still resume
        what["rag_retriever"] = rag_retriever
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_batch(engine: Engine, items: list[dict], output_path: str, params: GenerationParams, batch_size: int,
              run_id: str, rag: RagHook | None = None) -> dict:
    """Generate the answers missing from ``output_path``; returns the summary numbers."""
    from tqdm import tqdm

    log = ResultsLog(output_path)
    if log.dropped_bytes:
        print(f"[infer] {output_path}: cut an unfinished last line ({log.dropped_bytes} bytes) from an interrupted run")
    keys = [item_key(i, it["instruction"], it["input"]) for i, it in enumerate(items)]
    foreign = [k for k in log.records if k not in set(keys)]
    if foreign:
        raise DataError(f"{output_path}: {len(foreign)} record(s) do not match {len(items)} questions of this data "
                        "file (it was written for other data): pass another --output_path or --overwrite")
    other_runs = {r.get("run_id") for r in log.records.values()} - {run_id}
    if other_runs:
        raise DataError(f"{output_path}: written by another model or other generation settings: "
                        "pass another --output_path, or --overwrite to start again")
    todo = [i for i, k in enumerate(keys) if k not in log]
    prompts, contexts = {}, {}
    for i in todo:  # build and length-check every prompt before generating anything
        item = items[i]
        if rag is not None:
            contexts[i] = rag.context(item["instruction"], item["input"])
            prompts[i] = engine.prompt(contexts[i].instruction, contexts[i].input, item["history"])
        else:
            prompts[i] = engine.prompt(item["instruction"], item["input"], item["history"])
        engine.check_fits(prompts[i], params.max_new_tokens, item["where"])
    summary = {"total": len(items), "skipped": len(items) - len(todo), "generated": 0, "new_tokens": 0,
               "seconds": 0.0, "finish": Counter(), "examples": []}
    start = time.perf_counter()
    with log, tqdm(total=len(todo), desc="answers", unit="q", disable=not todo) as bar:
        for batch in engine.generate_batched([prompts[i] for i in todo], params, batch_size=batch_size):
            for j, gen in batch:
                i = todo[j]
                item = items[i]
                record = {"key": keys[i], "index": i, "instruction": item["instruction"], "input": item["input"],
                          "reference": item["output"], "answer": gen.text, "finish_reason": gen.finish_reason, "answer_ids": gen.ids,
                          "timing": {"batch_seconds": round(gen.seconds, 3), "batch_size": len(batch),
                                     "prompt_tokens": gen.prompt_tokens, "new_tokens": gen.new_tokens},
                          "run_id": run_id}
                if rag is not None:
                    record.update(rag.annotate(gen.text, contexts[i]))
                log.append(record)
                summary["new_tokens"] += gen.new_tokens
                summary["finish"][gen.finish_reason] += 1
                summary["generated"] += 1
                bar.update(1)
    summary["seconds"] = time.perf_counter() - start
    summary["examples"] = [log.records[k] for k in keys[:EXAMPLES_SHOWN]]
    return summary


def print_summary(summary: dict, output_path: str) -> None:
    s = summary
    print(f"[infer] {s['total']} questions: {s['generated']} answered now, {s['skipped']} already in {output_path}")
    if s["generated"]:
        rate = s["new_tokens"] / s["seconds"] if s["seconds"] else 0.0
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["finish"].items()))
        print(f"[infer] {s['new_tokens']} new tokens in {s['seconds']:.1f} s ({rate:.1f} tokens/s); ended by: {reasons}")
    for record in s["examples"]:
        print("=" * 60)
        print(f"问题: {record['instruction']}" + (f"\n材料: {record['input']}" if record["input"] else ""))
        print(f"回答: {record['answer'][:300]}")
        if record.get("reference"):
            print(f"参考: {record['reference'][:300]}")
    print("=" * 60)
    print(f"[infer] all {s['total']} answers: {output_path}")


def interactive(engine: Engine, params: GenerationParams, stdin=None, stdout=None, rag: RagHook | None = None) -> None:
    """A multi-turn chat on stdin/stdout with streamed answers; /reset and /exit."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    history: list[tuple[str, str]] = []
    print("[infer] interactive mode: type a question; /reset starts a new conversation, /exit quits", file=stdout)
    while True:
        print("问题> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:  # end of input
            print(file=stdout)
            return
        question = line.strip()
        if not question:
            continue
        if question == "/exit":
            return
        if question == "/reset":
            history = []
            print("[infer] conversation cleared", file=stdout)
            continue
        context = rag.context(question, None) if rag else None
        instruction, material = (context.instruction, context.input) if context else (question, None)
        try:
            kept, dropped = engine.fit_history(instruction, material, history, params.max_new_tokens)
        except PromptTooLongError as e:
            print(f"[infer] {e}", file=stdout)
            continue
        if dropped:
            print(f"[infer] the {dropped} oldest turn(s) no longer fit the context and were left out", file=stdout)
        print("LaWGPT: ", end="", file=stdout, flush=True)
        shown = ""
        for text in engine.stream(instruction, material, history=kept, params=params):
            print(text[len(shown):] if text.startswith(shown) else "\n" + text, end="", file=stdout, flush=True)
            shown = text
        print(file=stdout, flush=True)
        if context:
            checked = rag.annotate(shown, context)
            print("[法条] " + "；".join(a["citation"] for a in checked["articles"]), file=stdout)
            counts = ", ".join(f"{k} {v}" for k, v in checked["citation_summary"].items() if v)
            print(f"[引用核查] {counts or 'no citations in the answer'}", file=stdout)
        history = kept + [(question, shown)]


@with_model_flags
def main(
    infer_data_path: str = "",
    output_path: str | None = None,
    overwrite: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 0.9,
    top_k: int = 40,
    num_beams: int = 1,
    repetition_penalty: float = 1.1,
    no_repeat_ngram_size: int = 0,
    penalize_prompt: bool = False,
    do_sample: bool | None = None,
    seed: int | None = None,
    *,
    model: ModelOptions,
    retrieval: RetrievalOptions,
) -> None:
    """Answer the questions of --infer_data_path into --output_path, or chat interactively.

    Args:
        infer_data_path: .json/.jsonl questions; missing or empty: interactive mode.
        output_path: answers JSONL (default: outputs/infer/<data file name>.jsonl); resumed when it exists.
        overwrite: delete an existing --output_path first instead of resuming it.
        batch_size: questions generated together (left-padded batches).
        max_new_tokens: answer length limit in tokens.
        temperature: 0 = greedy (default); > 0 samples with top_p/top_k.
        top_p: nucleus sampling mass.
        top_k: sample among the k most likely tokens (0 = off).
        num_beams: beam search width (1 = off).
        repetition_penalty: > 1 discourages repeating tokens (1.0 = off).
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0 = off; try 6-10 for a looping model).
        penalize_prompt: the two repetition controls count the prompt's tokens too (transformers' way); by
            default they count the answer's own tokens only, so an answer may quote the --rag articles.
        do_sample: force sampling on/off (default: on when temperature > 0).
        seed: random seed for sampling.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch_size {batch_size} must be >= 1")
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                              num_beams=num_beams, repetition_penalty=repetition_penalty,
                              no_repeat_ngram_size=no_repeat_ngram_size, penalize_prompt=penalize_prompt,
                              do_sample=do_sample, seed=seed)
    items, why = read_questions(infer_data_path)  # data errors surface before the (slow) model load
    output = output_path or str(ROOT / "outputs" / "infer" / f"{Path(infer_data_path).stem}.jsonl")
    engine, rag = open_engine(model, retrieval, "infer")
    retriever = rag.resolve_retriever(retrieval.rag_retriever) if rag else "bm25"  # fixed for the run (auto resolved)
    rag_hook = RagHook(rag, retrieval.rag_top_k, retriever) if rag else None
    if items is None:
        print(f"[infer] {why}: starting interactive mode")
        interactive(engine, params, rag=rag_hook)
        return
    if overwrite:  # only now that the model loaded: a failed start must not cost the old answers
        Path(output).unlink(missing_ok=True)
    run_id = run_fingerprint(engine, params, rag is not None, retrieval.rag_top_k, retriever)
    summary = run_batch(engine, items, output, params, batch_size, run_id, rag_hook)
    print_summary(summary, output)


def run() -> None:
    sys.exit(fire_entry("infer", main, interrupted="finished answers are saved; run the same command again to resume"))


if __name__ == "__main__":
    run()
