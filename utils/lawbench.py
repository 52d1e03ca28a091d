"""LawBench: the task registry, the prepared data, answer extraction and scoring.

Prepared data (``tools/prepare_lawbench.py``) lives in ``data/eval/lawbench/{zero_shot,one_shot}/<id>.jsonl``,
one item per line: ``{"task", "index", "instruction", "question", "answer"}``. The model sees
``instruction`` followed by ``question`` (``prompt_fields``).

Scoring: every task has an extractor that turns free text into what its metric compares (a letter, a
label set, months, ...). The same extractor reads the gold answer, so scoring the gold answers gives the
maximum on every task (a test checks this on all 20 × 500 items). An item whose prediction yields
nothing extractable is *abstained*: it scores 0 and is counted in the task's abstention rate — the
figure that explained most of the original LaWGPT's low LawBench scores.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from utils import lawbench_metrics as M
from utils.data import DataError, read_records

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "eval" / "lawbench"
SHOTS = {0: "zero_shot", 1: "one_shot"}
FIELDS = ("task", "index", "instruction", "question", "answer")


class LawBenchError(ValueError):
    """Unknown task, missing prepared data, or a prediction file that does not fit the data."""


# ---------------------------------------------------------------- extractors (None = abstained)


def _marked(text: str, marker: str) -> str | None:
    """The answer after ``[marker]`` or ``marker:`` up to ``<eoa>`` or the line end; None without a marker."""
    m = re.search(rf"\[{marker}\]\s*(.*?)(?:<eoa>|\n|$)", text) or re.search(rf"{marker}\s*[:：]\s*(.*?)(?:<eoa>|\n|$)", text)
    return m.group(1) if m else None


def _span(text: str, marker: str) -> str:
    """The marked answer if there is one, else the whole text."""
    marked = _marked(text, marker)
    return text if marked is None else marked


@functools.lru_cache(maxsize=64)
def _label_regex(labels: tuple[str, ...] | frozenset[str]) -> re.Pattern:
    # Longest first, so that at each position the longest label wins.
    return re.compile("|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True)))


def labels_in(text: str, labels: tuple[str, ...]) -> frozenset[str] | None:
    found = frozenset(_label_regex(labels).findall(text))
    return found or None


def single_label(text: str, labels: tuple[str, ...], marker: str) -> str | None:
    """One label: from the marked answer if there is one; several different labels = ambiguous = abstained."""
    for part in (_span(text, marker), text):
        found = set(_label_regex(labels).findall(part))
        if len(found) == 1:
            return found.pop()
        if len(found) > 1:
            return None
    return None


def choice(text: str, options: str) -> str | None:
    """An option letter: 正确答案:B / [正确答案]C<eoa> / 答案是A, else the only letter mentioned."""
    m = re.search(rf"(?:正确答案|答案|选项)\s*(?:\]|是|为|应选|选)?\s*[:：]?\s*\(?([{options}])(?![A-Za-z])", text)
    if m:
        return m.group(1)
    found = set(re.findall(rf"(?<![A-Za-z])([{options}])(?![A-Za-z])", text))
    return found.pop() if len(found) == 1 else None


def plain_text(text: str, prefixes: tuple[str, ...] = ()) -> str | None:
    """Generation tasks: the text itself, minus a leading answer prefix; empty = abstained."""
    text = text.strip()
    for prefix in prefixes:
        text = re.sub(rf"^{prefix}\s*[:：]\s*", "", text)
    return text.strip() or None


def first_line(text: str) -> str | None:
    """Proofreading: the corrected sentence is the first non-empty line (minus a 句子: label)."""
    for line in text.splitlines():
        line = re.sub(r"^(?:修改后的句子|修改后|句子|答案)\s*[:：]\s*", "", line.strip())
        if line:
            return line
    return None


def articles(text: str) -> frozenset[int] | None:
    return frozenset(M.parse_articles(_span(text, "法条"))) or None


@functools.lru_cache(maxsize=1)
def charge_names() -> frozenset[str]:
    """Charge names of the Criminal Law (from legal-documents-cn's 【…罪】 headings), without the final 罪."""
    import importlib.resources

    text = importlib.resources.files("legal_documents_cn").joinpath("criminal_law.csv").read_text(encoding="utf-8-sig")
    names = set()
    for heading in re.findall(r"【([^】]+罪)】", text):
        names.update(name.strip().removesuffix("罪") for name in re.split(r"[;；]", heading) if name.strip())
    return frozenset(names)


def charges(text: str) -> frozenset[str] | None:
    """Charges: the marked answer split on ; and ，. A piece with 、 lists several charges only when each
    part is a known charge name (盗窃、诈骗); otherwise it is one name (伪造、变造居民身份证).
    Without a marker: the known charge names followed by 罪 anywhere in the text."""
    span = _marked(text, "罪名")
    if span is None:
        known = _label_regex(charge_names())
        return frozenset(m.group(0) for m in known.finditer(text) if text[m.end():m.end() + 1] == "罪") or None
    found = set()
    span = re.sub(r"罪\s*、", ";", span)  # 盗窃罪、诈骗罪: a 罪 closes a charge name, the 、 separates two
    for piece in re.split(r"[;；,，\s]+|以及|和", span):
        piece = piece.strip(" 。.").removeprefix("犯").removesuffix("罪")
        if not piece:
            continue
        parts = [p.removesuffix("罪") for p in piece.split("、")]
        if len(parts) > 1 and piece not in charge_names() and all(p in charge_names() for p in parts):
            found.update(parts)
        else:
            found.add(piece)
    return frozenset(found) or None


def months(text: str) -> int | str | None:
    return M.parse_months(_span(text, "刑期"))


def amounts(text: str) -> tuple[float, ...] | None:
    return tuple(M.parse_amounts(_span(text, "金额"))) or None


NER_TYPES = ("犯罪嫌疑人", "受害人", "被盗货币", "物品价值", "盗窃获利", "被盗物品", "作案工具", "时间", "地点", "组织机构")


def entities(text: str) -> frozenset[tuple[str, str]] | None:
    """``type:value、value;type:value`` → {(type, value)}. Empty text = no entities (the gold has such items)."""
    found = set()
    for segment in re.split(r"[;；\n]", text):
        m = re.match(rf"\s*({'|'.join(NER_TYPES)})\s*[:：]\s*(.+)", segment)
        if m:
            found.update((m.group(1), value.strip()) for value in m.group(2).split("、") if value.strip())
    if not found and text.strip():
        return None
    return frozenset(found)


def triggers(text: str) -> frozenset[tuple[str, str]] | None:
    words = {w.strip("。.“”\"") for w in re.split(r"[;；,，、\s]+", text)}
    return frozenset(("", w) for w in words if w) or None


def gold_amount(answer: str) -> float:
    values = M.parse_amounts(answer)
    if not values:
        raise LawBenchError(f"gold amount without a number: {answer!r}")
    return values[0]


# ---------------------------------------------------------------- the registry

DISPUTE_FOCUS = tuple(
    "诉讼主体、租金情况、利息、本金争议、责任认定、责任划分、损失认定及处理、原审判决是否适当、合同效力、财产分割、"
    "责任承担、鉴定结论采信问题、诉讼时效、违约、合同解除、肇事逃逸".split("、")
)
MARITAL = tuple(
    "婚后有子女、限制行为能力子女抚养、有夫妻共同财产、支付抚养费、不动产分割、婚后分局、二次起诉离婚、按月给付抚养费、"
    "准予离婚、有夫妻共同债务、婚前个人财产、法定离婚、不履行家庭义务、存在非婚生子、适当帮助、不履行离婚协议、损害赔偿、"
    "感情不和分居满二年、子女随非抚养权人生活、婚后个人财产".split("、")
)
TOPICS = tuple(
    "婚姻家庭、劳动纠纷、交通事故、债权债务、刑事辩护、合同纠纷、房产纠纷、侵权、公司法、医疗纠纷、拆迁安置、行政诉讼、"
    "建设工程、知识产权、综合咨询、人身损害、涉外法律、海事海商、消费权益、抵押担保".split("、")
)
EVENTS = tuple(
    "支付/给付，欺骗，搜查/扣押，要求/请求，卖出，买入，获利，拘捕，鉴定，同意/接受，供述，联络，帮助/救助，租用/借用，"
    "受伤，伪造，卖淫，伤害人身，赔偿，归还/偿还".split("，")
)


@dataclass(frozen=True)
class Task:
    id: str
    name: str  # Chinese name as in LawBench
    name_en: str
    metric: str  # accuracy | f1 | rouge_l | rc_f1 | soft_f1 | log_distance | f0.5 | amount_accuracy
    extract: Callable[[str], object]  # free text → comparable answer, None = abstained


def _task(tid, name, name_en, metric, extract) -> tuple[str, Task]:
    return tid, Task(tid, name, name_en, metric, extract)


TASKS: dict[str, Task] = dict(
    [
        _task("1-1", "法条背诵", "Article Recitation", "rouge_l", functools.partial(plain_text, prefixes=("答案",))),
        _task("1-2", "知识问答", "Knowledge QA", "accuracy", functools.partial(choice, options="ABCD")),
        _task("2-1", "文书校对", "Document Proofreading", "f0.5", first_line),
        _task("2-2", "纠纷焦点识别", "Dispute Focus Identification", "f1", functools.partial(labels_in, labels=DISPUTE_FOCUS)),
        _task("2-3", "婚姻纠纷鉴定", "Marital Disputes Identification", "f1", functools.partial(labels_in, labels=MARITAL)),
        _task("2-4", "问题主题识别", "Issue Topic Identification", "accuracy",
              functools.partial(single_label, labels=TOPICS, marker="类别")),
        _task("2-5", "阅读理解", "Reading Comprehension", "rc_f1", functools.partial(plain_text, prefixes=("回答", "答案"))),
        _task("2-6", "命名实体识别", "Named-Entity Recognition", "soft_f1", entities),
        _task("2-7", "舆情摘要", "Opinion Summarization", "rouge_l", functools.partial(plain_text, prefixes=("摘要",))),
        _task("2-8", "论点挖掘", "Argument Mining", "accuracy", functools.partial(choice, options="ABCDE")),
        _task("2-9", "事件检测", "Event Detection", "f1", functools.partial(labels_in, labels=EVENTS)),
        _task("2-10", "触发词提取", "Trigger Word Extraction", "soft_f1", triggers),
        _task("3-1", "法条预测(基于事实)", "Fact-based Article Prediction", "f1", articles),
        _task("3-2", "法条预测(基于场景)", "Scene-based Article Prediction", "rouge_l", plain_text),
        _task("3-3", "罪名预测", "Charge Prediction", "f1", charges),
        _task("3-4", "刑期预测(无法条内容)", "Prison Term Prediction w/o Article", "log_distance", months),
        _task("3-5", "刑期预测(给定法条内容)", "Prison Term Prediction w/ Article", "log_distance", months),
        _task("3-6", "案例分析", "Case Analysis", "accuracy", functools.partial(choice, options="ABCD")),
        _task("3-7", "犯罪金额计算", "Criminal Damages Calculation", "amount_accuracy", amounts),
        _task("3-8", "咨询", "Consultation", "rouge_l", plain_text),
    ]
)


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
    """``(instruction, input)`` for utils.prompter: the task instruction and the case text."""
    return item["instruction"], item["question"]


# ---------------------------------------------------------------- scoring


@dataclass
class TaskScore:
    task: str
    metric: str
    score: float  # 0..1
    abstention: float  # share of items with nothing extractable
    n: int

    def as_dict(self) -> dict:
        t = TASKS[self.task]
        return {"task": self.task, "name": t.name, "name_en": t.name_en, "metric": self.metric,
                "score": self.score, "abstention": self.abstention, "n": self.n}


def score_item(task: str, prediction: str, item: dict) -> dict:
    """One item: ``{"extracted", "abstained", "score"}`` (2-1 also carries ``counts`` = tp, fp, fn)."""
    t = TASKS[task]
    gold = t.extract(item["answer"])
    if gold is None and t.metric != "f0.5":
        raise LawBenchError(f"task {task} item {item.get('index')}: no answer can be extracted from the gold {item['answer']!r}")
    extracted = t.extract(prediction)
    result = {"extracted": _jsonable(extracted), "abstained": extracted is None}
    if t.metric == "f0.5":
        counts = M.edit_counts(item["question"], extracted, item["answer"].strip())
        result.update(counts=counts, score=M.f_beta(*counts))
        return result
    if extracted is None:
        result["score"] = 0.0
    elif t.metric == "accuracy":
        result["score"] = float(extracted == gold)
    elif t.metric == "f1":
        result["score"] = M.set_f1(extracted, gold)
    elif t.metric == "soft_f1":
        result["score"] = M.soft_f1(extracted, gold)
    elif t.metric == "rouge_l":
        result["score"] = M.rouge_l(extracted, gold)
    elif t.metric == "rc_f1":
        result["score"] = M.char_f1(extracted, gold)
    elif t.metric == "log_distance":
        result["score"] = M.log_distance_score(extracted, gold)
    elif t.metric == "amount_accuracy":
        target = gold_amount(item["answer"])
        result["score"] = float(any(abs(v - target) < 1e-6 * max(1.0, abs(target)) for v in extracted))
    else:  # pragma: no cover - registry and metrics are kept in sync by the tests
        raise LawBenchError(f"task {task}: unknown metric {t.metric}")
    return result


def score_task(task: str, items: list[dict], predictions: list[str]) -> tuple[TaskScore, list[dict]]:
    """Score a task: the aggregate and the per-item details, in item order."""
    if len(items) != len(predictions):
        raise LawBenchError(f"task {task}: {len(predictions)} predictions for {len(items)} items")
    if not items:
        raise LawBenchError(f"task {task}: nothing to score")
    details = [score_item(task, p, item) for p, item in zip(predictions, items)]
    if TASKS[task].metric == "f0.5":  # corpus-level, as in error-correction benchmarks
        tp, fp, fn = (sum(d["counts"][k] for d in details) for k in range(3))
        score = M.f_beta(tp, fp, fn)
    else:
        score = sum(d["score"] for d in details) / len(details)
    abstention = sum(d["abstained"] for d in details) / len(details)
    return TaskScore(task, TASKS[task].metric, score, abstention, len(items)), details


def _jsonable(value):
    if isinstance(value, frozenset | set):
        return sorted(value, key=str)
    return value
