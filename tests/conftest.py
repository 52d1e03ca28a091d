import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Hermetic: no hub, caches in the checkout.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".cache" / "huggingface"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# --rag's auto retriever must not depend on whether this checkout holds a trained one in models/retriever: none, unless
# a test trains one and points LAWGPT_RETRIEVER_DIR at it
os.environ.setdefault("LAWGPT_RETRIEVER_DIR", str(Path(tempfile.mkdtemp(prefix="lawgpt-tests-")) / "no-retriever"))
# Tokenised training data (train_clm/finetune) is cached per session, never in the checkout: a cache hit from an
# earlier run must not hide a build bug.
if "LAWGPT_DATASET_CACHE" not in os.environ:
    os.environ["LAWGPT_DATASET_CACHE"] = tempfile.mkdtemp(prefix="lawgpt-datasets-")
    atexit.register(shutil.rmtree, os.environ["LAWGPT_DATASET_CACHE"], True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM + sentencepiece LLaMA tokenizer, saved with save_pretrained."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with ChatML special tokens and a chat_template, standing in for a chat model (Qwen)."""
    from tiny_model import build_tiny_chat_model

    return build_tiny_chat_model(tiny_model_dir, tmp_path_factory.mktemp("tiny-chat") / "model")


@pytest.fixture(scope="session")
def tiny_plain_model_dir(tmp_path_factory) -> Path:
    """The tiny model that never writes a raw-byte token (tiny_model.never_write_bytes): the engines are compared on
    it, ``--engine openai`` over ``transformers serve``."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-plain"), raw_bytes=False)


@pytest.fixture(scope="session")
def transformers_serve_url(tiny_plain_model_dir):
    """``transformers serve`` on the tiny plain model for the session: the upstream of ``--engine openai``."""
    from api_harness import TransformersServe

    server = TransformersServe(tiny_plain_model_dir)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as an f32 GGUF (tools/export_gguf.py) for ``--engine llama.cpp``; skips, saying why, without
    llama-cpp-python (bash scripts/install_llama_cpp.sh; scripts/test.sh installs it) or llama.cpp's converter."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: bash scripts/install_llama_cpp.sh")
    from tools import export_gguf
    from utils.export import gguf as G

    try:
        G.converter_dir()
    except G.ExportError as e:
        pytest.skip(f"llama.cpp's converter cannot be fetched: {e}")
    out = tmp_path_factory.mktemp("gguf-engine") / "tiny-f32.gguf"
    export_gguf.main(["--model_dir", str(tiny_model_dir), "--output", str(out), "--outtype", "f32"])
    return out
