"""Legal vocabulary merge (sentencepiece append and add_tokens) and new-embedding initialisation."""

import json
import shutil

import pytest
from tiny_model import build_tiny_tokenizer, write_statute_corpus

from tools.merge_vocabulary import agreement_warning
from tools.merge_vocabulary import main as merge_main
from utils.common.datafiles import DataError
from utils.model.vocabulary import (
    base_piece_ids,
    init_new_embeddings,
    load_word_list,
    merge_sentencepiece,
    normal_pieces,
    tokens_per_char,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # Another slice of laws.db than the one the tiny tokenizer was trained on.
    return write_statute_corpus(tmp_path_factory.mktemp("corpus") / "legal.jsonl", limit=1500, stride=5, offset=2)


@pytest.fixture(scope="module")
def merged_dir(tiny_model_dir, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "tok"
    assert merge_main(["--base_tokenizer", str(tiny_model_dir), "--corpus", str(corpus),
                       "--output_dir", str(out), "--vocab_size", "5000"]) == 0
    return out


def _heldout(corpus):
    docs = [json.loads(line)["content"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    return [d for i, d in enumerate(docs) if i % 10 == 9]


def test_a_base_normaliser_hf_does_not_apply_is_reported_loudly(corpus, tmp_path, capsys):
    # sentencepiece's default nmt_nfkc turns full-width ，into ',', the HF conversion does not: the two halves of the
    # tokenizer disagree before any merge. The figure must not pass silently, and the cause must be named.
    base = tmp_path / "nfkc-base"
    build_tiny_tokenizer(base, normalization="nmt_nfkc")
    out = tmp_path / "merged"
    assert merge_main(["--base_tokenizer", str(base), "--corpus", str(corpus), "--output_dir", str(out),
                       "--vocab_size", "3000"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    n = report["heldout_documents"]
    assert report["sentencepiece_normalizer"] == "nmt_nfkc"
    assert report["hf_sentencepiece_agree"] < n / 2 and report["hf_sentencepiece_agree_base"] < n / 2
    err = capsys.readouterr().err
    assert "WARNING" in err and f"hf_sentencepiece_agree {report['hf_sentencepiece_agree']}/{n}" in err
    assert "already disagrees" in err and "'nmt_nfkc'" in err and "not caused by the merge" in err


def test_agreement_warning_blames_the_merge_only_when_the_base_agrees():
    report = {"heldout_documents": 10, "hf_sentencepiece_agree": 10, "hf_sentencepiece_agree_base": 10,
              "sentencepiece_normalizer": "identity"}
    assert agreement_warning(report) is None
    assert agreement_warning({"heldout_documents": 10}) is None  # add_tokens bases have no tokenizer.model
    caused = agreement_warning({**report, "hf_sentencepiece_agree": 7})
    assert "3 of 10" in caused and "the merge caused it" in caused


def test_sentencepiece_merge_keeps_base_and_shortens_legal_text(tiny_model_dir, merged_dir, corpus):
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    merged = AutoTokenizer.from_pretrained(str(merged_dir))
    base_vocab, merged_vocab = base.get_vocab(), merged.get_vocab()
    assert all(merged_vocab[piece] == i for piece, i in base_vocab.items())  # base ids unchanged
    pieces = normal_pieces(merged_dir / "tokenizer.model")
    assert len(pieces) == len(set(pieces))
    report = json.loads((merged_dir / "report.json").read_text(encoding="utf-8"))
    assert report["base_size"] == len(base) == 2000
    assert report["merged_size"] == len(merged) == len(base) + report["added"] > len(base)
    assert report["round_trip_failed"] == 0 and report["hf_sentencepiece_agree"] == report["heldout_documents"]
    assert report["hf_sentencepiece_agree_base"] == report["heldout_documents"]
    assert report["sentencepiece_normalizer"] == "identity"
    heldout = _heldout(corpus)
    before, after = tokens_per_char(base, heldout), tokens_per_char(merged, heldout)
    assert after <= 0.85 * before and report["tokens_per_char_merged"] == round(after, 4)
    assert all(merged.decode(merged.encode(t, add_special_tokens=False)) == t for t in heldout[:50])
    assert merged("法").input_ids[0] == merged.bos_token_id == base.bos_token_id  # BOS kept as the base adds it
    assert len(report["sample"]["merged"]) < len(report["sample"]["base"])


def test_duplicates_and_base_pieces_are_never_added(tiny_model_dir, tmp_path):
    base_pieces = normal_pieces(tiny_model_dir / "tokenizer.model")
    result = merge_sentencepiece(tiny_model_dir / "tokenizer.model", ["刑事诉讼", base_pieces[5], "刑事诉讼", "民事诉讼"],
                                 tmp_path / "m.model")
    assert result.added == ["刑事诉讼", "民事诉讼"] and result.duplicates == 1 and result.already_in_base == 1
    merged = normal_pieces(tmp_path / "m.model")
    assert merged[: len(base_pieces)] == base_pieces and merged[len(base_pieces):] == ["刑事诉讼", "民事诉讼"]
    words = tmp_path / "words.txt"
    words.write_text("# legal words\n刑事诉讼\n民事诉讼\n刑事诉讼\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"words.txt:4: duplicate word '刑事诉讼' \(first on line 2\)"):
        load_word_list(words)


def test_word_list_on_sentencepiece_makes_each_word_one_token(tiny_model_dir, corpus, tmp_path):
    from transformers import AutoTokenizer

    words = ["犹豫不决", "罪刑法定", "缩短折旧年限", "人民法院"]  # 缩/短 may be missing from the tiny base
    (tmp_path / "w.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert merge_main(["--base_tokenizer", str(tiny_model_dir), "--corpus", str(corpus), "--output_dir", str(out),
                       "--word_list", str(tmp_path / "w.txt")]) == 0
    merged = AutoTokenizer.from_pretrained(str(out))
    for word in words:
        assert len(merged.tokenize(word)) <= 2, merged.tokenize(word)  # the word, after a possible '▁'
        assert word in merged.get_vocab() or ("▁" + word) in merged.get_vocab() or len(word) < 2


def test_add_tokens_path_for_tokenizer_json(tiny_model_dir, corpus, tmp_path, capsys):
    from transformers import AutoTokenizer

    base_dir = tmp_path / "bpe"
    shutil.copytree(tiny_model_dir, base_dir, ignore=shutil.ignore_patterns("tokenizer.model", "*.safetensors"))
    (tmp_path / "w.txt").write_text("刑事诉讼法\n人民法院\n罪刑法定原则\n", encoding="utf-8")
    out = tmp_path / "out"
    assert merge_main(["--base_tokenizer", str(base_dir), "--corpus", str(corpus), "--output_dir", str(out),
                       "--word_list", str(tmp_path / "w.txt")]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # 人民法院 is one token of the base already: not added.
    assert report["method"] == "add_tokens" and report["added"] == 2 and report["skipped_already_in_base"] == 1
    merged = AutoTokenizer.from_pretrained(str(out))
    assert [merged.convert_tokens_to_ids(w) for w in ("刑事诉讼法", "罪刑法定原则")] == [2000, 2001]
    assert 2000 in merged("依照刑事诉讼法", add_special_tokens=False).input_ids
    base = AutoTokenizer.from_pretrained(str(base_dir))
    assert all(merged.get_vocab()[piece] == i for piece, i in base.get_vocab().items())


def test_cli_errors_are_one_line(tiny_model_dir, corpus, tmp_path, capsys):
    assert merge_main(["--base_tokenizer", str(tmp_path / "nope"), "--corpus", str(corpus),
                       "--output_dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("merge_vocabulary: error:") and "nope" in err and "\n" not in err
    (tmp_path / "w.txt").write_text("刑法\n刑法\n", encoding="utf-8")
    assert merge_main(["--base_tokenizer", str(tiny_model_dir), "--corpus", str(corpus), "--output_dir",
                       str(tmp_path / "o"), "--word_list", str(tmp_path / "w.txt")]) == 1
    assert "w.txt:2: duplicate word" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["mean", "mean_norm"])
@pytest.mark.parametrize("kind", ["sentencepiece", "add_tokens"])
def test_new_rows_are_the_mean_of_base_pieces(tiny_model_dir, merged_dir, kind, method):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    if kind == "sentencepiece":
        tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
        tokenizer.add_tokens(["中华人民共和国刑法", "最高人民法院"])
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    assert init_new_embeddings(model, base, tokenizer, len(base), method) == len(tokenizer) - len(base)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(emb[: len(base)], before_in) and torch.equal(head[: len(base)], before_out)
    for token_id in range(len(base), len(tokenizer)):
        if kind == "sentencepiece":
            piece = tokenizer.convert_ids_to_tokens(token_id)
            parts = base.backend_tokenizer.model.tokenize(piece)
            expected = [t.id for t in parts]
            assert base.convert_tokens_to_string([t.value for t in parts]).strip() == piece.replace("▁", " ").strip()
        else:
            expected = base(tokenizer.convert_ids_to_tokens(token_id), add_special_tokens=False).input_ids
        assert base_piece_ids(base, tokenizer, token_id) == expected and len(expected) >= 1
        for row, before in ((emb[token_id], before_in), (head[token_id], before_out)):
            mean = before[expected].mean(0)
            if method == "mean":
                torch.testing.assert_close(row, mean)
            else:  # the mean's direction at the pieces' mean norm: never shorter than the plain mean
                torch.testing.assert_close(row / row.norm(), mean / mean.norm())
                torch.testing.assert_close(row.norm(), before[expected].norm(dim=1).mean())
                assert row.norm() >= mean.norm() - 1e-6


def test_unknown_new_row_init_is_refused(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.training.setup import ModelArguments

    base = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with pytest.raises(ValueError, match="new row init 'zero'"):
        init_new_embeddings(model, base, base, len(base), "zero")
    with pytest.raises(Exception, match="--new_row_init 'zero'"):
        ModelArguments(base_model=str(tiny_model_dir), new_row_init="zero")


def test_numeral_pieces_are_left_out_unless_asked(tiny_model_dir, merged_dir, corpus, tmp_path):
    """Article numbers keep the base tokens (issue 31: the demo model wrote 「六」 where its new piece 「六十」 belonged,
    giving 第二百六三条); --numeral_pieces adds them as before."""
    from utils.model.vocabulary import holds_part_of_a_number

    report = json.loads((merged_dir / "report.json").read_text(encoding="utf-8"))
    base_pieces = set(normal_pieces(tiny_model_dir / "tokenizer.model"))
    added = [p for p in normal_pieces(merged_dir / "tokenizer.model") if p not in base_pieces]
    assert added and not any(holds_part_of_a_number(p) for p in added) and report["skipped_numeral_pieces"] > 0
    out = tmp_path / "with-numerals"
    assert merge_main(["--base_tokenizer", str(tiny_model_dir), "--corpus", str(corpus), "--output_dir", str(out),
                       "--vocab_size", "5000", "--numeral_pieces"]) == 0
    with_numerals = [p for p in normal_pieces(out / "tokenizer.model") if p not in base_pieces]
    assert any(holds_part_of_a_number(p) for p in with_numerals)
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["skipped_numeral_pieces"] == 0
    for piece, holds in [("六十", True), ("三条", True), ("第一千零", True), ("▁第三十七条", True), ("一般", False),
                         ("统一", False), ("十分", False), ("百分之", False)]:
        assert holds_part_of_a_number(piece) is holds, piece
