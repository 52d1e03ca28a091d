"""Training data on Hugging Face ``datasets``: read → tokenise → pack → an Arrow cache that every rank memory-maps.

train_clm.py and finetune.py build their data here (``--streaming`` pretraining is utils/training/streamed_blocks.py):

- **read**: ``Dataset.from_generator`` over utils/common/datafiles.py's readers, in one process, so a malformed record stops the
  build with ``file:line: what`` (validated while reading; a .jsonl file is read line by line, never whole);
- **tokenise**: ``Dataset.map(batched=True, num_proc=--preprocessing_num_workers)``, each document whole (BOS … EOS),
  each SFT example masked by :func:`utils.common.datafiles.sft_example`;
- **pack**: blocks are ``--block_size`` slices of the concatenated token column, cut straight from the memory-mapped
  Arrow data (a group_texts-style batched map would cut or drop a remainder at every batch boundary; this gives
  exactly the blocks of one concatenated stream, the last one shorter: every token is trained on);
- **cache**: ``<--dataset_cache_dir>/<kind>-<key>/{train,eval}.arrow`` + meta.json, the key a hash of the files'
  contents, the tokenizer, and every option that changes the result. A build goes to a temporary directory renamed
  into place when complete, so a crashed or concurrent build never leaves a half cache. Under torchrun the main
  process builds it (inside ``main_process_first``) and every rank opens the same files, memory-mapped: no per-rank
  copies, and no Python lists of the corpus in any process.

Stored columns are ``input_ids`` (and ``labels`` for SFT) as int32; ``attention_mask`` (all ones) and pretraining
``labels`` (the block itself) are added per batch by :func:`training_columns`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from utils.common.datafiles import (
    IGNORE_INDEX,
    DataError,
    holdout_indices,
    iter_documents,
    iter_instruction_data,
    sft_example,
)
from utils.common.errors import ConfigError
from utils.common.paths import REPO_ROOT

PIPELINE_VERSION = 1  # part of every cache key: bump it when what a build writes changes
READ_BATCH = 256  # documents per tokeniser call and per Arrow write
BLOCKS_PER_WRITE = 1024


@dataclass
class PipelineArguments:
    """Data preparation flags shared by train_clm.py and finetune.py."""

    preprocessing_num_workers: int | None = field(default=None, metadata={
        "help": "processes that tokenise (datasets map num_proc; default 1). Only the main process builds the data"})
    dataset_cache_dir: str | None = field(default=None, metadata={
        "help": "where tokenised data is cached (default $LAWGPT_DATASET_CACHE or .cache/datasets in the repository); "
                "the key covers the files' contents, the tokenizer and the options, so a change never reuses a stale "
                "cache"})

    def __post_init__(self):

        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise ConfigError(f"--preprocessing_num_workers {self.preprocessing_num_workers}: must be >= 1")

    def cache_root(self) -> Path:
        return Path(self.dataset_cache_dir or os.environ.get("LAWGPT_DATASET_CACHE") or REPO_ROOT / ".cache" / "datasets")


# ---------------------------------------------------------------- handing big objects to workers

_SHARED: dict[str, object] = {}


class Shared:
    """A handle on a big object (a tokenizer) that pickles as a key where workers are forked (they inherit the object
    from this process) and by value otherwise. datasets pickles map arguments and hashes generator arguments with
    dill: a 262k-token tokenizer takes ~10 s each time. Functions given one call :func:`resolve`."""

    def __init__(self, obj):
        self.key = f"{os.getpid()}:{id(obj)}"
        _SHARED[self.key] = obj

    def __reduce__(self):
        import multiprocess

        if multiprocess.get_start_method() == "fork":
            return _shared_object, (self.key,)
        return _by_value, (_SHARED[self.key],)


def _shared_object(key: str):
    return _SHARED[key]


def _by_value(obj):
    return obj


def resolve(obj):
    return _SHARED[obj.key] if isinstance(obj, Shared) else obj


@contextmanager
def _fn_kwargs(num_proc: int | None, **objects) -> Iterator[dict]:
    """fn_kwargs for ``Dataset.map(num_proc=…)``: with workers, they reach forked workers without being pickled."""
    if not num_proc:
        yield objects
        return
    handles = {name: Shared(obj) for name, obj in objects.items()}
    try:
        yield handles
    finally:
        for handle in handles.values():
            _SHARED.pop(handle.key, None)


# ---------------------------------------------------------------- keys


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides the ids: the backend's full definition (vocabulary, normaliser, BOS post-processor, added tokens)
    and the special tokens and chat template the data code reads."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()  # ~33 MB of JSON for Gemma's 262k vocabulary: hashed in pieces, not copied whole
        for i in range(0, len(body), 1 << 20):
            digest.update(body[i:i + (1 << 20)].encode())
        del body
    else:  # a tokenizer without a tokenizers backend: datasets' own hash of the object
        from datasets.fingerprint import Hasher

        digest.update(Hasher.hash(tokenizer).encode())
    extra = [type(tokenizer).__name__, tokenizer.bos_token_id, tokenizer.eos_token_id,
             sorted(tokenizer.all_special_ids), getattr(tokenizer, "chat_template", None)]
    digest.update(json.dumps(extra, ensure_ascii=False).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- the cache


@dataclass
class Built:
    """A built (or reused) data set: memory-mapped train/eval datasets and what meta.json records."""

    train: object
    eval: object | None
    meta: dict
    path: Path
    reused: bool


def _cached(root: Path, kind: str, key_fields: dict, build: Callable[[Path], dict]) -> tuple[Path, dict, bool]:
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:32]
    final = root / f"{kind}-{key}"
    if (final / "meta.json").is_file():
        return final, json.loads((final / "meta.json").read_text(encoding="utf-8")), True
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".building-{kind}-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        meta = build(tmp)
        for leftover in tmp.iterdir():  # intermediate Arrow files of datasets
            if leftover.name not in ("train.arrow", "eval.arrow"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        meta = {**meta, "key": key_fields}
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, final)  # atomic: the cache entry appears complete or not at all
        except OSError:
            if not (final / "meta.json").is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, meta, False


def _open(path: Path, meta: dict, reused: bool) -> Built:
    from datasets import Dataset

    train = Dataset.from_file(str(path / "train.arrow")).with_transform(training_columns)
    has_eval = (path / "eval.arrow").is_file()
    evals = Dataset.from_file(str(path / "eval.arrow")).with_transform(training_columns) if has_eval else None
    return Built(train, evals, meta, path, reused)


def training_columns(batch: dict) -> dict:
    """What the collator gets: the stored ids, an all-ones attention mask, and labels (pretraining: the ids)."""
    ids = batch["input_ids"]
    return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids],
            "labels": batch["labels"] if "labels" in batch else [list(x) for x in ids]}


def _read(generator, gen_kwargs: dict, features, work: Path):
    """Dataset.from_generator in this process: a DataError raised while reading comes out as itself."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    try:
        return Dataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs, cache_dir=str(work / "read"),
                                      fingerprint=hashlib.sha256(str(work).encode()).hexdigest()[:16])
    except DatasetGenerationError as e:
        if isinstance(e.__cause__, DataError):
            raise e.__cause__ from None
        raise
    except ValueError as e:  # datasets' words for a generator that yielded nothing
        if "corresponds to no data" not in str(e):
            raise
        raise DataError(f"{', '.join(map(str, gen_kwargs['files']))}: no records to train on (empty files?)") from None


