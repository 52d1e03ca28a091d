"""Continued pretraining on legal text: whole documents, packed into blocks, full or LoRA.

Single device (CPU, one GPU):

    python train_clm.py --base_model models/base_models/gemma-3-270m \\
        --tokenizer_path models/tokenizers/legal --data_path data/pretrain/statutes.jsonl \\
        --output_dir outputs/clm-legal --block_size 512 --batch_size 32 --micro_batch_size 4 \\
        --num_epochs 1 --learning_rate 3e-4 --val_set_size 200 --lora_r 8

Several GPUs (add --deepspeed scripts/ds_zero2.json or ds_zero3.json for large models):

    torchrun --nproc_per_node=8 train_clm.py <same arguments>

Every document is tokenised whole (BOS ... EOS), the documents are concatenated and cut into
``--block_size`` blocks (``--cutoff_len`` from the original scripts is the block size when
``--block_size`` is not given): nothing is truncated away. With ``--tokenizer_path`` larger than the
model's vocabulary the embeddings are grown, the new rows start as the mean of the embeddings of the
token's pieces under the base tokenizer, and ``embed_tokens``/``lm_head`` are trained (LoRA
``modules_to_save``; ``--new_embeddings new_rows`` trains only the new rows, with far less memory);
``--extend_vocab False`` trains with the base tokenizer for an ablation.
``--lora_r 0`` trains all parameters. The output directory holds the adapter (or the full model) as
safetensors, the tokenizer, run_info.json (with the held-out perplexity), TensorBoard logs and
loss_curve.png. ``python train_clm.py --help`` lists every flag, TrainingArguments' included.

Data (utils/training/tokenized_data.py): the documents are read, tokenised (``--preprocessing_num_workers`` processes) and packed
once into an Arrow cache under ``--dataset_cache_dir``, keyed on the files' contents, the tokenizer and the options,
and memory-mapped by every rank. ``--streaming`` (utils/training/streamed_blocks.py) tokenises and packs on the fly instead — for a
corpus larger than the disk — with a shuffle buffer and a shard per rank; it needs ``--max_steps``.
"""

from dataclasses import dataclass, field
from pathlib import Path

from utils.common.datafiles import DataError, expand_paths, file_digests
from utils.common.entry import exit_process, run_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.training.setup import (
    log,
    parse_args,
    prepare_model,
    resolve_resume,
)
from utils.training.streamed_blocks import check_resume, streaming_blocks
from utils.training.tokenized_data import PipelineArguments, build_clm
from utils.training.trainer import args_record, make_trainer, train_and_save

DOC_SUFFIXES = (".json", ".jsonl", ".txt", ".md")


@dataclass
class ClmDataArguments(PipelineArguments):
    data_path: list[str] = field(default_factory=list, metadata={
        "help": "pretraining documents: .json/.jsonl with 'content', .txt/.md files, or directories of them"})
    block_size: int | None = field(default=None, metadata={"help": "tokens per training block (default: --cutoff_len)"})
    cutoff_len: int = field(default=512, metadata={"help": "the original's flag: block size if --block_size is unset"})
    add_eos_token: bool = field(default=True, metadata={"help": "end every document with EOS before packing"})
    train_on_inputs: bool = field(default=True, metadata={
        "help": "accepted for the original scripts: pretraining always trains on every token"})
    streaming: bool = field(default=False, metadata={
        "help": "tokenise and pack on the fly (no cache; for corpora larger than the disk): needs --max_steps; "
                "--val_set_size is then a count (the corpus's first documents)"})
    shuffle_buffer: int = field(default=10000, metadata={"help": "--streaming: blocks in the shuffle buffer (0: "
                                                                 "corpus order)"})
    streaming_shard_mb: int = field(default=256, metadata={
        "help": "--streaming: megabytes of corpus per shard (shards are spread over the ranks)"})

    def __post_init__(self):
        super().__post_init__()
        if not self.data_path:
            raise ConfigError("--data_path is required (pretraining documents)")
        if not self.train_on_inputs:
            raise ConfigError("--train_on_inputs False means nothing in pretraining (there is no prompt): drop it")
        self.block_size = self.block_size or self.cutoff_len
        if self.block_size < 16:
            raise ConfigError(f"--block_size {self.block_size}: must be at least 16")
        if self.shuffle_buffer < 0 or self.streaming_shard_mb < 1:
            raise ConfigError("--shuffle_buffer must be >= 0 and --streaming_shard_mb >= 1")


