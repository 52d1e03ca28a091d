"""LeCoQA's BERTScore, as its ``evaluation/calc.py`` computes it (oneal2000/LeCoQA, commit 538b299): both texts cut
into words by jieba and joined with spaces, then the ``bert_score`` library's ``score(generated, expected,
model_type="bert-base-chinese")`` — its default layer for that model (8), no idf, no baseline rescaling — and the
mean of the F1 figures.

The weights of ``bert-base-chinese`` cannot be downloaded here: the user points ``--bertscore_model`` at a local copy
(a directory with its config.json, vocabulary and weights). A directory whose config differs from bert-base-chinese's
(``REFERENCE_CONFIG``) still gets a figure, recorded as not comparable with the published column.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.common.datafiles import DataError

REFERENCE_MODEL = "bert-base-chinese"
# what calc.py's model is: bert-base-chinese's config.json (model_type, layers, width, vocabulary)
REFERENCE_CONFIG = {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768, "vocab_size": 21128}


def check_model(model_dir: str | Path) -> tuple[dict, bool]:
    """(the directory's config.json, whether it has bert-base-chinese's shape); DataError when it is no model."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise DataError(f"--bertscore_model {model_dir}: no config.json there (a local copy of {REFERENCE_MODEL}?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(f"{path}: not JSON: {e}") from e
    return config, all(config.get(k) == v for k, v in REFERENCE_CONFIG.items())


def bertscore(expected: dict[str, str], generated: dict[str, str], model_dir: str | Path,
              batch_size: int = 64) -> dict:
    """``{"BERTScore": mean F1, "items": {id: F1}, "model": dir, "comparable": bool}`` over ``expected``'s ids (the
    ids must match, as for METEOR and BLEU). Needs the ``bert_score`` package (requirements.txt)."""
    import jieba
    from bert_score import score
    from bert_score.utils import model2layers

    _, comparable = check_model(model_dir)
    ids = list(expected)
    if set(ids) != set(generated):
        raise DataError("the answers do not match the questions (BERTScore needs an answer for every question)")
    candidates = [" ".join(jieba.cut(generated[i])) for i in ids]
    references = [" ".join(jieba.cut(expected[i])) for i in ids]
    _, _, f1 = score(candidates, references, model_type=str(model_dir), num_layers=model2layers[REFERENCE_MODEL],
                     batch_size=batch_size)
    items = dict(zip(ids, f1.tolist()))
    return {"BERTScore": sum(items.values()) / len(items), "items": items, "model": str(model_dir),
            "comparable": comparable}
