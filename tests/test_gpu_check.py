"""The GPU preflight (scripts/gpu_check.sh, tools/gpu_check.py, its worker, utils/training/throughput.py), tested without a GPU:
the refusal line, the table from step records, the MFU arithmetic against a hand computation, every path's command
line against the real scripts' parsers, and (slow) the worker itself running the CPU-capable paths on the tiny
model, its records turned into rows."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gpu_check  # noqa: E402
import gpu_check_worker  # noqa: E402

from utils.training.preflight_table import Row, render_table, summarise  # noqa: E402
from utils.training.throughput import GpuPeak, gpu_peak, mfu, step_stats, train_flops_per_token  # noqa: E402

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")


# ---------------------------------------------------------------- the refusal


@no_cuda
@pytest.mark.parametrize("entry", ["python", "bash"])
def test_without_cuda_one_line_and_nonzero_exit(entry, tmp_path):
    out = tmp_path / "check"
    if entry == "python":
        cmd = [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--output_dir", str(out)]
        env = os.environ
    else:
        cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh")]
        env = {**os.environ, "OUTPUT_DIR": str(out)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gpu_check: error: no CUDA GPU visible (torch "), lines[0]
    assert not out.exists()  # stopped before fetching a model or writing anything


def test_help_without_cuda():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--help"], cwd=ROOT, timeout=120,
                          capture_output=True, text=True, env={**os.environ, "PAGER": "cat"})
    text = proc.stdout + proc.stderr  # fire shows help on stderr
    assert proc.returncode == 0 and "--random_model" in text and "--budget_s" in text and "Traceback" not in text


def test_list_paths(capsys):
    assert gpu_check.main(list_paths=True) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(gpu_check.BY_NAME)
    assert [p.name for p in gpu_check.PATHS] == list(gpu_check.BY_NAME)


def test_output_dir_with_foreign_files_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("x")
    with pytest.raises(gpu_check.GpuCheckError, match="did not write"):
        gpu_check._fresh_output_dir(tmp_path)
    assert (tmp_path / "precious.txt").exists()
    ours = tmp_path / "ours"
    gpu_check._fresh_output_dir(ours)
    (ours / "old.log").write_text("x")
    gpu_check._fresh_output_dir(ours)  # a directory the check wrote is cleared
    assert [p.name for p in ours.iterdir()] == [gpu_check.MARKER]


# ---------------------------------------------------------------- MFU arithmetic


def test_flops_per_token_by_hand():
    # PaLM (Chowdhery et al. 2022), appendix B: 6N + 12·L·H·Q·T model FLOPs per token (H·Q = attention width).
    # By hand for N = 1e8, L = 12, H·Q = 768, T = 512: 12·12·768·512 = 56,623,104.
    assert train_flops_per_token(100_000_000, 12, 768, 512, lora=False) == 600_000_000 + 56_623_104
    # LoRA: no weight gradients for the frozen weights, 2N fewer (forward 2N + activation gradients 2N).
    assert train_flops_per_token(100_000_000, 12, 768, 512, lora=True) == 400_000_000 + 56_623_104
    # 4,096 tokens/s on 1 GPU of 100 TFLOP/s: 4096 · 656,623,104 / 1e14 = 0.026895...
    assert mfu(4096, 656_623_104, 100.0) == pytest.approx(0.02689528, rel=1e-6)
    assert mfu(4096, 656_623_104, 100.0, gpus=2) == pytest.approx(0.02689528 / 2, rel=1e-6)
    with pytest.raises(ValueError, match="must be positive"):
        mfu(1, 1, 0)


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10", 125.0), ("NVIDIA A10G", None), ("NVIDIA L40S", 362.05),
    ("NVIDIA L4", 121.0), ("Tesla V100-SXM2-32GB", 125.0), ("Tesla V100-PCIE-16GB", 112.0),
    ("NVIDIA GeForce RTX 4090", 165.2), ("Some Future GPU", None)])
def test_gpu_peak_table(name, tflops):
    peak = gpu_peak(name)
    assert (peak.tflops if peak else None) == tflops
    assert gpu_peak(name, 200.0).tflops == 200.0  # a figure the user gives wins


def test_model_shape_counts_matmul_weights_once(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    c = model.config
    # by hand: q,k,v,o (4·h·h with 4 kv heads = 4 heads) + gate,up,down (3·h·i) per layer, and lm_head (h·V)
    expected = c.num_hidden_layers * (4 * c.hidden_size ** 2 + 3 * c.hidden_size * c.intermediate_size) \
        + c.hidden_size * c.vocab_size
    shape = gpu_check_worker.model_shape(model)
    assert shape == {"matmul_params": expected, "layers": 2, "attn_width": 64, "lora": False, "dtype": "float32"}
    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", modules_to_save=["lm_head"],
                                            task_type="CAUSAL_LM"))
    # the LoRA matrices and peft's frozen copy of lm_head do not count
    assert gpu_check_worker.model_shape(lora) == {**shape, "lora": True}


def test_embedding_rows_of_a_partitioned_model(tiny_model_dir):
    """ZeRO-3 (clm_zero3_lora) loads the model partitioned: each weight's data is an empty placeholder, as here.
    The vocabulary check must still see the real rows, or the embeddings would be "grown" from 0."""
    from transformers import AutoModelForCausalLM

    from utils.model.loader import embedding_rows

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    rows = model.config.vocab_size
    model.get_input_embeddings().weight.data = torch.empty(0)
    assert embedding_rows(model) == rows


def test_random_model_loads_like_a_base_model(tmp_path):
    """--random_model's builder, in a small shape: the project's loader and engine take it as any base model."""
    from utils.inference.engine import Engine, GenerationParams

    shape = {**gpu_check_worker.RANDOM_SHAPES["llama-1b"], "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 3000}
    records = tmp_path / "r.jsonl"
    gpu_check_worker.random_model(gpu_check_worker.Records(str(records)), str(tmp_path / "m"), shape,
                                  tokenizer_vocab=2000, documents=1500)
    assert gpu_check.read_records(records)[0]["text"].endswith("tokenizer of 2000 pieces")
    engine = Engine.from_pretrained(str(tmp_path / "m"), dtype="float32")
    try:
        assert engine.model.config.vocab_size == 3000 and len(engine.tokenizer) == 2000
        assert engine.tokenizer("盗窃罪").input_ids[0] == engine.tokenizer.bos_token_id
        assert engine.generate([engine.prompt("盗窃罪怎么判？")], GenerationParams(max_new_tokens=4,
                                                                               ignore_eos=True))[0].new_tokens == 4
    finally:
        engine.close()


# ---------------------------------------------------------------- records -> rows -> table

WARMUP = 2
PEAK = GpuPeak("test GPU", 100.0, "given")


def fake_train_records() -> list[dict]:
    """What a worker writes for 6 steps of 4 × 512 tokens: a slow first step, then 0.5 s each."""
    times = [10.0, 10.8, 11.3, 11.8, 12.3, 12.8]
    return ([{"kind": "model", "matmul_params": 100_000_000, "layers": 12, "attn_width": 768, "lora": False,
              "world_size": 1, "dtype": "bfloat16"}]
            + [{"kind": "step", "step": i + 1, "time": t, "tokens": 2048 * (i + 1), "samples": 4 * (i + 1)}
               for i, t in enumerate(times)]
            + [{"kind": "memory", "peak_bytes": int(1.5 * 2**30)}])


def test_rows_and_table_from_step_records():
    train = gpu_check.BY_NAME["clm_fsdp_full"]
    row = summarise(train, fake_train_records(), 0, "", PEAK, WARMUP, 240, 31.0)
    # timed from the end of step 2 (10.8 s) to step 6 (12.8 s): 4 steps in 2.0 s, 8192 tokens
    assert row.ok and row.seconds_per_step == pytest.approx(0.5) and row.tokens_per_s == pytest.approx(4096)
    assert row.mfu == pytest.approx(4096 * 656_623_104 / 1e14)
    assert row.peak_gib == pytest.approx(1.5)

    records = [r for r in fake_train_records() if r["kind"] != "step"][:1]
    rows = [
        row,
        summarise(gpu_check.BY_NAME["infer_batched"],
                            [{"kind": "generate", "tokens": 4096, "seconds": 2.0, "requests": 32},
                             {"kind": "note", "text": "32 prompts"}], 0, "", PEAK, WARMUP),
        summarise(train, records + [{"kind": "error", "message": "RuntimeError: CUDA out of memory"}],
                            1, "Traceback …", PEAK, WARMUP),
        summarise(train, [], None, "", PEAK, WARMUP, 240),
        summarise(train, [], 1, "loading\nValueError: bad | value\n 50%|##  | 1/2\n", PEAK, WARMUP),
        summarise(train, records + fake_train_records()[1:2], 0, "", PEAK, WARMUP),
        Row("merge_qlora", False, "skipped: needs sft_qlora_4bit to succeed first"),
    ]
    table = render_table(rows).splitlines()
    assert table[:2] == ["| path | result | s/step | tokens/s | peak GPU mem | MFU | notes |",
                         "|---|---|---:|---:|---:|---:|---|"]
    assert table[2] == "| clm_fsdp_full | ok | 0.500 | 4,096 | 1.50 GiB | 2.7% | 1 GPU(s), 512 tokens/sample, 4 steps timed |"
    assert table[3] == "| infer_batched | ok | – | 2,048 | – | – | 32 prompts |"
    assert table[4] == "| clm_fsdp_full | **failed**: RuntimeError: CUDA out of memory | – | – | – | – |  |"
    assert table[5] == "| clm_fsdp_full | **failed**: timed out after 240 s | – | – | – | – |  |"
    assert table[6] == "| clm_fsdp_full | **failed**: ValueError: bad / value | – | – | – | – |  |"
    assert table[7].startswith("| clm_fsdp_full | ok | – | – | – | – | not timed: 1 step records: need more than")
    assert table[8] == "| merge_qlora | **failed**: skipped: needs sft_qlora_4bit to succeed first | – | – | – | – |  |"
    # no peak known for the GPU: no MFU, the rest stays
    assert summarise(train, fake_train_records(), 0, "", None, WARMUP).mfu is None


def test_step_stats_refuses_what_it_cannot_time():
    steps = [r for r in fake_train_records() if r["kind"] == "step"]
    assert step_stats(list(reversed(steps)), 2).seconds_per_step == pytest.approx(0.5)  # order does not matter
    with pytest.raises(ValueError, match="warmup=0"):
        step_stats(steps, 0)
    with pytest.raises(ValueError, match="need more than"):
        step_stats(steps[:2], 2)


# ---------------------------------------------------------------- command lines against the real parsers


def commands(tmp_path, gpus=2) -> dict[str, list[str]]:
    data = {"docs": tmp_path / "docs.jsonl", "sft": tmp_path / "sft.jsonl"}
    return {p.name: gpu_check.path_command(p, tmp_path / f"{p.name}.records.jsonl", tmp_path, "models/m", data, 10,
                                           "bf16", "bfloat16", gpus) for p in gpu_check.PATHS}


def test_training_command_lines_are_accepted_by_the_scripts(tmp_path):
    from transformers import HfArgumentParser

    import finetune
    import train_clm
    from utils.training.setup import LawTrainingArguments, LegacyArguments, LoraArguments, ModelArguments

    worker = str(ROOT / "tools" / "gpu_check_worker.py")
    for name, cmd in commands(tmp_path).items():
        path = gpu_check.BY_NAME[name]
        launcher, rest = cmd[:cmd.index(worker)], cmd[cmd.index(worker) + 1:]
        if path.distributed:
            assert launcher == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                "--master_port=29561"], name
        else:
            assert launcher == [sys.executable], name
        if path.kind != "train":
            continue
        records, script, argv = rest[0], rest[1], rest[2:]
        assert records.endswith(f"{name}.records.jsonl")
        module = {"train_clm": train_clm, "finetune": finetune}[script]
        # every flag is one the script's parser knows (HfArgumentParser, the classes utils.training.setup.parse_args uses)
        parser = HfArgumentParser((ModelArguments, LoraArguments, module.SftDataArguments if script == "finetune"
                                   else module.ClmDataArguments, LegacyArguments, LawTrainingArguments))
        _, unknown = parser.parse_known_args(argv)
        assert unknown == [], (name, unknown)
        stage = {"clm_zero2_full": 2, "clm_zero3_lora": 3}.get(name)
        if stage and importlib.util.find_spec("deepspeed") is None:
            # TrainingArguments imports deepspeed when --deepspeed is set (requirements-gpu.txt, not on CPU
            # machines): check the config it names and parse the rest
            at = argv.index("--deepspeed")
            config = json.loads(Path(argv[at + 1]).read_text(encoding="utf-8"))
            assert config["zero_optimization"]["stage"] == stage
            argv = argv[:at] + argv[at + 2:]
            stage = None
        model, lora, data, legacy, training = module.parse(argv)
        if stage:  # deepspeed installed: the Trainer's DeepSpeed config is built from the file
            assert training.hf_deepspeed_config.is_zero3() == (stage == 3), name
        assert training.max_steps == 10 and training.bf16 and training.save_strategy == "no", name
        assert (lora.lora_r == 0) == name.endswith("_full"), name
        assert (model.load_4bit, model.load_8bit) == (name == "sft_qlora_4bit", name == "sft_lora_8bit"), name
        if name == "clm_fsdp_full":
            assert training.fsdp and training.fsdp_config["version"] == 2


def test_other_command_lines_name_worker_modes(tmp_path):
    cmds = commands(tmp_path, gpus=1)
    worker = str(ROOT / "tools" / "gpu_check_worker.py")
    tail = {name: cmd[cmd.index(worker) + 2:] for name, cmd in cmds.items()}
    assert tail["merge_qlora"] == ["merge", str(tmp_path / "sft_qlora_4bit"), str(tmp_path / "merge_qlora"),
                                   "--load_4bit"]
    assert tail["infer_batched"] == ["generate", "models/m", "bfloat16"]
    assert tail["api_load"] == ["api", "models/m", "bfloat16"]
    records = tmp_path / "r.jsonl"
    assert gpu_check_worker.main([str(records), "nonsense"]) == 1
    assert gpu_check.read_records(records)[0]["message"].startswith("ValueError: unknown mode 'nonsense'")


# ---------------------------------------------------------------- the worker itself, on CPU


@pytest.mark.slow
def test_worker_runs_the_cpu_paths_and_its_records_make_rows(tiny_model_dir, tmp_path):
    """The GPU lines with what needs CUDA taken out (mixed precision, bitsandbytes loading): train_clm LoRA and
    finetune LoRA for 4 steps, merge of the trained adapter, batched generation and the API under 2 clients."""
    data = gpu_check.prepare_data(tmp_path / "data", documents=300, questions=64)
    assert len(data["sft"].read_text(encoding="utf-8").splitlines()) == 64
    model, timed_after = str(tiny_model_dir), 2
    for name in ("clm_bf16_lora", "sft_lora_8bit"):
        path = gpu_check.BY_NAME[name]
        script, argv = gpu_check.train_argv(path, model, data, tmp_path / name, 4, None, batch=2, seq_len=128)
        if "--load_8bit" in argv:  # bitsandbytes loading needs CUDA; the rest of the line is the GPU one
            at = argv.index("--load_8bit")
            argv = argv[:at] + argv[at + 2:]
        records = tmp_path / f"{name}.jsonl"
        assert gpu_check_worker.main([str(records), script, *argv]) == 0
        got = gpu_check.read_records(records)
        model_record = next(r for r in got if r["kind"] == "model")
        assert model_record["lora"] and model_record["world_size"] == 1 and model_record["layers"] == 2
        steps = [r for r in got if r["kind"] == "step"]
        assert [r["step"] for r in steps] == [1, 2, 3, 4]
        row = summarise(path, got, 0, "", PEAK, timed_after)
        assert row.ok and row.seconds_per_step > 0 and row.tokens_per_s > 0, row
        stats = step_stats(steps, timed_after)
        if name == "clm_bf16_lora":
            assert stats.tokens_per_sample == 128  # packed blocks, every token counted
        else:
            assert 0 < stats.tokens_per_sample < 128  # padding not counted
        flops = train_flops_per_token(model_record["matmul_params"], 2, 64, stats.tokens_per_sample, True)
        assert row.mfu == pytest.approx(stats.tokens_per_s * flops / 1e14)
        assert row.peak_gib is None  # no CUDA: no GPU memory figure, rather than a made-up one

    records = tmp_path / "merge.jsonl"
    assert gpu_check_worker.main([str(records), "merge", str(tmp_path / "sft_lora_8bit"), str(tmp_path / "merged")]) == 0
    assert gpu_check.read_records(records)[0]["text"].startswith("merged (fp32) vs adapter: max logit diff")
    assert (tmp_path / "merged" / "run_info.json").is_file()

    for mode, sizes in (("generate", ["4", "8", "2"]), ("api", ["2", "1", "8"])):
        records = tmp_path / f"{mode}.jsonl"
        assert gpu_check_worker.main([str(records), mode, str(tmp_path / "merged"), "float32", *sizes]) == 0
        got = gpu_check.read_records(records)
        generated = next(r for r in got if r["kind"] == "generate")
        if mode == "generate":  # EOS ignored: every answer is max_new_tokens long
            assert generated["tokens"] == 4 * 8 and generated["requests"] == 4
        else:  # the API stops at EOS: up to max_tokens each
            assert 0 < generated["tokens"] <= 2 * 8 and generated["requests"] == 2
        row = summarise(gpu_check.BY_NAME["infer_batched" if mode == "generate" else "api_load"], got, 0,
                                  "", PEAK, timed_after)
        assert row.ok and row.tokens_per_s == pytest.approx(generated["tokens"] / generated["seconds"])


@pytest.mark.slow
def test_worker_under_torchrun_with_fsdp(tiny_model_dir, tmp_path):
    """clm_fsdp_full's launcher and line on 2 CPU processes, --fsdp included: the worker runs behind
    tests/fsdp_cpu.py's gate (accelerate enables FSDP only on GPUs; see there). Rank 0 alone writes, once per step,
    the tokens are both processes', and the run really was FSDP."""
    data = gpu_check.prepare_data(tmp_path / "data", documents=300, questions=8)
    path = gpu_check.BY_NAME["clm_fsdp_full"]
    launcher = gpu_check.path_command(path, tmp_path / "unused", tmp_path, str(tiny_model_dir), data, 4, None,
                                      "float32", 2)
    launcher = launcher[:launcher.index(str(gpu_check.WORKER))]
    script, argv = gpu_check.train_argv(path, str(tiny_model_dir), data, tmp_path / "out", 4, None, batch=2, seq_len=64)
    assert argv[argv.index("--fsdp") + 1:argv.index("--fsdp") + 3] == ["--fsdp_config", str(ROOT / "scripts" /
                                                                                           "fsdp.json")]
    driver = tmp_path / "worker_behind_gate.py"
    driver.write_text(f"""import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}, {str(ROOT / "tools")!r}]
from fsdp_cpu import GATE, install_cpu_fsdp_gate
import gpu_check_worker
install_cpu_fsdp_gate()
GATE["open"] = True
gpu_check_worker.run(sys.argv[1:])
""", encoding="utf-8")
    records = tmp_path / "records.jsonl"
    proc = subprocess.run([*launcher, str(driver), str(records), script, *argv], cwd=ROOT, timeout=600,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "run_info.json").read_text(encoding="utf-8"))["distributed"] == "FSDP"
    got = gpu_check.read_records(records)
    assert [r["step"] for r in got if r["kind"] == "step"] == [1, 2, 3, 4]
    model_record = next(r for r in got if r["kind"] == "model")
    assert model_record["world_size"] == 2 and not model_record["lora"]
    c = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))  # sharded, the shapes stay whole
    assert model_record["matmul_params"] == c["num_hidden_layers"] * (
        4 * c["hidden_size"] ** 2 + 3 * c["hidden_size"] * c["intermediate_size"]) + c["hidden_size"] * c["vocab_size"]
    stats = step_stats([r for r in got if r["kind"] == "step"], 2)
    assert stats.samples_per_step == 4 and stats.tokens_per_sample == 64  # 2 processes x 2 blocks of 64 tokens
    row = summarise(path, got, 0, "", PEAK, 2)
    flops = train_flops_per_token(model_record["matmul_params"], 2, 64, 64, False)
    assert row.mfu == pytest.approx(stats.tokens_per_s * flops / (2 * 1e14))  # over both devices' peak
