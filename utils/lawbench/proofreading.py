"""LawBench task 2-1 (文书校对, proofreading), scored exactly as LawBench scores it.

Written from LawBench's definitions (open-compass/LawBench, commit e30981b, Apache-2.0):
``evaluation/evaluation_functions/wsjd.py`` (source sentence, prediction clean-up), ``evaluation/utils/
parallel_to_m2.py -g char`` (whitespace removal, OpenCC t2s, ChERRANT's character-level edits: see
``utils/lawbench/cherrant_char.py``) and ``evaluation/utils/compare_m2_for_evaluation.py`` (span-based correction
TP/FP/FN, corpus F0.5). Quirks kept, because the published scores have them:

- The source is the prompt's line after ``句子：\\n``, whatever follows it on that line (a chat template's
  ``<|im_end|>`` included) — the gold edits are taken against that line too.
- A prediction loses newlines and tabs; one more than 5 characters longer than the (raw) reference is cut to
  reference length + 5; an empty one becomes ``无内容``. Predictions and references (not sources) then go
  through OpenCC t2s; all whitespace is removed from all three.
- Every cheapest alignment contributes its edits: an edit found by two alignments counts twice (as TP, FP or
  FN). A prediction equal to the source has no edits; the reference 无法标注 leaves an item out.
- The F0.5 is computed from corpus totals and rounded to 4 decimals, as LawBench prints it; precision is 1 when
  there is no FP and recall 1 when there is no FN.

LawBench's timeout, which does fire: ``parallel_to_m2.py`` annotates each line under a 10-second
``timeout_decorator`` and, for a line that times out *or raises*, replaces the target by 无 and annotates again.
ChERRANT's own code is slow where we are not: its transposition search lists both sentences at every step back
along a diagonal, and it walks, merges and de-duplicates (by list search) every cheapest alignment, whose number
explodes when a prediction is unrelated text of about the source's length (10^20 for one LaWGPT line). Run here (2 cores, shared
and loaded, so timings are noisy), the original's slowest line for GPT-4, Qwen-7B-Chat and fuzi.mingcha took 3.8 s
and none timed out; 53 of LaWGPT-7B-beta1.1's zero-shot predictions, 52 of Alpaca-7B's and 4 of GPT-3.5's
one-shot ones ran past 10 s (one took 58 s without the limit), and about 30 more per such model took 3–10 s.
What we do instead:

- An empty target (after whitespace removal) is replaced by 无: exactly LawBench's outcome (a KeyError there).
- A line whose *modelled* time in ChERRANT's code exceeds ``TIMEOUT_SECONDS`` is replaced by 无. The model counts
  ChERRANT's work exactly (``original_work``: transposition-loop iterations × sentence length,
  cheapest alignments × sentence length, matrix cells), weighted by seconds fitted to the original's timings of
  2,081 lines here (median ratio 1.04, 90% of lines within 0.54–1.48×), against LawBench's own 10 s. Checked
  afterwards on the published scores of four models with many timeouts, a threshold anywhere from 9 to
  13 s keeps them within 0.0007 (at 5 s LaWGPT would be off by 0.0017): LawBench's authors ran on another
  machine, and a wall-clock limit cannot be reproduced line by line. Where no line comes near the limit (GPT-4,
  Qwen-7B-Chat, fuzi.mingcha, InternLM-Chat, …) the published score is reproduced exactly; where a model writes
  long unrelated text, to within 1e-3.
- Not reproduced: a Python recursion limit in ChERRANT's path search (about 990 steps: sentences of ~500+
  characters; LawBench's longest source has 452) and OpenCC/pypinyin versions other than those pinned.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import numpy as np

from utils.lawbench.cherrant_char import (
    char_edits,
    count_alignments,
    substitution_cost,
    tokenize,
    transposition_cost,
    transposition_starts,
)

PROMPT_MARK = "句子：\n"  # wsjd.py: the source starts 4 characters after this mark
NO_CONTENT = "无内容"  # wsjd.py's stand-in for an empty prediction
TIMED_OUT = "无"  # parallel_to_m2.py's target for a line whose annotation timed out or raised
# LawBench's 10 s per line, as a model of ChERRANT's own time (seconds per unit, fitted to its timings here):
# each transposition-loop iteration lists both sentences, each alignment is walked, merged and compared with the
# earlier ones, each cell is filled. The threshold is in the model's seconds (module docstring).
SECONDS_PER_ITERATION_TOKEN = 2.9e-8
SECONDS_PER_ALIGNMENT_TOKEN = 8.1e-7
SECONDS_PER_CELL = 9.7e-6
TIMEOUT_SECONDS = 10.0  # LawBench's own limit, in the model's seconds
TRUNCATE_MARGIN = 5
BETA = 0.5
_NEWLINES = re.compile(r"\n|\t")


def source_from_prompt(prompt: str) -> str:
    """wsjd.py: the text after ``句子：\\n`` up to the next newline, tabs removed. For LawBench's 2-1 data
    (prompt = instruction + "\\n" + question) this is the question itself."""
    if PROMPT_MARK not in prompt:
        raise ValueError(f"not a LawBench 2-1 prompt: no {PROMPT_MARK!r} in {prompt[:80]!r}")
    start = prompt.index(PROMPT_MARK) + len(PROMPT_MARK)
    return _NEWLINES.sub("", prompt[start:].split("\n")[0])


def clean_prediction(prediction: str, reference: str) -> str:
    """wsjd.py: newlines and tabs removed, cut to len(reference) + 5 when longer than that, 无内容 if empty."""
    prediction = _NEWLINES.sub("", prediction)
    if len(prediction) - len(reference) > TRUNCATE_MARGIN:
        prediction = prediction[: len(reference) + TRUNCATE_MARGIN]
    return prediction or NO_CONTENT


@cache
def _t2s():
    from opencc import OpenCC

    return OpenCC("t2s")


def _squeeze(text: str) -> str:
    """parallel_to_m2.py: every whitespace character removed (``"".join(text.split())``)."""
    return "".join(text.split())


def _loop_iterations(a: list[str], b: list[str]) -> int:
    """How many times ChERRANT's transposition loop runs its body (two sorts, after listing every token of both
    sentences) over the whole cost matrix of a and b: per non-matching cell, the steps back along the diagonal
    until the first flat step, the border or the first anagram window."""
    n, m = len(a), len(b)
    if not n or not m:
        return 0
    vocab = {tok: t for t, tok in enumerate(dict.fromkeys((*a, *b)))}
    starts = transposition_starts(np.array([vocab[t] for t in a]), np.array([vocab[t] for t in b])).tolist()
    cost, total, inf = [[float(j) for j in range(m + 1)]], 0, float("inf")
    last_flat = [-1] * (n + m + 1)  # per diagonal (i - j + m): the latest row q whose step q → q+1 is flat
    sub_rows: dict[str, list[float]] = {}
    for i, ai in enumerate(a):
        up, prev, start, row = cost[i], cost[i - 1], starts[i], [i + 1.0]
        if ai not in sub_rows:
            sub_rows[ai] = [0.0 if ai == bj else substitution_cost(ai, bj) for bj in b]
        sub_row = sub_rows[ai]
        for j, bj in enumerate(b):
            d = i - j + m
            if i and j and up[j] == prev[j - 1]:
                last_flat[d] = i - 1
            if ai == bj:
                row.append(up[j])
                continue
            flat, trans = last_flat[d], inf
            if start[j] > flat:
                trans = transposition_cost(a, b, cost, i, j, start[j])[0]
            total += i - start[j] if trans < inf else min(i, j) if flat < 0 else min(j, i - 1 - flat)
            best = up[j] + sub_row[j]
            best = min(best, row[j] + 1, up[j + 1] + 1, trans)
            row.append(best)
        cost.append(row)
    return total


def loop_iterations_bound(source: str, target: str) -> int:
    """An upper bound of ``_loop_iterations`` without costs: a loop stops at the latest match on its diagonal
    (a match step is always flat), so each non-matching cell adds at most its run of non-matches."""
    a, b = tokenize(source), tokenize(target)
    if not a or not b:
        return 0
    vocab = {tok: t for t, tok in enumerate(dict.fromkeys((*a, *b)))}
    match = np.array([vocab[t] for t in a])[:, None] == np.array([vocab[t] for t in b])[None, :]
    run, total = np.zeros(len(b) + 1, dtype=np.int64), 0
    for i in range(len(a)):  # run[j] = non-matches ending at (i-1, j-1) on that diagonal
        total += int(run[:-1][~match[i]].sum())
        run = np.concatenate(([0], np.where(match[i], 0, run[:-1] + 1)))
    return total


def original_work(source: str, target: str, iterations: bool = True) -> tuple[int, int, int]:
    """What ChERRANT's own code spends on a pair, in its units: transposition-loop iterations (0 unless asked
    for: a second pass over the whole matrix), cheapest alignments listed, cost-matrix cells."""
    src, tgt = tokenize(source), tokenize(target)
    prefix = 0
    while prefix < min(len(src), len(tgt)) and src[prefix] == tgt[prefix]:
        prefix += 1  # every cell of a shared prefix is flat: no iterations there
    return (
        _loop_iterations(src[prefix:], tgt[prefix:]) if iterations else 0,
        count_alignments(source, target),
        len(src) * len(tgt),
    )


def original_seconds(source: str, target: str) -> float:
    """The modelled time of ChERRANT's own annotation of one line. Counting the transposition loop's iterations
    takes a second pass over the whole matrix, so an upper bound of them is used while that already keeps the
    line within the limit."""
    if source == target:
        return 0.0
    n, m = len(source), len(target)
    _, alignments, cells = original_work(source, target, iterations=False)
    rest = SECONDS_PER_ALIGNMENT_TOKEN * alignments * (n + m) + SECONDS_PER_CELL * cells
    bound = rest + SECONDS_PER_ITERATION_TOKEN * loop_iterations_bound(source, target) * (n + m)
    if bound <= TIMEOUT_SECONDS or rest > TIMEOUT_SECONDS:
        return bound
    return rest + SECONDS_PER_ITERATION_TOKEN * original_work(source, target)[0] * (n + m)


@lru_cache(maxsize=8192)
def _edits(source: str, target: str) -> tuple[tuple[tuple[int, int, str, str], ...], bool]:
    """The M2 edits of one line and whether LawBench's timeout replacement (target → 无) applied."""
    target = _t2s().convert(_squeeze(target))
    if not source:
        raise ValueError("empty source sentence: LawBench's scorer fails on it too")
    if target and original_seconds(source, target) <= TIMEOUT_SECONDS:
        return tuple(char_edits(source, target)), False
    return tuple(char_edits(source, _t2s().convert(TIMED_OUT))), True


