"""Append-only JSONL of finished items, so long generation runs resume where they stopped.

Each record carries a ``key`` (:func:`item_key`: position + hash of the item's text). A record is
written as one line and flushed (and fsynced) as soon as it is done; a rerun opens the same file,
skips the keys already there and appends the rest, so after any number of interruptions every item
is in the file exactly once. A run killed in the middle of a line leaves an unfinished last line: it
is cut off on reopening (with a message). A malformed line anywhere else is an error (file:line),
never silently dropped. One run at a time: the file is locked while open (a second run on the same file would
write every answer twice and leave a file that cannot be resumed), and a second run stops with a one-line error.
Used by infer.py and evaluate.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from utils.common.datafiles import DataError, read_records


def item_key(index: int, *texts: str | None) -> str:
    """``"<index>:<16 hex>"``: stable across runs, and different when the data at that index changed."""
    digest = hashlib.sha256("\x1f".join(t or "" for t in texts).encode("utf-8")).hexdigest()[:16]
    return f"{index}:{digest}"


def repair_tail(path: Path) -> int:
    """Cut an unfinished last line (a run killed mid-write); returns the number of bytes dropped."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    raw = path.read_bytes()
    if raw.endswith(b"\n"):
        return 0
    cut = raw.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(cut)
    return len(raw) - cut


def _lock(path: Path):
    """An exclusive lock on ``path`` (created if missing) for as long as the returned file is open; DataError when
    another process holds it. Advisory (fcntl.flock), so only our own writers respect it; None where fcntl is absent."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, as before
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        handle.close()
        raise DataError(f"{path}: another run is writing this file now; wait for it to finish or pass another "
                        "output path") from e
    return handle


class ResultsLog:
    def __init__(self, path: str | Path, key_field: str = "key"):
        self.path = Path(path)
        if self.path.suffix != ".jsonl":
            raise DataError(f"{self.path}: results are written as JSON lines; use a .jsonl path")
        if self.path.exists() and not self.path.is_file():
            raise DataError(f"{self.path}: exists and is not a file")
        self.key_field = key_field
        self._file = None
        # Locked before reading, so what is read is what this run appends to; a file that does not exist yet is
        # locked when the first record creates it (a failed start leaves no file behind).
        self._lock = _lock(self.path) if self.path.is_file() else None
        self.dropped_bytes = repair_tail(self.path)
        self.records: dict[str, dict] = {}
        if self.path.is_file():
            for record in read_records(self.path):
                key = record.data.get(key_field)
                if not isinstance(key, str):
                    raise DataError(f"{record.where}: record has no {key_field!r} string: not written by this tool")
                if key in self.records:
                    raise DataError(f"{record.where}: duplicate {key_field} {key!r}")
                self.records[key] = record.data

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> None:
        key = record[self.key_field]
        if key in self.records:
            raise ValueError(f"{self.path}: {self.key_field} {key!r} is already written")
        if self._lock is None:
            self._lock = _lock(self.path)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across appends
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[key] = record

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:  # getattr: __del__ after a failed __init__
            self._file.close()
            self._file = None
        if getattr(self, "_lock", None) is not None:
            self._lock.close()  # closing the descriptor releases the lock
            self._lock = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
