"""Test-set contamination: how much of each LawBench item also appears in a training file.

An item's text (question + answer; the task instruction is shared by all items and left out) is cut
into character n-grams over its content characters (punctuation and whitespace dropped). Its overlap is
the share of those n-grams that also occur anywhere in the training data; an item counts as contaminated
when the overlap reaches ``threshold``. A single shared n-gram is not enough on legal text: court
boilerplate (其行为已触犯《中华人民共和国刑法》…) is in every judgment, so we use a share, not any-hit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from utils.common.datafiles import DataError, read_records
from utils.lawbench.metrics import content_chars

DEFAULT_N = 13  # characters; 13-grams as in the GPT-3 contamination study, here over Chinese characters
DEFAULT_THRESHOLD = 0.5


def ngrams(text: str, n: int = DEFAULT_N) -> set[int]:
    """Hashes of the character n-grams of ``text``'s content characters (a text shorter than n: itself)."""
    chars = "".join(content_chars(text))
    if not chars:
        return set()
    if len(chars) < n:
        return {hash(chars)}
    return {hash(chars[i:i + n]) for i in range(len(chars) - n + 1)}


def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def training_texts(path: str | Path) -> list[str]:
    """Every string of every record of a .json/.jsonl training file, or a whole .txt/.md file."""
    path = Path(path)
    if path.suffix in (".txt", ".md"):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        return [path.read_text(encoding="utf-8")]
    texts = ["\n".join(_strings(record.data)) for record in read_records(path)]
    if not texts:
        raise DataError(f"{path}: no records")
    return texts


@dataclass
class NgramIndex:
    n: int = DEFAULT_N

    def __post_init__(self) -> None:
        self.grams: set[int] = set()

    def add(self, text: str) -> None:
        self.grams |= ngrams(text, self.n)

    def overlap(self, text: str) -> float:
        grams = ngrams(text, self.n)
        return len(grams & self.grams) / len(grams) if grams else 0.0


def build_index(paths: Iterable[str | Path], n: int = DEFAULT_N) -> NgramIndex:
    index = NgramIndex(n)
    for path in paths:
        for text in tqdm(training_texts(path), desc=f"n-grams of {Path(path).name}", unit="rec", leave=False):
            index.add(text)
    return index


def item_text(item: dict) -> str:
    return f"{item['question']}\n{item['answer']}"


def check(items_by_task: dict[str, list[dict]], index: NgramIndex, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Per task: ``{"n", "contaminated", "share", "max_overlap", "items"}`` (items: indices over threshold)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    report = {}
    for task, items in items_by_task.items():
        overlaps = [index.overlap(item_text(item)) for item in items]
        flagged = [item["index"] for item, o in zip(items, overlaps) if o >= threshold]
        report[task] = {
            "n": len(items),
            "contaminated": len(flagged),
            "share": len(flagged) / len(items) if items else 0.0,
            "max_overlap": max(overlaps, default=0.0),
            "items": flagged,
        }
    return report
