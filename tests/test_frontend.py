"""One way to open a model (utils/inference/frontend.py) and one way to end an entry script (utils/common/entry.py)."""

import argparse
import inspect

import pytest

import api
import evaluate
import infer
import webui
from utils.common.entry import run_entry
from utils.common.errors import ConfigError, LawgptError
from utils.inference.frontend import (
    HELP,
    ModelOptions,
    RetrievalOptions,
    add_model_arguments,
    load_retrieval,
    options_from,
    with_model_flags,
)

FRONT_ENDS = {"infer": infer.main, "webui": webui.main, "api": api.main}


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_every_fire_front_end_takes_every_shared_flag_with_one_help_text(name):
    main = FRONT_ENDS[name]
    params = inspect.signature(main).parameters
    assert set(HELP) <= set(params), f"{name} lacks {set(HELP) - set(params)}"
    assert "model" not in params and "retrieval" not in params
    for flag, text in HELP.items():
        assert main.__doc__.count(f"        {flag}: {text}") == 1  # what `--help` shows, written once


def test_evaluate_takes_the_same_flags():
    args = evaluate.parse_args(["--base_model", "m", "--trust_remote_code", "--rag", "--rag_top_k", "5",
                                "--output_dir", "o"])
    model, retrieval = options_from(args)
    assert model == ModelOptions(base_model="m", trust_remote_code=True)
    assert retrieval == RetrievalOptions(rag=True, rag_top_k=5)


def test_the_wrapper_builds_the_option_groups_and_refuses_typos():
    seen = {}

    @with_model_flags
    def main(batch_size: int = 8, *, model: ModelOptions, retrieval: RetrievalOptions):
        """Do it.

        Args:
            batch_size: how many.
        """
        seen.update(batch_size=batch_size, model=model, retrieval=retrieval)

    main(batch_size=2, base_model="m", load_4bit=True, rag=True, rag_retriever="hybrid")
    assert seen == {"batch_size": 2, "model": ModelOptions(base_model="m", load_4bit=True),
                    "retrieval": RetrievalOptions(rag=True, rag_retriever="hybrid")}
    with pytest.raises(TypeError):
        main(base_modle="m")  # a typo is an error, never silently ignored
    assert list(inspect.signature(main).parameters)[:2] == ["batch_size", "base_model"]


def test_argparse_form_round_trips():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    assert options_from(parser.parse_args([])) == (ModelOptions(), RetrievalOptions())
    with pytest.raises(SystemExit):
        parser.parse_args(["--rag_retriever", "tfidf"])


def test_retrieval_is_checked_before_any_model_loads():
    assert load_retrieval(RetrievalOptions(rag=False, rag_top_k=0)) is None  # off: nothing to check
    with pytest.raises(ConfigError, match="--rag_top_k 0 must be >= 1"):
        load_retrieval(RetrievalOptions(rag=True, rag_top_k=0))
    with pytest.raises(ConfigError, match="--rag_retriever must be one of"):
        load_retrieval(RetrievalOptions(rag=True, rag_retriever="tfidf"))


def test_run_entry_turns_user_errors_into_one_line(capsys, monkeypatch):
    class MyError(LawgptError):
        pass

    def fail(error):
        def main():
            raise error
        return main

    assert run_entry("tool", lambda: None) == 0
    assert run_entry("tool", lambda: 3) == 3
    for error in (MyError("data.jsonl:3: no instruction"), ValueError("--x must be >= 1"), OSError("no such file")):
        assert run_entry("tool", fail(error)) == 1
        assert capsys.readouterr().err == f"tool: error: {error}\n"
    assert run_entry("tool", fail(KeyboardInterrupt()), interrupted="run it again to resume") == 130
    assert capsys.readouterr().err == "\ntool: interrupted (run it again to resume)\n"
    with pytest.raises(KeyError):  # not a user's mistake: a bug keeps its traceback
        run_entry("tool", fail(KeyError("x")))
    monkeypatch.setenv("LAWGPT_TRACEBACK", "1")
    with pytest.raises(MyError):
        run_entry("tool", fail(MyError("shown with its traceback")))


