"""train_clm.py end to end on the tiny model: extended vocabulary, full and LoRA, resume, torchrun."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import write_statute_corpus

import train_clm
from utils.model.loader import read_run_info
from utils.model.vocabulary import merge_sentencepiece, normal_pieces, save_sentencepiece_tokenizer, train_sentencepiece

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_statute_corpus(tmp_path_factory.mktemp("clm") / "docs.jsonl", limit=300, stride=7, offset=3)


@pytest.fixture(scope="module")
def legal_tokenizer(tiny_model_dir, corpus, tmp_path_factory):
    from utils.model.loader import load_tokenizer

    work = tmp_path_factory.mktemp("legal-tok")
    docs = [json.loads(line)["content"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    legal = train_sentencepiece(docs, work / "legal", 2600)
    merge_sentencepiece(tiny_model_dir / "tokenizer.model", normal_pieces(legal), work / "merged.model")
    save_sentencepiece_tokenizer(tiny_model_dir, load_tokenizer(tiny_model_dir), work / "merged.model", work / "tok")
    return work / "tok"


def run(*argv):
    return train_clm.main(*train_clm.parse([str(a) for a in argv]))


def common(tiny_model_dir, corpus, out, *extra):
    return ["--base_model", tiny_model_dir, "--data_path", corpus, "--output_dir", out, "--block_size", 64,
            "--batch_size", 4, "--micro_batch_size", 2, "--learning_rate", 5e-3, "--logging_steps", 1,
            "--report_to", "none", "--seed", 7, *extra]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_extended_vocabulary_is_trained(tiny_model_dir, corpus, legal_tokenizer, tmp_path, mode):
    from transformers import AutoTokenizer

    out = tmp_path / mode
    lora = ["--lora_r", 4, "--lora_target_modules", "[q_proj, v_proj]"] if mode == "lora" else ["--lora_r", 0]
    metrics = run(*common(tiny_model_dir, corpus, out, "--tokenizer_path", legal_tokenizer, "--max_steps", 3,
                          "--val_set_size", 10, "--save_strategy", "no", *lora))
    info = read_run_info(out)
    base_rows, size = info["vocab"]["base_rows"], info["vocab"]["tokenizer_size"]
    assert info["vocab"]["grew"] and size == len(AutoTokenizer.from_pretrained(str(out))) > base_rows == 2000
    assert info["perplexity"] == pytest.approx(math.exp(info["eval_loss"])) and math.isfinite(info["perplexity"])
    assert metrics["global_step"] == 3 and info["base_model"] == str(tiny_model_dir.resolve())
    assert (out / "loss_curve.png").stat().st_size > 1000 and (out / "tokenizer.model").is_file()
    if mode == "lora":
        assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
        saved = load_file(str(out / "adapter_model.safetensors"))
        embed = next(v for k, v in saved.items() if "embed_tokens" in k)
        assert any("lora_A" in k for k in saved)
    else:
        saved = load_file(str(out / "model.safetensors"))
        embed = saved["model.embed_tokens.weight"]
    assert embed.shape[0] == size
    # New rows that the batches used moved away from their mean-of-pieces start: the new vocabulary trains.
    base = load_file(str(tiny_model_dir / "model.safetensors"))["model.embed_tokens.weight"]
    base_tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    merged = AutoTokenizer.from_pretrained(str(out))
    moved = 0
    for token_id in range(base_rows, size):
        parts = [t.id for t in base_tok.backend_tokenizer.model.tokenize(merged.convert_ids_to_tokens(token_id))]
        moved += not torch.allclose(embed[token_id], base[parts].mean(0))
    assert moved >= 50, moved


@pytest.fixture(scope="module")
def tied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with lm_head tied to the input embedding, as Gemma's."""
    from transformers import AutoConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tied")
    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    config.tie_word_embeddings = True
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        (out / name).write_bytes((tiny_model_dir / name).read_bytes())
    return out


