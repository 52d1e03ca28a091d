"""The Trainer, saving and provenance shared by train_clm.py, finetune.py and dpo.py.

:func:`make_trainer` wraps the Trainer (or trl's DPOTrainer) with our adapter saving, sampler and answer-only LM
head; :func:`train_and_save` trains, evaluates and writes the model, tokenizer, run_info.json and loss curve;
the arguments and the
model they load are utils/training/setup.py's.
"""

import atexit
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from transformers import TrainingArguments

from utils.common.datafiles import IGNORE_INDEX
from utils.model.loader import write_run_info as _write_run_info
from utils.model.vocabulary import SP_MODEL
from utils.training.setup import ConfigError, Prepared, log, resolve_resume


def adapter_holds_embeddings(model) -> bool:
    """True when a peft adapter carries every trained embedding row itself — whole copies (``modules_to_save``)
    or the new rows (``trainable_token_indices``) — and LoRA does not target the embeddings.

    Then the base's embedding matrices need not travel with the adapter. peft saves them anyway once the
    vocabulary was resized (``save_embedding_layers="auto"``): the resized ``.weight``, and, per wrapped module, the
    ``original_module`` copy (the untouched base module, kept so ``disable_adapter()`` can switch back) beside the
    trained ``modules_to_save`` copy — three matrices per module where merging and resuming need one.
    """
    from peft import PeftModel
    from peft.utils.other import EMBEDDING_LAYER_NAMES

    if not isinstance(model, PeftModel):
        return False
    config = model.peft_config[model.active_adapter]
    targets = config.target_modules
    embeddings_targeted = isinstance(targets, str) and any(re.search(targets, n) for n in EMBEDDING_LAYER_NAMES) or (
        not isinstance(targets, str) and any(t.split(".")[-1] in EMBEDDING_LAYER_NAMES for t in targets or ()))
    trained = set(config.modules_to_save or ()) | set(config.trainable_token_indices or ())
    return not embeddings_targeted and any(name.split(".")[-1] in EMBEDDING_LAYER_NAMES for name in trained)


