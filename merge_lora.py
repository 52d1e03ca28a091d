"""Merge a LoRA adapter into its base model and save a standalone model (safetensors shards).

    python merge_lora.py --lora_model outputs/sft-x --output_dir models/lawgpt-x
    python merge_lora.py --base_model models/base_models/gemma-3-270m --lora_model outputs/clm-x \
        --output_dir models/base_models/legal-base --overwrite
    bash scripts/merge.sh

The base model is read from the adapter's run_info.json when --base_model is omitted. Adapters that
trained ``embed_tokens``/``lm_head`` for an extended vocabulary (``modules_to_save``) merge too: the
base is resized to the adapter's tokenizer first. The merge is verified: logits of the merged model
(in memory and reloaded from disk) are compared with the adapter's on a fixed prompt, the max abs
difference is printed, and above --tolerance nothing is written. Output is written to a temporary
directory and renamed into place, so a crash never leaves half a model behind. The adapter's prompt template
(run_info.json, or --prompt_template) is written into the saved tokenizer's ``chat_template`` (our json
templates as Jinja; ``chat`` keeps the tokenizer's own), so OpenAI-compatible servers prompt it as trained.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.common.entry import fire_entry  # noqa: E402
from utils.common.errors import LawgptError  # noqa: E402
from utils.model.chat_template import make_prompter, write_chat_template  # noqa: E402
from utils.model.loader import (  # noqa: E402
    load_for_inference,
    load_model,
    read_run_info,
    verification_ids,
    write_run_info,
)

VERIFY_QUESTION = "甲深夜入户盗窃他人财物价值五千元，应当如何定罪量刑？请引用《刑法》条文。"
# Rounding differs between base(x) + lora(x) and (W + BA)x; these bounds are far above that noise
# (~3e-6 in fp32) and far below what a wrong merge produces.
DEFAULT_TOLERANCE = {"float32": 1e-3, "float16": 0.1, "bfloat16": 0.25}


class MergeError(LawgptError, RuntimeError):
    """The merge cannot be done, or its result does not reproduce the adapter."""


def verification_prompt_ids(tokenizer, template: str | None):
    """A fixed legal question in the model's prompt format, as ids (1, n) for :func:`logits_of`."""
    import torch

    prompter = make_prompter(template or "law_template", tokenizer)
    prompt = prompter.generate_prompt(VERIFY_QUESTION)
    return torch.tensor([verification_ids(tokenizer, prompt, prompter.add_special_tokens)])


def logits_of(model, ids):
    import torch

    with torch.inference_mode():
        return model(input_ids=ids.to(model.device)).logits.float().cpu()


