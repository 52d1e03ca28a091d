"""The legal chat in the browser: a gradio app on http://127.0.0.1:7860 (see utils/inference/webui_app.py).

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
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from utils.common.entry import fire_entry  # noqa: E402
from utils.common.errors import LawgptError  # noqa: E402
from utils.inference.frontend import ModelOptions, RetrievalOptions, open_engine, with_model_flags  # noqa: E402
from utils.inference.webui_app import UISettings, build_app, launch_options, parse_auth  # noqa: E402

MODELS_DIR = ROOT / "models"
DEMO_MODELS = ("lawgpt-demo", "base_models/gemma-3-270m")  # first that exists wins
AUTH_ENV = "LAWGPT_WEBUI_AUTH"


class SetupError(LawgptError, RuntimeError):
    """Nothing to serve, or flags that cannot work together."""


def default_model(models_dir: Path | None = None) -> str:
    """The demo model to serve when no model is named on the command line."""
    models_dir = models_dir or MODELS_DIR
    for name in DEMO_MODELS:
        if (models_dir / name / "config.json").is_file():
            return str(models_dir / name)
    raise SetupError(f"no model given and no demo model under {models_dir}/ "
                     f"({' or '.join(DEMO_MODELS)}): run `bash scripts/demo.sh` first, or pass --base_model DIR")


@with_model_flags
def main(
    server_name: str = "127.0.0.1",
    server_port: int = 7860,
    share_gradio: bool = False,
    share: bool = False,
    auth: str | None = None,
    max_input_chars: int = 2000,
    concurrency_limit: int = 16,
    queue_size: int = 64,
    *,
    model: ModelOptions,
    retrieval: RetrievalOptions,
) -> None:
    """Serve the legal chat until Ctrl+C. With neither --base_model nor --lora_weights: the demo model under models/.

    Args:
        server_name: address to listen on (127.0.0.1 = this machine only; 0.0.0.0 = the whole network).
        server_port: port to listen on.
        share_gradio: ask gradio for a public share link (the original's flag; same as --share).
        share: ask gradio for a public *.gradio.live link (off by default: anyone with the link can use it).
        auth: user:password for a login page (default: the LAWGPT_WEBUI_AUTH environment variable; none if unset).
        max_input_chars: longer questions get a polite note instead of an answer.
        concurrency_limit: chats generated at once (together, in one batch); others wait in the queue.
        queue_size: requests that may wait; more are refused.
    """
    settings = UISettings(max_input_chars, concurrency_limit, queue_size, retrieval.rag_top_k, retrieval.rag_retriever)
    login = parse_auth(auth if auth is not None else os.environ.get(AUTH_ENV))
    options = launch_options(server_name, server_port, share or share_gradio, login)
    if not model.base_model and not model.lora_weights:
        model = replace(model, base_model=default_model())
    engine, rag = open_engine(model, retrieval, "webui")
    if rag:  # auto resolved once: every chat of this server uses the same retriever
        settings = replace(settings, rag_retriever=rag.resolve_retriever(settings.rag_retriever))
    app = build_app(engine, settings, rag=rag)
    where = f"http://{server_name}:{server_port}"
    print(f"[webui] serving {engine.loaded.base_model} on {where}" + (" (login required)" if login else ""),
          flush=True)
    app.launch(**options)


def run() -> None:
    sys.exit(fire_entry("webui", main))


if __name__ == "__main__":
    run()