def _split(dataset, val_set_size: float, seed: int):
    """The held-out rows of utils.common.datafiles.split_holdout (same seed, same choice), as datasets; the training indices
    as a numpy array (8 bytes a row, not a list of Python ints)."""
    import numpy as np


    if not val_set_size:
        return dataset, None
    held = np.array(holdout_indices(len(dataset), val_set_size, seed), dtype=np.int64)
    return dataset.select(np.delete(np.arange(len(dataset), dtype=np.int64), held)), dataset.select(held)


# ---------------------------------------------------------------- pretraining: documents → blocks


def document_ids(tokenizer, docs: list[str], add_eos: bool = True) -> list[list[int]]:
    """Token ids of each whole document (never truncated), with the tokenizer's BOS and an EOS
    appended so that documents stay separable once they are packed together."""
    out = []
    eos = tokenizer.eos_token_id
    for ids in tokenizer(docs, add_special_tokens=True, return_attention_mask=False)["input_ids"]:
        if add_eos and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        out.append(ids)
    return out


def _documents(files: list[str]):
    for path in files:
        for text in iter_documents(path):
            yield {"text": text}


def _tokenise_documents(batch: dict, tokenizer, add_eos: bool) -> dict:
    return {"input_ids": document_ids(tokenizer, batch["text"], add_eos)}


