"""LeCoQA's questions (a checkout of oneal2000/LeCoQA: ``data/example/{train,test}.json``) and their gold articles,
resolved against our statute store with the citation checker's own parser.

A question: ``{"id", "question", "answer" (the lawyer's), "gold": [article names as LeCoQA writes them]}``; ids are
LeCoQA's ``query_id`` as strings, as in its answer files. A gold name such as 「中华人民共和国民法典第八百三十九条」 is
in the store when the checker verifies it; the rest (judicial interpretations, State Council regulations: 19% of
the test split's) are outside it until the store holds them, and are counted apart, never as wrong citations.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.common.datafiles import DataError

SPLITS = ("train", "test")
SHIPPED_TRAIN = Path(__file__).resolve().parents[2] / "resources" / "lecoqa" / "train.jsonl.xz"  # LeCoQA train, MIT


def load_questions(lecoqa_dir: str | Path, split: str = "test") -> list[dict]:
    """The questions of ``split`` in file order; DataError naming the file or the record."""
    if split not in SPLITS:
        raise DataError(f"--split {split!r}: one of {', '.join(SPLITS)}")
    path = Path(lecoqa_dir) / "data" / "example" / f"{split}.json"
    if not path.is_file():
        raise DataError(f"--lecoqa_dir {lecoqa_dir}: no data/example/{split}.json there (a checkout of "
                        "oneal2000/LeCoQA?)")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path}: not JSON: {e}") from e
    questions = []
    for i, record in enumerate(records):
        try:
            questions.append({"id": str(record["query_id"]), "question": record["问题"], "answer": record["答案文本"],
                              "gold": list(record.get("match_name") or record.get("相关法规", {}))})
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: record {i}: missing field {e}") from e
    return questions


def gold_articles(names: list[str], store) -> tuple[set[tuple], list[str]]:
    """(``{(law_name, number, suffix)}`` of the gold articles in the store, [the names outside it])."""
    from utils.legal.citations import check_citations

    inside, outside = set(), []
    for name in names:
        found = [v for v in check_citations(name, store) if v.status == "verified" and v.number is not None
                 and _names_the_law(name, v.law_name, store)]
        if found:
            inside.add((found[0].law_name, found[0].number, found[0].suffix))
        else:
            outside.append(name)
    return inside, outside


def _names_the_law(name: str, law_name: str, store) -> bool:
    """Whether the gold name is that law's article, not another document's that mentions the law: 「最高人民法院关于适用
    《中华人民共和国民法典》有关担保制度的解释第二十五条」 is the interpretation's article 25, not the Civil Code's. The name
    before its 第N条 must resolve to that law (「…适用《民法典》有关担保制度的解释」 to the store's 「…适用《中华人民共和国民法典》…」)."""
    head = name[: name.rfind("第")]
    if head in (law_name, law_name.removeprefix("中华人民共和国")):
        return True
    law = store.resolve_law(head)
    return law is not None and law.name == law_name


def read_question_file(path: str | Path) -> list[dict]:
    """Questions with gold articles from a ``.jsonl`` or ``.jsonl.xz`` file, one object per line: ``question`` (text),
    ``gold`` (article names, LeCoQA's 「中华人民共和国民法典第五十四条」 or a citation 「《民法典》第五十四条」), optionally
    ``answer`` (a lawyer's) and ``id``. The shipped resources/lecoqa/train.jsonl.xz is LeCoQA's train split in this
    form. Raises DataError naming the file and line."""
    import lzma

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not path.name.endswith((".jsonl", ".jsonl.xz")):
        raise DataError(f"{path}: expected a .jsonl or .jsonl.xz file")
    try:
        text = lzma.decompress(path.read_bytes()).decode("utf-8") if path.name.endswith(".xz") else path.read_text(encoding="utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read: {e}") from e
    questions = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}:{line_no}: not JSON: {e}") from e
        question, gold, answer = record.get("question"), record.get("gold"), record.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{path}:{line_no}: 'question' must be a non-empty string")
        if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
            raise DataError(f"{path}:{line_no}: 'gold' must be a list of article names")
        if answer is not None and not isinstance(answer, str):
            raise DataError(f"{path}:{line_no}: 'answer' must be a string or null")
        questions.append({"id": str(record.get("id", line_no)), "question": question, "answer": answer or "",
                          "gold": gold})
    return questions
