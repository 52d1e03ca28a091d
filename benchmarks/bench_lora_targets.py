"""LoRA on q,v vs on every linear layer (``all-linear``), side by side: trainable parameters, time per step,
peak memory, eval loss, adapter size — instruction tuning (finetune.py) with the demo's settings.

    python tools/knowledge_instruct.py --output /tmp/sft.jsonl --max_per_kind 100 --no_lawbench_check
    python benchmarks/bench_lora_targets.py --base_model models/base_models/gemma-3-270m --data_path /tmp/sft.jsonl \\
        --max_steps 8 --rounds 2

Each setting runs finetune.py in its own process under ``/usr/bin/time -v``; settings alternate for ``--rounds``
rounds (the machine is shared) and each keeps its best time per step. Same data in the same (sequential) order,
seed, batch and learning rate.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"q,v": "[q_proj,v_proj]", "all-linear": "all-linear"}


def run_setting(targets: str, args: argparse.Namespace, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "finetune.py"), "--base_model", args.base_model,
               "--data_path", args.data_path, "--output_dir", str(out), "--prompt_template_name", "law_template",
               "--cutoff_len", "256", "--micro_batch_size", "4", "--batch_size", "4", "--max_steps",
               str(args.max_steps), "--learning_rate", "3e-4", "--lora_r", "8", "--lora_alpha", "16",
               "--lora_target_modules", targets, "--val_set_size", "16", "--logging_steps", "1",
               "--save_strategy", "no", "--report_to", "none", "--seed", "0",
               # the same batches in the same order for both settings: a random order depends on the RNG state
               # LoRA initialisation leaves behind, and batch lengths vary several-fold
               "--train_sampling_strategy", "sequential"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{targets}: finetune.py failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    trainable, total = re.search(r"LoRA: ([\d,]+) of ([\d,]+) parameters trainable", done.stderr).groups()
    info = json.loads((out / "run_info.json").read_text(encoding="utf-8"))
    return {"modules": info["lora_target_modules"], "trainable_params": int(trainable.replace(",", "")),
            "total_params": int(total.replace(",", "")), "peak_rss_gb": round(peak_kb / 1024**2, 2),
            "s_per_step": info["train_runtime_s"] / info["global_step"], "eval_loss": round(info["eval_loss"], 4),
            "adapter_mb": round((out / "adapter_model.safetensors").stat().st_size / 1e6, 1)}


def main(args: argparse.Namespace) -> dict:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, targets in SETTINGS.items():
                row = run_setting(targets, args, Path(tmp) / f"{name}-{round_}")
                best = results.get(name)
                row["s_per_step"] = round(min(row["s_per_step"], best["s_per_step"]) if best else row["s_per_step"], 2)
                results[name] = row
                print(f"[bench] round {round_ + 1} {name}: {row}", file=sys.stderr, flush=True)
    qv, every = results["q,v"], results["all-linear"]
    summary = {"base_model": args.base_model, "max_steps": args.max_steps, "rounds": args.rounds, "settings": results,
               "trainable_ratio": round(every["trainable_params"] / qv["trainable_params"], 2),
               "step_time_ratio": round(every["s_per_step"] / qv["s_per_step"], 2)}
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", required=True)
    parser.add_argument("--data_path", required=True, help="instruction data (.json/.jsonl)")
    parser.add_argument("--max_steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
