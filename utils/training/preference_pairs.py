"""Preference pairs: reading them, tokenising them as finetune.py tokenises, and judging answers by their citations.

A pair is ``{instruction (or prompt), input, history, chosen, rejected}`` in ``.jsonl`` or a ``.json`` array; other
fields (``kind``, ``source`` …) are kept for reports and ignored by training. Written by tools/preference_data.py,
read by dpo.py; a malformed record stops with ``file:line``.

Tokenisation (:func:`preference_example`): the prompt is rendered by the same prompter as in finetune.py (our json
templates or the tokenizer's chat template), and prompt + answer are tokenised at once exactly as
:func:`utils.common.datafiles.sft_example` does, EOS after an answer that fits; the tokens before the last answer (earlier turns
of ``history`` included) are the prompt, which trl's DPOTrainer masks, the rest the completion.

Judging (:func:`assess`, :func:`tier`): the citation checker (utils/legal/citations.py) gives every citation a verdict; an
answer is *wrong* when a citation is not_found / repealed / unknown_law or its quote does not match the article,
*cites* when a citation is verified. Tiers for ranking a model's own answers: wrong 0 < cites nothing 1 < cites only
verified articles 2 < also cites the question's gold article 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from utils.common.datafiles import IGNORE_INDEX, DataError, read_records, sft_example
from utils.legal.citations import PROBLEMS, check_citations

TIER_NAMES = {0: "wrong citation", 1: "cites nothing", 2: "cites verified articles", 3: "cites the gold article"}


# ---------------------------------------------------------------- reading


def _text(record, key: str, required: bool) -> str:
    value = record.data.get(key, "" if not required else None)
    if value is None:
        raise DataError(f"{record.where}: missing field {key!r}")
    if not isinstance(value, str):
        raise DataError(f"{record.where}: field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"{record.where}: field {key!r} is empty")
    return value


def load_preference_data(path: str | Path) -> list[dict]:
    """Pairs of one file, validated: ``{instruction, input, history, chosen, rejected, kind, where}``."""
    pairs = []
    for record in read_records(path):
        if "instruction" in record.data and "prompt" in record.data:
            raise DataError(f"{record.where}: give the question as 'instruction' or 'prompt', not both")
        instruction = _text(record, "prompt" if "prompt" in record.data else "instruction", True)
        chosen, rejected = _text(record, "chosen", True), _text(record, "rejected", True)
        if chosen.strip() == rejected.strip():
            raise DataError(f"{record.where}: 'chosen' and 'rejected' are the same text: the pair teaches nothing")
        history = record.data.get("history") or []
        if not isinstance(history, list) or not all(
                isinstance(turn, list | tuple) and len(turn) == 2 and all(isinstance(t, str) for t in turn)
                for turn in history):
            raise DataError(f"{record.where}: field 'history' must be a list of [question, answer] string pairs")
        pairs.append({"instruction": instruction, "input": _text(record, "input", False), "history": history,
                      "chosen": chosen, "rejected": rejected, "kind": record.data.get("kind"), "where": record.where})
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return pairs


# ---------------------------------------------------------------- tokenising


def _split(example: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of an sft_example: the completion starts at the first labelled token."""
    labels = example["labels"]
    first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
    return example["input_ids"][:first], example["input_ids"][first:]


def preference_example(tokenizer, prompter, pair: dict, cutoff_len: int, add_eos_token: bool = True) -> dict | None:
    """``{prompt_ids, chosen_ids, rejected_ids}`` for trl's DPOTrainer, or None when no answer token fits."""
    sides = []
    for answer in (pair["chosen"], pair["rejected"]):
        segments = prompter.segments(pair["instruction"], pair["input"], answer, pair["history"])
        # Earlier turns' answers (history) belong to the prompt here: only the last answer is preferred or not.
        segments = [(text, False) for text, _ in segments[:-1]] + segments[-1:]
        sides.append(_split(sft_example(tokenizer, segments, cutoff_len, False, add_eos_token and prompter.needs_eos,
                                        prompter.add_special_tokens)))
    (prompt_c, chosen), (prompt_r, rejected) = sides
    # Both sides share the prompt; a token merging across the boundary on one side moves into its completion.
    common = next((i for i, (a, b) in enumerate(zip(prompt_c, prompt_r)) if a != b), min(len(prompt_c), len(prompt_r)))
    chosen, rejected = prompt_c[common:] + chosen, prompt_r[common:] + rejected
    if not chosen or not rejected:
        return None
    return {"prompt_ids": prompt_c[:common], "chosen_ids": chosen, "rejected_ids": rejected}


# ---------------------------------------------------------------- judging answers by their citations


@dataclass
class Assessment:
    citations: int  # verdicts naming an article (law_in_force mentions are not counted)
    verified: int
    problems: list[str]  # "《X》第N条: not_found", "…: quote_mismatch"
    gold_cited: bool

    @property
    def wrong(self) -> bool:
        return bool(self.problems)

    @property
    def cites_verified(self) -> bool:
        return self.verified > 0

    def to_dict(self) -> dict:
        return {"citations": self.citations, "verified": self.verified, "problems": self.problems,
                "gold_cited": self.gold_cited, "tier": tier(self)}


def assess(answer: str, store, gold: list[str] | tuple[str, ...] = ()) -> Assessment:
    """The citation checker's view of one answer; ``gold`` are citations that answer the question."""
    verdicts = check_citations(answer, store)
    problems = [f"{v.text}: {v.status}" for v in verdicts if v.status in PROBLEMS]
    problems += [f"{v.text}: quote_mismatch" for v in verdicts if v.quote_matches is False]
    wanted = set()
    for citation in gold:
        article = store.parse_citation(citation)
        wanted.add((article.law_name, article.number, article.suffix))
    cited = {(v.law_name, v.number, v.suffix) for v in verdicts if v.status == "verified"}
    return Assessment(sum(v.number is not None for v in verdicts), sum(v.status == "verified" for v in verdicts),
                      problems, bool(wanted & cited))


def tier(a: Assessment) -> int:
    """0 wrong citation < 1 cites nothing < 2 cites verified articles < 3 also cites the gold article."""
    if a.wrong:
        return 0
    if not a.cites_verified:
        return 1
    return 3 if a.gold_cited else 2


def pick_pair(answers: list[str], assessments: list[Assessment], min_gap: int = 1) -> tuple[int, int] | None:
    """(chosen, rejected) indices: the best and the worst answer by tier, when their tiers differ by ``min_gap``.

    Within a tier fewer problems, then more verified citations win; identical texts never pair."""
    def rank(i: int) -> tuple:
        a = assessments[i]
        return tier(a), -len(a.problems), a.verified

    order = sorted(range(len(answers)), key=rank)
    worst, best = order[0], order[-1]
    if tier(assessments[best]) - tier(assessments[worst]) < min_gap or answers[best].strip() == answers[worst].strip():
        return None
    return best, worst
