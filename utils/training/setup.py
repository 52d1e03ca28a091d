"""Training setup shared by train_clm.py, finetune.py and dpo.py: arguments, the legacy flags, the model and LoRA.

The stages parse the same argument groups (:class:`ModelArguments`, :class:`LoraArguments`,
:class:`LegacyArguments`, :class:`LawTrainingArguments`), load through utils/modeling and wrap with LoRA here;
utils/training/trainer.py builds their Trainer and saves, so a fix to any of it reaches every stage.
"""

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from utils.common.errors import ConfigError
from utils.model.loader import embedding_rows, load_model, load_tokenizer, resize_for_tokenizer
from utils.model.vocabulary import NEW_ROW_INITS, init_new_embeddings

# ---------------------------------------------------------------- argument groups

NEW_EMBEDDINGS = ("full", "new_rows")  # how LoRA trains the embeddings of a grown vocabulary
# peft's keyword for every linear layer except the output head (the QLoRA paper's setting; LLaMA-Factory's `all`)
ALL_LINEAR = "all-linear"


@dataclass
class ModelArguments:
    base_model: str = field(default=None, metadata={"help": "local directory of the base model (safetensors)"})
    tokenizer_path: str | None = field(
        default=None, metadata={"help": "tokenizer to train with, e.g. an extended one from tools/merge_vocabulary.py "
                                        "(default: the base model's)"})
    extend_vocab: bool = field(
        default=True, metadata={"help": "use --tokenizer_path and grow the embeddings for it; False trains with the "
                                        "base tokenizer instead (ablation)"})
    new_embeddings: str = field(
        default="full", metadata={"help": "LoRA with a grown vocabulary: 'full' trains the whole embedding and "
                                          "lm_head (modules_to_save); 'new_rows' trains only the new tokens' rows "
                                          "(peft trainable tokens: much less memory, the base vocabulary stays as it was)"})
    new_row_init: str = field(
        default="mean_norm", metadata={"help": "how a grown vocabulary's new rows start: 'mean_norm' (the mean of their "
                                               "base pieces' rows at the pieces' mean norm) or 'mean' (the plain mean, "
                                               "whose smaller norm keeps new tokens from ever winning the softmax)"})
    dtype: str = field(default="auto", metadata={"help": "weights dtype: auto (fp32 on CPU and for full training, "
                                                         "bf16/fp16 for LoRA on GPU), float32, bfloat16, float16"})
    load_8bit: bool = field(default=False, metadata={"help": "load the base model in 8-bit (CUDA, bitsandbytes)"})
    load_4bit: bool = field(default=False, metadata={"help": "load the base model in 4-bit nf4 for QLoRA (CUDA)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow model code from the model directory"})

    def __post_init__(self):
        if not self.base_model:
            raise ConfigError("--base_model is required (a local model directory)")
        if self.new_embeddings not in NEW_EMBEDDINGS:
            raise ConfigError(f"--new_embeddings {self.new_embeddings!r}: choose one of {', '.join(NEW_EMBEDDINGS)}")
        if self.new_row_init not in NEW_ROW_INITS:
            raise ConfigError(f"--new_row_init {self.new_row_init!r}: choose one of {', '.join(NEW_ROW_INITS)}")


@dataclass
class LoraArguments:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank; 0 trains all parameters instead (full fine-tune)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(
        default="[q_proj,v_proj]", metadata={"help": "modules to adapt: '[q_proj,v_proj]' or 'q_proj,v_proj', or "
                                                     "'all-linear' (peft: every linear layer but the output head)"})

    def __post_init__(self):
        if self.lora_r < 0:
            raise ConfigError(f"--lora_r {self.lora_r}: must be >= 0 (0 = full fine-tune)")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora_dropout {self.lora_dropout}: must be in [0, 1)")
        if self.lora_r and not self.target_modules():
            raise ConfigError("--lora_target_modules is empty")
        if ALL_LINEAR in self.target_modules() and len(self.target_modules()) > 1:
            raise ConfigError(f"--lora_target_modules {self.lora_target_modules}: '{ALL_LINEAR}' already covers "
                              "every linear layer; give it alone")

    def target_modules(self) -> list[str]:
        text = self.lora_target_modules.strip().strip("[]")
        return [m.strip().strip("'\"") for m in text.split(",") if m.strip().strip("'\"")]


def _optional_value(help_text: str) -> dict:
    # The original scripts pass wandb flags with no value at all (`--wandb_project \`).
    return {"help": help_text, "nargs": "?", "const": ""}