@pytest.mark.parametrize("tied", [False, True])
def test_adapter_of_a_grown_vocabulary_holds_one_copy_per_trained_matrix(tiny_model_dir, tied_model_dir, corpus,
                                                                         legal_tokenizer, tmp_path, tied):
    import merge_lora

    base_dir = tied_model_dir if tied else tiny_model_dir
    out = tmp_path / "lora"
    targets = "all-linear" if tied else "[q_proj, v_proj]"  # all-linear never puts LoRA on the head or embeddings
    run(*common(base_dir, corpus, out, "--tokenizer_path", legal_tokenizer, "--max_steps", 2, "--save_strategy", "no",
                "--lora_r", 4, "--lora_target_modules", targets))
    saved = load_file(str(out / "adapter_model.safetensors"))
    info = read_run_info(out)
    size = info["vocab"]["tokenizer_size"]
    assert info["lora_target_modules"] == (["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                            "v_proj"] if tied else ["q_proj", "v_proj"])
    matrices = {k: v for k, v in saved.items() if "lora_" not in k}
    # peft's default kept the resized base (.weight) and the untouched original_module next to each trained copy:
    # six vocabulary-sized matrices; merging and resuming need the two trained ones (tied: two identical copies,
    # as peft clones shared tensors when saving).
    assert sorted(matrices) == ["base_model.model.lm_head.weight", "base_model.model.model.embed_tokens.weight"]
    assert all(v.shape[0] == size for v in matrices.values())
    if tied:
        assert torch.equal(*matrices.values())

    merge_lora.main(lora_model=str(out), output_dir=str(tmp_path / "merged"))  # merged vs adapter logits checked inside
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    # the merged model carries the trained matrices exactly
    assert torch.equal(merged["model.embed_tokens.weight"], matrices["base_model.model.model.embed_tokens.weight"])
    if tied:
        assert "lm_head.weight" not in merged  # still tied: one matrix on disk
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
        assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    else:
        assert torch.equal(merged["lm_head.weight"], matrices["base_model.model.lm_head.weight"])


def test_resume_with_a_grown_vocabulary_gives_the_uninterrupted_result(tiny_model_dir, corpus, legal_tokenizer, tmp_path):
    # The checkpoints hold only the trained embedding copies: resuming must still continue exactly.
    args = ["--lora_r", 4, "--max_steps", 4, "--save_steps", 2, "--tokenizer_path", legal_tokenizer]
    run(*common(tiny_model_dir, corpus, tmp_path / "a", *args))
    run(*common(tiny_model_dir, corpus, tmp_path / "b", *args, "--resume_from_checkpoint", tmp_path / "a" / "checkpoint-2"))
    full = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert full.keys() == resumed.keys() and not any("original_module" in k for k in full)
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)


def test_resume_gives_the_uninterrupted_result(tiny_model_dir, corpus, tmp_path):
    args = ["--lora_r", 4, "--lora_dropout", 0.1, "--max_steps", 4, "--save_steps", 2]
    run(*common(tiny_model_dir, corpus, tmp_path / "a", *args))
    assert (tmp_path / "a" / "checkpoint-2").is_dir()
    run(*common(tiny_model_dir, corpus, tmp_path / "b", *args, "--resume_from_checkpoint", tmp_path / "a" / "checkpoint-2"))
    full = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    start = load_file(str(tmp_path / "a" / "checkpoint-2" / "adapter_model.safetensors"))
    assert full.keys() == resumed.keys()
    assert any(not torch.allclose(full[k], start[k]) for k in full)  # steps 3-4 changed the weights
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)
    assert read_run_info(tmp_path / "b")["global_step"] == 4
    # the whole run's loss, not the mean of steps 3-4 only (what the Trainer reports after a resume)
    assert read_run_info(tmp_path / "b")["train_loss"] == pytest.approx(read_run_info(tmp_path / "a")["train_loss"],
                                                                        rel=1e-3)
    from utils.common.errors import ConfigError

    with pytest.raises(ConfigError, match="its steps took 4 examples each .* this run's take 8"):
        run(*common(tiny_model_dir, corpus, tmp_path / "c", *args, "--batch_size", 8,
                    "--resume_from_checkpoint", tmp_path / "a" / "checkpoint-2"))


def test_resume_skips_a_checkpoint_whose_save_was_cut_short(tiny_model_dir, corpus, tmp_path, capsys):
    """kill -9 during a checkpoint save leaves it without trainer_state.json (written last): resuming the folder
    takes the previous, complete checkpoint and ends with the uninterrupted result."""
    out = tmp_path / "o"
    args = ["--lora_r", 4, "--max_steps", 4, "--save_steps", 2]
    run(*common(tiny_model_dir, corpus, out, *args))
    full = load_file(str(out / "adapter_model.safetensors"))
    for name in ("trainer_state.json", "adapter_model.safetensors", "run_info.json"):  # the run never got this far
        (out / name).unlink()
    (out / "checkpoint-4" / "trainer_state.json").unlink()  # as a preemption during the optimizer save leaves it
    (out / "checkpoint-4" / "optimizer.pt").write_bytes(b"half")
    run(*common(tiny_model_dir, corpus, out, *args, "--resume_from_checkpoint", out))
    assert "skipping checkpoint-4: no trainer_state.json (its save was interrupted)" in capsys.readouterr().err
    resumed = load_file(str(out / "adapter_model.safetensors"))
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)


