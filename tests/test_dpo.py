"""dpo.py on the tiny model: the DPO loss falls on a toy pair set, the adapter saves, merges and loads; base + SFT
adapter with resume; pairs tokenised as finetune.py tokenises them; malformed pairs are errors with file:line."""

import json
from pathlib import Path

import pytest
import torch

import dpo
import merge_lora
from utils.common.datafiles import DataError, sft_example
from utils.model.chat_template import make_prompter
from utils.model.loader import load_for_inference, load_tokenizer, read_run_info
from utils.training.preference_pairs import load_preference_data, preference_example

QUESTIONS = ["盗窃罪如何处罚？", "什么是诈骗罪？", "抢劫罪怎么判？", "故意伤害罪的刑罚是什么？"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pref") / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for q in QUESTIONS:
            f.write(json.dumps({"instruction": q, "chosen": "根据《刑法》第二百六十四条的规定处罚。",
                                "rejected": "根据《刑罚法》第九百条的规定处罚。", "kind": "unknown_law"},
                               ensure_ascii=False) + "\n")
    return path


def run(*argv):
    return dpo.main(*dpo.parse([str(a) for a in argv]))


def common(base, data, out, *extra):
    return ["--base_model", base, "--data_path", data, "--output_dir", out, "--cutoff_len", 256, "--batch_size", 4,
            "--micro_batch_size", 4, "--lora_r", 4, "--learning_rate", 5e-3, "--report_to", "none",
            "--logging_steps", 1, "--seed", 3, *extra]


def logged(out, key="loss"):
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    return [h[key] for h in state["log_history"] if key in h]


def test_loss_falls_and_the_adapter_saves_merges_and_loads(tiny_model_dir, pairs, tmp_path, monkeypatch):
    import trl.trainer.utils as trl_utils

    cpu_compact = []  # per fused-head call: whether trl scored the answer rows only on the CPU
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", lambda *a: cpu_compact.append(
        trl_utils._use_triton(torch.device("cpu"))) or apply(*a))
    out = tmp_path / "dpo"
    metrics = run(*common(tiny_model_dir, pairs, out, "--max_steps", 5, "--save_strategy", "no"))
    assert cpu_compact and all(cpu_compact)  # utils/answer_logits.fused_head_on_answer_positions was on
    losses = logged(out)
    assert len(losses) == 5 and losses[0] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference at start
    assert losses[-1] < losses[0] - 0.05 and logged(out, "rewards/accuracies")[-1] == 1
    info = read_run_info(out)
    assert info["stage"] == "dpo" and info["base_model"] == str(tiny_model_dir.resolve())
    assert info["reference"].startswith("the base model") and info["loss_type"] == ["sigmoid"]
    assert info["prompt_template"] == "law_template" and info["pairs"]["kinds"] == {"unknown_law": 4}
    assert metrics["global_step"] == 5 and (out / "adapter_model.safetensors").is_file()
    assert not (out / "ref").exists()  # only the trained adapter is saved, never trl's reference copy
    merged = tmp_path / "merged"
    merge_lora.main(lora_model=str(out), output_dir=str(merged))
    adapter, model = load_for_inference(lora_weights=str(out)), load_for_inference(str(merged))
    ids = torch.tensor([adapter.tokenizer(QUESTIONS[0]).input_ids])
    with torch.inference_mode():
        torch.testing.assert_close(model.model(ids).logits, adapter.model(ids).logits, atol=1e-4, rtol=0)
    assert "law_template" in (read_run_info(merged).get("prompt_template") or "")


