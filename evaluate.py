"""Evaluate a model on LawBench: per-item predictions, per-task scores with abstention, a table and a chart.

    python tools/prepare_lawbench.py [--lawbench_dir ../shared/lawbench]          # once: the test sets
    python evaluate.py --base_model models/base_models/gemma-3-270m --tasks all --limit 20 \
        --output_dir outputs/eval-base
    python evaluate.py --lora_weights outputs/sft-x --tasks 3-3,3-4 --shots 1 --train_data data/sft/train.json \
        --output_dir outputs/eval-sft
    python evaluate.py --compare outputs/eval-base outputs/eval-sft --output_dir outputs/eval-compare
    python evaluate.py --score_predictions LawBench/predictions/zero_shot/GPT4 --output_dir outputs/gpt4  # no model
    python evaluate.py --score_predictions outputs/eval-base --output_dir outputs/eval-base-rescored
    bash scripts/evaluate.sh

Scores are LawBench's own (its answer extraction, abstention rule, metric and average per task;
utils/lawbench/scoring.py), so they can be put next to LawBench's published results.
Writes into --output_dir: predictions.jsonl (one line per item, appended as batches finish: an
interrupted run resumes where it stopped), lawbench/<task>.json (the same predictions in LawBench's raw
layout, for LawBench's own tooling or anyone comparing models), details.jsonl (what LawBench's rule read
from each answer, its score, abstained or not), scores.json, scores.md, scores.png and run_info.json.
--limit N takes the first N items of each task (deterministic). Prompts longer than the model's context are
shortened in the middle of the case text and marked ``truncated``. --train_data adds the share of items
whose n-grams overlap that training file (contamination) to the report. Generation is greedy.
--score_predictions DIR scores without loading a model: a folder of LawBench raw predictions
(<task>.json, as LawBench publishes them) or one of our run directories (rescored from its
predictions.jsonl against --data_dir, which must be the data it was run on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tqdm import tqdm  # noqa: E402

from utils.common.datafiles import files_sha256, write_jsonl  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.common.errors import LawgptError  # noqa: E402
from utils.common.results_log import ResultsLog  # noqa: E402
from utils.inference.frontend import add_model_arguments, open_engine, options_from  # noqa: E402
from utils.lawbench import contamination, report  # noqa: E402
from utils.lawbench import tasks as lb  # noqa: E402
from utils.lecoqa import report as lecoqa_report  # noqa: E402
from utils.model.loader import write_run_info  # noqa: E402

PREDICTIONS = "predictions.jsonl"
# Settings that must not change when a run resumes (they change the answers).
RUN_KEYS = ("base_model", "lora_weights", "prompt_template", "shots", "max_new_tokens", "data_manifest_sha256",
            "rag_top_k", "rag_retriever")
RAG_HEADER = "\n可参考的法律条文（检索所得，请据此作答）：\n"


class EvalError(LawgptError, RuntimeError):
    """Bad arguments or an output directory that belongs to a different run."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)  # --base_model, --lora_weights, --prompt_template, --rag, … (one definition for all front ends)
    p.add_argument("--tasks", default="all", help="'all' (every prepared task) or ids such as 1-1,3-3")
    p.add_argument("--limit", type=int, help="only the first N items of each task (quick CPU runs)")
    p.add_argument("--shots", type=int, choices=(0, 1), default=0, help="zero-shot or one-shot prompts")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--data_dir", default=str(lb.DEFAULT_DATA_DIR), help="prepared LawBench data (tools/prepare_lawbench.py)")
    p.add_argument("--output_dir", required=True, help="run directory (or where --compare writes)")
    p.add_argument("--benchmark", choices=("lawbench", "lecoqa"), default="lawbench",
                   help="lawbench (default) or lecoqa: real consultation questions with lawyers' answers, scored with "
                        "LeCoQA's METEOR and BLEU plus our citation figures (--score_predictions FILE: their "
                        "{id, answer} JSONL, no model)")
    p.add_argument("--lecoqa_dir", help="a checkout of oneal2000/LeCoQA (its evaluation/expected.jsonl)")
    p.add_argument("--bertscore_model", metavar="DIR",
                   help="lecoqa: a local copy of bert-base-chinese (config.json, vocab, weights): adds LeCoQA's "
                        "BERTScore (without it, BERTScore is not computed and none is shown)")
    p.add_argument("--judge_api_base", metavar="URL",
                   help="lecoqa: an OpenAI-compatible endpoint (…/v1) whose model judges each answer correct or not, "
                        "with our prompt (LeCoQA's LLM-Eval prompt is unpublished: shown as 'judge (ours)'); "
                        "key from $OPENAI_API_KEY, replies cached in the run directory")
    p.add_argument("--judge_model", metavar="NAME", help="lecoqa: the judge's model name (with --judge_api_base)")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="LeCoQA questions to answer: test (309, for reporting) or train (1,234, for tuning)")
    p.add_argument("--train_data", nargs="+", help="training file(s) to check the test items against (contamination)")
    p.add_argument("--ngram", type=int, default=contamination.DEFAULT_N, help="n-gram size of the contamination check")
    p.add_argument("--contamination_threshold", type=float, default=contamination.DEFAULT_THRESHOLD)
    p.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="render these runs side by side; no model is loaded")
    p.add_argument("--labels", nargs="+", help="column names for --compare (default: directory names)")
    p.add_argument("--score_predictions", metavar="DIR",
                   help="score without a model: LawBench raw predictions (<task>.json) or a run directory of ours")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.rag_top_k < 1:
        p.error("--batch_size, --max_new_tokens and --rag_top_k must be >= 1")
    if (args.bertscore_model or args.judge_api_base) and args.benchmark != "lecoqa":
        p.error("--bertscore_model and --judge_api_base score LeCoQA answers: add --benchmark lecoqa")
    if bool(args.judge_api_base) != bool(args.judge_model):
        p.error("--judge_api_base and --judge_model go together (the endpoint and the model that judges)")
    if args.bertscore_model and not Path(args.bertscore_model, "config.json").is_file():
        p.error(f"--bertscore_model {args.bertscore_model}: no config.json there (a local copy of bert-base-chinese?)")
    if not args.compare and not args.score_predictions and not (args.base_model or args.lora_weights):
        p.error("give --base_model and/or --lora_weights (or --compare RUN_DIR ... or --score_predictions DIR)")
    return args