def _by_span(edits) -> dict[tuple[int, int, str], list[str]]:
    """compare_m2's process_edits (span-based correction): (start, end, correction) → categories."""
    spans: dict[tuple[int, int, str], list[str]] = {}
    for start, end, category, correction in edits or [(-1, -1, "noop", "-NONE-")]:
        spans.setdefault((start, end, correction), []).append(category)
    return spans


def compare_edits(hypothesis, reference) -> tuple[int, int, int]:
    """compare_m2's compareEdits for one sentence: a hypothesis edit found in the reference adds the
    reference's count to TP, else its own count to FP; a reference edit not hypothesised adds to FN; noop
    edits count for nothing. A reference that is only ``NA`` (无法标注) leaves the sentence out (0, 0, 0).
    With one hypothesis and one reference annotator, compare_m2's best-combination search has one pair."""
    hyp, ref = _by_span(hypothesis), _by_span(reference)
    if len(ref) == 1 and next(iter(ref.values()))[0] == "NA":
        return 0, 0, 0
    tp = fp = fn = 0
    for span, categories in hyp.items():
        if categories[0] == "noop":
            continue
        if span in ref:
            tp += len(ref[span])
        else:
            fp += len(categories)
    for span, categories in ref.items():
        if categories[0] != "noop" and span not in hyp:
            fn += len(categories)
    return tp, fp, fn


