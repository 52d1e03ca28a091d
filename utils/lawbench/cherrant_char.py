"""ChERRANT's character-level edit extraction, as LawBench's 2-1 scorer runs it (``parallel_to_m2.py -g char``).

Written from the definitions in LawBench's ``evaluation/utils/modules/`` (open-compass/LawBench, commit e30981b,
Apache-2.0; itself ChERRANT from MuCGEC): ``tokenizer.py`` (characters), ``alignment.py`` (a weighted Levenshtein
with transpositions, every cheapest alignment), ``merger.py`` (token edits → span edits) and ``classifier.py``
(char granularity: M missing, R redundant, S substitution, W word order). ``char_edits(source, target)`` returns
the edits ChERRANT writes to its M2 file, as ``(start, end, category, correction)``, one per ``A`` line;
``count_alignments`` how many cheapest alignments it lists (what makes it slow, see lawbench_proofreading).

Data (``resources/cherrant/``, see its README): the 同义词词林 code of every single character and the symmetric
single-character confusion pairs — the only parts of ChERRANT's ``cilin.txt``/``confusion_dict.txt`` that the
character path can look up. ``char_meta.txt`` is read by ChERRANT only for word-level spelling checks: not needed.

Speed, with the same result: ChERRANT fills the whole cost matrix and looks for a transposition by sorting ever
longer windows (cubic). Here (1) a shared suffix is cut before the matrix (its cells are all matches, which have
the single operation M, so every cheapest path walks it diagonally); (2) a shared prefix P is cut too: the matrix
of the rest is exactly the bottom-right block of the full one (``C[P][j] = j - P``: a match run then insertions; a
transposition search stops at the border because that step is flat), and on a path that leaves the block every
cell costs its lower bound ``|i - j|``, where the only cheapest operation is M on equal characters, else I
(or D); (3) the transposition search keeps, per diagonal, a multiset hash of the prefixes since the last flat step,
so the nearest anagram window is a dictionary look-up (verified by sorting; the literal search on a mismatch).
"""

from __future__ import annotations

import lzma
import string
from functools import cache, lru_cache
from itertools import groupby

import Levenshtein
import numpy as np
from pypinyin import Style, pinyin

from utils.common.paths import REPO_ROOT

DATA = REPO_ROOT / "resources" / "cherrant"
MISSING = "[缺失成分]"  # ChERRANT's token for a missing constituent (tokenizer.py keeps it whole)
# alignment.py's punctuation (substitution cost) and merger.py's (which patterns merge): not the same strings,
# and ChERRANT tests both with `in` on the string, so a run such as "！？" counts as punctuation too.
ALIGN_PUNCT = "！？｡＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘'‛“”„‟…‧﹏" + string.punctuation
MERGE_PUNCT = string.punctuation + "！？｡＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟–—‘'‛“”„‟…‧."
ALL, FIRST = "all", "first"
T_BIT, S_BIT, I_BIT, D_BIT, M_BIT = 1, 2, 4, 8, 16  # in the order ChERRANT lists tied operations


@cache
def _cilin() -> dict[str, str]:
    with open(DATA / "cilin_chars.txt", encoding="utf-8") as f:
        return dict(line.split() for line in f)


@cache
def _confusable() -> dict[str, str]:
    related: dict[str, list[str]] = {}
    for line in lzma.decompress((DATA / "confusion_pairs.txt.xz").read_bytes()).decode("utf-8").splitlines():
        char, others = line.split(" ")
        related.setdefault(char, []).append(others)
        for other in others:
            related.setdefault(other, []).append(char)
    return {char: "".join(chars) for char, chars in related.items()}


@cache
def _readings(char: str) -> frozenset[str]:
    return frozenset(pinyin(char, style=Style.NORMAL, heteronym=True)[0])


def tokenize(text: str) -> list[str]:
    """tokenizer.py ``split_char``: one token per character, except ``[缺失成分]``."""
    parts = text.split(MISSING)
    tokens = list(parts[0])
    for part in parts[1:]:
        tokens.append(MISSING)
        tokens.extend(part)
    return tokens


