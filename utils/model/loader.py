"""The one place that loads a base model, its tokenizer and a LoRA adapter.

Training (train_clm.py, finetune.py), merging and every generator (infer.py, webui.py,
evaluate.py, data tools) come through here, so device, dtype, quantisation, pad-token and
vocabulary checks are decided once. Nothing falls back silently: a LoRA that does not fit its base
raises :class:`ModelLoadError` with what to do.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from utils.common.errors import LawgptError

RUN_INFO = "run_info.json"
ADAPTER_CONFIG = "adapter_config.json"


class ModelLoadError(LawgptError, RuntimeError):
    """A model, tokenizer or adapter cannot be loaded as asked."""


# ---------------------------------------------------------------- run_info.json (provenance)


def read_run_info(directory: str | Path) -> dict:
    """The ``run_info.json`` beside an output, or {} when there is none."""
    path = Path(directory) / RUN_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e


def write_run_info(directory: str | Path, info: dict) -> Path:
    """Write ``run_info.json`` atomically (a crash never leaves half a file)."""
    path = Path(directory) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- device and dtype


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"--device {device}: CUDA is not available on this machine")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def pick_dtype(device: str, dtype: str = "auto"):
    """bf16 on CUDA that has it, else fp16 on CUDA/MPS; fp32 on CPU (bf16 does not speed up AVX2 CPUs)."""
    import torch

    if dtype != "auto":
        if dtype not in DTYPES:
            raise ModelLoadError(f"--dtype {dtype}: choose one of auto, {', '.join(sorted(set(DTYPES)))}")
        return getattr(torch, DTYPES[dtype])
    if device.startswith("cuda"):
        # Hardware bf16 only (Ampere and later): torch counts V100's emulated bf16 as supported, and it is slow there.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def quantization_config(load_8bit: bool, load_4bit: bool, device: str, compute_dtype=None):
    """bitsandbytes config for 8-bit / 4-bit (QLoRA nf4) loading; CUDA only."""
    if not (load_8bit or load_4bit):
        return None
    if load_8bit and load_4bit:
        raise ModelLoadError("--load_8bit and --load_4bit exclude each other: pick one")
    if not device.startswith("cuda"):
        flag = "--load_8bit" if load_8bit else "--load_4bit"
        raise ModelLoadError(f"{flag} needs a CUDA GPU (bitsandbytes); this machine runs on {device}: drop the flag")
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


# ---------------------------------------------------------------- tokenizer and model


def _require_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"{what} {str(path)!r} is not a directory (a local path is needed: no model hub here)")
    ggufs = sorted(p.glob("*.gguf"))
    if ggufs and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} holds a GGUF file ({ggufs[0].name}) but no transformers model (config.json): "
                             "GGUF is for llama.cpp/Ollama (docs/gguf.md); to use it here convert it once, as "
                             "tools/fetch_demo_model.py does for the demo model")
    return p


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, padding_side: str = "left"):
    """Tokenizer with a pad token set for batching (left padding for generation by default)."""
    from transformers import AutoTokenizer

    _require_dir(path, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a tokenizer from {path}: {e}") from e
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"tokenizer in {path} has no EOS token: generation could never stop")
    if tokenizer.pad_token_id is None:
        # Reuse an existing token instead of adding one, so the vocabulary (and the embedding
        # matrix) keeps its size; the attention mask hides padding either way.
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def verification_ids(tokenizer, text: str, add_special_tokens: bool = True) -> list[int]:
    """``text`` as the model sees it plus the last four vocabulary ids, so rows added for a new vocabulary are
    exercised too: the probe with which merge_lora.py and the GGUF check compare two copies of a model."""
    n = len(tokenizer)
    return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"] + list(range(n - 4, n))


def embedding_rows(model) -> int:
    """Rows of the input embedding (token ids it can embed). From ``num_embeddings``, not the weight's shape: under
    DeepSpeed ZeRO-3 the model is loaded partitioned and every weight is an empty placeholder (shape [0])."""
    embeddings = model.get_input_embeddings()
    return getattr(embeddings, "num_embeddings", None) or embeddings.weight.shape[0]


def check_vocab(model, tokenizer, where: str) -> None:
    """Every token id the tokenizer can produce must have an embedding row."""
    rows = embedding_rows(model)
    if len(tokenizer) > rows:
        raise ModelLoadError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows — "
            "wrong tokenizer for this model (an extended tokenizer needs the model trained with it)"
        )


def tokenizer_beyond_embeddings(model, tokenizer) -> list[int]:
    """Ids the tokenizer has but the embedding matrix has no row for (Qwen3 ships 151,669 tokens over 151,936 rows,
    the other way round some models ship reserved special tokens past the matrix): [] when every id has a row."""
    rows = embedding_rows(model)
    return [i for i in range(rows, len(tokenizer))]


def load_model(
    path: str | Path,
    device: str = "auto",
    dtype: str = "auto",
    load_8bit: bool = False,
    load_4bit: bool = False,
    trust_remote_code: bool = False,
):
    """A causal LM from a local directory (safetensors only), placed on the chosen device."""
    from transformers import AutoModelForCausalLM

    _require_dir(path, "base model")
    device = pick_device(device)
    torch_dtype = pick_dtype(device, dtype)
    quant = quantization_config(load_8bit, load_4bit, device, compute_dtype=torch_dtype)
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot load a causal LM from {path}: {e}. Weights must be safetensors "
            "(convert .bin checkpoints once with save_pretrained)"
        ) from e
    if quant is None:
        model.to(device)
    return model


def resize_for_tokenizer(model, tokenizer) -> bool:
    """Grow the embedding matrix to the tokenizer's size; True when it grew."""
    if len(tokenizer) <= embedding_rows(model):
        return False
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return True