@dataclass
class LegacyArguments:
    """The original LaWGPT command line, mapped onto TrainingArguments (scripts keep working)."""

    batch_size: int | None = field(default=None, metadata={
        "help": "global batch size; gradient_accumulation_steps = batch_size / micro_batch_size / world size"})
    micro_batch_size: int | None = field(default=None, metadata={"help": "per-device batch size"})
    num_epochs: float | None = field(default=None, metadata={"help": "alias of --num_train_epochs"})
    val_set_size: float = field(default=0, metadata={
        "help": "held-out examples/documents: a count (>= 1) or a fraction (< 1); 0 = none"})
    group_by_length: bool = field(default=False, metadata={
        "help": "batch examples of similar length together, the batches in random order (utils/training/length_grouped_sampler.py)"})
    wandb_project: str = field(default="", metadata=_optional_value("report to Weights & Biases under this project"))
    wandb_run_name: str = field(default="", metadata=_optional_value("W&B run name"))
    wandb_watch: str = field(default="", metadata=_optional_value("W&B watch: false | gradients | all"))
    wandb_log_model: str = field(default="", metadata=_optional_value("W&B log model: false | true"))

    def __post_init__(self):
        for name in ("batch_size", "micro_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} {value}: must be >= 1")
        if self.val_set_size < 0:
            raise ConfigError(f"--val_set_size {self.val_set_size}: must be >= 0")


@dataclass
class LawTrainingArguments(TrainingArguments):
    """TrainingArguments with this project's defaults (every standard flag still works)."""

    output_dir: str | None = field(default=None, metadata={"help": "where checkpoints and the result go (required)"})
    learning_rate: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "per-device batch size"})
    logging_steps: float = field(default=10, metadata={"help": "log every N steps"})
    save_steps: float = field(default=200, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=3, metadata={"help": "keep at most N checkpoints"})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "tensorboard, wandb, none"})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={"help": "DDP: look for unused params"})

    def __post_init__(self):
        if not self.output_dir:
            raise ConfigError("--output_dir is required")
        import torch

        mps = getattr(torch.backends, "mps", None)
        if not torch.cuda.is_available() and not (mps is not None and mps.is_available()):
            # Without it accelerate treats torchrun's CPU processes as separate single-process runs.
            self.use_cpu = True
        super().__post_init__()


# ---------------------------------------------------------------- parsing and the legacy mapping


def parse_args(data_class, argv=None, training_class=None):
    """(model, lora, data, legacy, training) arguments from the command line, legacy flags applied.

    ``training_class``: a TrainingArguments subclass with a stage's own fields (dpo.py: trl's DPOConfig with our
    defaults); default :class:`LawTrainingArguments`."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, LoraArguments, data_class, LegacyArguments,
                               training_class or LawTrainingArguments))
    model, lora, data, legacy, training = parser.parse_args_into_dataclasses(args=argv)
    apply_legacy(legacy, training)
    return model, lora, data, legacy, training


def apply_legacy(legacy: LegacyArguments, training: TrainingArguments) -> None:
    if legacy.micro_batch_size is not None:
        training.per_device_train_batch_size = legacy.micro_batch_size
        training.per_device_eval_batch_size = legacy.micro_batch_size
    if legacy.batch_size is not None:
        per_step = training.per_device_train_batch_size * training.world_size
        if legacy.batch_size % per_step:
            raise ConfigError(
                f"--batch_size {legacy.batch_size} is not a multiple of micro batch {training.per_device_train_batch_size}"
                f" x world size {training.world_size}")
        training.gradient_accumulation_steps = legacy.batch_size // per_step
    if legacy.group_by_length:
        training.train_sampling_strategy = "group_by_length"
    if legacy.num_epochs is not None:
        training.num_train_epochs = legacy.num_epochs
    if legacy.wandb_project:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("--wandb_project needs the wandb package: pip install wandb (or drop the flag)")
        os.environ["WANDB_PROJECT"] = legacy.wandb_project
        if legacy.wandb_watch:
            os.environ["WANDB_WATCH"] = legacy.wandb_watch
        if legacy.wandb_log_model:
            os.environ["WANDB_LOG_MODEL"] = legacy.wandb_log_model
        current = [training.report_to] if isinstance(training.report_to, str) else list(training.report_to or [])
        training.report_to = sorted({*current, "wandb"} - {"none", "all"})
        if legacy.wandb_run_name:
            training.run_name = legacy.wandb_run_name


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete Trainer checkpoint, or None when it is.

    The Trainer writes trainer_state.json last (after the weights, optimizer, scheduler and RNG states:
    transformers 5.23, ``Trainer._save_checkpoint``), so a save cut short by a crash or a preemption leaves a
    checkpoint without it, or with it half written."""
    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (its save was interrupted)"
    try:
        step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, OSError) as e:
        return f"unreadable trainer_state.json ({type(e).__name__}: its save was interrupted)"
    name_step = path.name.removeprefix("checkpoint-")
    if name_step.isdigit() and int(name_step) != step:
        return f"trainer_state.json says step {step}, the folder's name {name_step}"
    return None