def _is_chinese(token: str) -> bool:
    return all("\u4e00" <= ch <= "\u9fff" for ch in token)


@cache
def _features(token: str) -> tuple[tuple[str, str, str] | None, bool, bool]:
    """A token's 词林 classes (levels 1, 2 and 3 of its code; None if absent), whether it is all Chinese
    (U+4E00..U+9FFF, alignment.py's test) and whether it is punctuation (``in`` alignment.py's string)."""
    code = _cilin().get(token)
    return (None if code is None else (code[0], code[1], code[2:4])), _is_chinese(token), token in ALIGN_PUNCT


@cache
def substitution_cost(a: str, b: str) -> float:
    """alignment.py ``get_sub_cost`` at char granularity, for a != b: semantic (词林 classes: 4 unknown, 0 same,
    else 2 × differing levels, /6) + character (0.5 unless both Chinese; then 0 when a reading is shared or the
    pair is a known confusion, else 0.5) + punctuation (0 both, 0.25 neither, 0.499 one) — summed in that order."""
    (classes_a, chinese_a, punct_a), (classes_b, chinese_b, punct_b) = _features(a), _features(b)
    if classes_a is None or classes_b is None:
        semantic = 4
    elif classes_a == classes_b:
        semantic = 0
    else:
        semantic = 2 * (3 - (classes_a[0] == classes_b[0]) - (classes_a[1] == classes_b[1]) - (classes_a[2] == classes_b[2]))
    if not (chinese_a and chinese_b):
        char = 0.5
    else:  # single characters here: ChERRANT's spelling similarity is then all or nothing
        char = 0.0 if (_readings(a) & _readings(b)) or b in _confusable().get(a, "") else 0.5
    punct = 0.0 if punct_a and punct_b else 0.25 if not punct_a and not punct_b else 0.499
    return semantic / 6.0 + char + punct


