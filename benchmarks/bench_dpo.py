"""A DPO step (dpo.py) vs an SFT step (finetune.py) on the same model: time per step, peak memory, tokens per step.

    python benchmarks/bench_dpo.py --base_model models/lawgpt-align-sft --sft_data outputs/align/sft_data.jsonl \\
        --pref_data outputs/align/pref.jsonl --max_steps 6 --rounds 2

Both train LoRA q,v r=8 with the same micro batch (examples for SFT, pairs for DPO), cutoff, learning rate and seed,
each in its own process under ``/usr/bin/time -v``; they alternate for ``--rounds`` rounds (the machine is shared)
and each keeps its best time per step. A DPO step runs the policy on chosen and rejected (twice the sequences of an
SFT step, forward and backward) plus the reference forward on both (the same weights with the adapter disabled).
Time per step is the training loop's own clock (``train_runtime_s`` / steps in run_info.json: no loading, no saving);
peak memory is the process's maximum RSS. ``--output`` also writes the summary as JSON.
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


def run(stage: str, args: argparse.Namespace, out: Path) -> dict:
    script, data = ("finetune.py", args.sft_data) if stage == "sft" else ("dpo.py", args.pref_data)
    command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / script), "--base_model", args.base_model,
               "--data_path", data, "--output_dir", str(out), "--cutoff_len", str(args.cutoff_len),
               "--micro_batch_size", str(args.micro_batch), "--batch_size", str(args.micro_batch),
               "--max_steps", str(args.max_steps), "--learning_rate", "1e-4", "--lora_r", "8", "--lora_alpha", "16",
               "--lora_target_modules", "[q_proj,v_proj]", "--logging_steps", "1", "--save_strategy", "no",
               "--report_to", "none", "--seed", "0", "--train_sampling_strategy", "sequential"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    info = json.loads((out / "run_info.json").read_text(encoding="utf-8"))
    tokens = info["train_tokens"] / (info["examples"]["train"] if stage == "sft" else info["pairs"]["train"])
    return {"s_per_step": round(info["train_runtime_s"] / info["global_step"], 2),
            "peak_rss_gb": round(peak_kb / 1024**2, 2), "tokens_per_step": round(tokens * args.micro_batch)}


def main(args: argparse.Namespace) -> dict:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for stage in ("sft", "dpo"):
                row = run(stage, args, Path(tmp) / f"{stage}-{round_}")
                best = results.get(stage)
                if best:
                    row["s_per_step"] = min(row["s_per_step"], best["s_per_step"])
                    row["peak_rss_gb"] = max(row["peak_rss_gb"], best["peak_rss_gb"])
                results[stage] = row
                print(f"[bench_dpo] round {round_ + 1} {stage}: {row}", file=sys.stderr, flush=True)
    sft, dpo = results["sft"], results["dpo"]
    summary = {"base_model": args.base_model, "max_steps": args.max_steps, "rounds": args.rounds,
               "micro_batch": args.micro_batch, "cutoff_len": args.cutoff_len, "settings": results,
               "step_time_ratio": round(dpo["s_per_step"] / sft["s_per_step"], 2),
               "peak_memory_ratio": round(dpo["peak_rss_gb"] / sft["peak_rss_gb"], 2)}
    text = json.dumps(summary, ensure_ascii=False, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", required=True, help="the SFT model both train on (a merged model)")
    parser.add_argument("--sft_data", required=True, help="instruction data for finetune.py")
    parser.add_argument("--pref_data", required=True, help="preference pairs for dpo.py")
    parser.add_argument("--max_steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--micro_batch", type=int, default=4)
    parser.add_argument("--cutoff_len", type=int, default=256)
    parser.add_argument("--output", help="also write the summary here (JSON)")
    args = parser.parse_args(argv)
    for name in ("max_steps", "rounds", "micro_batch", "cutoff_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    for name in ("base_model", "sft_data", "pref_data"):
        if not Path(getattr(args, name)).exists():
            parser.error(f"--{name} {getattr(args, name)}: not found")
    return args


if __name__ == "__main__":
    main(parse_args())