def resolve_resume(training: TrainingArguments) -> str | None:
    """The checkpoint to resume from: a checkpoint dir, the latest complete one inside a dir, or none yet.

    An incomplete latest checkpoint (see :func:`checkpoint_problem`) is skipped with a one-line notice and the one
    before it used. The original scripts pass their own output directory on the very first run too, so that case
    starts fresh (and says so); any other path without a checkpoint is an error (ConfigError).
    """
    value = training.resume_from_checkpoint
    if not value:
        return None
    path = Path(training.output_dir if value.lower() == "true" else value)
    if path.name.startswith("checkpoint-") or (path / "trainer_state.json").exists():
        if problem := checkpoint_problem(path):
            raise ConfigError(f"--resume_from_checkpoint {value}: not a complete checkpoint: {problem}; pass its "
                              f"folder {path.parent} to resume from the latest complete one")
        return str(path)
    found = sorted((d for d in path.glob("checkpoint-*") if d.is_dir() and d.name[11:].isdigit()),
                   key=lambda d: int(d.name[11:]), reverse=True) if path.is_dir() else []
    for checkpoint in found:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        log(training, f"--resume_from_checkpoint: skipping {checkpoint.name}: {problem}")
    if found:
        raise ConfigError(f"--resume_from_checkpoint {value}: none of its {len(found)} checkpoint(s) is complete")
    if path.resolve() == Path(training.output_dir).resolve():
        log(training, f"--resume_from_checkpoint: no checkpoint in {path} yet, starting from scratch")
        return None
    raise ConfigError(f"--resume_from_checkpoint {value}: no checkpoint-* directory there")


