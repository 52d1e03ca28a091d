"""LeCoQA's answer metrics, computed as its authors' ``evaluation/calc.py`` computes them (oneal2000/LeCoQA, commit
538b299): both texts cut into words by jieba, then per answer nltk's ``meteor_score([reference], hypothesis)`` and
``sentence_bleu([reference], hypothesis, smoothing_function=SmoothingFunction().method4)``; a run's figure is the
mean over its answers.

nltk's METEOR asks WordNet for synonyms of every unmatched word. WordNet cannot be downloaded here, and it holds no
Chinese: for these tokens it finds nothing, so :class:`NoSynonyms` (a WordNet that knows no word) reproduces the
published METEOR and BLEU of every published run to 0.0005 (tests/test_lecoqa.py; benchmarks/RESULTS.md). BERTScore
needs the ``bert-base-chinese`` weights and LLM-Eval a judge model: neither is computed here, and no number is
printed for them.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.common.datafiles import DataError

METRICS = ("METEOR", "BLEU")


class NoSynonyms:
    """A WordNet that knows no word: what nltk's WordNet contributes for Chinese tokens (see the module docstring)."""

    def synsets(self, *args, **kwargs) -> list:
        return []


def read_answers(path: str | Path) -> dict[str, str]:
    """``{id: answer}`` from LeCoQA's JSONL format (``{"id", "answer"}`` per line); DataError naming file:line."""
    answers = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, answer = str(record["id"]), record["answer"]
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}:{number}: not a LeCoQA answer line ({{\"id\", \"answer\"}}): {e}") from e
            if not isinstance(answer, str):
                raise DataError(f"{path}:{number}: 'answer' must be a string")
            if key in answers:
                raise DataError(f"{path}:{number}: id {key} appears twice")
            answers[key] = answer
    return answers


def score_answers(expected: dict[str, str], generated: dict[str, str]) -> dict:
    """``{"METEOR": mean, "BLEU": mean, "n": answers, "items": {id: {"METEOR", "BLEU"}}}`` over ``expected``'s ids.

    Raises DataError when the two files do not hold the same ids (calc.py asserts the same)."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score

    missing, extra = sorted(set(expected) - set(generated)), sorted(set(generated) - set(expected))
    if missing or extra:
        raise DataError(f"the answers do not match the questions: {len(missing)} missing (e.g. {missing[:3]}), "
                        f"{len(extra)} not among them (e.g. {extra[:3]})")
    smoothing, wordnet, items = SmoothingFunction().method4, NoSynonyms(), {}
    for key, reference_text in expected.items():
        reference, hypothesis = list(jieba.cut(reference_text)), list(jieba.cut(generated[key]))
        items[key] = {"METEOR": meteor_score([reference], hypothesis, wordnet=wordnet),
                      "BLEU": sentence_bleu([reference], hypothesis, smoothing_function=smoothing)}
    n = len(items)
    return {**{m: sum(item[m] for item in items.values()) / n for m in METRICS}, "n": n, "items": items}