def test_on_base_plus_sft_adapter_with_resume(tiny_model_dir, pairs, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from utils.model.loader import write_run_info

    sft = tmp_path / "sft"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.save_pretrained(str(sft))
    write_run_info(sft, {"base_model": str(tiny_model_dir), "prompt_template": "alpaca"})
    out = tmp_path / "dpo"
    args = common(tiny_model_dir, pairs, out, "--sft_adapter", sft, "--save_steps", 2)
    run(*args, "--max_steps", 2)
    run(*args, "--max_steps", 3, "--resume_from_checkpoint", out)
    info = read_run_info(out)
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert info["global_step"] == 3 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
    assert info["prompt_template"] == "alpaca" and info["reference"].startswith("the SFT adapter")
    assert info["base_model"] == str(tiny_model_dir.resolve())
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 2 and config["target_modules"] == ["q_proj"] and not (out / "ref").exists()
    assert losses_start_at_log2(out)


def losses_start_at_log2(out):
    # The reference is the SFT adapter itself, so the first DPO loss is log 2 although the adapter is not zero.
    return logged(out)[0] == pytest.approx(0.6931, abs=1e-3)


@pytest.mark.parametrize("template", ["law_template", "chat"])
def test_pairs_are_tokenised_as_finetune_tokenises(tiny_model_dir, tiny_chat_model_dir, template):
    tokenizer = load_tokenizer(tiny_chat_model_dir if template == "chat" else tiny_model_dir, padding_side="right")
    prompter = make_prompter(template, tokenizer)
    pair = {"instruction": "盗窃罪如何处罚？", "input": "", "history": [["你好", "您好"]],
            "chosen": "处三年以下有期徒刑。", "rejected": "无罪。"}
    ex = preference_example(tokenizer, prompter, pair, 256)
    for side in ("chosen", "rejected"):
        segments = prompter.segments(pair["instruction"], "", pair[side], pair["history"])
        sft = sft_example(tokenizer, segments, 256, False, prompter.needs_eos, prompter.add_special_tokens)
        assert ex["prompt_ids"] + ex[f"{side}_ids"] == sft["input_ids"]
        answer = [t for t in sft["labels"][len(ex["prompt_ids"]):] if t != -100]
        assert tokenizer.decode(answer, skip_special_tokens=True).strip() == pair[side]  # not the history's answer
    if template == "law_template":
        assert ex["chosen_ids"][-1] == ex["rejected_ids"][-1] == tokenizer.eos_token_id
    assert preference_example(tokenizer, prompter, {**pair, "instruction": "长" * 400}, 128) is None


@pytest.mark.parametrize("line, message", [
    ('{"instruction": "问", "chosen": "甲"}', "missing field 'rejected'"),
    ('{"instruction": "问", "chosen": "甲", "rejected": "甲 "}', "same text"),
    ('{"prompt": "问", "instruction": "问", "chosen": "甲", "rejected": "乙"}', "not both"),
    ('{"prompt": "问", "chosen": "甲", "rejected": "乙", "history": ["x"]}', "history"),
])
def test_malformed_pairs_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "问", "chosen": "甲", "rejected": "乙"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
        load_preference_data(path)


def test_full_dpo_is_refused_with_one_line(tiny_model_dir, pairs, tmp_path, capsys):
    from utils.common.entry import run_entry

    argv = [str(a) for a in common(tiny_model_dir, pairs, tmp_path / "x", "--lora_r", 0)]
    assert run_entry("dpo", lambda: dpo.main(*dpo.parse(argv))) == 1
    assert "--lora_r 0" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tiny_model_dir, pairs, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    argv = [str(a) for a in common(tiny_model_dir, pairs, out, "--max_steps", 1, "--micro_batch_size", 2,
                                   "--save_strategy", "no")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29571",
                           "dpo.py", *argv], cwd=Path(dpo.__file__).parent, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_run_info(out)
    assert info["world_size"] == 2 and info["global_step"] == 1
    assert info["args"]["gradient_accumulation_steps"] == 1  # batch 4 = 2 pairs x 2 processes


def test_help_prints_no_bitsandbytes_kernel_warning():
    """On AVX512-BF16 CPUs bitsandbytes, imported by trl, urges fetching a kernel from the hub on every start;
    utils/__init__.py quiets it, which only works when utils is imported before trl (it was not, in dpo.py)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "dpo.py", "--help"], capture_output=True, text=True, timeout=120,
                          cwd=Path(dpo.__file__).resolve().parent)
    assert done.returncode == 0 and "usage: dpo.py" in done.stdout
    assert "kernels-community" not in done.stdout + done.stderr


def test_on_an_sft_adapter_that_trains_only_the_new_rows(tiny_model_dir, pairs, tmp_path):
    """--new_embeddings new_rows (peft's trainable_token_indices): trl's fused LM head crashed on the wrapped head
    ('TrainableTokensWrapper' object has no attribute 'bias', huggingface/trl #4723), and its frozen reference missed
    the new rows' delta, so the reference was not the SFT model (trl #1193). DPO must start at log 2 (policy =
    reference) and train."""
    from tiny_model import write_statute_corpus

    import train_clm
    from utils.model.vocabulary import (
        merge_sentencepiece,
        normal_pieces,
        save_sentencepiece_tokenizer,
        train_sentencepiece,
    )

    corpus = write_statute_corpus(tmp_path / "docs.jsonl", limit=300, stride=7, offset=3)
    docs = [json.loads(line)["content"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    legal = train_sentencepiece(docs, tmp_path / "legal", 2600)
    merge_sentencepiece(tiny_model_dir / "tokenizer.model", normal_pieces(legal), tmp_path / "merged.model")
    save_sentencepiece_tokenizer(tiny_model_dir, load_tokenizer(tiny_model_dir), tmp_path / "merged.model",
                                 tmp_path / "tok")
    sft = tmp_path / "sft"
    train_clm.main(*train_clm.parse([str(a) for a in (
        "--base_model", tiny_model_dir, "--data_path", corpus, "--output_dir", sft, "--block_size", 64,
        "--batch_size", 4, "--micro_batch_size", 2, "--learning_rate", 5e-3, "--report_to", "none", "--lora_r", 4,
        "--max_steps", 2, "--tokenizer_path", tmp_path / "tok", "--new_embeddings", "new_rows")]))
    assert json.loads((sft / "adapter_config.json").read_text())["trainable_token_indices"]
    out = tmp_path / "dpo"
    run(*common(tiny_model_dir, pairs, out, "--sft_adapter", sft, "--max_steps", 3, "--save_strategy", "no"))
    assert losses_start_at_log2(out) and len(logged(out)) == 3
