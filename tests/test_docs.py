"""The documentation checks itself: sizes, links and anchors, module paths, the README's headline figures against
benchmarks/RESULTS.md, and every command line the docs show against the script it runs (docs/architecture.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LOG = ROOT / "benchmarks" / "LOG.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_BYTES, RESULTS_MAX_BYTES = 15_000, 40_000
CURRENT = [README, *DOCS, RESULTS]  # text that must name today's files (LOG.md keeps the paths of its time)

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
DATE = re.compile(r"(?<![\d-])\d{4}-\d{2}-\d{2}(?![\d-])")
COMMIT = re.compile(r"(?<![\w-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w-])")
NUMBER = re.compile(r"(?<![\w.,\-/@])\d[\d,]*(?:\.\d+)?(?![\w\-/])")


def prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_anchor(title: str) -> str:
    """GitHub's heading anchor: the rendered text lowercased, punctuation but '-' and '_' removed, spaces → '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def headings(path: Path) -> list[tuple[int, str, int]]:
    """(level, anchor, line index in the whole file) of every heading, duplicates suffixed -1, -2 as GitHub does."""
    found, seen, fenced = [], {}, False
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        anchor = github_anchor(match.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.append((len(match.group(1)), f"{anchor}-{count}" if count else anchor, index))
    return found


def section(path: Path, anchor: str) -> str:
    """The text under the heading ``anchor``, up to the next heading of the same or a higher level."""
    lines = path.read_text(encoding="utf-8").splitlines()
    marks = headings(path)
    for i, (level, name, start) in enumerate(marks):
        if name == anchor:
            end = next((line for lvl, _, line in marks[i + 1:] if lvl <= level), len(lines))
            return "\n".join(lines[start:end])
    raise AssertionError(f"{path.name} has no heading with anchor #{anchor}")


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path):
        line = re.sub(r"`[^`]*`", "", line)  # a link inside inline code is text
        links += [t for t in LINK.findall(line) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]
    return links


def figures(text: str) -> tuple[set[Decimal], set[str], set[str]]:
    """(numbers, dates, commits) written in ``text``; '1,367' and '1367.0' are the same number."""
    dates = set(DATE.findall(text))
    text = DATE.sub(" ", text)
    commits = set(COMMIT.findall(text))
    text = COMMIT.sub(" ", text)
    numbers = {Decimal(n.rstrip(",").replace(",", "")).normalize() for n in NUMBER.findall(text)}
    return numbers, dates, commits


def test_sizes():
    assert len(README.read_bytes()) <= README_MAX_BYTES, f"README.md is {len(README.read_bytes())} bytes"
    assert len(RESULTS.read_bytes()) <= RESULTS_MAX_BYTES, f"RESULTS.md is {len(RESULTS.read_bytes())} bytes"