def _ids_features(*columns: str):
    from datasets import Features, List, Value

    return Features({c: List(Value("int32")) for c in columns})


def _num_proc(workers: int, rows: int) -> int | None:
    return workers if workers > 1 and rows >= 4 * READ_BATCH else None  # a small set is quicker in this process


def _tokenise(docs, tokenizer, add_eos: bool, workers: int, path: Path):
    num_proc = _num_proc(workers, len(docs))
    with _fn_kwargs(num_proc, tokenizer=tokenizer, add_eos=add_eos) as fn_kwargs:
        return docs.map(_tokenise_documents, batched=True, batch_size=READ_BATCH, writer_batch_size=READ_BATCH,
                        num_proc=num_proc, remove_columns=docs.column_names, fn_kwargs=fn_kwargs,
                        features=_ids_features("input_ids"), cache_file_name=str(path),
                        new_fingerprint=path.stem + hashlib.sha256(str(path).encode()).hexdigest()[:16],
                        desc=f"tokenise ({path.stem})")


def write_blocks(tokens, block_size: int, path: Path) -> tuple[int, int]:
    """Cut the concatenated ``input_ids`` of ``tokens`` into ``block_size`` blocks, written as an Arrow file.

    The concatenation is the token column's value buffers (zero-copy views of the memory-mapped data); each write
    copies at most BLOCKS_PER_WRITE blocks. Returns (tokens, blocks).
    """
    import numpy as np
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter

    if block_size < 2:
        raise DataError(f"block_size {block_size}: must be at least 2")
    column = tokens.data.column("input_ids")
    flat = pa.chunked_array([chunk.flatten() for chunk in column.chunks], type=pa.int32())
    total, step = len(flat), block_size * BLOCKS_PER_WRITE
    writer = ArrowWriter(features=_ids_features("input_ids"), path=str(path))
    for start in range(0, total, step):
        values = flat.slice(start, step).combine_chunks()
        offsets = np.append(np.arange(0, len(values), block_size, dtype=np.int32), np.int32(len(values)))
        writer.write_table(pa.table({"input_ids": pa.ListArray.from_arrays(pa.array(offsets), values)}))
    writer.finalize()
    return total, -(-total // block_size)


def build_clm(files: list[Path], digests: list[str], tokenizer, block_size: int, add_eos: bool,
              val_set_size: float, seed: int, args: PipelineArguments) -> Built:
    """Pretraining blocks (train, held-out eval) of ``files``: built once per key, then memory-mapped."""
    from datasets import Features, Value

    key = {"kind": "clm", "version": PIPELINE_VERSION, "files": digests, "tokenizer": tokenizer_fingerprint(tokenizer),
           "block_size": block_size, "add_eos": add_eos, "val_set_size": float(val_set_size), "seed": seed}
    workers = args.preprocessing_num_workers or 1

    def build(work: Path) -> dict:
        docs = _read(_documents, {"files": [str(f) for f in files]}, Features({"text": Value("string")}), work)
        train_docs, eval_docs = _split(docs, val_set_size, seed)
        meta = {"documents": {"train": len(train_docs), "eval": len(eval_docs) if eval_docs is not None else 0}}
        tokens, meta["train_blocks"] = write_blocks(_tokenise(train_docs, tokenizer, add_eos, workers,
                                                              work / "tokens-train.arrow"), block_size,
                                                    work / "train.arrow")
        meta["train_tokens"], meta["eval_blocks"] = tokens, 0
        if eval_docs is not None:
            _, meta["eval_blocks"] = write_blocks(_tokenise(eval_docs, tokenizer, add_eos, workers,
                                                            work / "tokens-eval.arrow"), block_size, work / "eval.arrow")
        return meta

    return _open(*_cached(args.cache_root(), "clm", key, build))


# ---------------------------------------------------------------- instruction tuning: records → masked examples


def _instructions(files: list[str]):
    for path in files:
        yield from iter_instruction_data(path)


def _tokenise_examples(batch: dict, tokenizer, prompter, cutoff_len: int, train_on_inputs: bool,
                       add_eos: bool) -> dict:
    out = {"input_ids": [], "labels": [], "has_answer": [], "where": batch["where"]}
    for instruction, input_, output, history in zip(batch["instruction"], batch["input"], batch["output"],
                                                    batch["history"]):
        segments = prompter.segments(instruction, input_, output, [tuple(turn) for turn in history])
        example = sft_example(tokenizer, segments, cutoff_len, train_on_inputs, add_eos, prompter.add_special_tokens)
        out["input_ids"].append(example["input_ids"])
        out["labels"].append(example["labels"])
        out["has_answer"].append(any(t != IGNORE_INDEX for t in example["labels"]))
    return out


def prompter_key(prompter) -> dict:
    """What of a prompter decides the examples (for the cache key): our template's texts, or the chat prompter's
    system text and turn end (the chat template itself is in the tokenizer's fingerprint)."""
    if dataclasses.is_dataclass(prompter):
        return json.loads(json.dumps(dataclasses.asdict(prompter), ensure_ascii=False))
    return {"name": prompter.name, "system": prompter.default_system, "turn_end": prompter.turn_end,
            "needs_eos": prompter.needs_eos, "add_special_tokens": prompter.add_special_tokens}


def build_sft(files: list[Path], digests: list[str], tokenizer, prompter, template_key: dict, cutoff_len: int,
              train_on_inputs: bool, add_eos: bool, val_set_size: float, seed: int, args: PipelineArguments) -> Built:
    """SFT examples (prompt masked with IGNORE_INDEX); training examples without an answer token within
    ``cutoff_len`` are left out, counted in meta (``left_out_no_answer``, ``first_left_out``)."""
    import numpy as np
    import pyarrow.compute as pc
    from datasets import Features, List, Value

    key = {"kind": "sft", "version": PIPELINE_VERSION, "files": digests, "tokenizer": tokenizer_fingerprint(tokenizer),
           "template": template_key, "cutoff_len": cutoff_len, "train_on_inputs": train_on_inputs, "add_eos": add_eos,
           "val_set_size": float(val_set_size), "seed": seed}
    workers = args.preprocessing_num_workers or 1
    string = Value("string")
    features = Features({"instruction": string, "input": string, "output": string,
                         "history": List(List(string)), "where": string})
    out_features = _ids_features("input_ids", "labels")
    out_features.update({"has_answer": Value("bool"), "where": string})
    options = {"cutoff_len": cutoff_len, "train_on_inputs": train_on_inputs, "add_eos": add_eos}

    def tokenise(items, path: Path):
        num_proc = _num_proc(workers, len(items))
        with _fn_kwargs(num_proc, tokenizer=tokenizer, prompter=prompter, **options) as fn_kwargs:
            return items.map(_tokenise_examples, batched=True, batch_size=READ_BATCH, writer_batch_size=READ_BATCH,
                             num_proc=num_proc, remove_columns=items.column_names, fn_kwargs=fn_kwargs,
                             features=out_features, cache_file_name=str(path), desc=f"tokenise ({path.stem})",
                             new_fingerprint=path.stem + hashlib.sha256(str(path).encode()).hexdigest()[:16])

    def build(work: Path) -> dict:
        items = _read(_instructions, {"files": [str(f) for f in files]}, features, work)
        train_items, eval_items = _split(items, val_set_size, seed)
        train = tokenise(train_items, work / "examples-train.arrow")
        has_answer = train.data.column("has_answer").to_numpy(zero_copy_only=False)
        left_out = np.flatnonzero(~has_answer)
        meta = {"examples": {"train": int(has_answer.sum()), "eval": len(eval_items) if eval_items is not None else 0,
                             "left_out_no_answer": int(left_out.size)},
                "first_left_out": train[int(left_out[0])]["where"] if left_out.size else None}
        if not has_answer.any():
            raise DataError(f"{', '.join(map(str, files))}: no example keeps an answer token within --cutoff_len")
        if left_out.size:
            train = train.select(np.flatnonzero(has_answer))
        train = train.remove_columns(["has_answer", "where"])
        train = train.flatten_indices(cache_file_name=str(work / "train.arrow"), new_fingerprint="train")
        meta["train_tokens"] = int(pc.sum(pc.list_value_length(train.data.column("input_ids"))).as_py() or 0)
        if eval_items is not None:
            evals = tokenise(eval_items, work / "examples-eval.arrow").remove_columns(["has_answer", "where"])
            evals.flatten_indices(cache_file_name=str(work / "eval.arrow"), new_fingerprint="eval")
        return meta

    return _open(*_cached(args.cache_root(), "sft", key, build))