def log(training: TrainingArguments, message: str) -> None:
    if training.process_index == 0:
        print(f"[lawgpt] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- model


@dataclass
class Prepared:
    model: object
    tokenizer: object
    tokenizer_dir: str
    vocab: dict
    lora_target_modules: list[str] | None = None  # resolved leaf names, e.g. all-linear → [down_proj, …, v_proj]


def _load_dtype(model_args: ModelArguments, lora: bool, device: str) -> str:
    if model_args.dtype != "auto":
        return model_args.dtype
    # Full training keeps fp32 master weights (mixed precision comes from --bf16/--fp16); a frozen
    # LoRA base can sit in half precision on a GPU.
    return "auto" if (lora and device.startswith("cuda")) else "float32"


def _leaf_name(model, module) -> str:
    return next(name for name, m in model.named_modules() if m is module).rsplit(".", 1)[-1]


def prepare_model(model_args: ModelArguments, lora_args: LoraArguments, training: TrainingArguments,
                  adapter: str | None = None) -> Prepared:
    """Tokenizer + model, embeddings grown for an extended tokenizer (new rows = mean of their base pieces),
    k-bit preparation on CUDA, LoRA (with embed/lm_head trained when the vocabulary grew).

    ``adapter``: an existing LoRA adapter directory to train further instead of a new LoRA (dpo.py on base + SFT
    adapter); its tokenizer and its own LoRA settings are used, the lora_* arguments are not."""
    import torch
    from transformers import set_seed

    set_seed(training.seed)  # LoRA initialisation must not depend on what ran before
    use_lora = lora_args.lora_r > 0 or adapter is not None
    tokenizer_dir = model_args.base_model
    if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file():
        tokenizer_dir = adapter  # an adapter trained with a grown vocabulary ships its tokenizer
    elif model_args.tokenizer_path:
        if model_args.extend_vocab:
            tokenizer_dir = model_args.tokenizer_path
        else:
            log(training, f"--extend_vocab False: training with the base tokenizer, not {model_args.tokenizer_path}")
    tokenizer = load_tokenizer(tokenizer_dir, model_args.trust_remote_code, padding_side="right")
    device = str(training.device)  # cuda:<local rank> under torchrun
    model = load_model(model_args.base_model, device, _load_dtype(model_args, use_lora, device),
                       model_args.load_8bit, model_args.load_4bit, model_args.trust_remote_code)
    base_rows = embedding_rows(model)
    grew = resize_for_tokenizer(model, tokenizer)
    if grew and adapter is None and tokenizer_dir == model_args.base_model:
        log(training, f"the model's own tokenizer has {len(tokenizer)} tokens but its embedding matrix {base_rows} "
                      f"rows: ids {base_rows}..{len(tokenizer) - 1} had no row; the matrix grows to the tokenizer and "
                      "the new rows are trained with the adapter (a mismatched tokenizer? pass the model's own)")
    if grew and adapter is None:
        base_tokenizer = load_tokenizer(model_args.base_model, model_args.trust_remote_code)
        init_new_embeddings(model, base_tokenizer, tokenizer, base_rows, model_args.new_row_init)
        log(training, f"vocabulary {base_rows} -> {len(tokenizer)}: new rows start from their base pieces "
                      f"({model_args.new_row_init})")
    elif len(tokenizer) < base_rows and model_args.tokenizer_path and model_args.extend_vocab:
        log(training, f"tokenizer has {len(tokenizer)} tokens, the model {base_rows} rows: nothing to grow")
    if model_args.load_8bit or model_args.load_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
    if training.gradient_checkpointing and not training.gradient_checkpointing_kwargs:
        # Reentrant checkpointing needs inputs that require grad, which a frozen LoRA base never has.
        training.gradient_checkpointing_kwargs = {"use_reentrant": False}
    if adapter is not None:
        from utils.model.loader import load_adapter

        model = load_adapter(model, adapter, is_trainable=True)
    elif use_lora:
        new_rows = range(base_rows, len(tokenizer)) if grew and model_args.new_embeddings == "new_rows" else None
        model = _wrap_lora(model, lora_args, train_embeddings=grew, new_rows=new_rows)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()  # optimizer state and updates in fp32
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log(training, f"{'LoRA' if use_lora else 'full'}: {trainable:,} of {total:,} parameters trainable")
    init = model_args.new_row_init if adapter is None else "the adapter's"
    vocab = {"base_rows": base_rows, "tokenizer_size": len(tokenizer), "grew": grew,
             "extend_vocab": model_args.extend_vocab, "new_row_init": init if grew else None,
             "new_embeddings": (model_args.new_embeddings if use_lora else "full") if grew else None}
    return Prepared(model, tokenizer, str(tokenizer_dir), vocab, lora_targets(model) if use_lora else None)


def lora_targets(model) -> list[str]:
    """The distinct leaf names of the modules LoRA adapts (peft resolves ``all-linear`` to full module paths)."""
    return sorted({name.rsplit(".", 1)[-1] for name in model.peft_config[model.active_adapter].target_modules})


def _wrap_lora(model, lora_args: LoraArguments, train_embeddings: bool, new_rows: range | None = None):
    """LoRA; a grown vocabulary's embeddings whole, or only ``new_rows`` (a tied lm_head shares those)."""
    from peft import LoraConfig, get_peft_model

    targets = lora_args.target_modules()
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names and t != ALL_LINEAR]
    if missing:
        raise ConfigError(f"--lora_target_modules {missing} not in {type(model).__name__}; it has e.g. "
                          f"{sorted(n for n in names if n.endswith('proj'))[:8]}, or give '{ALL_LINEAR}'")
    if targets == [ALL_LINEAR]:
        targets = ALL_LINEAR  # peft's keyword is a plain string, not a module name in a list
    modules_to_save, token_rows, tied = None, None, False
    if train_embeddings:
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        tied = head is not None and head.weight is embed.weight
        if new_rows is None:
            modules_to_save = [_leaf_name(model, embed)] + ([_leaf_name(model, head)] if head is not None else [])
        else:
            names = [_leaf_name(model, embed)] + ([_leaf_name(model, head)] if head is not None and not tied else [])
            token_rows = {name: list(new_rows) for name in names}
    config = LoraConfig(r=lora_args.lora_r, lora_alpha=lora_args.lora_alpha, lora_dropout=lora_args.lora_dropout,
                        target_modules=targets, task_type="CAUSAL_LM", modules_to_save=modules_to_save,
                        trainable_token_indices=token_rows, ensure_weight_tying=tied)
    return get_peft_model(model, config)