def with_statutes(instruction: str, question: str, top_k: int, retriever: str = "auto") -> tuple[str, list[str]]:
    """--rag: the task instruction plus the articles retrieved for the question (the case text stays whole
    in the input, so truncation below can only shorten the case, never the articles)."""
    from utils.legal import rag

    hits = rag.retrieve(question, top_k, retriever)
    return instruction + RAG_HEADER + rag.format_articles(hits), [hit.article.citation for hit in hits]


def fit_prompt(engine, item: dict, max_new_tokens: int, instruction: str | None = None) -> tuple[str, bool]:
    """The item's prompt; when it does not fit the context, the middle of the case text is cut out."""
    task_instruction, question = lb.prompt_fields(item)
    instruction = instruction or task_instruction
    prompt = engine.prompt(instruction, question)
    limit = engine.context_length
    if limit is None or engine.count_tokens(prompt) + max_new_tokens <= limit:
        return prompt, False
    lo, hi = 0, len(question)  # binary search for the longest head+tail of the question that fits
    while lo < hi:
        keep = (lo + hi + 1) // 2
        short = question[: keep // 2] + "……" + question[len(question) - (keep - keep // 2):]
        if engine.count_tokens(engine.prompt(instruction, short)) + max_new_tokens <= limit:
            lo = keep
        else:
            hi = keep - 1
    short = question[: lo // 2] + "……" + question[len(question) - (lo - lo // 2):]
    engine.check_fits(engine.prompt(instruction, short), max_new_tokens, f"task {item['task']} item {item['index']}")
    return engine.prompt(instruction, short), True


def prediction_key(task: str, index: int) -> str:
    return f"{task}:{index}"


def read_predictions(path: Path) -> dict[str, dict]:
    """Finished items of earlier runs by key (a line torn by a kill is cut off by ResultsLog)."""
    with ResultsLog(path) as log:
        return dict(log.records)


def check_run_info(output_dir: Path, info: dict) -> None:
    path = output_dir / "run_info.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in RUN_KEYS if old.get(k) != info.get(k)]
    if changed:
        raise EvalError(f"{output_dir} holds a run with different {', '.join(changed)} "
                        f"({', '.join(f'{k}={old.get(k)!r}' for k in changed)}); use a new --output_dir")


def generate(engine, items_by_task: dict, output_dir: Path, args) -> int:
    from utils.inference.engine import GenerationParams

    log = ResultsLog(output_dir / PREDICTIONS)
    todo = [item for items in items_by_task.values() for item in items
            if prediction_key(item["task"], item["index"]) not in log]
    print(f"[evaluate] {len(log)} items already done, {len(todo)} to generate")
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    with log, tqdm(total=len(todo), desc="generating", unit="item") as bar:
        for task in items_by_task:
            pending = [item for item in todo if item["task"] == task]
            retrieved = [None] * len(pending)
            instructions = [None] * len(pending)
            if args.rag:
                for i, item in enumerate(pending):
                    instructions[i], retrieved[i] = with_statutes(*lb.prompt_fields(item), args.rag_top_k,
                                                                  args.rag_retriever)
            prompts = [fit_prompt(engine, item, args.max_new_tokens, instructions[i]) for i, item in enumerate(pending)]
            for batch in engine.generate_batched([p for p, _ in prompts], params, args.batch_size):
                for i, generation in batch:
                    record = {"key": prediction_key(task, pending[i]["index"]), "task": task,
                              "index": pending[i]["index"], "prediction": generation.text,
                              "truncated": prompts[i][1], "prompt_tokens": generation.prompt_tokens,
                              "new_tokens": generation.new_tokens, "finish_reason": generation.finish_reason}
                    if args.rag:
                        record["retrieved"] = retrieved[i]
                    log.append(record)  # flushed at once: a finished item survives an interruption
                bar.update(len(batch))
    return len(todo)


def score(items_by_task: dict, output_dir: Path, args, info: dict, predictions_path: Path | None = None) -> dict:
    """Score a run's predictions.jsonl (default: the one in output_dir) with LawBench's definitions; write
    details.jsonl, lawbench/<task>.json and the report into output_dir."""
    predictions_path = predictions_path or output_dir / PREDICTIONS
    done = read_predictions(predictions_path)
    tasks, details = [], []
    check = None
    if args.train_data:
        index = contamination.build_index(args.train_data, args.ngram)
        check = contamination.check(items_by_task, index, args.contamination_threshold)
    records = {}
    for task, items in items_by_task.items():
        missing = [item["index"] for item in items if prediction_key(task, item["index"]) not in done]
        if missing:
            raise EvalError(f"{predictions_path}: no prediction for {len(missing)} item(s) of task {task} "
                            f"(first: {missing[0]}); finish the run first (rerun it with the same settings)")
        records[task] = [done[prediction_key(task, item["index"])] for item in items]
        # every task's raw layout before any scoring: a task that cannot be scored here loses nothing
        lb.write_raw(output_dir / lb.RAW_DIR, task, items, [r["prediction"] for r in records[task]])
    for task, items in items_by_task.items():
        try:
            result, per_item = lb.score_task(task, items, [r["prediction"] for r in records[task]])
        except lb.LawBenchError as e:
            raise lb.LawBenchError(f"{e} (the predictions are kept in {predictions_path.parent}: score them again "
                                   f"with --score_predictions)") from e
        row = result.as_dict()
        row["truncated"] = sum(r.get("truncated", False) for r in records[task])
        if check is not None:
            row["contaminated"] = check[task]["share"]
        tasks.append(row)
        details.extend({"task": task, "index": item["index"], **d} for item, d in zip(items, per_item))
    write_jsonl(output_dir / "details.jsonl", details)
    meta = {k: info.get(k) for k in ("base_model", "lora_weights", "prompt_template", "shots", "limit", "data_source",
                                     "rag_top_k", "rag_retriever")}
    meta["scorer"] = lb.SCORER
    if check is not None:
        meta["contamination"] = {"train_data": args.train_data, "ngram": args.ngram,
                                 "threshold": args.contamination_threshold,
                                 "items": {t: c["items"] for t, c in check.items()}}
    return report.write_report(output_dir, tasks, meta)


def rescore_run(run_dir: Path, output_dir: Path, args) -> dict:
    """Score one of our run directories again from its predictions.jsonl; the items come from --data_dir,
    which must be the prepared data the run used (its manifest's checksum is in run_info.json)."""
    info_path = run_dir / "run_info.json"
    if not info_path.is_file():
        raise EvalError(f"{run_dir}: has {PREDICTIONS} but no run_info.json (not an evaluate.py run directory?)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    manifest = Path(args.data_dir) / "manifest.json"
    if not manifest.is_file():
        raise EvalError(f"{manifest}: missing; give --data_dir the prepared data {run_dir} was run on")
    if files_sha256([manifest]) != info.get("data_manifest_sha256"):
        raise EvalError(f"{run_dir} was run on other prepared data than {args.data_dir} (manifest checksum differs); "
                        f"give --data_dir the data it was run on ({info.get('data_source')})")
    items_by_task = {t: lb.load_task(args.data_dir, t, info["shots"], info.get("limit")) for t in info["tasks"]}
    output_dir.mkdir(parents=True, exist_ok=True)
    return score(items_by_task, output_dir, args, info, predictions_path=run_dir / PREDICTIONS)


def score_raw(folder: Path, output_dir: Path) -> dict:
    """Score a folder of LawBench raw predictions (<task>.json): details.jsonl and the report."""
    tasks, details = [], []
    for result, per_item in lb.score_raw_folder(folder):
        tasks.append(result.as_dict())
        details.extend({"task": result.task, "index": i, **d} for i, d in enumerate(per_item))
    write_jsonl(output_dir / "details.jsonl", details)
    return report.write_report(output_dir, tasks, {"scored_from": str(folder), "scorer": lb.SCORER})


def score_predictions(source: Path, output_dir: Path, args) -> dict:
    if (source / PREDICTIONS).is_file():
        return rescore_run(source, output_dir, args)
    return score_raw(source, output_dir)


def run_lecoqa(args, output_dir: Path) -> dict:
    """Answer LeCoQA's questions (--split, --limit) with the model, resumably, and score the answers."""
    from utils.inference.engine import GenerationParams
    from utils.lecoqa.answering import answer_questions
    from utils.lecoqa.questions import load_questions

    lecoqa_report.expected_path(args.lecoqa_dir)
    questions = load_questions(args.lecoqa_dir, args.split)[: args.limit]
    # consultation questions are answered as infer.py answers them: with --rag, the model's law_rag prompt
    engine, rag = open_engine(*options_from(args), "evaluate")
    if rag:
        args.rag_retriever = rag.resolve_retriever(args.rag_retriever)  # the run records the retriever that ran
    info = {"benchmark": "lecoqa", "split": args.split, "limit": args.limit, "base_model": engine.loaded.base_model,
            "lora_weights": args.lora_weights, "prompt_template": engine.prompter.name,
            "max_new_tokens": args.max_new_tokens, "rag_top_k": args.rag_top_k if rag else None,
            "rag_retriever": args.rag_retriever if rag else None}
    output_dir.mkdir(parents=True, exist_ok=True)
    old = json.loads((output_dir / "run_info.json").read_text(encoding="utf-8")) if (output_dir / "run_info.json").is_file() else info
    if changed := [k for k in info if old.get(k) != info[k]]:
        raise EvalError(f"{output_dir} holds a run with different {', '.join(changed)}; use a new --output_dir")
    write_run_info(output_dir, info)
    with tqdm(total=len(questions), desc="answering", unit="q") as bar:
        answers = answer_questions(engine, questions, output_dir, GenerationParams(max_new_tokens=args.max_new_tokens),
                                   args.batch_size, rag, args.rag_top_k, args.rag_retriever, bar.update)
    return lecoqa_report.score(questions, answers, output_dir, Path(args.lora_weights or info["base_model"]).name, info,
                               **lecoqa_options(args))


def lecoqa_options(args) -> dict:
    """BERTScore and judge options of lecoqa_report.score from the command line."""
    judge = None
    if args.judge_api_base:
        from utils.datagen.llm_backends import OpenAIGenerator

        key = os.environ.get("OPENAI_API_KEY") or None  # never printed
        judge = (OpenAIGenerator(args.judge_api_base, args.judge_model, key), f"{args.judge_model}@{args.judge_api_base}")
    return {"bertscore_model": args.bertscore_model, "judge": judge}


def main(argv=None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    if args.compare:
        table = report.compare(args.compare, output_dir, args.labels)
        print(table)
        return {"compare": table}
    if args.benchmark == "lecoqa":
        data = (lecoqa_report.score_file(Path(args.score_predictions), args.lecoqa_dir, output_dir,
                                         **lecoqa_options(args))
                if args.score_predictions else run_lecoqa(args, output_dir))
        g = data["grounding"]
        bert = f", BERTScore {data['BERTScore']:.4f}" if "BERTScore" in data else ""
        judged = data.get("judge", {}).get("correct_share")
        judged = f", judged correct {100 * judged:.1f}%" if judged is not None else ""
        print(f"[evaluate] LeCoQA, {data['n']} answers: METEOR {data['METEOR']:.4f}, BLEU {data['BLEU']:.4f}{bert}"
              f"{judged} ({data['not_computed']}); cite an article {100 * g['cite_share']:.1f}%, a gold article "
              f"{100 * (g['cite_gold_share'] or 0):.1f}% of {g['questions_with_gold']}; wrote {output_dir}/scores.json, "
              "scores.md, scores.png")
        return data
    if args.score_predictions:
        data = score_predictions(Path(args.score_predictions), output_dir, args)
        print(report.markdown_table(data["tasks"]))
        print(f"[evaluate] wrote {output_dir}/scores.json, scores.md, scores.png, details.jsonl")
        return data
    task_ids = lb.available_tasks(args.data_dir) if args.tasks == "all" else lb.resolve_tasks(args.tasks)
    items_by_task = {t: lb.load_task(args.data_dir, t, args.shots, args.limit) for t in task_ids}
    # --rag puts the articles into LawBench's own instruction (with_statutes), so the template stays the model's
    engine, rag = open_engine(*options_from(args), "evaluate", rag_template=False)
    if rag:
        args.rag_retriever = rag.resolve_retriever(args.rag_retriever)  # the run records the retriever that ran
    manifest = Path(args.data_dir) / "manifest.json"
    info = {"base_model": engine.loaded.base_model, "lora_weights": args.lora_weights,
            "prompt_template": engine.prompter.name, "shots": args.shots, "max_new_tokens": args.max_new_tokens,
            "limit": args.limit, "tasks": task_ids, "rag_top_k": args.rag_top_k if args.rag else None,
            # None for BM25 (the default), so runs made before hybrid existed still resume
            "rag_retriever": args.rag_retriever if args.rag and args.rag_retriever != "bm25" else None,
            "data_manifest_sha256": files_sha256([manifest]),
            "data_source": json.loads(manifest.read_text(encoding="utf-8"))["source"]}
    output_dir.mkdir(parents=True, exist_ok=True)
    check_run_info(output_dir, info)
    write_run_info(output_dir, info)
    generated = generate(engine, items_by_task, output_dir, args)
    data = score(items_by_task, output_dir, args, info)
    print(report.markdown_table(data["tasks"]))
    print(f"[evaluate] wrote {output_dir}/scores.json, scores.md, scores.png, details.jsonl, {lb.RAW_DIR}/")
    return {"generated": generated, **data}


if __name__ == "__main__":
    sys.exit(run_entry("evaluate", main))
