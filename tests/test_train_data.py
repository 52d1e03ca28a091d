"""The datasets data path (utils/training/tokenized_data.py, utils/training/streamed_blocks.py): the same blocks and examples as the in-memory
path it replaced, the cache's reuse and invalidation, file:line errors deep in a file, streaming shards and ranks."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import statute_sample

from utils.common.datafiles import (
    IGNORE_INDEX,
    DataError,
    file_digests,
    iter_documents,
    load_documents,
    load_instruction_data,
    sft_example,
)
from utils.model.prompter import Prompter
from utils.training.streamed_blocks import Piece, hold_out, plan_shards, streaming_blocks
from utils.training.tokenized_data import (
    PipelineArguments,
    build_clm,
    build_sft,
    prompter_key,
    write_blocks,
)

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the in-memory path this replaced (commit 7092054),
# copied as the reference: tokenize_documents, pack_blocks (utils/common/datafiles.py) and split_holdout (utils/training/setup.py).


def old_tokenize_documents(tokenizer, docs, add_eos=True):
    out = []
    eos = tokenizer.eos_token_id
    for ids in tokenizer(docs, add_special_tokens=True).input_ids:
        if add_eos and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        out.append(ids)
    return out


def old_pack_blocks(token_lists, block_size):
    stream = [t for ids in token_lists for t in ids]
    return [stream[i:i + block_size] for i in range(0, len(stream), block_size)]


def old_split_holdout(items, val_set_size, seed):
    if not val_set_size:
        return items, []
    count = int(val_set_size) if val_set_size >= 1 else round(len(items) * val_set_size)
    held = set(random.Random(seed).sample(range(len(items)), count))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def old_blocks(tokenizer, files, block_size, val_set_size=0, seed=7, add_eos=True):
    docs = [d for f in files for d in load_documents(f)]
    train, held = old_split_holdout(docs, val_set_size, seed)
    return (old_pack_blocks(old_tokenize_documents(tokenizer, train, add_eos), block_size),
            old_pack_blocks(old_tokenize_documents(tokenizer, held, add_eos), block_size) if held else [])


# ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from utils.model.loader import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """1,300 statute articles as .jsonl (enough rows for 2 tokenising workers), a .json array and a .txt file."""
    work = tmp_path_factory.mktemp("corpus")
    texts = statute_sample(limit=1300, stride=3, offset=1)
    jsonl, array, txt = work / "a.jsonl", work / "b.json", work / "c.txt"
    jsonl.write_text("".join(json.dumps({"content": t}, ensure_ascii=False) + "\n" for t in texts[:1200]),
                     encoding="utf-8")
    array.write_text(json.dumps([{"content": t} for t in texts[1200:1290]], ensure_ascii=False, indent=1),
                     encoding="utf-8")
    txt.write_text("\n".join(texts[1290:]), encoding="utf-8")
    return [jsonl, array, txt]


def pipeline(tmp_path, workers=None) -> PipelineArguments:
    return PipelineArguments(preprocessing_num_workers=workers, dataset_cache_dir=str(tmp_path / "cache"))


def clm(files, tokenizer, block_size, args, val_set_size=0, seed=7, add_eos=True):
    return build_clm(files, file_digests(files)[1], tokenizer, block_size, add_eos, val_set_size, seed, args)


def rows(dataset):
    return [list(map(int, r)) for r in dataset[:]["input_ids"]] if dataset is not None else []


@pytest.mark.parametrize("workers, val_set_size, block_size", [(None, 0, 64), (2, 0.05, 128), (1, 7, 61)])
def test_blocks_are_todays_blocks(tokenizer, corpus, tmp_path, workers, val_set_size, block_size):
    built = clm(corpus, tokenizer, block_size, pipeline(tmp_path, workers), val_set_size)
    want_train, want_eval = old_blocks(tokenizer, corpus, block_size, val_set_size)
    assert rows(built.train) == want_train and rows(built.eval) == want_eval
    assert len(want_train) > 100 and all(len(b) == block_size for b in want_train[:-1])
    meta = built.meta
    assert meta["train_tokens"] == sum(map(len, want_train)) and meta["train_blocks"] == len(want_train)
    assert meta["eval_blocks"] == len(want_eval) and meta["documents"]["train"] + meta["documents"]["eval"] == 1291
    # what the collator gets: every token trained on
    example = built.train[len(want_train) - 1]
    assert example["labels"] == example["input_ids"] == want_train[-1]
    assert example["attention_mask"] == [1] * len(want_train[-1])


def test_sft_examples_are_todays_examples(tokenizer, tmp_path):
    data = tmp_path / "sft.jsonl"
    items = json.loads((ROOT / "resources" / "example_instruction_tune.json").read_text(encoding="utf-8"))
    items.append({"instruction": "请回答。" * 60, "input": "", "output": "不满足。"})  # no answer token within 128
    items.append({"instruction": "那么盗窃数额巨大呢？", "input": "", "output": "处三年以上十年以下有期徒刑。",
                  "history": [["盗窃罪如何处罚？", "处三年以下有期徒刑。"]]})
    data.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items * 3), encoding="utf-8")
    prompter = Prompter("law_template")
    built = build_sft([data], file_digests([data])[1], tokenizer, prompter, prompter_key(prompter), 128, False, True,
                      2, 3, pipeline(tmp_path))
    train, held = old_split_holdout(load_instruction_data(data), 2, 3)

    def examples(part):
        out = [sft_example(tokenizer, prompter.segments(x["instruction"], x["input"], x["output"], x["history"]), 128)
               for x in part]
        return [e for e in out if any(t != IGNORE_INDEX for t in e["labels"])] if part is train else out

    kept = examples(train)
    for got, want in ((built.train, kept), (built.eval, examples(held))):
        assert [{k: list(e[k]) for k in ("input_ids", "labels", "attention_mask")} for e in got] == want
    assert built.meta["examples"] == {"train": len(kept), "eval": 2, "left_out_no_answer": len(train) - len(kept)}
    assert len(train) - len(kept) >= 3
    assert built.meta["first_left_out"].startswith(f"{data}:")


def test_cache_is_reused_and_invalidated_by_content_tokenizer_and_block_size(tiny_model_dir, tokenizer, corpus,
                                                                              tmp_path):
    from utils.model.loader import load_tokenizer

    args = pipeline(tmp_path)
    first = clm(corpus, tokenizer, 64, args)
    again = clm(corpus, tokenizer, 64, args)
    assert not first.reused and again.reused and again.path == first.path
    assert sorted(p.name for p in first.path.iterdir()) == ["meta.json", "train.arrow"]  # no intermediate files
    assert rows(again.train) == rows(first.train)
    assert not clm(corpus, tokenizer, 96, args).reused  # block size
    # a changed file (same name, same size: only the content hash can tell)
    changed = tmp_path / "a.jsonl"
    text = corpus[0].read_text(encoding="utf-8")
    changed.write_text(text.replace("第", "条", 1), encoding="utf-8")
    assert changed.stat().st_size == corpus[0].stat().st_size
    files = [changed, *corpus[1:]]
    edited = clm(files, tokenizer, 64, args)
    assert not edited.reused and edited.path != first.path
    assert rows(edited.train) == old_blocks(tokenizer, files, 64)[0] != rows(first.train)
    # a tokenizer that grew a token
    grown = load_tokenizer(tiny_model_dir)
    grown.add_tokens(["中华人民共和国"])
    other = clm(corpus, grown, 64, args)
    assert not other.reused and rows(other.train) == old_blocks(grown, corpus, 64)[0] != rows(first.train)
    assert clm(corpus, tokenizer, 64, args).reused  # the first entry is still there
    assert len([p for p in (tmp_path / "cache").iterdir()]) == 4  # 64, 96, edited, grown: no leftovers


def test_arguments_are_checked(tmp_path):
    from utils.common.errors import ConfigError

    with pytest.raises(ConfigError, match="--preprocessing_num_workers 0"):
        PipelineArguments(preprocessing_num_workers=0)
    with pytest.raises(DataError, match="block_size 1: must be at least 2"):
        write_blocks(None, 1, tmp_path / "x.arrow")


def write_big_jsonl(path: Path, lines: int, bad_line: int, bad: str) -> Path:
    texts = statute_sample(limit=200, stride=1, offset=0)
    with open(path, "w", encoding="utf-8") as f:
        for n in range(1, lines + 1):
            f.write(bad + "\n" if n == bad_line else json.dumps({"content": texts[n % 200]}, ensure_ascii=False) + "\n")
    return path


@pytest.mark.parametrize("bad, message", [
    ('{"content": "第一条", ', "invalid JSON"),
    ('{"text": "没有 content"}', "missing field 'content'"),
    ('["content"]', "expected a JSON object, got list"),
])
def test_a_bad_line_deep_in_a_file_is_named(tokenizer, tmp_path, bad, message):
    path = write_big_jsonl(tmp_path / "big.jsonl", 6000, 5432, bad)
    with pytest.raises(DataError) as e:
        clm([path], tokenizer, 64, pipeline(tmp_path, 2))
    assert str(e.value).startswith(f"{path}:5432: {message}")
    assert not list((tmp_path / "cache").glob("clm-*"))  # nothing cached
    # a streaming shard that starts in the middle of the file names the same line
    start = path.stat().st_size // 2
    with pytest.raises(DataError, match=f"^{path}:5432: {message}"):
        list(Piece(str(path), start).documents())


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"content": "a"}\n\n{"content": "caf\xe9"}\n')
    with pytest.raises(DataError, match=f"^{path}:3: not UTF-8 text"):
        list(iter_documents(path))


# ---------------------------------------------------------------- streaming


def test_shards_read_every_document_once(corpus):
    docs = [d for f in corpus for d in load_documents(f)]
    for world_size, shard_bytes in ((1, 1 << 30), (2, 20_000), (3, 50_000)):
        shards = plan_shards(corpus, world_size, shard_bytes)
        assert len(shards) % world_size == 0 and len(shards) >= world_size
        assert [d for shard in shards for piece in shard for d in piece.documents()] == docs
    held, shards = hold_out(plan_shards(corpus, 2, 20_000), 30)
    assert held == docs[:30]
    assert [d for shard in shards for piece in shard for d in piece.documents()] == docs[30:]
    with pytest.raises(DataError, match="holds only 1291 documents"):
        hold_out(plan_shards(corpus, 1, 1 << 30), 5000)


def streamed(dataset, epoch=0):
    dataset.set_epoch(epoch)
    return [list(map(int, x["input_ids"])) for x in dataset]


def test_streaming_packs_as_the_cache_does(tokenizer, corpus, tmp_path):
    want = old_blocks(tokenizer, corpus, 64)[0]
    one, _, info = streaming_blocks(corpus, tokenizer, 64, True, 0, 7, 1, 0, 1 << 30)
    assert info["shards"] == 1 and streamed(one) == want  # one shard, no shuffle: exactly the blocks of the cache
    many, _, info = streaming_blocks(corpus, tokenizer, 64, True, 0, 7, 2, 500, 20_000)
    assert info["shards"] > 2
    first, second = streamed(many, 0), streamed(many, 1)
    stream = [t for b in want for t in b]
    # each shard packs its own stream (its last block shorter): the same tokens, a few more blocks
    assert sorted(t for b in first for t in b) == sorted(stream) and len(want) <= len(first) <= len(want) + info["shards"]
    assert sorted(first) == sorted(second) and first != second  # every block each pass, reshuffled
    assert streamed(many, 0) == first  # seeded
    _, evals, info = streaming_blocks(corpus, tokenizer, 64, True, 30, 7, 1, 0, 1 << 30)
    docs = [d for f in corpus for d in load_documents(f)]
    assert [list(x) for x in evals["input_ids"]] == old_pack_blocks(old_tokenize_documents(tokenizer, docs[:30]), 64)


def _torchrun(*argv, port):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                           *map(str, argv)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_streaming_under_torchrun_each_block_once_per_pass(tiny_model_dir, tokenizer, corpus, tmp_path):
    out = tmp_path / "seen.json"
    proc = _torchrun("tests/stream_ranks.py", out, 2, "--base_model", tiny_model_dir, "--data_path", *corpus,
                     "--output_dir", tmp_path / "o", "--block_size", 64, "--batch_size", 4, "--micro_batch_size", 2,
                     "--streaming", "True", "--max_steps", 10, "--streaming_shard_mb", 1, "--shuffle_buffer", 100,
                     "--lora_r", 4, "--report_to", "none", "--seed", 7, port=29547)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.rank{r}").read_text(encoding="utf-8")) for r in (0, 1)]
    want, _, _ = streaming_blocks(corpus, tokenizer, 64, True, 0, 7, 2, 0, 1 << 20)
    want = sorted(streamed(want))  # the same shards read by one process
    for epoch in (0, 1):
        got = ranks[0][epoch] + ranks[1][epoch]
        assert sorted(got) == want  # every block once per pass across the ranks, none twice
        assert ranks[0][epoch] and ranks[1][epoch]
    assert ranks[0][0] != ranks[0][1]  # reshuffled each pass


def _train_clm(tiny_model_dir, files, out, *extra):
    import train_clm

    argv = ["--base_model", tiny_model_dir, "--data_path", *files, "--output_dir", out, "--block_size", 64,
            "--batch_size", 4, "--micro_batch_size", 2, "--lora_r", 4, "--lora_dropout", 0.1, "--learning_rate", 5e-3,
            "--report_to", "none", "--seed", 7, "--streaming", "True", "--shuffle_buffer", 50, *extra]
    return train_clm.main(*train_clm.parse([str(a) for a in argv]))


def test_streaming_resume_continues_the_same_stream(tiny_model_dir, corpus, tmp_path):
    import torch
    from safetensors.torch import load_file

    from utils.model.loader import read_run_info

    args = ["--max_steps", 3, "--save_steps", 2, "--val_set_size", 20]
    _train_clm(tiny_model_dir, corpus, tmp_path / "a", *args)
    info = read_run_info(tmp_path / "a")
    assert info["streaming"]["eval_documents"] == 20 and info["data_sha256"] is None
    _train_clm(tiny_model_dir, corpus, tmp_path / "b", *args, "--resume_from_checkpoint", tmp_path / "a" / "checkpoint-2")
    full, resumed = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in "ab")
    start = load_file(str(tmp_path / "a" / "checkpoint-2" / "adapter_model.safetensors"))
    assert any(not torch.allclose(full[k], start[k]) for k in full)
    for key in full:  # the resumed run skipped exactly the blocks of steps 1-2 and trained on those of step 3
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)


def test_check_resume_refuses_a_checkpoint_past_the_first_pass(tmp_path):
    from utils.common.errors import ConfigError
    from utils.training.streamed_blocks import check_resume

    for epoch, refused in ((0.75, False), (1.25, True)):
        checkpoint = tmp_path / f"checkpoint-{epoch}"
        checkpoint.mkdir()
        (checkpoint / "trainer_state.json").write_text(json.dumps({"epoch": epoch, "global_step": 5}), encoding="utf-8")
        if refused:
            with pytest.raises(ConfigError, match="read its whole corpus 1 time"):
                check_resume(str(checkpoint), ignore_data_skip=False)
        else:
            check_resume(str(checkpoint), ignore_data_skip=False)
        check_resume(str(checkpoint), ignore_data_skip=True)
    check_resume(None, ignore_data_skip=False)


@pytest.mark.slow
def test_streaming_resume_after_a_whole_pass_is_refused(tiny_model_dir, corpus, tmp_path):
    from utils.common.errors import ConfigError

    small = tmp_path / "small.jsonl"
    small.write_text("".join(corpus[0].read_text(encoding="utf-8").splitlines(keepends=True)[:4]), encoding="utf-8")
    _train_clm(tiny_model_dir, [small], tmp_path / "a", "--max_steps", 6, "--save_steps", 5)
    state = json.loads((tmp_path / "a" / "checkpoint-5" / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["epoch"] >= 1  # the stream ran out before step 5
    checkpoint = tmp_path / "a" / "checkpoint-5"
    with pytest.raises(ConfigError, match="--ignore_data_skip True"):
        _train_clm(tiny_model_dir, [small], tmp_path / "b", "--max_steps", 6, "--resume_from_checkpoint", checkpoint)
    _train_clm(tiny_model_dir, [small], tmp_path / "b", "--max_steps", 6, "--resume_from_checkpoint", checkpoint,
               "--ignore_data_skip", "True")
    with pytest.raises(ConfigError, match="--streaming needs --max_steps"):
        _train_clm(tiny_model_dir, [small], tmp_path / "c")
