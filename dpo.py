"""Direct preference optimisation (DPO) on top of an SFT model, with trl's DPOTrainer: prefer the chosen answer.

Single device (CPU, one GPU), on a merged SFT model (a new LoRA; the reference is the same model with the adapter
disabled, so no second copy sits in memory):

    python dpo.py --base_model models/lawgpt-legal --data_path data/pref/store.jsonl --output_dir outputs/dpo-legal \\
        --beta 0.1 --learning_rate 5e-5 --batch_size 16 --micro_batch_size 2 --num_epochs 1 --cutoff_len 512 \\
        --val_set_size 100 --lora_r 8 --lora_alpha 16 --lora_target_modules "[q_proj,v_proj]"

or on base + SFT adapter (the SFT adapter is trained further; a frozen copy of it is the reference):

    python dpo.py --base_model models/base_models/legal-base --sft_adapter outputs/sft-legal <same data/training flags>

Several GPUs (QLoRA: --load_4bit True; ZeRO: --deepspeed scripts/ds_zero2.json):

    torchrun --nproc_per_node=8 dpo.py <same arguments>

then ``python merge_lora.py --lora_model outputs/dpo-legal --output_dir models/lawgpt-legal-dpo`` (the adapter's
run_info.json names its base: the merged SFT model, or the base of the SFT adapter).

Pairs are ``instruction`` (or ``prompt``), optional ``input`` and ``history``, ``chosen``, ``rejected`` in .json/.jsonl
(tools/preference_data.py writes them). The prompt is rendered with the SFT model's template (its run_info.json, or
--prompt_template_name: our templates or ``chat``) and tokenised exactly as finetune.py does (utils/training/preference_pairs.py); trl
masks the prompt. --beta, --loss_type (sigmoid; trl's others: ipo, hinge, robust, … or several with --loss_weights,
e.g. ``--loss_type sigmoid sft``) and every DPOConfig flag pass through. Everything else is shared with the other
stages (utils/training/setup.py, utils/training/trainer.py): argument groups, the legacy batch flags, resume
(--resume_from_checkpoint), saving, run_info.json. ``python dpo.py --help`` lists every flag.
"""

from dataclasses import dataclass, field
from pathlib import Path

import utils  # noqa: F401  first: it quiets bitsandbytes' CPU-kernel warning, which trl's import would print

# isort: split
from trl import DPOConfig, DPOTrainer

from utils.common.datafiles import (
    DataError,
    expand_paths,
    files_sha256,
    split_holdout,  # noqa: E402
)
from utils.common.entry import exit_process, run_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.model.chat_template import CHAT, make_prompter, write_chat_template
from utils.model.loader import read_run_info
from utils.model.prompter import Prompter
from utils.training.answer_logits import fused_head_on_answer_positions, fused_head_sees_trained_rows
from utils.training.preference_pairs import load_preference_data, preference_example
from utils.training.setup import (
    LawTrainingArguments,
    log,
    parse_args,
    prepare_model,
)
from utils.training.trainer import args_record, make_trainer, train_and_save

DEFAULT_TEMPLATE = "law_template"


@dataclass
class DpoArguments:
    data_path: list[str] = field(default_factory=list, metadata={
        "help": "preference pairs: .json/.jsonl with instruction (or prompt), input, history, chosen, rejected"})
    sft_adapter: str | None = field(default=None, metadata={
        "help": "an SFT LoRA adapter on --base_model to train further (its frozen copy is the reference); default: a "
                "new LoRA on --base_model, a merged SFT model (the reference is the model without the adapter)"})
    prompt_template_name: str | None = field(default=None, metadata={
        "help": "template the SFT model was trained with (law_template, alpaca, a .json path, or chat); default: the "
                f"one in its run_info.json, else {DEFAULT_TEMPLATE}"})
    system_prompt: str | None = field(default=None, metadata={
        "help": "system text the SFT model was trained with; default: the one in its run_info.json"})
    cutoff_len: int = field(default=512, metadata={"help": "maximum tokens of prompt + answer (longer are cut)"})
    add_eos_token: bool = field(default=True, metadata={"help": "end each answer that fits with EOS, as in SFT"})

    def __post_init__(self):
        if not self.data_path:
            raise ConfigError("--data_path is required (preference pairs, e.g. from tools/preference_data.py)")
        if self.cutoff_len < 8:
            raise ConfigError(f"--cutoff_len {self.cutoff_len}: must be at least 8")