def _end_process_group() -> None:
    """Under torchrun, end the process group before the interpreter tears it down: a live gloo group's threads can
    abort a rank at exit ("terminate called without an active exception", SIGABRT), which failed 1 of 9 two-process
    CPU runs of tests/test_fsdp.py on 2026-12-07. At exit, not after training: tests/fsdp_cpu.py trains twice in one
    process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def make_trainer(prepared: Prepared, training: TrainingArguments, train_ds, eval_ds, trainer_class=None,
                 **trainer_kwargs):
    """The Trainer (or ``trainer_class``, e.g. trl's DPOTrainer, which then brings its own collator) with our
    adapter saving."""
    from transformers import DataCollatorForSeq2Seq, Trainer
    from transformers.trainer import TRAINING_ARGS_NAME

    from utils.training.answer_logits import keep_answer_logits, supports_answer_logits

    atexit.unregister(_end_process_group)  # once per process, however many trainers it makes
    atexit.register(_end_process_group)

    class AdapterTrainer(trainer_class or Trainer):
        """Saves an adapter with only what merging and resuming need (see :func:`adapter_holds_embeddings`), and
        only the trained one (trl keeps a frozen reference copy beside it); else the Trainer's own saving.
        ``--group_by_length`` batches come in random order (utils/training/length_grouped_sampler.py). With our collator (SFT, CLM) the
        LM head runs on the answer positions only (utils/training/answer_logits.py); trl's trainers bring their own."""

        answer_logits = False  # set below, once the model is known

        def compute_loss(self, model, inputs, *args, **kwargs):
            if self.answer_logits:
                inputs = keep_answer_logits(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

        def _get_train_sampler(self, *args, **kwargs):
            from transformers.trainer_pt_utils import LengthGroupedSampler

            from utils.training.length_grouped_sampler import ShuffledLengthGroupedSampler

            sampler = super()._get_train_sampler(*args, **kwargs)
            if type(sampler) is LengthGroupedSampler:
                return ShuffledLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths,
                                                    generator=sampler.generator)
            return sampler

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            if not self.args.should_save and not self.is_distributed_loading_by_transformers:
                return  # as the Trainer's own _save: under FSDP the other ranks hold an empty gathered state_dict
            model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            lean = adapter_holds_embeddings(model)
            from peft import PeftModel

            others = isinstance(model, PeftModel) and len(model.peft_config) > 1
            if not (lean or others):
                return super()._save(output_dir, state_dict)
            output_dir = output_dir or self.args.output_dir
            if self.args.should_save:
                os.makedirs(output_dir, exist_ok=True)
            model.save_pretrained(output_dir, state_dict=state_dict, is_main_process=self.args.should_save,
                                  selected_adapters=[model.active_adapter],
                                  **({"save_embedding_layers": False} if lean else {}))
            if self.args.should_save:
                self.processing_class.save_pretrained(output_dir)
                import torch

                torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    if trainer_class is None:
        trainer_kwargs.setdefault("data_collator", DataCollatorForSeq2Seq(
            prepared.tokenizer, padding=True, pad_to_multiple_of=8, label_pad_token_id=IGNORE_INDEX,
            return_tensors="pt"))
    trainer = AdapterTrainer(model=prepared.model, args=training, train_dataset=train_ds, eval_dataset=eval_ds,
                             processing_class=prepared.tokenizer, **trainer_kwargs)
    trainer.answer_logits = trainer_class is None and supports_answer_logits(prepared.model)
    return trainer


def train_and_save(trainer, prepared: Prepared, training: TrainingArguments, info: dict) -> dict:
    """Train (resuming if asked), evaluate, save model/adapter + tokenizer + run_info.json + loss curve."""
    distributed = trainer.accelerator.distributed_type.value  # NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED
    if getattr(training, "fsdp", None) and not trainer.is_fsdp_enabled:
        # accelerate keeps its FSDP plugin for GPU/accelerator process groups only: elsewhere it would train
        # unsharded (DDP) under a flag that promises sharding.
        raise ConfigError(f"--fsdp: accelerate did not enable FSDP here (distributed type {distributed}); it shards "
                          "only across GPUs/accelerators. On CPU drop --fsdp (torchrun alone runs DDP)")
    started = time.time()
    checkpoint = resolve_resume(training)
    if checkpoint is not None:
        check_same_batch(checkpoint, training)
    trainer.add_callback(record_batch_callback())
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # The Trainer's training_loss averages this session's steps only: after a resume, the whole run's comes from
    # the logged losses of every step, before and after the resume.
    train_loss = run_loss(trainer.state.log_history) if checkpoint is not None else result.training_loss
    metrics = {"train_loss": train_loss, "global_step": result.global_step,
               "train_runtime_s": round(time.time() - started, 2)}
    if trainer.eval_dataset is not None:
        evaluated = trainer.evaluate()
        eval_loss = metrics["eval_loss"] = evaluated["eval_loss"]
        rewards = {k: v for k, v in evaluated.items() if k.startswith("eval_rewards/")}
        if rewards:  # a preference loss (dpo.py): its reward accuracy and margin, a perplexity means nothing there
            metrics.update(rewards)
        else:
            metrics["perplexity"] = math.exp(eval_loss) if eval_loss < 50 else float("inf")
    out = Path(training.output_dir)
    trainer.save_model(str(out))  # peft's save_pretrained for adapters; gathers ZeRO-3 shards on every rank
    if trainer.is_world_process_zero():
        prepared.tokenizer.save_pretrained(str(out))
        if (Path(prepared.tokenizer_dir) / SP_MODEL).is_file():
            shutil.copy(Path(prepared.tokenizer_dir) / SP_MODEL, out / SP_MODEL)  # vocabulary tools need it
        trainer.save_state()
        plot_losses(trainer.state.log_history, out / "loss_curve.png")
        info = {**info, **metrics, "vocab": prepared.vocab, "lora_target_modules": prepared.lora_target_modules,
                "world_size": training.world_size, "distributed": distributed,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write_run_info(out, info)
        log(training, f"saved to {out}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in metrics.items()))
    return metrics


BATCH_FILE = "lawgpt_batch.json"


def global_batch(training: TrainingArguments) -> dict:
    """The batch a step takes: micro batch x accumulation x processes (examples or blocks per optimizer step)."""
    return {"micro_batch": training.per_device_train_batch_size,
            "gradient_accumulation_steps": training.gradient_accumulation_steps, "world_size": training.world_size,
            "global_batch": training.per_device_train_batch_size * training.gradient_accumulation_steps
            * training.world_size}


def _record_batch_class():
    from transformers import TrainerCallback

    class RecordBatchCallback(TrainerCallback):
        """Writes :func:`global_batch` into each checkpoint, so a resume can tell whether its steps mean the same."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    (folder / BATCH_FILE).write_text(json.dumps(global_batch(args)), encoding="utf-8")

    return RecordBatchCallback


def record_batch_callback():
    """A RecordBatchCallback (its class is made on first use: importing this module loads no transformers)."""
    return _record_batch_class()()


def check_same_batch(checkpoint: str, training: TrainingArguments) -> None:
    """ConfigError when the checkpoint's steps took another global batch than this run's: the Trainer would count
    the old steps in the new batch size, skip or repeat data and end at the old step with nothing trained.
    Checkpoints written before this check existed carry no record and are not checked."""
    path = Path(checkpoint) / BATCH_FILE
    if not path.is_file():
        return
    then, now = json.loads(path.read_text(encoding="utf-8")), global_batch(training)
    if then["global_batch"] != now["global_batch"]:
        raise ConfigError(
            f"--resume_from_checkpoint {checkpoint}: its steps took {then['global_batch']} examples each (micro "
            f"{then['micro_batch']} x accumulation {then['gradient_accumulation_steps']} x {then['world_size']} "
            f"process(es)), this run's take {now['global_batch']}: resuming would skip or repeat data. Use the same "
            "--batch_size (and number of processes), or start a new --output_dir")


def run_loss(history: list[dict]) -> float | None:
    """The mean training loss over every step logged in ``history`` (the Trainer's log_history): each logged loss
    is the mean of its logging window, so windows are weighted by their steps. None when nothing was logged."""
    logged = sorted((h["step"], h["loss"]) for h in history if "loss" in h and "step" in h)
    total, steps, previous = 0.0, 0, 0
    for step, loss in logged:
        total += loss * (step - previous)
        steps += step - previous
        previous = step
    return total / steps if steps else None


def args_record(*groups) -> dict:
    """All argument groups as one JSON-able dict for run_info.json."""
    record = {}
    for group in groups:
        record.update(group.to_dict() if isinstance(group, TrainingArguments) else asdict(group))
    return record


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    for points, label in ((train, "train"), (evals, "eval")):
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