def test_every_error_class_has_the_one_base():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("*.py"), *root.glob("tools/*.py"), *root.glob("utils/**/*.py")]
    classes = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                bases = [getattr(b, "id", getattr(b, "attr", "")) for b in node.bases]
                classes.append((f"{path.relative_to(root)}:{node.name}", bases[0] if bases else None))
    assert len(classes) >= 17
    ours = {"LawgptError"}  # a class is ours when its first base is LawgptError or one of ours (ParamError)
    while grown := {c.split(":")[1] for c, first in classes if first in ours} - ours:
        ours |= grown
    assert [c for c, _ in classes if c.split(":")[1] not in ours] == []


def test_text_flags_stay_text_through_fire(capsys):
    """fire reads values as Python literals: `--api_key 12345` became the number 12345 (every request 401/500)."""
    from utils.common.entry import fire_entry, quote_string_flags

    seen = {}

    def main(api_key: str | None = None, served_model_name: str = "m", port: int = 8000, rag: bool = False):
        seen.update(api_key=api_key, name=served_model_name, port=port, rag=rag)

    argv = ["--api_key", "12345", "--served_model_name=2024", "--port", "8001", "--rag"]
    assert quote_string_flags(main, argv) == ["--api_key", "'12345'", "--served_model_name='2024'", "--port", "8001",
                                              "--rag"]
    assert fire_entry("t", main, argv=argv, serialize=lambda result: None) == 0
    assert seen == {"api_key": "12345", "name": "2024", "port": 8001, "rag": True}  # the rest as fire reads them


def test_api_main_keeps_a_numeric_key_text_and_refuses_a_bad_port(monkeypatch):
    import api
    from utils.common.entry import quote_string_flags

    argv = quote_string_flags(api.main, ["--api_key", "12345", "--served_model_name", "2024", "--port", "99999"])
    assert argv[:4] == ["--api_key", "'12345'", "--served_model_name", "'2024'"]
    with pytest.raises(ConfigError, match="--port 99999 must be in 0..65535"):
        api.main(base_model="m", port=99999)


def test_a_model_trained_on_retrieved_statutes_is_served_with_them(tmp_path, capsys):
    """What demo.sh tells a new user to run next (webui.sh) must answer from retrieved articles without flags."""
    from utils.inference.frontend import resolve_retrieval
    from utils.model.loader import write_run_info

    rag_model, plain_model = tmp_path / "demo", tmp_path / "plain"
    write_run_info(rag_model, {"prompt_template": "law_rag"})
    write_run_info(plain_model, {"prompt_template": "law_template"})
    auto = RetrievalOptions(rag=None)
    assert resolve_retrieval(ModelOptions(base_model=str(rag_model)), auto, "webui").rag is True
    assert "--rag is on: this model was trained to answer from retrieved statutes" in capsys.readouterr().err
    assert resolve_retrieval(ModelOptions(base_model=str(plain_model)), auto, "webui").rag is False
    assert resolve_retrieval(ModelOptions(base_model=str(rag_model)), RetrievalOptions(rag=None, no_rag=True),
                             "webui").rag is False
    assert resolve_retrieval(ModelOptions(base_model=str(rag_model), prompt_template="law_template"), auto,
                             "webui").rag is False  # the user chose another prompt format
    with pytest.raises(ConfigError, match="contradict"):
        resolve_retrieval(ModelOptions(base_model=str(rag_model)), RetrievalOptions(rag=True, no_rag=True), "webui")
    for main in FRONT_ENDS.values():
        assert inspect.signature(main).parameters["rag"].default is None
    assert evaluate.parse_args(["--base_model", "m", "--output_dir", "o"]).rag is False  # LawBench runs stay explicit
