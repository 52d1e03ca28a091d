"""GPU preflight before a long job: every accelerator path for a few steps, each in its own process, one table.

    bash scripts/gpu_check.sh                                   # the demo model (fetched when missing), all GPUs
    python tools/gpu_check.py --model models/base_models/my-7b --paths clm_bf16_lora,sft_qlora_4bit
    python tools/gpu_check.py --random_model llama-7b           # no model at hand: random weights, LLaMA-7B's shape
    python tools/gpu_check.py --list_paths                      # the paths and what each runs

Each path runs the project's own scripts (tools/gpu_check_worker.py around train_clm.py, finetune.py,
merge_lora.py, the engine and the API app) for ``--steps`` optimizer steps, in a process of its own (torchrun over
all GPUs for DeepSpeed and FSDP; one GPU for the others), so one failure never hides the others. The table gives
per path: ok or failed with a one-line reason, s/step and tokens/s after ``--warmup`` steps, peak GPU memory
(torch's allocator, rank 0) and, for training, MFU against the GPU's dense 16-bit peak (utils/training/throughput.py: the
formula and the datasheet figure used; ``--peak_tflops`` for a GPU not in its table). It is written to
``--output_dir`` as gpu_check.md and gpu_check.json with the GPU, the library versions and every record.

Meant to take about 5 minutes on one modern GPU with the demo model, most of it process start-up (not measured yet:
no GPU so far); never more than ``--budget_s`` (480 s), as each path gets at most the time left. Without CUDA it
stops at once with one line on stderr and exit status 1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.gpu_check_worker import RANDOM_SHAPES  # noqa: E402
from utils.common.entry import fire_entry  # noqa: E402
from utils.common.errors import LawgptError  # noqa: E402
from utils.training.preflight_table import Row, last_error_line, render_table, summarise  # noqa: E402
from utils.training.throughput import GpuPeak, gpu_peak  # noqa: E402

DEMO_MODEL = ROOT / "models" / "base_models" / "gemma-3-270m"
WORKER = ROOT / "tools" / "gpu_check_worker.py"
MARKER = ".gpu_check"  # in --output_dir: the check wrote it, so the next run may clear it


class GpuCheckError(LawgptError, RuntimeError):
    """The check cannot run here (no CUDA, no model)."""


@dataclass(frozen=True)
class CheckPath:
    name: str
    kind: str  # train | merge | generate | api
    what: str
    distributed: bool = False  # torchrun over every GPU
    needs: str | None = None  # a path whose output this one uses
    module: str | None = None  # a package it needs beyond requirements.txt


PATHS = (
    CheckPath("clm_bf16_lora", "train", "train_clm.py, LoRA r16 all-linear, gradient checkpointing"),
    CheckPath("sft_qlora_4bit", "train", "finetune.py --load_4bit True (QLoRA: nf4 base, LoRA r16 all-linear)"),
    CheckPath("sft_lora_8bit", "train", "finetune.py --load_8bit True, LoRA r16 all-linear"),
    CheckPath("clm_zero2_full", "train", "torchrun train_clm.py --deepspeed scripts/ds_zero2.json, full training",
              distributed=True, module="deepspeed"),
    CheckPath("clm_zero3_lora", "train", "torchrun train_clm.py --deepspeed scripts/ds_zero3.json, LoRA",
              distributed=True, module="deepspeed"),
    CheckPath("clm_fsdp_full", "train", "torchrun train_clm.py --fsdp --fsdp_config scripts/fsdp.json, full training",
              distributed=True),
    CheckPath("merge_qlora", "merge", "merge_lora.py of sft_qlora_4bit's adapter into the fp32 base (never the 4-bit "
              "one), its logits check, and the distance to the 4-bit model it trained as", needs="sft_qlora_4bit"),
    CheckPath("infer_batched", "generate", "the engine, bf16 weights (fp16 without bf16), batches of 16 x 128 new tokens"),
    CheckPath("api_load", "api", "api.py's app under 16 concurrent OpenAI clients (2 requests each)"),
)
BY_NAME = {p.name: p for p in PATHS}


def train_argv(path: CheckPath, model: str, data: dict, out: Path, steps: int, half: str | None, batch: int = 4,
               seq_len: int = 512) -> tuple[str, list[str]]:
    """The script (train_clm or finetune) and its command line for a training path.

    ``data``: {"docs": pretraining JSONL, "sft": instruction JSONL} (:func:`prepare_data`); ``half``: bf16 or fp16
    mixed precision (None: the script's default, fp32 — the CPU tests parse and run these lines); ``batch``
    sequences per device and step; ``seq_len``: train_clm's block size, finetune's cutoff length (tokens)."""
    if path.kind != "train":
        raise ValueError(f"{path.name} is a {path.kind} path, not a training one")
    common = ["--base_model", model, "--output_dir", str(out), "--max_steps", str(steps),
              "--per_device_train_batch_size", str(batch), "--gradient_accumulation_steps", "1", "--logging_steps", "1",
              "--save_strategy", "no", "--report_to", "none", "--learning_rate", "1e-4", "--seed", "0"]
    if half:
        common += [f"--{half}", "True"]
    lora = ["--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.05", "--lora_target_modules", "all-linear"]
    clm = ["--data_path", str(data["docs"]), "--block_size", str(seq_len)]
    sft = ["--data_path", str(data["sft"]), "--cutoff_len", str(seq_len), "--prompt_template_name", "law_template"]
    scripts = ROOT / "scripts"
    per_path = {
        "clm_bf16_lora": ("train_clm", clm + lora + ["--gradient_checkpointing", "True"]),
        "sft_qlora_4bit": ("finetune", sft + lora + ["--load_4bit", "True"]),
        "sft_lora_8bit": ("finetune", sft + lora + ["--load_8bit", "True"]),
        "clm_zero2_full": ("train_clm", clm + ["--lora_r", "0", "--deepspeed", str(scripts / "ds_zero2.json")]),
        "clm_zero3_lora": ("train_clm", clm + lora + ["--deepspeed", str(scripts / "ds_zero3.json")]),
        "clm_fsdp_full": ("train_clm", clm + ["--lora_r", "0", "--fsdp", "--fsdp_config", str(scripts / "fsdp.json")]),
    }
    script, extra = per_path[path.name]
    return script, common + extra


# ---------------------------------------------------------------- records -> rows -> table


# ---------------------------------------------------------------- running


def read_records(path: Path) -> list[dict]:
    """A worker's records file (JSON lines, see tools/gpu_check_worker.py); [] when the worker wrote none."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_data(work: Path, documents: int = 3000, questions: int = 512) -> dict:
    """Training data from the statutes the repo ships (utils/legal/statutes.py): ``documents`` articles as pretraining
    documents (docs.jsonl, field content) and ``questions`` other articles as instruction items asking for an
    article's text (sft.jsonl): real lengths (tens to hundreds of tokens), no download. Returns their paths."""
    from utils.legal.statutes import StatuteStore

    work.mkdir(parents=True, exist_ok=True)
    docs, sft = work / "docs.jsonl", work / "sft.jsonl"
    articles = StatuteStore.load().current_articles()
    if len(articles) < documents + questions:
        raise GpuCheckError(f"the statute store has {len(articles)} articles, fewer than {documents + questions}")
    docs.write_text("".join(json.dumps({"content": a.text}, ensure_ascii=False) + "\n" for a in articles[:documents]),
                    encoding="utf-8")
    sft.write_text("".join(json.dumps({"instruction": f"{a.citation}是怎么规定的？", "input": "", "output": a.text},
                                      ensure_ascii=False) + "\n"
                           for a in articles[documents:documents + questions]), encoding="utf-8")
    return {"docs": docs, "sft": sft}


def versions() -> dict:
    """Installed versions of the libraries the paths depend on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "deepspeed"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def require_cuda():
    """torch, when a CUDA GPU is visible; else GpuCheckError (the one line the user sees)."""
    import torch

    if not torch.cuda.is_available():
        raise GpuCheckError(f"no CUDA GPU visible (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})"
                            "; this preflight runs the GPU paths — run it on the machine that will train")
    return torch


def path_command(path: CheckPath, records: Path, out: Path, model: str, data: dict, steps: int, half: str | None,
                 dtype: str, gpus: int) -> list[str]:
    """The whole command line of one path: launcher (python, or torchrun over ``gpus`` for the distributed paths)
    + tools/gpu_check_worker.py + its arguments. Outputs go to ``out/<path name>``."""
    if path.kind == "train":
        script, argv = train_argv(path, model, data, out / path.name, steps, half)
        worker = [script, *argv]
    elif path.kind == "merge":
        worker = ["merge", str(out / path.needs), str(out / path.name), "--load_4bit"]
    else:
        worker = [path.kind, model, dtype]
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "--master_port=29561"]
                if path.distributed else [sys.executable])
    return [*launcher, str(WORKER), str(records), *worker]


def run_worker(cmd: list[str], env: dict, log: Path, timeout_s: float) -> int | None:
    """Run one path's process (its own session, so a timeout also ends torchrun's children, which would otherwise
    keep their GPU memory); its exit status, or None when it ran out of time. Output goes to ``log``."""
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:  # timed out, or interrupted (Ctrl-C) while it ran
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def build_random_model(out: Path, shape: str, timeout_s: float) -> Path:
    """The worker's random_model in its own process (it initialises on the GPU): ``out/model``."""
    records, log = out / "random_model.records.jsonl", out / "random_model.log"
    print(f"[gpu_check] building a random-weight {shape} model", file=sys.stderr, flush=True)
    returncode = run_worker([sys.executable, str(WORKER), str(records), "random_model", str(out / "model"), shape],
                            {**os.environ, "PYTHONUNBUFFERED": "1"}, log, timeout_s)
    if returncode != 0:
        errors = [r["message"] for r in read_records(records) if r["kind"] == "error"]
        reason = errors[-1] if errors else f"timed out after {timeout_s:.0f} s" if returncode is None else \
            last_error_line(log.read_text(encoding="utf-8", errors="replace"))
        raise GpuCheckError(f"--random_model {shape}: {reason} (log: {log})")
    return out / "model"