@dataclass
class LawDPOConfig(LawTrainingArguments, DPOConfig):
    """trl's DPOConfig (--beta, --loss_type, …) under our TrainingArguments defaults: fp32 on CPU, no gradient
    checkpointing unless asked (trl turns both on)."""

    learning_rate: float = field(default=5e-5, metadata={
        "help": "peak learning rate (a LoRA value; trl's 1e-6 is for full-model DPO)"})
    # Given by our own groups: --trust_remote_code (ModelArguments), --cutoff_len (DpoArguments).
    trust_remote_code: bool = field(default=False, init=False)
    max_length: int | None = field(default=None, init=False)


class LawDPOTrainer(DPOTrainer):
    """DPOTrainer on pairs already tokenised by utils/training/preference_pairs.py with our templates (so trl does not tokenise
    them again); with a new LoRA the reference is the model with its adapters disabled."""

    def __init__(self, *args, reference_is_base: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        model = self.accelerator.unwrap_model(self.model)
        # trl copies the adapter to a frozen "ref" adapter; a fresh LoRA is zero, so that copy is the base itself.
        if reference_is_base and "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")
        elif "ref" in getattr(model, "peft_config", {}):
            copy_to_reference(model)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset

    # On a CPU trl's fused head scores the prompt positions too; the answers only: 2.6x faster steps (RESULTS.md).
    # A head whose new rows peft trains (--new_embeddings new_rows) is shown to trl as weight + bias.
    def compute_loss(self, *args, **kwargs):
        with fused_head_on_answer_positions(), fused_head_sees_trained_rows(self.accelerator.unwrap_model(self.model)):
            return super().compute_loss(*args, **kwargs)

    def compute_ref_log_probs(self, *args, **kwargs):
        with fused_head_on_answer_positions(), fused_head_sees_trained_rows(self.accelerator.unwrap_model(self.model)):
            return super().compute_ref_log_probs(*args, **kwargs)


def copy_to_reference(model) -> int:
    """Make trl's frozen "ref" adapter a full copy of the SFT adapter: trl copies the parameters named
    ``*.default.*``, which misses those named ``*.default`` at the end — peft's ``trainable_tokens_delta.default``
    (the new vocabulary rows an SFT adapter trained), so the reference was not the SFT model (huggingface/trl #1193).
    Returns how many parameters it copied."""
    import torch

    copied, params = 0, dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if name.endswith(".default"):
                ref = params.get(name[: -len("default")] + "ref")
                if ref is not None:
                    ref.copy_(param)
                    copied += 1
    return copied


def tokenize_pairs(pairs: list[dict], tokenizer, prompter, args: DpoArguments) -> list[dict | None]:
    return [preference_example(tokenizer, prompter, pair, args.cutoff_len, args.add_eos_token) for pair in pairs]


def sft_provenance(model_args, dpo_args: DpoArguments) -> dict:
    """The run_info.json of the SFT model (the adapter's, or the merged model's)."""
    return read_run_info(dpo_args.sft_adapter or model_args.base_model)


