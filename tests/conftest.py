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