@pytest.mark.parametrize("path", [README, *DOCS, RESULTS, LOG], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in {a for _, a, _ in headings(file)}:
            broken.append(f"{link}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert broken == []


def test_every_docs_page_is_in_the_readme_and_links_back():
    readme_links = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert [p.name for p in DOCS if p.resolve() not in readme_links] == [], "docs pages missing from README's map"
    for page in DOCS:
        lines = [line for line in prose_lines(page) if line.strip()]
        assert lines[0].startswith("# "), f"{page.name}: no title"
        assert "](../README.md)" in lines[1], f"{page.name}: the line under the title should link back to README"


def module_references(text: str) -> set[str]:
    """utils/ paths and dotted utils modules a text names (utils/x/y.py, utils.x.y)."""
    name = r"[a-z_][a-z0-9_]*"
    paths = set(re.findall(rf"(?<![\w/.])utils/{name}/{name}\.py", text))
    paths |= {f"utils/{a}/{b}.py" for a, b in re.findall(rf"(?<![\w.])utils\.({name})\.({name})", text)}
    return paths | set(re.findall(rf"(?<![\w/.])utils/{name}\.py", text))  # the flat layout: always stale


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_paths_exist(path):
    stale = sorted(m for m in module_references(path.read_text(encoding="utf-8")) if not (ROOT / m).is_file())
    assert stale == [], f"{path.name} names modules that do not exist"


def project_tree() -> set[str]:
    block = section(README, "project-structure").split("```")[1]
    return {line.split()[0] for line in block.splitlines() if line.strip()}


def test_project_tree_lists_every_file():
    listed = project_tree()
    files = {p.name for p in ROOT.glob("*.py")}
    files |= {str(p.relative_to(ROOT)) for p in (ROOT / "utils").glob("*/*.py") if p.name != "__init__.py"}
    files |= {str(p.relative_to(ROOT)) for p in (ROOT / "tools").glob("*.py") if p.name != "__init__.py"}
    files |= {str(p.relative_to(ROOT)) for p in (ROOT / "scripts").iterdir() if p.is_file()}
    assert sorted(files - listed) == [], "files missing from README's project structure"
    stale = sorted(e for e in listed if "." in e.split("/")[-1] and not (ROOT / e).exists())
    assert stale == [], "README's project structure lists files that do not exist"


def headline_rows() -> list[str]:
    return [line for line in section(README, "headline-figures").splitlines()
            if line.startswith("|") and "benchmarks/RESULTS.md#" in line]


def test_the_readme_has_headline_figures():
    assert len(headline_rows()) >= 5


@pytest.mark.parametrize("row", headline_rows(), ids=lambda r: r.split("|")[1].strip()[:40])
def test_headline_figure_is_the_one_in_results(row):
    """Every number, date and commit a headline row prints is written in the RESULTS section its link points at."""
    anchors = re.findall(r"\(benchmarks/RESULTS\.md#([^)]+)\)", row)
    text = section(RESULTS, anchors[0]) + "".join("\n" + section(RESULTS, a) for a in anchors[1:])
    shown = LINK.sub(" ", row)
    numbers, dates, commits = figures(shown)
    have_numbers, have_dates, have_commits = figures(text)
    assert sorted(numbers - have_numbers) == [], f"numbers not in RESULTS#{anchors[0]}"
    assert sorted(dates - have_dates) == [], f"dates not in RESULTS#{anchors[0]}"
    assert sorted(commits - have_commits) == [], f"commits not in RESULTS#{anchors[0]}"


def bash_commands() -> list[tuple[str, str]]:
    """(file, logical line) of every line in a ```bash block of README.md and docs/*.md."""
    found = []
    for path in [README, *DOCS]:
        block, pending = None, ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if FENCE.match(line):
                block = line.strip().strip("`~").strip() if block is None else None
                continue
            if block != "bash":
                continue
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            found.append((path.name, pending))
            pending = ""
    return found


def launched_by(shell_script: Path) -> set[str]:
    """The Python entry scripts a scripts/*.sh runs (read from its non-comment lines)."""
    scripts = set()
    for line in shell_script.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for name in re.findall(r"(?<![\w/.-])((?:tools/|benchmarks/)?[A-Za-z_]\w*\.py)\b", line):
            if (ROOT / name).is_file():
                scripts.add(name)
    return scripts


def referenced_entry_points() -> tuple[set[str], set[str], set[str]]:
    """(python scripts, shell scripts, python -m modules) the docs' bash lines run."""
    python, shell, modules = set(), set(), set()
    for _, line in bash_commands():
        command = re.split(r"\s#\s", line, maxsplit=1)[0]
        python |= set(re.findall(r"(?:^|[\s;&|(])(?:\S*/)?python3?\s+(?:-[uBOW]\S*\s+)*([\w/]+\.py)\b", command))
        python |= set(re.findall(r"\btorchrun\s+(?:--?\S+\s+)*([\w/]+\.py)\b", command))
        shell |= set(re.findall(r"\bbash\s+(scripts/[\w-]+\.sh)\b", command))
        modules |= {m for m in re.findall(r"(?:\S*/)?python3?\s+-m\s+([\w.]+)", command)
                    if m.split(".")[0] in ("utils", "tools", "benchmarks")}
    return python, shell, modules


def test_the_docs_run_only_scripts_that_exist():
    python, shell, modules = referenced_entry_points()
    assert python and shell, "no command lines found in the docs' bash blocks"
    missing = sorted(p for p in python | shell if not (ROOT / p).is_file())
    missing += sorted(m for m in modules if not (ROOT / (m.replace(".", "/") + ".py")).is_file())
    assert missing == []


def help_targets() -> list[str]:
    """Each Python entry script the docs run, directly or through a scripts/*.sh, once."""
    python, shell, modules = referenced_entry_points()
    scripts = {p for p in python if (ROOT / p).is_file() and (p.count("/") == 0 or p.startswith(("tools/", "benchmarks/")))}
    for name in shell:
        if (ROOT / name).is_file():
            scripts |= launched_by(ROOT / name)
    return sorted(scripts) + sorted(f"-m {m}" for m in modules if (ROOT / (m.replace(".", "/") + ".py")).is_file())


@pytest.mark.slow
@pytest.mark.parametrize("target", help_targets())
def test_help_of_every_documented_command(target):
    """`--help` of each script a documented command runs: exit 0, a usage text, no traceback (imports torch: slow)."""
    command = [sys.executable, *target.split(), "--help"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PAGER": "cat"})
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-2000:]
    assert text.strip(), f"{target} --help printed nothing"
    assert "Traceback" not in text, text[-2000:]