def _check_output_dir(output: Path, sources: list[Path], overwrite: bool) -> None:
    for source in sources:
        if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
            raise MergeError(f"--output_dir {output} is (inside) the input {source}: choose a new directory")
    if output.exists() and not output.is_dir():
        raise MergeError(f"--output_dir {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise MergeError(f"--output_dir {output} is not empty: pass --overwrite to replace it")


def _replace_dir(tmp: Path, output: Path) -> None:
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    if output.exists():
        os.replace(output, old)
    os.replace(tmp, output)
    shutil.rmtree(old, ignore_errors=True)


def main(
    lora_model: str,
    output_dir: str,
    base_model: str | None = None,
    overwrite: bool = False,
    tolerance: float | None = None,
    dtype: str = "float32",
    device: str = "auto",
    max_shard_size: str = "2GB",
    prompt_template: str | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Merge --lora_model into its base and save it to --output_dir.

    Args:
        lora_model: peft adapter directory (adapter_config.json; run_info.json names its base).
        output_dir: new directory for the merged model; refused when non-empty unless --overwrite.
        base_model: base model directory; default: the one recorded in the adapter's run_info.json.
        overwrite: replace a non-empty --output_dir (only after the merge has been verified).
        tolerance: max abs logit difference allowed between merged and adapter model
            (default 1e-3 for float32, 0.1 float16, 0.25 bfloat16).
        dtype: float32 (exact; default), bfloat16 or float16 (half the disk, coarser check).
        device: auto, cpu, cuda, mps.
        max_shard_size: safetensors shard size, e.g. 2GB.
        prompt_template: the template the adapter was trained with (default: its run_info.json): used for the
            verification prompt and written into the tokenizer's chat_template.
        trust_remote_code: allow model code from the model directory (off by default).
    """
    output = Path(output_dir)
    lora = Path(lora_model)
    if not str(output_dir):
        raise MergeError("--output_dir is required")
    loaded = load_for_inference(base_model, lora_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    base = Path(loaded.base_model)
    _check_output_dir(output, [base, lora], overwrite)
    model, tokenizer = loaded.model, loaded.tokenizer
    torch_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    limit = DEFAULT_TOLERANCE.get(torch_dtype, 1e-3) if tolerance is None else float(tolerance)
    template = prompt_template or loaded.prompt_template
    system = loaded.info.get("system_prompt")
    ids = verification_prompt_ids(tokenizer, template)

    print(f"[merge] base {base}  adapter {lora}  dtype {torch_dtype}  vocab {len(tokenizer)}", flush=True)
    adapter_logits = logits_of(model, ids)
    with model.disable_adapter():
        effect = (logits_of(model, ids) - adapter_logits).abs().max().item()
    print(f"[merge] the adapter changes the verification logits by up to {effect:.3g}", flush=True)
    merged = model.merge_and_unload()
    merged.eval()
    diff = (logits_of(merged, ids) - adapter_logits).abs().max().item()
    print(f"[merge] max abs logit diff, merged vs adapter: {diff:.3g} (tolerance {limit:g})", flush=True)
    if not diff <= limit:
        raise MergeError(f"merged model differs from the adapter by {diff:.3g} > --tolerance {limit:g}: nothing written")

    # peft unties embeddings whose trained copies diverged; the reload check below proves they stay so.
    tied = bool(getattr(merged.config, "tie_word_embeddings", False))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.merging-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(str(tmp), max_shard_size=max_shard_size)
        # The trained prompt format goes into the tokenizer's chat_template (our templates as Jinja), so vLLM,
        # `transformers serve`, llama.cpp and Ollama prompt the merged model as it was trained. An adapter with
        # no template (continued pretraining) leaves the base's chat_template as it was.
        if template and write_chat_template(tokenizer, template, system):
            print(f"[merge] chat_template: {template} written into the tokenizer", flush=True)
        tokenizer.save_pretrained(str(tmp))
        tokenizer_dir = lora if (lora / "tokenizer_config.json").is_file() else base  # as load_for_inference
        if (tokenizer_dir / "tokenizer.model").is_file():  # vocabulary tools read the sentencepiece model
            shutil.copy(tokenizer_dir / "tokenizer.model", tmp / "tokenizer.model")
        del model, merged, loaded
        reloaded = load_model(tmp, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        reload_diff = (logits_of(reloaded, ids) - adapter_logits).abs().max().item()
        del reloaded
        print(f"[merge] max abs logit diff, reloaded from disk vs adapter: {reload_diff:.3g}", flush=True)
        if not reload_diff <= limit:
            raise MergeError(f"the saved model differs from the adapter by {reload_diff:.3g} > {limit:g}: nothing written")
        info = {
            "stage": "merge",
            "prompt_template": template,
            "system_prompt": system,
            "merged_from": {"base_model": str(base), "lora_model": str(lora)},
            "vocab_size": len(tokenizer),
            "dtype": torch_dtype,
            "max_abs_logit_diff": diff,
            "reloaded_max_abs_logit_diff": reload_diff,
            "adapter_effect_max_abs_logit": effect,
            "tolerance": limit,
            "tie_word_embeddings": tied,
            "adapter_run_info": read_run_info(lora),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_run_info(tmp, info)
        _replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[merge] saved {output}", flush=True)
    return {"output_dir": str(output), "max_abs_diff": diff, "reloaded_max_abs_diff": reload_diff}


def run() -> None:
    sys.exit(fire_entry("merge_lora", main, serialize=lambda result: None))


if __name__ == "__main__":
    run()
