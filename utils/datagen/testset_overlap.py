"""Which generated training items touch a test set — LawBench's, or LeCoQA's test questions and answers — so the data
tools (tools/knowledge_instruct.py, tools/preference_data.py) can leave them out and count them.

An item is excluded when it is built on an article that LawBench task 1-1 (article recitation) asks for, or when it
contains at least ``threshold`` of one test text's character 13-grams (as in utils/lawbench/contamination.py); test
texts under ``MIN_TEST_NGRAMS`` n-grams (bare labels such as 正确答案：B or a charge name) are not checked.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from utils.common.datafiles import DataError, read_records
from utils.lawbench.contamination import DEFAULT_N, DEFAULT_THRESHOLD, ngrams
from utils.legal.numerals import cn_to_int
from utils.legal.statutes import NUMERAL, StatuteStore

# LawBench 1-1 prefixes the law with its department: 民法商法公司法第六十条的内容是什么？
DEPARTMENTS = ("诉讼与非诉讼程序法", "宪法相关法", "民法商法", "社会法", "行政法", "经济法")
_ASKED = re.compile(rf"^(?P<law>.+?)第(?P<num>{NUMERAL})条(?:之(?P<suf>{NUMERAL}))?的内容是什么")
MIN_TEST_NGRAMS = 20  # a test text needs >= 32 content characters to count for the n-gram check


def read_lawbench(directory: Path) -> list[dict]:
    """``{task, question, answer}`` of every item under ``{zero_shot,one_shot}/`` (``data/`` optional), .json or .jsonl."""
    base = directory / "data" if (directory / "data").is_dir() else directory
    files = sorted(p for shots in ("zero_shot", "one_shot") for p in (base / shots).glob("*.json*"))
    if not files:
        raise DataError(f"--lawbench_dir {directory}: no zero_shot/*.json or one_shot/*.json(l) files; give LawBench's "
                        "data folder or one made by `python tools/prepare_lawbench.py --output_dir DIR`")
    items = []
    for path in files:
        for record in read_records(path):
            if not all(isinstance(record.data.get(k), str) for k in ("question", "answer")):
                raise DataError(f"{record.where}: a LawBench item needs string fields 'question' and 'answer'")
            items.append({"task": path.name.split(".")[0], "question": record.data["question"],
                          "answer": record.data["answer"]})
    return items


class LawBenchOverlap:
    """Which generated items touch a test item (see the module docstring); ``items``: ``{task, question, answer}``
    (LeCoQA's with a task other than 1-1)."""

    def __init__(self, items: list[dict], store: StatuteStore, n: int = DEFAULT_N, threshold: float = DEFAULT_THRESHOLD):
        self.threshold = threshold
        self.n = n
        self.asked: set[tuple] = set()
        self.unresolved: Counter = Counter()
        for item in items:
            if item["task"] == "1-1":
                self._add_asked(item["question"], store)
        # Questions and answers are checked one by one; labels too short to carry content (正确答案：B,
        # a charge name) are left out, else every item naming 盗窃罪 would "overlap" a 3-3 answer.
        texts = sorted({t for item in items for t in (item["question"], item["answer"])})
        self.sizes: list[int] = []
        self.index: dict[int, list[int]] = defaultdict(list)  # n-gram → test texts holding it
        for text in texts:
            grams = ngrams(text, n)
            if len(grams) < MIN_TEST_NGRAMS:
                continue
            for gram in grams:
                self.index[gram].append(len(self.sizes))
            self.sizes.append(len(grams))

    def _add_asked(self, question: str, store: StatuteStore) -> None:
        m = _ASKED.match(question.strip())
        if not m:
            self.unresolved[question[:20]] += 1
            return
        name = m.group("law")
        law = store.resolve_law(name)
        for department in DEPARTMENTS:
            if law is None and name.startswith(department) and len(name) > len(department):
                law = store.resolve_law(name[len(department):])
        if law is None:
            self.unresolved[name] += 1  # e.g. 宪法修正案2018年: amendments are not numbered 第N条 here
            return
        suffix = cn_to_int(m.group("suf")) if m.group("suf") else 0
        self.asked.add((law.name, cn_to_int(m.group("num")), suffix))

    def max_overlap(self, text: str) -> float:
        """The largest share of one test text's n-grams that ``text`` contains."""
        hits: Counter = Counter()
        for gram in ngrams(text, self.n):
            hits.update(self.index.get(gram, ()))
        return max((count / self.sizes[i] for i, count in hits.items()), default=0.0)

    def reason(self, item: dict) -> str | None:
        if item["_key"] in self.asked or self.asked.intersection(item.get("_context", ())):
            return "excluded_1-1"
        if self.max_overlap("\n".join((item["instruction"], item["input"], item["output"]))) >= self.threshold:
            return "excluded_ngram"
        return None