def test_resume_names_an_incomplete_checkpoint(tmp_path):
    from transformers import TrainingArguments

    from utils.common.errors import ConfigError
    from utils.training.setup import checkpoint_problem, resolve_resume

    for step, state in ((2, {"global_step": 2}), (4, None), (6, "{"), (8, {"global_step": 7})):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    assert checkpoint_problem(tmp_path / "checkpoint-2") is None
    assert "no trainer_state.json" in checkpoint_problem(tmp_path / "checkpoint-4")
    assert "unreadable trainer_state.json" in checkpoint_problem(tmp_path / "checkpoint-6")
    assert "says step 7" in checkpoint_problem(tmp_path / "checkpoint-8")

    def resume(value):
        return resolve_resume(TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint=str(value)))

    assert resume(tmp_path) == str(tmp_path / "checkpoint-2")
    with pytest.raises(ConfigError, match="checkpoint-4: not a complete checkpoint: no trainer_state.json"):
        resume(tmp_path / "checkpoint-4")


def test_original_output_dir_as_resume_target_starts_fresh(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "o"
    run(*common(tiny_model_dir, corpus, out, "--max_steps", 1, "--resume_from_checkpoint", out,
                "--train_on_inputs", "True", "--add_eos_token", "True", "--group_by_length", "True",
                "--cutoff_len", 64, "--lora_target_modules", "[q_proj, v_proj, k_proj, o_proj]"))
    assert read_run_info(out)["global_step"] == 1


def _cli(*argv, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True, env=env, **kw)


def test_bad_input_is_one_line_and_nonzero(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "第一条"}\n{"text": "no content"}\n', encoding="utf-8")
    argv = ["train_clm.py", "--base_model", tiny_model_dir, "--output_dir", tmp_path / "o", "--report_to", "none"]
    proc = _cli(*argv, "--data_path", bad)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == f"train_clm: error: {bad}:2: missing field 'content'"
    proc = _cli(*argv, "--data_path", bad, "--train_on_inputs", "False")
    assert proc.returncode == 1 and "train_clm: error: --train_on_inputs False" in proc.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")  # was a datasets message: 'Instruction "train" corresponds to no data!'
    proc = _cli(*argv, "--data_path", empty)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == \
        f"train_clm: error: {empty}: no records to train on (empty files?)"


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "ddp"
    proc = _cli("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531", "train_clm.py",
                *common(tiny_model_dir, corpus, out, "--max_steps", 2, "--lora_r", 4, "--val_set_size", 10),
                timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_run_info(out)
    assert info["world_size"] == 2 and info["global_step"] == 2
    assert info["args"]["gradient_accumulation_steps"] == 1  # batch 4 = micro 2 x 2 processes


def test_new_rows_mode_trains_only_the_new_vocabulary(tiny_model_dir, corpus, legal_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    import merge_lora

    out = tmp_path / "rows"
    run(*common(tiny_model_dir, corpus, out, "--tokenizer_path", legal_tokenizer, "--max_steps", 3, "--val_set_size",
                10, "--save_strategy", "no", "--lora_r", 4, "--lora_target_modules", "[q_proj, v_proj]",
                "--new_embeddings", "new_rows"))
    info = read_run_info(out)
    base_rows, size = info["vocab"]["base_rows"], info["vocab"]["tokenizer_size"]
    assert info["vocab"]["new_embeddings"] == "new_rows" and size > base_rows
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert any("trainable_tokens" in k for k in saved) and not any("modules_to_save" in k for k in saved)
    assert all(v.shape[0] == size - base_rows for k, v in saved.items() if "trainable_tokens" in k)

    merge_lora.main(lora_model=str(out), output_dir=str(tmp_path / "merged"))  # verified on logits inside
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    matrices = [k for k in ("model.embed_tokens.weight", "lm_head.weight") if k in base]
    for key in matrices:
        assert merged[key].shape[0] == size and torch.equal(merged[key][:base_rows], base[key])  # base rows kept
    # the new rows come whole from the adapter (peft's "delta" holds the rows' values), so the adapter need not
    # carry the resized base matrix
    assert all("lora_" in k or "trainable_tokens" in k for k in saved)
    delta = next(v for k, v in saved.items() if "embed_tokens" in k and "trainable_tokens" in k)
    assert torch.equal(merged["model.embed_tokens.weight"][base_rows:], delta)
    base_tok, tok = AutoTokenizer.from_pretrained(str(tiny_model_dir)), AutoTokenizer.from_pretrained(str(out))
    embed, moved = merged["model.embed_tokens.weight"], 0
    for token_id in range(base_rows, size):
        parts = [t.id for t in base_tok.backend_tokenizer.model.tokenize(tok.convert_ids_to_tokens(token_id))]
        moved += not torch.allclose(embed[token_id], base["model.embed_tokens.weight"][parts].mean(0))
    assert moved >= 50, moved  # the new rows trained


def test_new_embeddings_mode_is_checked(tiny_model_dir, corpus, tmp_path):
    from utils.common.errors import ConfigError

    with pytest.raises(ConfigError, match="--new_embeddings 'some_rows'"):
        run(*common(tiny_model_dir, corpus, tmp_path / "x", "--new_embeddings", "some_rows"))
