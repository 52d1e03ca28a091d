"""LawBench: the task registry, the prepared data, LawBench's raw prediction layout, and scoring.

Prepared data (``tools/prepare_lawbench.py``) lives in ``data/eval/lawbench/{zero_shot,one_shot}/<id>.jsonl``,
one item per line: ``{"task", "index", "instruction", "question", "answer"}``. The model sees
``instruction`` followed by ``question`` (``prompt_fields``).

Scoring is LawBench's own (utils/lawbench/scoring.py: its extraction, abstention rule, metric and average per
task), so a score here can stand next to LawBench's published ones: on LawBench's published raw predictions it
reproduces its results.csv (tests/test_lawbench_agreement.py). An *abstained* item is one where LawBench's rule
finds no answer at all (no option, label, article, term or amount); it scores 0 and counts in the task's
abstention rate.

LawBench's raw layout (what it publishes under ``predictions/`` and what its scorer reads) is one
``<task>.json`` per task: ``{"0": {"origin_prompt": [{"role": "HUMAN", "prompt": ...}], "prediction": ...,
"refr": <gold answer>}, "1": ...}``. ``write_raw`` writes our runs in it, ``score_raw_folder`` scores it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from utils.common.datafiles import DataError, read_records
from utils.common.paths import REPO_ROOT
from utils.lawbench import scoring as S
from utils.lawbench.scoring import LawBenchError

DEFAULT_DATA_DIR = REPO_ROOT / "data" / "eval" / "lawbench"
SHOTS = {0: "zero_shot", 1: "one_shot"}
FIELDS = ("task", "index", "instruction", "question", "answer")
RAW_DIR = "lawbench"  # a run's predictions in LawBench's raw layout: <output_dir>/lawbench/<task>.json
SCORER = "LawBench evaluation/ (open-compass/LawBench e30981b)"

__all__ = ["LawBenchError", "TASKS", "TaskScore", "score_task", "score_raw_folder", "write_raw", "read_raw"]


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Task:
    id: str
    name: str  # Chinese name as in LawBench
    name_en: str
    metric: str  # as LawBench names it: accuracy | f1 | rouge_l | rc_f1 | soft_f1 | log_distance | f0.5


TASKS: dict[str, Task] = {
    t[0]: Task(*t)
    for t in [
        ("1-1", "法条背诵", "Article Recitation", "rouge_l"),
        ("1-2", "知识问答", "Knowledge QA", "accuracy"),
        ("2-1", "文书校对", "Document Proofreading", "f0.5"),
        ("2-2", "纠纷焦点识别", "Dispute Focus Identification", "accuracy"),
        ("2-3", "婚姻纠纷鉴定", "Marital Disputes Identification", "f1"),
        ("2-4", "问题主题识别", "Issue Topic Identification", "accuracy"),
        ("2-5", "阅读理解", "Reading Comprehension", "rc_f1"),
        ("2-6", "命名实体识别", "Named-Entity Recognition", "soft_f1"),
        ("2-7", "舆情摘要", "Opinion Summarization", "rouge_l"),
        ("2-8", "论点挖掘", "Argument Mining", "accuracy"),
        ("2-9", "事件检测", "Event Detection", "f1"),
        ("2-10", "触发词提取", "Trigger Word Extraction", "soft_f1"),
        ("3-1", "法条预测(基于事实)", "Fact-based Article Prediction", "f1"),
        ("3-2", "法条预测(基于场景)", "Scene-based Article Prediction", "rouge_l"),
        ("3-3", "罪名预测", "Charge Prediction", "f1"),
        ("3-4", "刑期预测(无法条内容)", "Prison Term Prediction w/o Article", "log_distance"),
        ("3-5", "刑期预测(给定法条内容)", "Prison Term Prediction w/ Article", "log_distance"),
        ("3-6", "案例分析", "Case Analysis", "accuracy"),
        ("3-7", "犯罪金额计算", "Criminal Damages Calculation", "accuracy"),
        ("3-8", "咨询", "Consultation", "rouge_l"),
    ]
}


def resolve_tasks(spec: str | Iterable[str]) -> list[str]:
    """``'all'``, ``'1-1,3-3'`` or a list of ids → ids in registry order; unknown ids raise."""
    ids = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if ids == ["all"]:
        return list(TASKS)
    unknown = [t for t in ids if t not in TASKS]
    if unknown or not ids:
        raise LawBenchError(f"unknown LawBench task(s) {unknown or spec!r}; known: all, {', '.join(TASKS)}")
    return [t for t in TASKS if t in ids]


# ---------------------------------------------------------------- data


def task_file(data_dir: str | Path, task: str, shots: int) -> Path:
    if shots not in SHOTS:
        raise LawBenchError(f"shots must be 0 or 1, got {shots}")
    return Path(data_dir) / SHOTS[shots] / f"{task}.jsonl"


def available_tasks(data_dir: str | Path) -> list[str]:
    """The tasks a prepared data folder holds (its manifest.json), in registry order."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise LawBenchError(f"{path}: no prepared LawBench data; run `python tools/prepare_lawbench.py` first")
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise LawBenchError(f"{path}: not a prepare_lawbench.py manifest ({e})") from e
    return resolve_tasks(tasks)