def f_beta(tp: int, fp: int, fn: int, beta: float = BETA) -> float:
    """compare_m2's computeFScore, rounded to 4 decimals like its printout (which LawBench parses)."""
    p = tp / (tp + fp) if fp else 1.0
    r = tp / (tp + fn) if fn else 1.0
    f = (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0
    return round(f, 4)


def score_proofreading(
    sources: list[str], predictions: list[str], references: list[str]
) -> tuple[float, list[dict]]:
    """LawBench's whole 2-1 score. ``sources`` are the sentences to correct (``source_from_prompt`` of a
    LawBench prompt, or the item's question). Returns (corpus F0.5 in 0..1 as LawBench reports it, per item
    ``{"tp", "fp", "fn", "prediction", "hypothesis_edits", "reference_edits", "timed_out"}``), where
    ``prediction`` is the cleaned text that was scored and ``timed_out`` names the side(s) replaced by 无."""
    if not len(sources) == len(predictions) == len(references):
        raise ValueError(
            f"{len(sources)} sources, {len(predictions)} predictions, {len(references)} references: one each"
        )
    items, totals = [], [0, 0, 0]
    for source, prediction, reference in zip(sources, predictions, references):
        prediction = clean_prediction(prediction, reference)
        source = _squeeze(source)
        hyp, hyp_out = _edits(source, prediction)
        ref, ref_out = _edits(source, _NEWLINES.sub("", reference))
        counts = compare_edits(hyp, ref)
        totals = [a + b for a, b in zip(totals, counts)]
        items.append(
            {
                **dict(zip(("tp", "fp", "fn"), counts)),
                "prediction": prediction,
                "hypothesis_edits": list(hyp),
                "reference_edits": list(ref),
                "timed_out": [side for side, out in (("prediction", hyp_out), ("reference", ref_out)) if out],
            }
        )
    return f_beta(*totals), items
