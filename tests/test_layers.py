"""The house's import rules (docs/architecture.md), checked on the source with an AST walk.

- utils/ subpackages import one way: a subpackage imports itself and packages of a lower rank only. Every import
  counts, lazy ones inside functions too, since a lazy back-edge is still a circle.
- common, legal and lawbench never load torch (the legal layer and LawBench's scorer run without it).
- tools/ never import another tool's private names; library code lives in utils/, not in tools/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# rank of each utils/ subpackage: imports go from a higher rank to a lower one, never sideways or up
RANKS = {"common": 0, "legal": 1, "lawbench": 1, "lecoqa": 2, "model": 2, "training": 3, "inference": 3, "export": 3, "datagen": 4}
TORCH_FREE = ("common", "legal", "lawbench", "lecoqa")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``path``, including ``from X import Y`` as X and X.Y."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def layer_violations(utils_dir: Path) -> list[str]:
    """'file:line: a imports b' for every import in ``utils_dir`` that breaks the rank rule (or names no package)."""
    problems = []
    for path in sorted(utils_dir.rglob("*.py")):
        rel = path.relative_to(utils_dir)
        if len(rel.parts) == 1:
            continue  # utils/__init__.py
        own = rel.parts[0]
        if own not in RANKS:
            problems.append(f"{path}: utils/{own}/ is not a known subpackage (add it to RANKS and docs/architecture.md)")
            continue
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] != "utils" or len(parts) < 2 or parts[1] == own:
                continue
            other = parts[1]
            if other not in RANKS:
                continue  # `from utils import x` where x is a module of utils/ itself: caught as x's own package
            if RANKS[other] >= RANKS[own]:
                problems.append(f"{path}:{line}: utils.{own} (rank {RANKS[own]}) imports {module} "
                                f"(rank {RANKS[other]}); imports go to lower ranks only")
    return problems


def import_cycles(utils_dir: Path) -> list[list[str]]:
    """Circles among utils/ modules (lazy imports count: a lazy back-edge is how the bm25 ↔ dense circle hid)."""
    modules = {".".join(("utils", *p.relative_to(utils_dir).with_suffix("").parts)): p
               for p in utils_dir.rglob("*.py") if p.name != "__init__.py"}
    graph = {name: sorted({m for _, m in imported_modules(path) if m in modules and m != name})
             for name, path in modules.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def private_tool_imports(tools_dir: Path) -> list[str]:
    """'file:line: imports tools.x._name' for each private name one tool takes from another."""
    problems = []
    for path in sorted(tools_dir.glob("*.py")):
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "tools" and any(p.startswith("_") and p != "__init__" for p in parts[1:]):
                problems.append(f"{path}:{line}: imports {module}, a private name of another tool (move it to utils/)")
    return problems


def test_utils_has_only_subpackages_of_known_rank():
    assert [p.name for p in (ROOT / "utils").glob("*.py")] == ["__init__.py"]
    assert {p.name for p in (ROOT / "utils").iterdir() if p.is_dir() and p.name != "__pycache__"} == set(RANKS)
    for package in RANKS:
        assert (ROOT / "utils" / package / "__init__.py").read_text() == "", f"utils/{package}/__init__.py re-exports"


def test_utils_imports_go_one_way():
    assert layer_violations(ROOT / "utils") == []


def test_the_check_catches_a_wrong_import(tmp_path):
    """A deliberately wrong import (legal → inference, lazily inside a function) is reported with file:line."""
    for package in ("legal", "inference"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "inference" / "engine.py").write_text("from utils.legal.rag import prepare\n")
    (tmp_path / "legal" / "rag.py").write_text("def prepare():\n    from utils.inference.engine import Engine\n")
    assert layer_violations(tmp_path) == [
        f"{tmp_path / 'legal' / 'rag.py'}:2: utils.legal (rank 1) imports utils.inference.engine (rank 3); "
        "imports go to lower ranks only",
        f"{tmp_path / 'legal' / 'rag.py'}:2: utils.legal (rank 1) imports utils.inference.engine.Engine (rank 3); "
        "imports go to lower ranks only",
    ]
    (tmp_path / "legal" / "bm25.py").write_text("from utils.lawbench import metrics\n")  # same rank, sideways
    assert any("bm25.py:1: utils.legal (rank 1) imports utils.lawbench" in p for p in layer_violations(tmp_path))


def test_no_import_cycles_inside_utils(tmp_path):
    assert import_cycles(ROOT / "utils") == []
    (tmp_path / "legal").mkdir()
    (tmp_path / "legal" / "bm25.py").write_text("def dense():\n    from utils.legal.dense import Reranker\n")
    (tmp_path / "legal" / "dense.py").write_text("from utils.legal.bm25 import BM25Index\n")
    assert import_cycles(tmp_path) == [["utils.legal.bm25", "utils.legal.dense", "utils.legal.bm25"]]


def test_tools_take_no_private_names_from_other_tools(tmp_path):
    assert private_tool_imports(ROOT / "tools") == []
    (tmp_path / "a.py").write_text("from tools.b import _helper\n")
    assert private_tool_imports(tmp_path) == [f"{tmp_path / 'a.py'}:1: imports tools.b._helper, a private name of "
                                              "another tool (move it to utils/)"]


def test_tools_are_command_lines():
    """Every tools/*.py has a command line (library code posing as a tool belongs in utils/)."""
    for path in sorted((ROOT / "tools").glob("*.py")):
        if path.name != "__init__.py":
            assert 'if __name__ == "__main__":' in path.read_text(), f"{path} has no command line"


@pytest.mark.parametrize("package", TORCH_FREE)
def test_torch_free_packages_do_not_load_torch(package):
    modules = sorted(f"utils.{package}.{p.stem}" for p in (ROOT / "utils" / package).glob("*.py")
                     if p.name != "__init__.py")
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules) + \
        "heavy = sorted({'torch', 'transformers', 'peft'} & set(sys.modules))\nprint(heavy)\nsys.exit(bool(heavy))\n"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"importing utils.{package} loaded {run.stdout.strip()} {run.stderr[-500:]}"


def test_library_modules_stay_small():
    """docs/architecture.md: library modules < 400 lines, so each file still reads as one idea."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "utils").rglob("*.py")
            if (n := len(p.read_text().splitlines())) >= 400}
    assert long == {}