def _check_streaming(legacy, training) -> None:
    if training.max_steps <= 0:
        raise ConfigError("--streaming needs --max_steps: a stream has no length to count epochs by")
    if legacy.val_set_size and (legacy.val_set_size < 1 or legacy.val_set_size != int(legacy.val_set_size)):
        raise ConfigError(f"--val_set_size {legacy.val_set_size}: with --streaming give a count of documents (the "
                          "corpus's first ones are held out; a fraction needs the corpus size)")
    check_resume(resolve_resume(training), training.ignore_data_skip)


def training_data(files: list[Path], tokenizer, data_args: ClmDataArguments, legacy, training):
    """(train dataset, held-out dataset or None, what run_info records): the cached blocks of utils/training/tokenized_data.py, or
    with ``--streaming`` an IterableDataset sharded over the ranks (sets ``dispatch_batches=False`` on ``training``)."""
    block_size = data_args.block_size
    if data_args.streaming:
        training.accelerator_config.dispatch_batches = False  # each rank reads its own shards
        train_ds, eval_ds, stream = streaming_blocks(
            files, tokenizer, block_size, data_args.add_eos_token, legacy.val_set_size, training.seed,
            training.world_size, data_args.shuffle_buffer, data_args.streaming_shard_mb << 20)
        data = {"data_sha256": None, "data_bytes": sum(f.stat().st_size for f in files), "streaming": stream,
                "documents": {"train": None, "eval": stream["eval_documents"]}, "train_tokens": None,
                "train_blocks": None, "eval_blocks": stream["eval_blocks"]}
        log(training, f"streaming {data['data_bytes']:,} bytes in {stream['shards']} shards, blocks of {block_size}, "
                      f"shuffle buffer {data_args.shuffle_buffer}; held out: {stream['eval_documents']} documents, "
                      f"{stream['eval_blocks']} blocks")
    else:
        data_sha256, digests = file_digests(files)
        with training.main_process_first(desc="tokenise and pack"):
            built = build_clm(files, digests, tokenizer, block_size, data_args.add_eos_token, legacy.val_set_size,
                              training.seed, data_args)
        train_ds, eval_ds, meta = built.train, built.eval, built.meta
        if not meta["train_tokens"]:
            raise DataError(f"{', '.join(map(str, files))}: no tokens to train on")
        data = {"data_sha256": data_sha256, "data_cache": {"path": str(built.path), "reused": built.reused},
                **{k: meta[k] for k in ("documents", "train_tokens", "train_blocks", "eval_blocks")}}
        log(training, f"{meta['documents']['train']} documents -> {meta['train_tokens']:,} tokens -> "
                      f"{meta['train_blocks']} blocks of {block_size}; held out: {meta['documents']['eval']} "
                      f"documents, {meta['eval_blocks']} blocks; {'reused' if built.reused else 'built'} {built.path}")
    return train_ds, eval_ds, data


def main(model_args, lora_args, data_args, legacy, training) -> dict:
    files = expand_paths(data_args.data_path, DOC_SUFFIXES)
    if data_args.streaming:
        _check_streaming(legacy, training)
    prepared = prepare_model(model_args, lora_args, training)
    limit = getattr(prepared.model.config, "max_position_embeddings", None)
    if limit and data_args.block_size > limit:
        raise ConfigError(f"--block_size {data_args.block_size} exceeds the model's {limit} positions")
    train_ds, eval_ds, data = training_data(files, prepared.tokenizer, data_args, legacy, training)
    trainer = make_trainer(prepared, training, train_ds, eval_ds)
    info = {
        "stage": "clm",
        "base_model": str(Path(model_args.base_model).resolve()),
        "tokenizer": str(Path(prepared.tokenizer_dir).resolve()),
        "adapter": lora_args.lora_r > 0,
        "data_files": [str(f) for f in files],
        **data,
        "block_size": data_args.block_size,
        "args": args_record(model_args, lora_args, data_args, legacy, training),
    }
    return train_and_save(trainer, prepared, training, info)


def parse(argv=None):
    return parse_args(ClmDataArguments, argv)


if __name__ == "__main__":
    exit_process(run_entry("train_clm", lambda: main(*parse())))  # not sys.exit: see exit_process
