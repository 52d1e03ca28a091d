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
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from utils.data import DataError, expand_paths, files_sha256, load_documents, pack_blocks, tokenize_documents
from utils.training import (
    ConfigError,
    args_record,
    log,
    make_trainer,
    parse_args,
    prepare_model,
    run_entry,
    split_holdout,
    train_and_save,
)

DOC_SUFFIXES = (".json", ".jsonl", ".txt", ".md")


@dataclass
class ClmDataArguments:
    data_path: list[str] = field(default_factory=list, metadata={
        "help": "pretraining documents: .json/.jsonl with 'content', .txt/.md files, or directories of them"})
    block_size: int | None = field(default=None, metadata={"help": "tokens per training block (default: --cutoff_len)"})
    cutoff_len: int = field(default=512, metadata={"help": "the original's flag: block size if --block_size is unset"})
    add_eos_token: bool = field(default=True, metadata={"help": "end every document with EOS before packing"})
    train_on_inputs: bool = field(default=True, metadata={
        "help": "accepted for the original scripts: pretraining always trains on every token"})

    def __post_init__(self):
        if not self.data_path:
            raise ConfigError("--data_path is required (pretraining documents)")
        if not self.train_on_inputs:
            raise ConfigError("--train_on_inputs False means nothing in pretraining (there is no prompt): drop it")
        self.block_size = self.block_size or self.cutoff_len
        if self.block_size < 16:
            raise ConfigError(f"--block_size {self.block_size}: must be at least 16")


def blocks_dataset(blocks: list[list[int]]) -> list[dict]:
    return [{"input_ids": b, "attention_mask": [1] * len(b), "labels": list(b)} for b in blocks]


def main(model_args, lora_args, data_args, legacy, training) -> dict:
    files = expand_paths(data_args.data_path, DOC_SUFFIXES)
    docs = [doc for f in files for doc in load_documents(f)]
    train_docs, val_docs = split_holdout(docs, legacy.val_set_size, training.seed)
    prepared = prepare_model(model_args, lora_args, training)
    limit = getattr(prepared.model.config, "max_position_embeddings", None)
    if limit and data_args.block_size > limit:
        raise ConfigError(f"--block_size {data_args.block_size} exceeds the model's {limit} positions")
    tokenizer = prepared.tokenizer
    with training.main_process_first(desc="tokenise and pack"):
        train_ids = tokenize_documents(tokenizer, train_docs, data_args.add_eos_token)
        train_blocks = pack_blocks(train_ids, data_args.block_size)
        val_blocks = pack_blocks(tokenize_documents(tokenizer, val_docs, data_args.add_eos_token),
                                 data_args.block_size) if val_docs else []
    if not train_blocks:
        raise DataError(f"{', '.join(map(str, files))}: no tokens to train on")
    train_tokens = sum(len(b) for b in train_blocks)
    log(training, f"{len(train_docs)} documents -> {train_tokens:,} tokens -> {len(train_blocks)} blocks of "
                  f"{data_args.block_size}; held out: {len(val_docs)} documents, {len(val_blocks)} blocks")
    trainer = make_trainer(prepared, training, blocks_dataset(train_blocks),
                           blocks_dataset(val_blocks) if val_blocks else None)
    info = {
        "stage": "clm",
        "base_model": str(Path(model_args.base_model).resolve()),
        "tokenizer": str(Path(prepared.tokenizer_dir).resolve()),
        "adapter": lora_args.lora_r > 0,
        "data_files": [str(f) for f in files],
        "data_sha256": files_sha256(files),
        "documents": {"train": len(train_docs), "eval": len(val_docs)},
        "block_size": data_args.block_size,
        "train_tokens": train_tokens,
        "train_blocks": len(train_blocks),
        "eval_blocks": len(val_blocks),
        "args": args_record(model_args, lora_args, data_args, legacy, training),
    }
    return train_and_save(trainer, prepared, training, info)


def parse(argv=None):
    return parse_args(ClmDataArguments, argv)


if __name__ == "__main__":
    sys.exit(run_entry("train_clm", parse, main))
