"""DeepSpeed ZeRO on CPU: scripts/ds_zero2.json (full training) and scripts/ds_zero3.json (LoRA on every linear layer,
the model loaded partitioned) under ``torchrun --nproc_per_node=2`` give the single-process result.

DeepSpeed is a GPU requirement (requirements-gpu.txt), not installed by scripts/env.sh: this test runs where it is
importable and is skipped elsewhere. On a CPU machine it installs without its CUDA ops and without a second torch
in pip's build environment::

    DS_BUILD_OPS=0 .venv/bin/pip install --no-build-isolation -r requirements-gpu.txt

DeepSpeed then runs on its CPU accelerator (``DS_ACCELERATOR=cpu``, gloo); tests/deepspeed_cpu.py starts its
communication as accelerate does on a GPU (see there).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import write_statute_corpus

import train_clm
from utils.model.loader import read_run_info

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                                   reason="deepspeed not installed (requirements-gpu.txt)")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZERO = {stage: os.path.join(ROOT, "scripts", f"ds_zero{stage}.json") for stage in (2, 3)}
# Measured on the tiny model (fp32, 2 steps, deepspeed 0.19.8), ZeRO on 2 processes vs 1 process without DeepSpeed:
# loss equal, weights within 2.9e-7 (ZeRO-2 full) and 3.0e-7 (ZeRO-3 LoRA).
ATOL, RTOL = 1e-5, 1e-4


def runs(tiny_model_dir, corpus) -> dict[str, tuple[list[str], str]]:
    """name -> (train_clm argv without --output_dir and --deepspeed, saved weights file). Dropout 0: ranks draw
    other masks."""
    common = ["--base_model", str(tiny_model_dir), "--data_path", str(corpus), "--block_size", "64", "--seed", "7",
              "--max_steps", "2", "--batch_size", "4", "--micro_batch_size", "2", "--learning_rate", "5e-3",
              "--logging_steps", "1", "--report_to", "none", "--save_strategy", "no", "--lora_dropout", "0"]
    return {
        "zero2_full": ([*common, "--lora_r", "0"], "model.safetensors"),
        "zero3_lora": ([*common, "--lora_r", "4", "--lora_target_modules", "all-linear"], "adapter_model.safetensors"),
    }


def test_zero_two_processes_match_one(tiny_model_dir, tmp_path):
    corpus = write_statute_corpus(tmp_path / "docs.jsonl", limit=300, stride=7, offset=3)
    plan = runs(tiny_model_dir, corpus)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29537",
           os.path.join(ROOT, "tests", "deepspeed_cpu.py")]
    for name, (argv, _) in plan.items():
        stage = int(name[len("zero")])
        cmd += ["train_clm", json.dumps([*argv, "--output_dir", str(tmp_path / "zero" / name), "--deepspeed",
                                         ZERO[stage]])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for name, (argv, _) in plan.items():  # the single-process references run meanwhile
        train_clm.main(*train_clm.parse([*argv, "--output_dir", str(tmp_path / "one" / name)]))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == [0, 0], stderr[-3000:]

    for name, (_, weights) in plan.items():
        one, zero = tmp_path / "one" / name, tmp_path / "zero" / name
        info = read_run_info(zero)
        assert info["distributed"] == "DEEPSPEED" and info["world_size"] == 2, (name, info["distributed"])
        assert info["train_loss"] == pytest.approx(read_run_info(one)["train_loss"], rel=1e-5), name
        expected, got = load_file(str(one / weights)), load_file(str(zero / weights))
        assert expected.keys() == got.keys(), (name, set(expected) ^ set(got))
        worst = max((got[k] - expected[k]).abs().max().item() for k in expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=ATOL, rtol=RTOL,
                                       msg=f"{name}: {key} (largest difference {worst:.3g})")
        base = load_file(str(tiny_model_dir / "model.safetensors"))
        trained = [k for k in expected if "lora_B" in k] or [k for k in expected if k in base]
        assert any(not torch.allclose(expected[k], base.get(k, torch.zeros_like(expected[k]))) for k in trained)
        print(f"{name}: loss {info['train_loss']:.6f} vs {read_run_info(one)['train_loss']:.6f}, "
              f"largest weight difference {worst:.3g}")