def load_task(data_dir: str | Path, task: str, shots: int = 0, limit: int | None = None) -> list[dict]:
    """The prepared items of one task (the first ``limit`` ones: a deterministic subset)."""
    resolve_tasks([task])
    path = task_file(data_dir, task, shots)
    if not path.is_file():
        raise LawBenchError(
            f"{path}: no prepared LawBench data for task {task} ({SHOTS[shots]}); run "
            f"`python tools/prepare_lawbench.py` (or with --lawbench_dir DIR) first"
        )
    items = []
    for record in read_records(path):
        missing = [f for f in FIELDS if f not in record.data]
        if missing:
            raise DataError(f"{record.where}: missing field(s) {', '.join(missing)}")
        if record.data["task"] != task:
            raise DataError(f"{record.where}: item of task {record.data['task']!r} in the file of task {task}")
        items.append(record.data)
    return items[:limit] if limit is not None else items


def prompt_fields(item: dict) -> tuple[str, str]:
    """``(instruction, input)`` for utils.model.prompter: the task instruction and the case text."""
    return item["instruction"], item["question"]


# ---------------------------------------------------------------- scoring


@dataclass
class TaskScore:
    task: str
    metric: str
    score: float  # 0..1 (a prison-term average can dip below 0, as in LawBench)
    abstention: float  # share of all items where LawBench's rule finds no answer
    n: int  # items
    scored: int  # items in the score (LawBench leaves a few gold forms out: 2-2 赔偿, 3-4/3-5 死刑/无期)

    def as_dict(self) -> dict:
        t = TASKS[self.task]
        return {"task": self.task, "name": t.name, "name_en": t.name_en, "metric": self.metric,
                "score": self.score, "abstention": self.abstention, "n": self.n, "scored": self.scored}


def lawbench_prompt(item: dict) -> str:
    """The item's prompt as LawBench writes it (instruction, newline, question): no chat template, no RAG
    context — 2-1's scorer reads the source sentence from it."""
    return f"{item['instruction']}\n{item['question']}"


def score_predictions(task: str, prompts: list[str], predictions: list[str],
                      references: list[str]) -> tuple[TaskScore, list[dict]]:
    """Score one task from LawBench's three fields per item: the aggregate and per-item details in order."""
    if task not in TASKS:
        raise LawBenchError(f"unknown LawBench task {task!r}")
    score, abstention, details = S.score_items(task, prompts, predictions, references)
    scored = sum(d["score"] is not None for d in details)
    return TaskScore(task, TASKS[task].metric, score, abstention, len(details), scored), details


def score_task(task: str, items: list[dict], predictions: list[str]) -> tuple[TaskScore, list[dict]]:
    """Score a task of prepared items: the aggregate and the per-item details, in item order."""
    if len(items) != len(predictions):
        raise LawBenchError(f"task {task}: {len(predictions)} predictions for {len(items)} items")
    return score_predictions(task, [lawbench_prompt(i) for i in items], predictions, [i["answer"] for i in items])


# ---------------------------------------------------------------- LawBench's raw layout


def write_raw(folder: str | Path, task: str, items: list[dict], predictions: list[str]) -> Path:
    """``folder/<task>.json`` in LawBench's raw layout (keys "0".."N-1" in item order), written atomically."""
    if len(items) != len(predictions):
        raise LawBenchError(f"task {task}: {len(predictions)} predictions for {len(items)} items")
    raw = {str(i): {"origin_prompt": [{"role": "HUMAN", "prompt": lawbench_prompt(item)}], "prediction": prediction,
                    "refr": item["answer"]} for i, (item, prediction) in enumerate(zip(items, predictions))}
    path = Path(folder) / f"{task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(raw, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_raw(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, predictions, references)`` of a LawBench ``<task>.json`` (a prompt is the first turn of a
    ``[{"role", "prompt"}]`` list or a plain string: model runners wrote both)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LawBenchError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(raw, dict) or not raw:
        raise LawBenchError(f"{path}: expected an object keyed \"0\"..\"N-1\" (LawBench's raw prediction layout)")
    prompts, predictions, references = [], [], []
    for i in range(len(raw)):
        entry = raw.get(str(i))
        if not isinstance(entry, dict):
            raise LawBenchError(f"{path}: no entry \"{i}\" (keys must run from \"0\" to \"{len(raw) - 1}\")")
        prompt = entry.get("origin_prompt", "")
        if isinstance(prompt, list):  # LawBench reads the first turn's text
            prompt = prompt[0].get("prompt", "") if prompt and isinstance(prompt[0], dict) else ""
        if not all(isinstance(v, str) for v in (prompt, entry.get("prediction"), entry.get("refr"))):
            raise LawBenchError(f"{path}: entry \"{i}\" needs string fields prediction and refr")
        prompts.append(prompt)
        predictions.append(entry["prediction"])
        references.append(entry["refr"])
    return prompts, predictions, references


def raw_tasks(folder: str | Path) -> list[str]:
    """The tasks a raw-prediction folder holds (``<task>.json`` with a known task id), in registry order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LawBenchError(f"{folder}: no such directory")
    found = {p.stem for p in folder.glob("*.json")} & set(TASKS)
    if not found:
        raise LawBenchError(f"{folder}: no LawBench predictions (<task>.json such as 1-1.json, 3-4.json)")
    return [t for t in TASKS if t in found]


def score_raw_folder(folder: str | Path, tasks: Iterable[str] | None = None) -> list[tuple[TaskScore, list[dict]]]:
    """Score every (or the given) ``<task>.json`` of a LawBench raw-prediction folder."""
    folder = Path(folder)
    out = []
    for task in tasks if tasks is not None else raw_tasks(folder):
        try:
            out.append(score_predictions(task, *read_raw(folder / f"{task}.json")))
        except LawBenchError as e:
            raise LawBenchError(f"{folder / f'{task}.json'}: {e}") from e
    return out
