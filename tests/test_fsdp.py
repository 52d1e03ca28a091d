"""FSDP (scripts/fsdp.json, through the Trainer and accelerate) on CPU: two torchrun processes give the
single-process result — full training, LoRA with a grown vocabulary (our lean adapter saving), finetune.py.

accelerate 1.15 enables FSDP only on GPUs/accelerators; tests/fsdp_cpu.py opens that one gate for CPU processes
(see there), and the run with the gate shut shows what a user gets: --fsdp refused, not silently DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import write_statute_corpus

import finetune
import train_clm
from utils.model.loader import read_run_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDP = ["--fsdp", "--fsdp_config", os.path.join(ROOT, "scripts", "fsdp.json")]
# Measured on the tiny model (fp32, 2 steps): FSDP vs one process differs by at most 3.6e-7 (full) and 0 (LoRA).
ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def inputs(tiny_model_dir, tmp_path_factory):
    from utils.model.loader import load_tokenizer
    from utils.model.vocabulary import (
        merge_sentencepiece,
        normal_pieces,
        save_sentencepiece_tokenizer,
        train_sentencepiece,
    )

    work = tmp_path_factory.mktemp("fsdp-inputs")
    corpus = write_statute_corpus(work / "docs.jsonl", limit=300, stride=7, offset=3)
    docs = [json.loads(line)["content"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    legal = train_sentencepiece(docs, work / "legal", 2600)
    merge_sentencepiece(tiny_model_dir / "tokenizer.model", normal_pieces(legal), work / "merged.model")
    save_sentencepiece_tokenizer(tiny_model_dir, load_tokenizer(tiny_model_dir), work / "merged.model", work / "tok")
    items = json.loads(open(os.path.join(ROOT, "resources", "example_instruction_tune.json"), encoding="utf-8").read())
    sft = work / "sft.jsonl"
    sft.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items * 2), encoding="utf-8")
    return {"corpus": corpus, "tokenizer": work / "tok", "sft": sft}


def runs(tiny_model_dir, inputs, out) -> dict[str, tuple[str, list[str], str]]:
    """name -> (script, argv without --output_dir, saved weights file). Dropout 0: ranks draw other masks."""
    steps = ["--max_steps", "2", "--batch_size", "4", "--micro_batch_size", "2", "--learning_rate", "5e-3",
             "--logging_steps", "1", "--report_to", "none", "--lora_dropout", "0", "--base_model", str(tiny_model_dir)]
    clm = ["--data_path", str(inputs["corpus"]), "--block_size", "64", "--seed", "7", *steps]
    return {
        "clm_full": ("train_clm", [*clm, "--lora_r", "0", "--save_strategy", "no"], "model.safetensors"),
        # grown vocabulary: modules_to_save embed/lm_head, saved by AdapterTrainer without the base matrices;
        # the checkpoint at step 2 goes through the Trainer's FSDP checkpointing
        "clm_lora_vocab": ("train_clm", [*clm, "--lora_r", "4", "--tokenizer_path", str(inputs["tokenizer"]),
                                         "--save_steps", "2"], "adapter_model.safetensors"),
        "sft_lora": ("finetune", ["--data_path", str(inputs["sft"]), "--cutoff_len", "128", "--seed", "3", *steps,
                                  "--lora_r", "4", "--save_strategy", "no"], "adapter_model.safetensors"),
    }


@pytest.mark.slow
def test_fsdp_two_processes_match_one(tiny_model_dir, inputs, tmp_path):
    plan = runs(tiny_model_dir, inputs, tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           os.path.join(ROOT, "tests", "fsdp_cpu.py")]
    # First as a plain CPU torchrun is: accelerate drops the FSDP plugin there, and a DDP run under --fsdp is refused.
    script, argv, _ = plan["clm_full"]
    cmd += [f"{script}:closed", json.dumps([*argv, "--output_dir", str(tmp_path / "closed"), *FSDP])]
    for name, (script, argv, _) in plan.items():
        cmd += [script, json.dumps([*argv, "--output_dir", str(tmp_path / "fsdp" / name), *FSDP])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # the single-process references run meanwhile
    for name, (script, argv, _) in plan.items():
        module = {"train_clm": train_clm, "finetune": finetune}[script]
        module.main(*module.parse([*argv, "--output_dir", str(tmp_path / "one" / name)]))
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == [1, 0, 0, 0], stderr[-3000:]
    assert ("train_clm: error: --fsdp: accelerate did not enable FSDP here (distributed type MULTI_CPU); it shards "
            "only across GPUs/accelerators. On CPU drop --fsdp (torchrun alone runs DDP)") in stderr.splitlines()
    assert not (tmp_path / "closed" / "model.safetensors").exists()

    base = load_file(str(tiny_model_dir / "model.safetensors"))
    for name, (_, _, weights) in plan.items():
        one, fsdp = tmp_path / "one" / name, tmp_path / "fsdp" / name
        info = read_run_info(fsdp)
        assert info["distributed"] == "FSDP" and info["world_size"] == 2, (name, info["distributed"])
        assert read_run_info(one)["distributed"] == "NO"
        assert info["train_loss"] == pytest.approx(read_run_info(one)["train_loss"], rel=1e-5), name
        expected, got = load_file(str(one / weights)), load_file(str(fsdp / weights))
        assert expected.keys() == got.keys(), (name, set(expected) ^ set(got))
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=ATOL, rtol=RTOL, msg=f"{name}: {key}")
        trained = [k for k in expected if "lora_B" in k] or [k for k in expected if k in base]
        assert any(not torch.allclose(expected[k], base.get(k, torch.zeros_like(expected[k]))) for k in trained)
    vocab = tmp_path / "fsdp" / "clm_lora_vocab"
    assert not any("original_module" in k or k.endswith("base_layer.weight")
                   for k in load_file(str(vocab / "adapter_model.safetensors")))  # the lean adapter under FSDP too
    assert (vocab / "checkpoint-2" / "pytorch_model_fsdp.bin").is_file()  # the Trainer's FSDP checkpoint

