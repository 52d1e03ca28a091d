"""Read an exported GGUF file back and compare it with the model directory it came from.

:func:`check_metadata` (cheap, no weights): every token under its id with its text, BOS/EOS, the chat template,
and warnings where llama.cpp will tokenise differently from transformers. :func:`verify`: transformers' GGUF
loader (``gguf_file=``) on the file — token ids of legal text and logits against the model directory.
"""

from __future__ import annotations

from pathlib import Path

from utils.export.gguf import USER_DEFINED, gguf_chat_template


def read_metadata(gguf_file: Path) -> dict:
    """The GGUF key/value metadata (token arrays reduced to their length, token lists kept as ``tokens``)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if key in ("tokenizer.ggml.tokens",):
            out["tokens"] = value
            out[key] = len(value)
        elif isinstance(value, list) and len(value) > 64:
            out[key] = len(value)
        else:
            out[key] = value
    out["token_types"] = reader.fields["tokenizer.ggml.token_type"].contents() \
        if "tokenizer.ggml.token_type" in reader.fields else []
    return out


# ---------------------------------------------------------------- verification (read back with transformers)

# Legal text with words a legal vocabulary adds (入户盗窃, 劳动合同法 …), mixed scripts, spaces and a line break.
SAMPLE_TEXTS = (
    "甲深夜入户盗窃他人财物价值五千元，应当如何定罪量刑？请引用《中华人民共和国刑法》第二百六十四条。",
    "用人单位自用工之日起超过一个月不满一年未与劳动者订立书面劳动合同的，应当向劳动者每月支付二倍的工资。",
    "依照《劳动合同法》第82条, the employer pays double wages.\n民间借贷纠纷  诈骗罪名 123456",
)


def load_gguf(gguf_file: Path):
    """The exported file read back by transformers' GGUF loader: (model in float32, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    return model.eval(), tokenizer


def check_metadata(model_dir: Path, gguf_file: Path) -> tuple[dict, list[str]]:
    """What a runtime reads from the file, against the model directory: (facts, problems). Cheap: no weights.

    Every token of the tokenizer must be in the file under its id with its text (a grown vocabulary the
    converter missed shows up as ``[PAD…]``), EOS/BOS ids must match and the chat template must be
    :func:`gguf_chat_template`'s. ``facts["warnings"]`` names what llama.cpp will tokenise unlike transformers.
    """
    from utils.model.loader import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    meta = read_metadata(gguf_file)
    tokens, types = meta.get("tokens", []), meta.get("token_types", [])
    problems = []
    if len(tokens) < len(tokenizer):
        problems.append(f"the file holds {len(tokens)} tokens, the tokenizer {len(tokenizer)}")
    wrong = []
    for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(min(len(tokens), len(tokenizer)))))):
        stored = tokens[token_id]
        if stored != piece and not (types and types[token_id] == USER_DEFINED and stored == piece.replace("▁", " ")):
            wrong.append(f"{token_id}: {piece!r} stored as {stored!r}")
    if wrong:
        problems.append(f"{len(wrong)} token(s) differ from the tokenizer, e.g. " + "; ".join(wrong[:3]))
    for name in ("eos", "bos"):
        want, got = getattr(tokenizer, f"{name}_token_id"), meta.get(f"tokenizer.ggml.{name}_token_id")
        if want is not None and got != want:
            problems.append(f"{name.upper()} token id {got} in the file, {want} in the tokenizer")
    template = gguf_chat_template(model_dir, tokenizer)
    if template is not None and meta.get("tokenizer.chat_template") != template:
        problems.append("tokenizer.chat_template in the file is not the tokenizer's chat_template")
    warnings = llama_cpp_warnings(meta, [tokens[i] for i, t in enumerate(types) if t == USER_DEFINED])
    facts = {
        "tokens": len(tokens), "vocab_size": len(tokenizer), "tokenizer_model": meta.get("tokenizer.ggml.model"),
        "user_defined_tokens": sum(1 for t in types if t == USER_DEFINED),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"), "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"), "chat_template": template is not None,
        "architecture": meta.get("general.architecture"), "file_type": meta.get("general.file_type"),
        "warnings": warnings,
    }
    return facts, problems


def overlapping(words: list[str]) -> list[str]:
    """The words that overlap another one (one ends with what the other starts with, or holds it)."""
    prefixes = {w[:i] for w in words for i in range(1, len(w))}
    whole = set(words)
    return [w for w in words if any(w[i:] in prefixes for i in range(1, len(w)))
            or any(w[i:j] in whole for i in range(len(w)) for j in range(i + 1, len(w) + 1) if j - i < len(w))]


def llama_cpp_warnings(meta: dict, user_defined: list[str]) -> list[str]:
    """Where llama.cpp will split text unlike transformers (both measured: tests/, benchmarks/RESULTS.md).

    llama.cpp matches user-defined (added, non-special) tokens before its BPE, like transformers, but longest
    token first across the whole text, where transformers takes the leftmost match (the longest there); and a
    tokenizer that adds a dummy prefix (LLaMA) gets a ▁ before the text after each of them.
    """
    words = [w for w in user_defined if w.strip()]
    warnings = []
    if words and meta.get("tokenizer.ggml.model") == "llama" and meta.get("tokenizer.ggml.add_space_prefix", True):
        warnings.append(f"{len(words)} added token(s) outside tokenizer.model (e.g. {words[0]!r}): llama.cpp puts a ▁ "
                        "before text that follows one of them (its sentencepiece legacy behaviour), transformers does "
                        "not; put new words into tokenizer.model (tools/merge_vocabulary.py does for a LLaMA base)")
    overlaps = overlapping(words)
    if overlaps:
        warnings.append(f"{len(overlaps)} of {len(words)} added tokens overlap others (e.g. {overlaps[0]!r}): llama.cpp "
                        "matches added tokens longest first across the text, transformers leftmost first, so text "
                        "where two overlap is split differently (same text, other tokens; measured on the demo "
                        "vocabulary: 99.0% of statute tokens identical)")
    return warnings


def verify(model_dir: Path, gguf_file: Path, texts: tuple[str, ...] = SAMPLE_TEXTS) -> dict:
    """Read the file back with transformers: token ids of ``texts`` and logits against the model directory."""
    import torch

    from utils.model.loader import load_model, load_tokenizer, verification_ids

    tokenizer = load_tokenizer(model_dir)
    gguf_model, gguf_tokenizer = load_gguf(gguf_file)
    ids_equal = [tokenizer(t)["input_ids"] == gguf_tokenizer(t)["input_ids"] for t in texts]
    model = load_model(model_dir, device="cpu", dtype="float32")
    ids = torch.tensor([verification_ids(tokenizer, "\n".join(texts))])
    with torch.inference_mode():
        want, got = model(input_ids=ids).logits, gguf_model(input_ids=ids).logits
    return {
        "token_ids_equal": ids_equal,
        "max_abs_logit_diff": (want - got).abs().max().item(),
        "max_abs_logit": want.abs().max().item(),
        "argmax_agreement": (want.argmax(-1) == got.argmax(-1)).float().mean().item(),
        "tokens_compared": ids.shape[1],
    }