def main(model_args, lora_args, dpo_args, legacy, training) -> dict:
    from datasets import Dataset

    sft_info = sft_provenance(model_args, dpo_args)
    template = dpo_args.prompt_template_name or sft_info.get("prompt_template") or DEFAULT_TEMPLATE
    system = dpo_args.system_prompt if dpo_args.system_prompt is not None else sft_info.get("system_prompt")
    if template != CHAT:
        Prompter(template)  # an unknown template fails before the model loads
    files = expand_paths(dpo_args.data_path, (".json", ".jsonl"))
    pairs = [pair for f in files for pair in load_preference_data(f)]
    train_pairs, val_pairs = split_holdout(pairs, legacy.val_set_size, training.seed)
    training.max_length = dpo_args.cutoff_len
    prepared = prepare_model(model_args, lora_args, training, adapter=dpo_args.sft_adapter)
    prompter = make_prompter(template, prepared.tokenizer, system, where=prepared.tokenizer_dir)
    if write_chat_template(prepared.tokenizer, template, system):
        log(training, f"chat_template of the saved tokenizer: {template} (as Jinja)")
    with training.main_process_first(desc="tokenise"):
        train_ex = tokenize_pairs(train_pairs, prepared.tokenizer, prompter, dpo_args)
        val_ex = [ex for ex in tokenize_pairs(val_pairs, prepared.tokenizer, prompter, dpo_args) if ex]
    # A prompt that fills --cutoff_len leaves no answer to prefer: left out, counted and named (as in finetune.py).
    empty = [pair["where"] for pair, ex in zip(train_pairs, train_ex) if ex is None]
    if empty:
        log(training, f"{len(empty)} pairs have no answer token within --cutoff_len {dpo_args.cutoff_len} and are "
                      f"left out (first: {empty[0]})")
    train_ex = [ex for ex in train_ex if ex]
    if not train_ex:
        raise DataError(f"{', '.join(map(str, files))}: no pair keeps an answer token within --cutoff_len")
    tokens = sum(len(ex["prompt_ids"]) + len(ex["chosen_ids"]) + len(ex["rejected_ids"]) for ex in train_ex)
    reference = "the SFT adapter (a frozen copy)" if dpo_args.sft_adapter else "the base model (adapter disabled)"
    log(training, f"{len(train_ex)} training pairs ({tokens:,} tokens), {len(val_ex)} held out; template {template}; "
                  f"beta {training.beta}, loss {'+'.join(training.loss_type)}; reference: {reference}")
    trainer = make_trainer(prepared, training, Dataset.from_list(train_ex),
                           Dataset.from_list(val_ex) if val_ex else None, trainer_class=LawDPOTrainer,
                           reference_is_base=dpo_args.sft_adapter is None)
    kinds: dict[str, int] = {}
    for pair in train_pairs:
        kinds[str(pair["kind"])] = kinds.get(str(pair["kind"]), 0) + 1
    info = {
        "stage": "dpo",
        "base_model": str(Path(model_args.base_model).resolve()),
        "sft_adapter": str(Path(dpo_args.sft_adapter).resolve()) if dpo_args.sft_adapter else None,
        "sft_run_info": sft_info,
        "tokenizer": str(Path(prepared.tokenizer_dir).resolve()),
        "prompt_template": template,
        "system_prompt": system,
        "adapter": True,
        "reference": reference,
        "beta": training.beta,
        "loss_type": training.loss_type,
        "data_files": [str(f) for f in files],
        "data_sha256": files_sha256(files),
        "pairs": {"train": len(train_ex), "eval": len(val_ex), "left_out_no_answer": len(empty), "kinds": kinds},
        "train_tokens": tokens,
        "args": args_record(model_args, lora_args, dpo_args, legacy, training),
    }
    return train_and_save(trainer, prepared, training, info)


def parse(argv=None):
    model, lora, data, legacy, training = parse_args(DpoArguments, argv, training_class=LawDPOConfig)
    if lora.lora_r == 0 and data.sft_adapter is None:
        raise ConfigError("--lora_r 0 (full DPO) would need a second copy of the model as reference; dpo.py trains "
                          "LoRA: give --lora_r > 0")
    return model, lora, data, legacy, training


if __name__ == "__main__":
    exit_process(run_entry("dpo", lambda: main(*parse())))  # not sys.exit: see exit_process
