"""Legal vocabulary: new pieces for a base tokenizer, and embeddings for them that start informed.

Two tokenizer families, two merge methods:

- sentencepiece (LLaMA family, a ``tokenizer.model`` next to the tokenizer): new pieces are appended
  to the base ``ModelProto`` (the Chinese-LLaMA-Alpaca method). The k-th appended piece gets the score
  ``min(base scores) - k``: then Hugging Face's converted tokenizer and sentencepiece itself segment
  text identically (with score 0, as in the classic recipe, they disagree on about a third of articles).
- tokenizer.json only (Gemma, Qwen, …): the new words are added with ``add_tokens``.

Either way a base piece keeps its id, nothing is added twice, and nothing the base already has is added.
New embedding rows start as the mean of the embeddings of the pieces the base tokenizer cut the token into, at
the pieces' mean norm (:func:`init_new_embeddings`), so training starts from a sensible point instead of noise.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from utils.common.datafiles import DataError
from utils.common.errors import ConfigError, LawgptError

SP_MODEL = "tokenizer.model"
_CJK_WORD = re.compile(r"^[\u4e00-\u9fff]{2,}$")
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class VocabError(LawgptError, ValueError):
    """A vocabulary cannot be merged as asked."""


# ---------------------------------------------------------------- word lists


def load_word_list(path: str | Path) -> list[str]:
    """One word per line (``#`` comments and blank lines allowed); a repeated word is an error."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such word list")
    seen: dict[str, int] = {}
    words = []
    for number, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if any(ch.isspace() for ch in word):
            raise DataError(f"{p}:{number}: a vocabulary entry may not contain whitespace: {word!r}")
        if word in seen:
            raise DataError(f"{p}:{number}: duplicate word {word!r} (first on line {seen[word]})")
        seen[word] = number
        words.append(word)
    if not words:
        raise DataError(f"{p}: the word list is empty")
    return words


def derive_word_list(texts: list[str], size: int, max_len: int = 8) -> list[str]:
    """The ``size`` most frequent multi-character Chinese words of ``texts`` (jieba segmentation)."""
    import jieba

    jieba.setLogLevel(60)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w in jieba.cut(text) if len(w) <= max_len and _CJK_WORD.match(w))
    return [w for w, _ in counts.most_common(size)]


# ---------------------------------------------------------------- sentencepiece


def train_sentencepiece(texts: list[str], out_prefix: str | Path, vocab_size: int) -> Path:
    """A BPE sentencepiece model of legal text (the source of new pieces)."""
    import sentencepiece as spm

    out_prefix = Path(out_prefix)
    corpus = out_prefix.with_suffix(".corpus.txt")
    # One paragraph per line: sentencepiece silently skips lines over max_sentence_length.
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    if not lines:
        raise VocabError("no text to train a sentencepiece model on")
    corpus.write_text("\n".join(lines), encoding="utf-8")
    try:
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(out_prefix), model_type="bpe", vocab_size=vocab_size,
            character_coverage=0.9995, normalization_rule_name="identity", split_digits=True,
            max_sentence_length=1 << 16, minloglevel=2,
        )
    except RuntimeError as e:
        raise VocabError(f"sentencepiece training failed (vocab_size {vocab_size} too large for the corpus?): {e}") from e
    finally:
        corpus.unlink(missing_ok=True)
    return out_prefix.with_suffix(".model")


def _load_proto(path: str | Path):
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    proto.ParseFromString(Path(path).read_bytes())
    return proto


_NUMERAL_PIECE = re.compile(r"[零〇一二两三四五六七八九十百千]{2}|第[零〇一二两三四五六七八九十百千]|[零〇一二两三四五六七八九十百千][条款项]")


def holds_part_of_a_number(piece: str) -> bool:
    """Whether a piece holds (part of) a Chinese numeral: 「六十」, 「三条」, 「第一千零」, 「第三十七条」 do; 「一般」, 「统一」,
    「十分」 do not. Such pieces are left out of a legal vocabulary (``merge_vocabulary.py --numeral_pieces``): the
    demo model, briefly trained, wrote the base token 「六」 where its new piece 「六十」 belonged, and article numbers
    came out as 「第二百六三条」 (issue 31; benchmarks/RESULTS.md, citation checks). Numbers keep the base tokens the
    model was pretrained on."""
    return bool(_NUMERAL_PIECE.search(piece.lstrip("\u2581")))


def normal_pieces(model_file: str | Path) -> list[str]:
    """The ordinary (non-control, non-byte) pieces of a sentencepiece model, in id order."""
    return [p.piece for p in _load_proto(model_file).pieces if p.type == 1]