def _fresh_output_dir(out: Path) -> None:
    # Only a directory this tool made (or an empty one) is cleared: --output_dir outputs must not wipe outputs/.
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise GpuCheckError(f"--output_dir {out} holds files this check did not write: give a new directory")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by tools/gpu_check.py; cleared on its next run\n", encoding="utf-8")


def main(
    model: str | None = None,
    paths: str = "all",
    steps: int = 10,
    warmup: int = 2,
    gpus: int | None = None,
    output_dir: str = "outputs/gpu-check",
    timeout_s: int = 240,
    budget_s: int = 480,
    peak_tflops: float | None = None,
    random_model: str | None = None,
    list_paths: bool = False,
) -> int:
    """Run the GPU paths and print one table; exit status 0 when every path is ok, 1 otherwise.

    Args:
        model: local model directory (default: the demo model, fetched into models/base_models/ when missing).
        paths: comma-separated path names, or all (see --list_paths).
        steps: optimizer steps per training path.
        warmup: steps left out of the timing (>= 1, < steps): start-up, allocation, kernel selection.
        gpus: processes for the DeepSpeed/FSDP paths (default: every visible GPU).
        output_dir: where outputs, records, logs, gpu_check.md and gpu_check.json go (cleared on each run).
        timeout_s: limit for one path (seconds).
        budget_s: the whole check's limit (seconds): a path gets at most what is left; none starts with < 30 s.
        peak_tflops: the GPU's dense 16-bit peak (TFLOP/s), for a GPU not in utils/training/throughput.py's table.
        random_model: instead of --model, build one with random weights in a real model's shape (llama-1b,
            llama-7b; a statute-trained tokenizer) under output_dir/model — for a machine without a model.
        list_paths: print the paths and what each runs, and exit.
    """
    if list_paths:
        print("\n".join(f"{p.name:15} {p.what}" for p in PATHS))
        return 0
    started = time.monotonic()
    torch = require_cuda()
    chosen = [p.name for p in PATHS] if paths == "all" else [p.strip() for p in str(paths).split(",") if p.strip()]
    unknown = [p for p in chosen if p not in BY_NAME]
    if unknown or not chosen:
        raise GpuCheckError(f"--paths: unknown {unknown}; choose from {', '.join(BY_NAME)} or all")
    if not 1 <= warmup < steps:
        raise GpuCheckError(f"--steps {steps} --warmup {warmup}: need 1 <= warmup < steps (timing starts after warmup)")
    if random_model is not None and (model is not None or random_model not in RANDOM_SHAPES):
        raise GpuCheckError(f"--random_model {random_model}: give one of {', '.join(RANDOM_SHAPES)}, and no --model")
    out = Path(output_dir)
    _fresh_output_dir(out)
    model_dir = Path(model) if model else DEMO_MODEL
    if random_model is not None:
        model_dir = build_random_model(out, random_model, min(timeout_s, budget_s - (time.monotonic() - started)))
    elif model is None and not model_dir.is_dir():
        if subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_demo_model.py")]).returncode != 0:
            raise GpuCheckError("tools/fetch_demo_model.py failed (see above): pass --model DIR instead")
    if not model_dir.is_dir():
        raise GpuCheckError(f"--model {model_dir} is not a directory")
    gpus = gpus or torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    peak = gpu_peak(name, peak_tflops)
    half = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"  # V100: fp16 (emulated bf16)
    data = prepare_data(out / "data")
    rows, ok_paths = [], set()
    for path in (BY_NAME[n] for n in chosen):
        records_file = out / f"{path.name}.records.jsonl"
        left = budget_s - (time.monotonic() - started)
        if left < 30:
            rows.append(Row(path.name, False, f"skipped: --budget_s {budget_s} spent"))
            continue
        if path.needs and path.needs not in ok_paths:
            rows.append(Row(path.name, False, f"skipped: needs {path.needs} to succeed first"))
            continue
        if path.module and importlib.util.find_spec(path.module) is None:
            rows.append(Row(path.name, False, f"{path.module} is not installed (pip install -r requirements-gpu.txt)"))
            continue
        cmd = path_command(path, records_file, out, str(model_dir), data, steps, half,
                           "bfloat16" if half == "bf16" else "float16", gpus)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if not path.distributed:
            env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]  # not DataParallel
        print(f"[gpu_check] {path.name}: {path.what}", file=sys.stderr, flush=True)
        log, limit, t0 = out / f"{path.name}.log", min(timeout_s, left), time.monotonic()
        returncode = run_worker(cmd, env, log, limit)
        row = summarise(path, read_records(records_file), returncode, log.read_text(encoding="utf-8", errors="replace"),
                        peak, warmup, limit, time.monotonic() - t0)
        rows.append(row)
        if row.ok:
            ok_paths.add(path.name)
        print(f"[gpu_check] {path.name}: {'ok' if row.ok else 'failed: ' + row.reason} "
              f"({row.wall_s:.0f} s)", file=sys.stderr, flush=True)
    report = report_text(rows, name, gpus, peak, model_dir, steps, warmup, time.monotonic() - started)
    print(report)
    (out / "gpu_check.md").write_text(report + "\n", encoding="utf-8")
    (out / "gpu_check.json").write_text(json.dumps({
        "gpu": name, "gpus": gpus, "peak": asdict(peak) if peak else None, "versions": versions(),
        "model": str(model_dir), "steps": steps, "warmup": warmup, "rows": [asdict(r) for r in rows],
        "records": {p: read_records(out / f"{p}.records.jsonl") for p in chosen}}, indent=2, ensure_ascii=False),
        encoding="utf-8")
    return 0 if all(r.ok for r in rows) else 1


def report_text(rows: list[Row], gpu: str, gpus: int, peak: GpuPeak | None, model: Path, steps: int, warmup: int,
                wall_s: float) -> str:
    """The printed report: GPU, peak used for MFU, versions, model, then :func:`render_table` and the MFU formula."""
    found = versions()
    head = [f"GPU: {gpus} x {gpu}; peak for MFU: " + (f"{peak.tflops:g} TFLOP/s dense 16-bit ({peak.source})"
                                                       if peak else "unknown (MFU not reported; pass --peak_tflops)"),
            "versions: " + ", ".join(f"{k} {v or '-'}" for k, v in found.items()),
            f"model: {model}; {steps} steps per training path, the first {warmup} untimed; whole check {wall_s:.0f} s",
            ""]
    foot = ["", "", "MFU = tokens/s x model FLOPs per token / (peak x GPUs); FLOPs per token 6N (full) or 4N (LoRA) + "
                "12·layers·attention width·tokens per sample, N = weights in matmuls (utils/training/throughput.py, PaLM app. B)."]
    return "\n".join(head) + render_table(rows) + "\n".join(foot)


def run() -> None:
    sys.exit(fire_entry("gpu_check", main, serialize=lambda result: None))


if __name__ == "__main__":
    run()