def load_adapter(model, lora_path: str | Path, is_trainable: bool = False):
    """Wrap ``model`` with the LoRA adapter in ``lora_path``; mismatches fail loudly."""
    from peft import PeftModel

    lora = _require_dir(lora_path, "LoRA adapter")
    if not (lora / ADAPTER_CONFIG).is_file():
        raise ModelLoadError(f"{lora} has no {ADAPTER_CONFIG}: not a peft adapter directory")
    try:
        return PeftModel.from_pretrained(model, str(lora), is_trainable=is_trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        # Shape mismatches (another vocabulary or hidden size) and missing target modules (another
        # architecture) surface here; running the bare base model instead would hide the mistake.
        raise ModelLoadError(
            f"LoRA adapter {lora} does not fit base model {model.name_or_path}: {_one_line(e)}"
        ) from e


def _one_line(error: Exception) -> str:
    """peft lists every mismatched tensor on its own line (hundreds for a 7B model): keep the first, count the rest."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    mismatches = [line for line in lines if line.startswith("size mismatch")]
    if len(mismatches) > 1:
        return f"{mismatches[0]} (and {len(mismatches) - 1} more size mismatches)"
    return " ".join(mismatches or lines)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    base_model: str
    lora_weights: str | None = None
    prompt_template: str | None = None
    info: dict = field(default_factory=dict)


def other_base_warning(base: str, lora_weights: str | None, info: dict) -> str | None:
    """A warning when the adapter was trained on another base than the one given: a same-shaped base loads without
    an error but answers wrongly. Compared by resolved path, then by the base's own run_info/config name."""
    trained_on = info.get("base_model") if lora_weights else None
    if not trained_on:
        return None
    if Path(trained_on).exists() and Path(trained_on).resolve() == Path(base).resolve():
        return None
    if Path(trained_on).name == Path(base).name:  # the same model moved or copied: not worth a warning
        return None
    return (f"{lora_weights} was trained on {trained_on} (its {RUN_INFO}), but the base given is {base}: an adapter "
            "on another base loads if the shapes agree and answers wrongly — pass the base it was trained on")


def resolve_base_model(base_model: str | None, lora_weights: str | None) -> str:
    """The base model path: as given, else the one recorded in the adapter's run_info.json."""
    if base_model:
        return base_model
    if lora_weights:
        recorded = read_run_info(lora_weights).get("base_model")
        if recorded:
            return recorded
        raise ModelLoadError(f"--base_model not given and {lora_weights}/{RUN_INFO} does not record one")
    raise ModelLoadError("--base_model is required (a local model directory)")


def load_for_inference(
    base_model: str | None = None,
    lora_weights: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    load_8bit: bool = False,
    load_4bit: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Base model + tokenizer (+ adapter), checked, in eval mode, ready for the engine.

    The tokenizer comes from the adapter directory when it has one (an adapter trained with an
    extended vocabulary ships its tokenizer), otherwise from the base model.
    """
    base = str(_require_dir(resolve_base_model(base_model, lora_weights), "base model"))
    info = read_run_info(lora_weights) if lora_weights else read_run_info(base)
    if warning := other_base_warning(base, lora_weights, info):
        print(f"[lawgpt] warning: {warning}", file=sys.stderr, flush=True)
    tokenizer_dir = lora_weights if lora_weights and (Path(lora_weights) / "tokenizer_config.json").is_file() else base
    tokenizer = load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)
    model = load_model(base, device, dtype, load_8bit, load_4bit, trust_remote_code)
    if lora_weights:
        grew = resize_for_tokenizer(model, tokenizer)
        model = load_adapter(model, lora_weights)
        if grew and not _adapter_trains_embeddings(lora_weights):
            raise ModelLoadError(
                f"{lora_weights}: its tokenizer has {len(tokenizer)} tokens, more than base model {base}, "
                "but the adapter carries no trained embeddings for them — wrong base model?"
            )
    check_vocab(model, tokenizer, str(lora_weights or base))
    model.eval()
    return LoadedModel(model, tokenizer, str(base), lora_weights, info.get("prompt_template"), info)


def load_prompt_side(base_model: str | None, trust_remote_code: bool = False) -> LoadedModel:
    """What an engine that runs the weights elsewhere (``--engine openai|llama.cpp|vllm``) needs here: the model
    directory's tokenizer and the template and system prompt it was trained with (run_info.json), to build the same
    prompt as ``--engine hf``; ``model`` is None. Raises ModelLoadError when the directory is missing."""
    if not base_model:
        raise ModelLoadError("--base_model is required with this --engine: the merged model directory, whose tokenizer "
                             "and run_info.json build the prompt (the weights may live on the server)")
    base = str(_require_dir(base_model, "base model"))
    info = read_run_info(base)
    tokenizer = load_tokenizer(base, trust_remote_code=trust_remote_code)
    return LoadedModel(None, tokenizer, base, None, info.get("prompt_template"), info)


def model_limits(directory: str | Path) -> tuple[int | None, list[int]]:
    """(context length in tokens or None, end-of-turn token ids) from a model directory's config.json and
    generation_config.json, without loading the weights; ([]) when a file is missing."""
    context, eos = None, []
    for name in ("config.json", "generation_config.json"):
        path = Path(directory) / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        text = config.get("text_config") or config
        context = context or text.get("max_position_embeddings")
        ids = config.get("eos_token_id")
        eos += ids if isinstance(ids, list) else [ids] if ids is not None else []
    return context, sorted(set(eos))


def _adapter_trains_embeddings(lora_weights: str | Path) -> bool:
    config = json.loads((Path(lora_weights) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    saved = config.get("modules_to_save") or []
    return any("embed" in name for name in saved) or bool(config.get("trainable_token_indices"))
