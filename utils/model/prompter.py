"""Prompt templates: load, validate, render single- and multi-turn prompts, extract answers.

A template is a JSON file in ``templates/`` (resolved next to this repository, never relative
to the current directory) with these keys:

- ``system``: text put once at the start of every prompt (may be empty);
- ``prompt_input``: one turn when an input is given; must use ``{instruction}`` and ``{input}``;
- ``prompt_no_input``: one turn without input; must use ``{instruction}`` and nothing else;
- ``response_split``: the marker after which the model's answer starts;
- ``stop``: strings that mark the start of a next turn (generation stops there);
- ``description``: free text.

Multi-turn: earlier ``(question, answer)`` pairs are rendered with ``prompt_no_input`` followed by
their answer and a newline, then the current turn. ``segments`` returns the same text cut into
pieces flagged as prompt or response, which is what label masking needs.

System text: ``system`` (a keyword of every render call, or ``default_system`` for the prompter) replaces
the template's system text and is followed by a newline; ``None`` keeps the template's. The same rule is
what utils/model/chat_template.py writes into a trained model's tokenizer as its Jinja ``chat_template``.
The tokenizer's own chat template (``--prompt_template chat``) lives in utils/model/chat_template.py too.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from utils.common.errors import LawgptError
from utils.common.paths import REPO_ROOT

TEMPLATES_DIR = REPO_ROOT / "templates"
REQUIRED_KEYS = ("prompt_input", "prompt_no_input", "response_split")
# Which placeholders each field must use (and may use): anything else is a typo in the template.
PLACEHOLDERS = {
    "system": set(),
    "prompt_input": {"instruction", "input"},
    "prompt_no_input": {"instruction"},
    "response_split": set(),
}


class TemplateError(LawgptError, ValueError):
    """A template is missing, unknown or malformed."""


def available_templates(directory: Path = TEMPLATES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json"))


def _placeholders(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as e:  # unbalanced braces
        raise TemplateError(f"malformed braces in {text!r}: {e}") from e


def _resolve(name_or_path: str) -> Path:
    """A template name (``law_template``) from templates/, or an explicit path to a .json file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    path = TEMPLATES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise TemplateError(
            f"unknown prompt template {name_or_path!r}; available: {', '.join(available_templates())} "
            f"(in {TEMPLATES_DIR}), chat (the tokenizer's own chat_template), or a path to a .json template"
        )
    return path


@dataclass
class Prompter:
    name: str = "law_template"
    default_system: str | None = None  # replaces the template's system text (a newline is added)
    system: str = field(init=False, default="")
    prompt_input: str = field(init=False, default="")
    prompt_no_input: str = field(init=False, default="")
    response_split: str = field(init=False, default="")
    stop: list[str] = field(init=False, default_factory=list)
    description: str = field(init=False, default="")
    # How a rendered prompt is tokenised: the tokenizer adds its special tokens (BOS) itself, EOS is appended to a
    # trained answer, and no extra end-of-turn token ids exist (the chat-template prompter differs on all three).
    add_special_tokens: bool = field(init=False, default=True)
    needs_eos: bool = field(init=False, default=True)
    stop_token_ids: tuple[int, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        path = _resolve(self.name)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TemplateError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
        if not isinstance(spec, dict):
            raise TemplateError(f"{path}: a template must be a JSON object")
        missing = [k for k in REQUIRED_KEYS if not isinstance(spec.get(k), str) or not spec.get(k)]
        if missing:
            raise TemplateError(f"{path}: missing or empty key(s): {', '.join(missing)}")
        for key, allowed in PLACEHOLDERS.items():
            used = _placeholders(spec.get(key, ""))
            required = allowed if key.startswith("prompt_") else set()
            if used - allowed:
                raise TemplateError(f"{path}: {key} uses unknown placeholder(s) {sorted(used - allowed)}")
            if required - used:
                raise TemplateError(f"{path}: {key} must use placeholder(s) {sorted(required - used)}")
        stop = spec.get("stop", [])
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise TemplateError(f"{path}: 'stop' must be a list of non-empty strings")
        self.system = spec.get("system", "") if self.default_system is None else self.default_system + "\n"
        self.prompt_input = spec["prompt_input"]
        self.prompt_no_input = spec["prompt_no_input"]
        self.response_split = spec["response_split"]
        self.stop = stop
        self.description = spec.get("description", "")

    def _turn(self, instruction: str, input: str | None) -> str:
        if input:
            return self.prompt_input.format(instruction=instruction, input=input)
        return self.prompt_no_input.format(instruction=instruction)

    def system_text(self, system: str | None = None) -> str:
        """The text a prompt starts with: the template's (or ``default_system``), or ``system`` + newline."""
        return self.system if system is None else system + "\n"

    def segments(
        self,
        instruction: str,
        input: str | None = None,
        output: str | None = None,
        history: list[tuple[str, str]] | None = None,
        system: str | None = None,
    ) -> list[tuple[str, bool]]:
        """The prompt cut into ``(text, is_response)`` pieces; ``output`` (if given) is the last piece."""
        pieces: list[tuple[str, bool]] = []
        prefix = self.system_text(system)
        for question, answer in history or []:
            pieces.append((prefix + self._turn(question, None), False))
            pieces.append((f"{answer}\n", True))
            prefix = ""
        pieces.append((prefix + self._turn(instruction, input), False))
        if output is not None:
            pieces.append((output, True))
        return pieces

    def generate_prompt(
        self,
        instruction: str,
        input: str | None = None,
        label: str | None = None,
        history: list[tuple[str, str]] | None = None,
        system: str | None = None,
    ) -> str:
        return "".join(text for text, _ in self.segments(instruction, input, label, history, system))

    def get_response(self, output: str) -> str:
        """The answer part of a generated text: after the last response marker, before any next turn.

        Works on a full decoded sequence (prompt + answer) or on the answer alone (no marker).
        """
        answer = output.rsplit(self.response_split, 1)[-1]
        for marker in self.stop:
            answer = answer.split(marker, 1)[0]
        return answer.strip()