def transposition_starts(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """For each cell (i, j): the largest row p < i such that a[p..i] and b[p-i+j..j] hold the same tokens and no
    match lies between (or -1) — ChERRANT's transposition window, found by hashing: the windows are anagrams iff
    the diagonal's prefix-multiset hashes ``HS[x] - HT[y]`` are equal at both ends. Hash equality is verified
    by the caller."""
    n, m = len(ia), len(ib)
    weights = np.random.default_rng(0).integers(0, 2**63, size=max(ia.max(), ib.max()) + 1, dtype=np.uint64)
    zero = np.zeros(1, dtype=np.uint64)
    hs, ht = (np.concatenate((zero, np.cumsum(weights[ids], dtype=np.uint64))) for ids in (ia, ib))
    hashes = hs[:, None] - ht[None, :]  # wraps modulo 2**64: still a multiset hash
    segment = np.zeros((n + 1, m + 1), dtype=np.int64)  # matches so far on the diagonal: windows may not span one
    matches = ia[:, None] == ib[None, :]
    for x in range(1, n + 1):
        segment[x, 1:] = segment[x - 1, :-1] + matches[x - 1]
    rows, cols = np.indices((n + 1, m + 1))
    keys = (rows.ravel(), hashes.ravel(), segment.ravel(), (rows - cols).ravel())
    order = np.lexsort(keys)
    same = np.ones(order.size, dtype=bool)
    for key in keys[1:]:
        ordered = key[order]
        same[1:] &= ordered[1:] == ordered[:-1]
    same[0] = False
    previous = np.full(order.size, -1, dtype=np.int64)
    previous[order[1:]] = np.where(same[1:], keys[0][order[:-1]], -1)
    return previous.reshape(n + 1, m + 1)[1:, 1:]  # cell (i, j) asks at G-cell (i + 1, j + 1)


@lru_cache(maxsize=16)  # a line is counted (to model ChERRANT's time) before its alignments are listed
def _operations(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[list[list[int]], list[list[int]]]:
    """alignment.py ``align``: per cell, the cheapest operations into it as bits (M alone on equal tokens, else
    each of T<k>, S, I, D whose total ties the minimum) and the T's k, with ChERRANT's float sums in its order."""
    n, m = len(a), len(b)
    ops = [[0] * (m + 1) for _ in range(n + 1)]
    ks = [[0] * (m + 1) for _ in range(n + 1)]
    if not n or not m:  # the walk never reads row 0 or column 0 of this block
        return ops, ks
    vocab = {tok: t for t, tok in enumerate(dict.fromkeys((*a, *b)))}
    starts = transposition_starts(np.array([vocab[t] for t in a]), np.array([vocab[t] for t in b])).tolist()
    cost = [[float(j) for j in range(m + 1)]]
    sub_rows: dict[str, list[float]] = {}
    for i in range(n):
        up, ai, start, op_row, k_row = cost[i], a[i], starts[i], ops[i + 1], ks[i + 1]
        if ai not in sub_rows:
            sub_rows[ai] = [0.0 if ai == bj else substitution_cost(ai, bj) for bj in b]
        sub_row, left, row = sub_rows[ai], i + 1.0, [i + 1.0]
        for j, bj in enumerate(b):
            if ai == bj:
                left = up[j]
                row.append(left)
                op_row[j + 1] = M_BIT
                continue
            sub, ins, dele = up[j] + sub_row[j], left + 1, up[j + 1] + 1
            left = sub if sub <= ins else ins
            if dele < left:
                left = dele
            bits = (sub == left) * S_BIT | (ins == left) * I_BIT | (dele == left) * D_BIT
            if start[j] >= 0:
                trans, k = transposition_cost(a, b, cost, i, j, start[j])
                if trans < left:
                    left, bits = trans, T_BIT
                elif trans == left:
                    bits |= T_BIT
                k_row[j + 1] = k + 1
            row.append(left)
            op_row[j + 1] = bits
        cost.append(row)
    return ops, ks


def transposition_cost(a, b, cost, i, j, p) -> tuple[float, int]:
    """ChERRANT's transposition candidate at cell (i, j): it walks back along the diagonal while each step changes
    the cost and takes the first window a[i-k..i] / b[j-k..j] holding the same tokens. ``p`` is the nearest such
    window start since the last match (hashed), so only the steps down to it need checking."""
    for q in range(i - 1, p - 1, -1):
        if cost[q + 1][q + 1 - i + j] == cost[q][q - i + j]:
            return float("inf"), 0
    if sorted(a[p : i + 1]) != sorted(b[j - i + p : j + 1]):  # a hash collision: search literally
        k = 1
        while i - k >= 0 and j - k >= 0 and cost[i - k + 1][j - k + 1] != cost[i - k][j - k]:
            if sorted(a[i - k : i + 1]) == sorted(b[j - k : j + 1]):
                return cost[i - k][j - k] + k, k
            k += 1
        return float("inf"), 0
    return cost[p][j - i + p] + (i - p), i - p


def _cheapest_paths(src: list[str], tgt: list[str], count_only: bool = False):
    """alignment.py ``get_cheapest_align_seq``: every cheapest path from the start to the end (only the first
    operation of each cell when the lengths differ by more than 10), each a list of (op, i1, i2, j1, j2)."""
    n, m = len(src), len(tgt)
    suffix = 0
    while suffix < min(n, m) and src[n - 1 - suffix] == tgt[m - 1 - suffix]:
        suffix += 1
    rows, cols = n - suffix, m - suffix
    prefix = 0
    while prefix < min(rows, cols) and src[prefix] == tgt[prefix]:
        prefix += 1
    table, ks = _operations(tuple(src[prefix:rows]), tuple(tgt[prefix:cols]))
    strategy = FIRST if abs(n - m) > 10 else ALL
    tail = tuple(("M", t, t + 1, t - n + m, t - n + m + 1) for t in range(rows, n))

    def operations(i: int, j: int) -> tuple[str, ...]:
        if i > prefix and j > prefix:
            bits = table[i - prefix][j - prefix]
            ops = ("M",) if bits & M_BIT else tuple(
                op for bit, op in ((T_BIT, f"T{ks[i - prefix][j - prefix]}"), (S_BIT, "S"), (I_BIT, "I"), (D_BIT, "D"))
                if bits & bit
            )
        else:  # outside the computed block every cell on a cheapest path costs |i - j| (module docstring)
            ops = ("M",) if i and j and src[i - 1] == tgt[j - 1] else ("I",) if i < j else ("D",)
        return ops if strategy == ALL else ops[:1]

    def before(i: int, j: int, op: str) -> tuple[int, int]:
        if op == "M" or op == "S":
            return i - 1, j - 1
        if op == "D":
            return i - 1, j
        if op == "I":
            return i, j - 1
        return i - int(op[1:]), j - int(op[1:])

    if count_only:
        counts: dict[tuple[int, int], int] = {(0, 0): 1}
        todo = [(rows, cols)]
        while todo:
            cell = todo[-1]
            missing = [p for p in (before(*cell, op) for op in operations(*cell)) if p not in counts]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            counts[cell] = sum(counts[before(*cell, op)] for op in operations(*cell))
        return counts[rows, cols]
    paths, stack = [], [(rows, cols, None)]
    while stack:
        i, j, chain = stack.pop()
        if i + j == 0:
            path = []
            while chain is not None:
                step, chain = chain
                path.append(step)
            paths.append(path + list(tail))
            continue
        for op in operations(i, j):
            pi, pj = before(i, j, op)
            stack.append((pi, pj, ((op, pi, i, pj, j), chain)))
    return paths


def _span(seq: list[tuple], tag: str) -> tuple:
    return (tag, seq[0][1], seq[-1][2], seq[0][3], seq[-1][4])


def _merge_run(seq: list[tuple]) -> list[tuple]:
    """merger.py ``_process_seq`` at char granularity: a run of D (or of I) becomes one edit, D and I mixed stay
    apart, M runs and any other mix become one (M or S) edit."""
    kinds = {step[0] for step in seq}
    if len(seq) <= 1 or kinds == {"D", "I"}:
        return seq
    if kinds in ({"D"}, {"I"}, {"M"}):
        return [_span(seq, kinds.pop())]
    return [_span(seq, "S")]


def _moved(a: str, b: str) -> bool:
    """merger.py's test that a deletion and an insertion around a kept span move one word."""
    if len(a) < len(b):
        a, b = b, a
    if a in MERGE_PUNCT or b in MERGE_PUNCT or len(a) - len(b) > 1:
        return False
    if len(b) == 1:
        return a == b
    return Levenshtein.distance(a, b) <= 1 or (len(a) == len(b) and b in a + a)


def _merge(path: list[tuple], src: list[str], tgt: list[str]) -> list[tuple]:
    """merger.py ``__call__``: group operations into span edits, turn S-M-S and D-M-I / I-M-D swaps into word
    order edits (T<n>), drop kept spans, then trim a substitution's shared head or tail."""
    edits = []
    for kind, group in groupby(path, lambda step: step[0][0] if step[0][0] in "MT" else ""):
        run = list(group)
        edits.extend(run if kind == "T" else _merge_run(run))
    source = lambda e: "".join(src[e[1] : e[2]])  # noqa: E731
    target = lambda e: "".join(tgt[e[3] : e[4]])  # noqa: E731
    swapped, i = [], 0
    while i < len(edits):
        first = edits[i][0][0]
        if i < len(edits) - 2:
            middle, last = edits[i + 1][0][0], edits[i + 2][0][0]
            merge = None
            if (first, middle, last) == ("S", "M", "S"):
                w1, w2, w3, w4 = source(edits[i]), target(edits[i]), source(edits[i + 2]), target(edits[i + 2])
                if min(len(w1), len(w2), len(w3), len(w4)) == 1:
                    merge = w1 == w4 and w2 == w3
                else:
                    merge = Levenshtein.distance(w1, w4) <= 1 and Levenshtein.distance(w2, w3) <= 1
            elif (first, last) in (("D", "I"), ("I", "D")) and middle in "MT":
                deletion, insertion = (edits[i], edits[i + 2]) if first == "D" else (edits[i + 2], edits[i])
                merge = _moved(source(deletion), target(insertion))
            if merge:
                swapped.append(_span(edits[i : i + 3], f"T{edits[i + 2][2] - edits[i][1]}"))
                i += 3
                continue
            if merge is not None:
                swapped.append(edits[i])
                i += 1
                continue
        if first != "M":
            swapped.append(edits[i])
        i += 1
    return [_trim(e, src, tgt) for e in swapped if source(e) != target(e)]


def _trim(edit: tuple, src: list[str], tgt: list[str]) -> tuple:
    """merger.py's second filter: a substitution whose target starts (ends) with tokens of its source keeps
    only the rest — it may become an insertion or a deletion. Tail matching looks at the whole target span."""
    op, s1, s2, t1, t2 = edit
    if op != "S":
        return edit
    changed, span = False, "".join(tgt[t1:t2])
    head, new_s1 = "", s1
    for i in range(s1, s2):
        if not span.startswith(head + src[i]):
            break
        head, new_s1 = head + src[i], i + 1
    start_s, start_t = s1, t1
    if head:
        read = ""
        for i in range(t1, t2):
            read += tgt[i]
            if read == head:
                start_s, start_t, changed = new_s1, i + 1, True
                break
            if len(read) > len(head):
                break
    tail, new_s2 = "", s2
    for i in reversed(range(start_s, s2)):
        if not span.endswith(src[i] + tail):
            break
        tail, new_s2 = src[i] + tail, i
    end_s, end_t = s2, t2
    if tail:
        read = ""
        for i in reversed(range(start_t, t2)):
            read = tgt[i] + read
            if read == tail:
                end_s, end_t, changed = new_s2, i, True
                break
            if len(read) > len(tail):
                break
    if not changed:
        return edit
    kind = "I" if start_s == end_s else "D" if start_t == end_t else "S"
    return (kind, start_s, end_s, start_t, end_t)


def _correction(tokens: list[str]) -> str:
    """The correction as compare_m2 reads it back from the M2 line ``…|||<tokens joined by spaces>|||REQUIRED…``:
    spaces dropped, and a final "|" token lost to the field separator."""
    return (" ".join(tokens) + "|||").split("|||")[0].replace(" ", "")


def char_edits(source: str, target: str) -> list[tuple[int, int, str, str]]:
    """annotator.py + classifier.py at char granularity: the M2 edits (start, end, category, correction) of
    ``target`` against ``source`` — the union over every distinct edit list of the cheapest alignments, each
    edit once per list it is in. Equal strings (or the target 没有错误) give one ``noop``; 无法标注, ``NA``."""
    if target == "没有错误" or source == target:
        return [(-1, -1, "noop", "-NONE-")]
    if target == "无法标注":
        return [(-1, -1, "NA", "-NONE-")]
    src, tgt = tokenize(source), tokenize(target)
    seen, out = set(), []
    for path in _cheapest_paths(src, tgt):
        edits = tuple(_merge(path, src, tgt))
        if edits in seen:
            continue
        seen.add(edits)
        for op, s1, s2, t1, t2 in edits:
            category = {"T": "W", "D": "R", "I": "M", "S": "S"}[op[0]]
            out.append((s1, s2, category, "-NONE-" if category == "R" else _correction(tgt[t1:t2])))
    return out


def count_alignments(source: str, target: str) -> int:
    """How many cheapest alignments ChERRANT lists for a pair (counted, not listed)."""
    return _cheapest_paths(tokenize(source), tokenize(target), count_only=True)