@dataclass
class MergeResult:
    added: list[str] = field(default_factory=list)
    already_in_base: int = 0
    duplicates: int = 0
    numeral_pieces_left_out: int = 0  # merge_vocabulary.py: pieces holding part of a number, not added


def merge_sentencepiece(base_model_file: str | Path, new_pieces: list[str], out_file: str | Path) -> MergeResult:
    """Append ``new_pieces`` to the base model, each once and only when the base lacks it."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = _load_proto(base_model_file)
    have = {p.piece for p in proto.pieces}
    lowest = min(p.score for p in proto.pieces)
    result = MergeResult()
    requested: set[str] = set()
    for piece in new_pieces:
        if piece in requested:
            result.duplicates += 1
            continue
        requested.add(piece)
        if piece in have:
            result.already_in_base += 1
            continue
        have.add(piece)
        result.added.append(piece)
        score = lowest - len(result.added)
        proto.pieces.append(sp_pb2.ModelProto.SentencePiece(piece=piece, score=score, type=1))
    Path(out_file).write_bytes(proto.SerializeToString())
    return result


def bpe_reachable_pieces(base_tokenizer, words: list[str]) -> list[str]:
    """Word-list words as BPE pieces plus the prefixes BPE needs to build them pair by pair.

    A BPE segmenter only produces a piece by merging two pieces it already made, so a bare word
    appended to the model would never come out; its left prefixes (over the base segmentation) make it
    reachable. Prefixes come first so they rank above the word.
    """
    model = base_tokenizer.backend_tokenizer.model
    vocab = base_tokenizer.get_vocab()
    out = []
    for word in words:
        parts = _segment_keeping_new_chars(model, vocab, word)
        out.extend(p for p in parts if p not in vocab)  # characters the base lacks become pieces first
        prefix = parts[0]
        for part in parts[1:]:
            prefix += part
            out.append(prefix)
    return out


def _segment_keeping_new_chars(model, vocab: dict, word: str) -> list[str]:
    """The base BPE segmentation of ``word``, except that characters missing from the base stay whole
    (the base would fall back to byte pieces, which cannot be merged into a word)."""
    parts: list[str] = []
    run = ""
    for ch in word + "\0":
        if ch in vocab:
            run += ch
            continue
        if run:
            parts.extend(t.value for t in model.tokenize(run))
            run = ""
        if ch != "\0":
            parts.append(ch)
    return parts


def _special_flags(tokenizer) -> dict:
    """Whether the tokenizer wraps encoded text in BOS / EOS (kept identical in the merged tokenizer)."""
    plain = tokenizer("法", add_special_tokens=False).input_ids
    full = tokenizer("法").input_ids
    return {
        "add_bos_token": len(full) > len(plain) and full[0] == tokenizer.bos_token_id,
        "add_eos_token": len(full) > len(plain) and full[-1] == tokenizer.eos_token_id,
    }


def save_sentencepiece_tokenizer(base_dir: str | Path, base_tokenizer, merged_model: str | Path, out_dir: str | Path):
    """An HF tokenizer directory (plus ``tokenizer.model``) for a merged sentencepiece model."""
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(merged_model, Path(tmp) / SP_MODEL)
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (Path(base_dir) / name).is_file():
                shutil.copy(Path(base_dir) / name, Path(tmp) / name)
        # No tokenizer.json in tmp: the tokenizer class converts the merged sentencepiece model.
        tokenizer = type(base_tokenizer).from_pretrained(tmp, **_special_flags(base_tokenizer))
    tokenizer.save_pretrained(str(out_dir))
    shutil.copy(merged_model, out_dir / SP_MODEL)  # save_pretrained writes tokenizer.json only
    return tokenizer


def has_sentencepiece(tokenizer_dir: str | Path) -> bool:
    return (Path(tokenizer_dir) / SP_MODEL).is_file()


def add_words(tokenizer, words: list[str]) -> MergeResult:
    """``add_tokens`` for tokenizer.json tokenizers: only words the base does not already hold as one token."""
    vocab = tokenizer.get_vocab()
    result = MergeResult()
    requested: set[str] = set()
    fresh = []
    for word in words:
        if word in requested:
            result.duplicates += 1
            continue
        requested.add(word)
        if word in vocab or len(tokenizer(word, add_special_tokens=False).input_ids) <= 1:
            result.already_in_base += 1
            continue
        fresh.append(word)
    if fresh:
        tokenizer.add_tokens(fresh)
    result.added = fresh
    return result


# ---------------------------------------------------------------- measuring


def tokens_per_char(tokenizer, texts: list[str]) -> float:
    chars = sum(len(t) for t in texts)
    if not chars:
        raise VocabError("no held-out text to measure tokens per character on")
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids)
    return tokens / chars


def round_trip_failures(tokenizer, texts: list[str]) -> list[int]:
    """Indices of texts where decode(encode(x)) != x."""
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    return [i for i, (t, x) in enumerate(zip(texts, ids)) if tokenizer.decode(x) != t]


def sentencepiece_agreement(tokenizer, model_file: str | Path, texts: list[str]) -> int:
    """How many of ``texts`` the HF tokenizer and the sentencepiece model encode to identical ids.

    They should always agree: training and serving use the HF tokenizer (tokenizer.json), while
    sentencepiece-based tools (llama.cpp's converter, the sentencepiece library) read tokenizer.model.
    A base model whose normaliser HF's conversion does not reproduce disagrees before any merge.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    return sum(a == sp.encode(t) for a, t in zip(ids, texts))


def sentencepiece_normalizer(model_file: str | Path) -> str:
    """The normalisation rule a sentencepiece model applies (``identity`` in LLaMA, ``nmt_nfkc`` by default)."""
    return _load_proto(model_file).normalizer_spec.name


# ---------------------------------------------------------------- new embedding rows


def base_piece_ids(base_tokenizer, tokenizer, token_id: int) -> list[int]:
    """The ids of the pieces the base tokenizer cuts a new token into.

    A merged sentencepiece piece (``▁法院``) is segmented by the base BPE model directly (no normaliser,
    so no extra ``▁`` is prepended and the pieces concatenate to the token exactly); an added token is
    encoded as text.
    """
    added = tokenizer.added_tokens_decoder
    if token_id in added:
        ids = base_tokenizer(added[token_id].content, add_special_tokens=False).input_ids
    else:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        parts = base_tokenizer.backend_tokenizer.model.tokenize(piece)
        if b"".join(_piece_bytes(t.value) for t in parts) != piece.encode():
            raise VocabError(f"base tokenizer cannot segment new piece {piece!r} (byte-level BPE? use add_tokens)")
        ids = [t.id for t in parts]
    if not ids:
        raise VocabError(f"new token id {token_id} is empty under the base tokenizer")
    return ids


def _piece_bytes(value: str) -> bytes:
    """The bytes a base piece stands for (byte-fallback pieces are written ``<0xE6>``)."""
    return bytes([int(value[3:5], 16)]) if _BYTE_PIECE.match(value) else value.encode()


NEW_ROW_INITS = ("mean", "mean_norm")  # how a grown vocabulary's new embedding rows start


def init_new_embeddings(model, base_tokenizer, tokenizer, old_rows: int, method: str = "mean_norm") -> int:
    """Set each embedding row ``>= old_rows`` (input and untied output) from its base pieces' rows; returns the count.

    ``mean``: the mean of the pieces' rows. ``mean_norm``: that mean's direction at the pieces' mean norm. Averaging
    k vectors shrinks the norm (Gemma-3-270M: 0.80 for new rows vs 1.03 for base rows), and an output row's logit is
    ``h . row``, so mean-initialised rows of a tied model lose every softmax to their own first piece: teacher-forced
    on statute text the untrained model picks a new token at 0.0% of positions where 21.5% of targets are new ones
    (``mean_norm``: 17.8%); after the demo's 30 pretraining steps still 4.7% (benchmarks/LOG.md, issue 13).
    A token whose pieces have no base row (a special token the base tokenizer cannot spell, or ids a model's own
    tokenizer has past its matrix) starts at the mean of all base rows, as transformers' ``resize_token_embeddings``
    starts every new row. Raises ConfigError for an unknown method.
    """
    import torch

    if method not in NEW_ROW_INITS:
        raise ConfigError(f"new row init {method!r}: choose one of {', '.join(NEW_ROW_INITS)}")
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(out.weight)
    new_ids = range(old_rows, matrices[0].shape[0])
    with torch.no_grad():
        for token_id in new_ids:
            ids = base_piece_ids(base_tokenizer, tokenizer, token_id)
            if not ids or max(ids) >= old_rows:  # nothing to start from: the mean of the base rows
                ids = list(range(old_rows))
            for weight in matrices:
                pieces = weight[ids].float()
                row = pieces.mean(dim=0)
                if method == "mean_norm":
                    row = row * (pieces.norm(dim=1).mean() / row.norm().clamp_min(1e-12))
                weight[token_id] = row.to(weight.dtype)
    return len(new_ids)
