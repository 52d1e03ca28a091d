"""Reading the project's data files, with errors that name the file and line.

Formats (``.json`` = one array of objects, ``.jsonl`` = one object per line):

- instruction data: ``instruction`` (str), optional ``input`` (str), ``output`` (str), optional
  ``history`` (list of ``[question, answer]`` string pairs) — see resources/example_instruction_tune.json;
- pretraining documents: ``content`` (str) — see resources/example_instruction_train.json; plain
  ``.txt``/``.md`` files are one document each;
- inference questions: like instruction data with ``output`` optional (the reference answer).

Nothing is skipped silently: the first bad record raises :class:`DataError` with ``file:line``.
:func:`iter_records` / :func:`iter_documents` read a ``.jsonl`` file line by line (memory flat in the file's size;
a byte range of it for a shard of a large corpus) with the same messages: a bad line deep in a 10 GB file is named.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from utils.common.errors import ConfigError, LawgptError

IGNORE_INDEX = -100  # label value that the loss ignores (prompt tokens, padding)


class DataError(LawgptError, ValueError):
    """A data file is missing, unreadable or holds a malformed record."""


@dataclass(frozen=True)
class Record:
    path: str
    line: int
    data: dict

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _iter_json_array(path: str, text: str) -> Iterator[Record]:
    """Decode a JSON array element by element so each record knows the line it starts on."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text[pos:pos + 1] == "[":
        raise DataError(f"{path}:{_line_of(text, pos)}: a .json data file must hold one array of objects")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DataError(f"{path}:{_line_of(text, pos)}: unterminated array (missing ']')")
        if text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
        yield Record(path, _line_of(text, pos), obj)
        pos = end


def _read_text(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_records(path: str | Path) -> list[Record]:
    """All objects of a ``.json`` array or ``.jsonl`` file, each with its line number."""
    path = str(path)
    if path.endswith(".jsonl"):
        return [Record(path, r.line, r.data) for r in _iter_jsonl(path, 0, None, None)]
    if path.endswith(".json"):
        records = list(_iter_json_array(path, _read_text(path)))
    else:
        raise DataError(f"{path}: unsupported extension (expected .json or .jsonl)")
    for record in records:
        if not isinstance(record.data, dict):
            raise DataError(f"{record.where}: expected a JSON object, got {type(record.data).__name__}")
    return records


class _Lines:
    """Line numbers in a part of a .jsonl file that starts at byte ``offset``: the newlines before it are counted
    only when a message needs a line number (a shard in the middle of a large file never reads its prefix)."""

    def __init__(self, path: str, offset: int):
        self.path, self.offset, self.first = path, offset, 1 if offset == 0 else None

    def line(self, index: int) -> int:
        if self.first is None:
            count, left = 0, self.offset
            with open(self.path, "rb") as f:
                while left > 0:
                    chunk = f.read(min(left, 1 << 24))
                    if not chunk:
                        break
                    count += chunk.count(b"\n")
                    left -= len(chunk)
            self.first = count + 1
        return self.first + index


class StreamRecord:
    """A record of :func:`iter_records`: like :class:`Record`, with its line number worked out on demand."""

    __slots__ = ("path", "data", "_lines", "_index")

    def __init__(self, path: str, lines: _Lines, index: int, data):
        self.path, self._lines, self._index, self.data = path, lines, index, data

    @property
    def line(self) -> int:
        return self._lines.line(self._index)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _iter_jsonl(path: str, start: int, end: int | None, progress: Callable[[int], None] | None):
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()  # the lines that begin at or after ``start`` are ours; a line begun before is the previous part's
        pos = f.tell()
        lines = _Lines(path, pos)
        index = -1
        while end is None or pos < end:
            raw = f.readline()
            if not raw:
                break
            index += 1
            if pos == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            pos = f.tell()
            if progress:
                progress(len(raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lines.line(index)}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") from e
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lines.line(index)}: invalid JSON: {e.msg}") from e
            record = StreamRecord(path, lines, index, data)
            if not isinstance(data, dict):
                raise DataError(f"{record.where}: expected a JSON object, got {type(data).__name__}")
            yield record


def iter_records(path: str | Path, start: int = 0, end: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[Record | StreamRecord]:
    """The objects of a ``.jsonl`` file read line by line, or of a ``.json`` array (read whole: use .jsonl for big data).

    ``start``/``end``: a byte range of a ``.jsonl`` file — the lines that begin inside it, so that consecutive ranges
    read every line once. ``progress`` is called with the bytes consumed (a progress bar).
    """
    path = str(path)
    if path.endswith(".jsonl"):
        yield from _iter_jsonl(path, start, end, progress)
        return
    if start or end is not None:
        raise ValueError(f"{path}: only a .jsonl file can be read in parts")
    records = read_records(path)
    if progress:
        progress(Path(path).stat().st_size)
    yield from records


def _field(record: Record, key: str, required: bool, allow_empty: bool = False) -> str | None:
    value = record.data.get(key)
    if value is None:
        if required:
            raise DataError(f"{record.where}: missing field {key!r}")
        return None
    if not isinstance(value, str):
        raise DataError(f"{record.where}: field {key!r} must be a string, got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise DataError(f"{record.where}: field {key!r} is empty")
    return value


def _history(record: Record) -> list[tuple[str, str]]:
    value = record.data.get("history")
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{record.where}: field 'history' must be a list of [question, answer] pairs")
    pairs = []
    for i, turn in enumerate(value):
        if not (isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise DataError(f"{record.where}: history[{i}] must be a [question, answer] pair of strings")
        pairs.append((turn[0], turn[1]))
    return pairs


def iter_instruction_data(path: str | Path, require_output: bool = True) -> Iterator[dict]:
    """Alpaca-style records, validated, one at a time: ``{instruction, input, output, history, where}``.

    ``require_output=False`` reads inference questions, where ``output`` (a reference) is optional.
    """
    for record in iter_records(path):
        yield {
            "instruction": _field(record, "instruction", required=True),
            "input": _field(record, "input", required=False) or "",
            "output": _field(record, "output", required=require_output),
            "history": _history(record),
            "where": record.where,
        }


def load_instruction_data(path: str | Path, require_output: bool = True) -> list[dict]:
    """All of :func:`iter_instruction_data` as a list."""
    return list(iter_instruction_data(path, require_output))


def iter_documents(path: str | Path, start: int = 0, end: int | None = None,
                   progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """Pretraining documents, one at a time: ``content`` of .json/.jsonl records (see :func:`iter_records` for
    ``start``/``end``/``progress``), or a whole .txt/.md file."""
    path = str(path)
    if path.endswith((".txt", ".md")):
        if start or end is not None:
            raise ValueError(f"{path}: a text document cannot be read in parts")
        text = _read_text(path)
        if not text.strip():
            raise DataError(f"{path}: empty document")
        if progress:
            progress(Path(path).stat().st_size)
        yield text
        return
    for record in iter_records(path, start, end, progress):
        yield _field(record, "content", required=True)


def load_documents(path: str | Path) -> list[str]:
    """Pretraining documents: ``content`` records of .json/.jsonl, or a whole .txt/.md file."""
    return list(iter_documents(path))


def expand_paths(paths: Iterable[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named directly, plus the matching files inside named directories (sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
            if not found:
                raise DataError(f"{p}: directory holds no {'/'.join(suffixes)} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or directory")
    return out


def file_digests(paths: Iterable[str | Path]) -> tuple[str, list[str]]:
    """(sha256 over the bytes of all files in the given order, [sha256 of each file]) in one read: the first for
    run_info.json provenance, the second for the training data cache's keys. Hex digests."""
    total, each = hashlib.sha256(), []
    for path in paths:
        one = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                total.update(chunk)
                one.update(chunk)
        each.append(one.hexdigest())
    return total.hexdigest(), each


def files_sha256(paths: Iterable[str | Path]) -> str:
    """One sha256 (hex) over the bytes of several files in the given order; of one file, that file's sha256sum."""
    return file_digests(paths)[0]


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records as JSONL atomically (tmp file + os.replace: a crash never leaves half a file); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


# ---------------------------------------------------------------- tokenisation for training


def truncate_documents(token_lists: Iterable[list[int]], cutoff_len: int) -> list[list[int]]:
    """The original LaWGPT's pretraining data: each document cut at ``cutoff_len`` (the rest is lost).
    Kept only as the baseline that benchmarks/bench_packing.py measures packing (utils/training/tokenized_data.py) against."""
    return [ids[:cutoff_len] for ids in token_lists]


def sft_example(tokenizer, segments: list[tuple[str, bool]], cutoff_len: int, train_on_inputs: bool = False,
                add_eos_token: bool = True, add_special_tokens: bool = True) -> dict:
    """input_ids / attention_mask / labels of one prompt-response example (see Prompter.segments).

    The whole text is tokenised at once, exactly as inference will see the prompt, and each token is
    labelled by where its characters lie: tokens inside a response piece keep their id as label,
    prompt tokens (and a token straddling a boundary) get ``IGNORE_INDEX`` unless ``train_on_inputs``.
    Examples longer than ``cutoff_len`` are truncated; EOS is appended only to an answer that fits, so
    the model never learns to stop in mid-sentence.

    ``add_special_tokens=False`` is for text rendered by a chat template (utils/chat_template.ChatPrompter):
    it holds its special tokens itself, and the end-of-turn token inside a response piece is trained.
    """
    text = "".join(piece for piece, _ in segments)
    spans, pos = [], 0
    for piece, is_response in segments:
        if is_response:
            spans.append((pos, pos + len(piece)))
        pos += len(piece)
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    # Tokens the tokenizer adds (BOS) are never trained; a chat template's own markers are text with offsets.
    special = set(tokenizer.all_special_ids) if add_special_tokens else set()
    labels = []
    for token, (start, end) in zip(ids, offsets):
        inside = token not in special and (add_special_tokens or end > start) and \
            any(a <= start and end <= b for a, b in spans)
        labels.append(token if (train_on_inputs or inside) else IGNORE_INDEX)
    ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    eos = tokenizer.eos_token_id
    if add_eos_token and len(ids) < cutoff_len and ids[-1] != eos:
        ids, labels = ids + [eos], labels + [eos]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def holdout_indices(rows: int, val_set_size: float, seed: int) -> list[int]:
    """The held-out rows of ``rows`` items, sorted: ``val_set_size`` of them (a count, or a fraction when < 1),
    a seeded random choice. Raises ConfigError when it would hold out none or all."""
    count = int(val_set_size) if val_set_size >= 1 else round(rows * val_set_size)
    if not 0 < count < rows:
        raise ConfigError(f"--val_set_size {val_set_size}: gives {count} of {rows} items; leave some to train on")
    return sorted(random.Random(seed).sample(range(rows), count))


def split_holdout(items: list, val_set_size: float, seed: int) -> tuple[list, list]:
    """Shuffle-free split: a seeded random choice of held-out items, the rest in their order."""
    if not val_set_size:
        return items, []
    held = set(holdout_indices(len(items), val_set_size, seed))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
