"""LoRA instruction tuning on Alpaca-style legal Q&A (single- and multi-turn), prompt tokens masked.

Single device (CPU, one GPU):

    python finetune.py --base_model outputs/legal-base --data_path data/instruct/train.jsonl \\
        --output_dir outputs/sft-legal --prompt_template_name law_template \\
        --batch_size 32 --micro_batch_size 4 --num_epochs 3 --learning_rate 3e-4 --cutoff_len 512 \\
        --val_set_size 200 --lora_r 8 --lora_alpha 16 --lora_target_modules "[q_proj,v_proj]"

Several GPUs (QLoRA on a big model: add --load_4bit True; ZeRO: --deepspeed scripts/ds_zero2.json):

    torchrun --nproc_per_node=8 finetune.py <same arguments>

The tokenizer's own chat template: --prompt_template_name chat (a chat model: only the assistant turns, with
their end-of-turn token, are trained); --system_prompt sets the system text. The trained format is written into
the saved tokenizer's chat_template (our templates as Jinja), so any OpenAI-compatible server prompts the model
as it was trained.

The original LaWGPT command line (scripts/finetune.sh) runs unchanged: --batch_size / --micro_batch_size
become gradient accumulation (batch_size / micro_batch_size / world size), --num_epochs, the wandb flags
(with or without a value) map to --report_to, --resume_from_checkpoint may name the output directory
itself. Records are ``instruction``, optional ``input``, ``output``, optional ``history`` (earlier
[question, answer] turns, whose answers are trained too). Labels: prompt tokens are IGNORE_INDEX unless
``--train_on_inputs``; examples are cut at ``--cutoff_len``; EOS ends every answer that fits
(``--add_eos_token``). The output directory holds the adapter (peft save_pretrained, safetensors), the
tokenizer and run_info.json with ``base_model`` and ``prompt_template``, so merge_lora.py and infer.py
find both without being told. ``python finetune.py --help`` lists every flag.

Data (utils/training/tokenized_data.py): examples are tokenised once (``--preprocessing_num_workers`` processes) into an Arrow
cache under ``--dataset_cache_dir``, keyed on the files' contents, the tokenizer, the template and the options, and
memory-mapped by every rank.
"""

from dataclasses import dataclass, field
from pathlib import Path

from utils.common.datafiles import (
    expand_paths,
    file_digests,  # noqa: E402
)
from utils.common.entry import exit_process, run_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.model.chat_template import CHAT, make_prompter, write_chat_template
from utils.model.prompter import Prompter
from utils.training.setup import (
    log,
    parse_args,
    prepare_model,
)
from utils.training.tokenized_data import PipelineArguments, build_sft, prompter_key
from utils.training.trainer import args_record, make_trainer, train_and_save


@dataclass
class SftDataArguments(PipelineArguments):
    data_path: list[str] = field(default_factory=list, metadata={
        "help": "instruction data: .json/.jsonl with instruction, input, output, history (or directories of them)"})
    prompt_template_name: str = field(default="law_template", metadata={
        "help": "template name in templates/ (law_template, alpaca), a path to a .json template, or 'chat' = the "
                "tokenizer's own chat_template (only the assistant turns are trained)"})
    system_prompt: str | None = field(default=None, metadata={
        "help": "system text to train with: replaces the template's system text (a newline follows it); with "
                "'chat' it is the system message of every example (default: the template's / none)"})
    cutoff_len: int = field(default=512, metadata={"help": "maximum tokens per example (longer ones are truncated)"})
    train_on_inputs: bool = field(default=False, metadata={
        "help": "also train on the prompt tokens (default: they get IGNORE_INDEX)"})
    add_eos_token: bool = field(default=True, metadata={"help": "end each answer that fits with EOS"})

    def __post_init__(self):
        super().__post_init__()
        if not self.data_path:
            raise ConfigError("--data_path is required (instruction data)")
        if self.cutoff_len < 8:
            raise ConfigError(f"--cutoff_len {self.cutoff_len}: must be at least 8")


def main(model_args, lora_args, data_args, legacy, training) -> dict:
    template = data_args.prompt_template_name
    if template != CHAT:
        Prompter(template)  # an unknown template fails before the model loads
    files = expand_paths(data_args.data_path, (".json", ".jsonl"))
    prepared = prepare_model(model_args, lora_args, training)
    prompter = make_prompter(template, prepared.tokenizer, data_args.system_prompt, where=prepared.tokenizer_dir)
    # The format travels with the model: servers that read the tokenizer's chat_template prompt it as trained.
    if write_chat_template(prepared.tokenizer, template, data_args.system_prompt):
        log(training, f"chat_template of the saved tokenizer: {template} (as Jinja)")
    data_sha256, digests = file_digests(files)
    with training.main_process_first(desc="tokenise"):
        built = build_sft(files, digests, prepared.tokenizer, prompter, prompter_key(prompter), data_args.cutoff_len,
                          data_args.train_on_inputs, data_args.add_eos_token and prompter.needs_eos,
                          legacy.val_set_size, training.seed, data_args)
    # A prompt longer than cutoff_len leaves no answer token: such an example teaches nothing (and a batch
    # of them has no loss), so it is left out — counted, named and recorded.
    meta, examples = built.meta, built.meta["examples"]
    if examples["left_out_no_answer"]:
        log(training, f"{examples['left_out_no_answer']} examples have no answer token within --cutoff_len "
                      f"{data_args.cutoff_len} and are left out (first: {meta['first_left_out']})")
    train_ds, val_ds = built.train, built.eval
    log(training, f"{examples['train']} training examples ({meta['train_tokens']:,} tokens), {examples['eval']} held "
                  f"out; template {data_args.prompt_template_name}; {'reused' if built.reused else 'built'} "
                  f"{built.path}")
    trainer = make_trainer(prepared, training, train_ds, val_ds)
    info = {
        "stage": "sft",
        "base_model": str(Path(model_args.base_model).resolve()),
        "tokenizer": str(Path(prepared.tokenizer_dir).resolve()),
        "prompt_template": template,
        "system_prompt": data_args.system_prompt,
        "adapter": lora_args.lora_r > 0,
        "data_files": [str(f) for f in files],
        "data_sha256": data_sha256,
        "data_cache": {"path": str(built.path), "reused": built.reused},
        "examples": examples,
        "train_tokens": meta["train_tokens"],
        "args": args_record(model_args, lora_args, data_args, legacy, training),
    }
    return train_and_save(trainer, prepared, training, info)


def parse(argv=None):
    return parse_args(SftDataArguments, argv)


if __name__ == "__main__":
    exit_process(run_entry("finetune", lambda: main(*parse())))  # not sys.exit: see exit_process
