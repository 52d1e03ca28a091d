"""``train_clm.py --streaming``: pretraining blocks tokenised and packed on the fly, for corpora beyond the disk cache.

- The corpus is cut into shards of about ``--streaming_shard_mb`` (byte ranges of .jsonl files, lines belong to the
  range they begin in; .json/.txt/.md files whole), their number a multiple of the world size. Under torchrun each
  rank reads only its own shards (accelerate's ``IterableDataset.shard``; batches are not dispatched from rank 0).
- A shard's documents are tokenised in batches and packed into ``--block_size`` blocks as one stream (the last block
  of a shard is shorter: every token is still trained on); blocks are shuffled through a buffer of
  ``--shuffle_buffer`` blocks (and the shard order), seeded, reshuffled every pass (``set_epoch``).
- Memory holds the buffer, not the corpus: flat in corpus size. Nothing is cached; ``--max_steps`` sets the length.
- Held out (``--val_set_size N``, a count): the corpus's first N documents, packed in memory; training skips them.
- Resume: the Trainer re-reads (and re-tokenises) the current pass up to the checkpoint's step and continues with the
  same blocks in the same order as the uninterrupted run. A checkpoint written after the stream was exhausted once
  cannot be continued that way (the Trainer would fast-forward in the wrong pass): :func:`check_resume` refuses it,
  naming ``--ignore_data_skip True`` (start a fresh pass; blocks already trained on come again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from utils.common.datafiles import DataError, iter_documents
from utils.common.errors import ConfigError
from utils.training.tokenized_data import READ_BATCH, Shared, document_ids, resolve


@dataclass(frozen=True)
class Piece:
    """A part of a data file: a whole file, or the lines of a .jsonl file that begin in bytes [start, end);
    ``skip`` documents at its start are held out."""

    path: str
    start: int = 0
    end: int | None = None
    skip: int = 0

    def documents(self) -> Iterator[str]:
        docs = iter_documents(self.path, self.start, self.end)
        for _ in range(self.skip):
            next(docs, None)
        yield from docs


def plan_shards(files: list[Path], world_size: int, shard_bytes: int) -> list[list[Piece]]:
    """Shards of about ``shard_bytes`` in the files' order, as many as a multiple of ``world_size`` (>= 1 per rank)."""
    sizes = [Path(f).stat().st_size for f in files]
    total = sum(sizes)
    count = world_size * max(1, math.ceil(total / (world_size * shard_bytes)))
    cuts = [round(total * k / count) for k in range(count + 1)]
    shards: list[list[Piece]] = [[] for _ in range(count)]
    offset = 0
    for path, size in zip(map(str, files), sizes):
        if path.endswith(".jsonl"):
            for k in range(count):
                lo, hi = max(cuts[k], offset), min(cuts[k + 1], offset + size)
                if lo < hi:
                    shards[k].append(Piece(path, lo - offset, hi - offset))
        else:  # read whole, by the shard its first byte falls in
            k = next(k for k in range(count) if cuts[k] <= offset < cuts[k + 1]) if offset < total else count - 1
            shards[k].append(Piece(path))
        offset += size
    return shards


def hold_out(shards: list[list[Piece]], count: int) -> tuple[list[str], list[list[Piece]]]:
    """The corpus's first ``count`` documents, and the shards without them."""
    held: list[str] = []
    out = []
    for shard in shards:
        pieces = []
        for piece in shard:
            taken = 0
            if len(held) < count:
                for doc in piece.documents():
                    held.append(doc)
                    taken += 1
                    if len(held) == count:
                        break
            pieces.append(replace(piece, skip=taken) if taken else piece)
        out.append(pieces)
    if len(held) < count:
        raise DataError(f"--val_set_size {count}: the corpus holds only {len(held)} documents")
    return held, out


def iter_blocks(token_lists: Iterable[list[int]], block_size: int) -> Iterator[list[int]]:
    """Concatenate documents and cut the stream into ``block_size`` blocks, the last one shorter (as the cached path)."""
    buffer: list[int] = []
    for ids in token_lists:
        buffer += ids
        if len(buffer) >= block_size:
            full = len(buffer) - len(buffer) % block_size
            for i in range(0, full, block_size):
                yield buffer[i:i + block_size]
            buffer = buffer[full:]
    if buffer:
        yield buffer


def _shard_token_lists(shard: list[Piece], tokenizer, add_eos: bool) -> Iterator[list[int]]:
    batch: list[str] = []
    for piece in shard:
        for doc in piece.documents():
            batch.append(doc)
            if len(batch) == READ_BATCH:
                yield from document_ids(tokenizer, batch, add_eos)
                batch = []
    if batch:
        yield from document_ids(tokenizer, batch, add_eos)


def shard_blocks(shards: list[list[Piece]], tokenizer, block_size: int, add_eos: bool):
    """The generator of the IterableDataset: datasets calls it with one shard at a time."""
    import numpy as np

    tokenizer = resolve(tokenizer)
    for shard in shards:
        for block in iter_blocks(_shard_token_lists(shard, tokenizer, add_eos), block_size):
            yield {"input_ids": np.asarray(block, dtype=np.int32)}  # 4 bytes a token in the shuffle buffer, not ~36


def training_example(row: dict) -> dict:
    """A block as the collator takes it (after the shuffle buffer): lists, every token a label."""
    ids = row["input_ids"].tolist() if hasattr(row["input_ids"], "tolist") else list(row["input_ids"])
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}


def streaming_blocks(files: list[Path], tokenizer, block_size: int, add_eos: bool, val_set_size: float, seed: int,
                     world_size: int, shuffle_buffer: int, shard_bytes: int):
    """(train IterableDataset, held-out blocks as a small Dataset or None, description for run_info)."""
    from datasets import Dataset, IterableDataset

    shards = plan_shards(files, world_size, shard_bytes)
    held, shards = hold_out(shards, int(val_set_size)) if val_set_size else ([], shards)
    train = IterableDataset.from_generator(shard_blocks, gen_kwargs={
        "shards": shards, "tokenizer": Shared(tokenizer), "block_size": block_size, "add_eos": add_eos})
    if shuffle_buffer:
        train = train.shuffle(seed=seed, buffer_size=shuffle_buffer)
    train = train.map(training_example)
    evals = None
    if held:
        blocks = list(iter_blocks(document_ids(tokenizer, held, add_eos), block_size))
        evals = Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks],
                                   "labels": blocks})
    info = {"shards": len(shards), "shuffle_buffer": shuffle_buffer, "eval_documents": len(held),
            "eval_blocks": len(evals) if evals is not None else 0}
    return train, evals, info


def check_resume(checkpoint: str | None, ignore_data_skip: bool) -> None:
    """Refuse to resume a streaming run whose checkpoint lies beyond its first pass (see the module docstring)."""

    if not checkpoint or ignore_data_skip:
        return
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    if int(state.get("epoch") or 0) >= 1:
        raise ConfigError(
            f"--resume_from_checkpoint {checkpoint}: this streaming run had read its whole corpus "
            f"{int(state['epoch'])} time(s) by then; the Trainer can only fast-forward within the first pass, so it "
            "would replay data. Add --ignore_data_skip True to resume with a fresh pass over the corpus (blocks "
            "already trained on come again), or resume from an earlier checkpoint")
