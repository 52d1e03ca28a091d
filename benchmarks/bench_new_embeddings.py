"""Training a grown vocabulary: whole embedding/lm_head (``--new_embeddings full``) vs only the new rows
(``new_rows``, peft trainable tokens), side by side in one run: peak memory, time per step, trainable
parameters, adapter size, held-out perplexity.

    python benchmarks/bench_new_embeddings.py --base_model models/base_models/gemma-3-270m \\
        --tokenizer_path outputs/demo/tokenizer --data_path data/pretrain/statutes.jsonl --max_steps 6

Each mode runs train_clm.py in its own process under ``/usr/bin/time -v`` (peak resident memory of that
process), with the demo's continued-pretraining settings (LoRA r=8 on q/v, blocks of 256, batch 4).
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
MODES = ("full", "new_rows")


def run_mode(mode: str, args: argparse.Namespace, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "train_clm.py"), "--base_model", args.base_model,
               "--tokenizer_path", args.tokenizer_path, "--data_path", args.data_path, "--output_dir", str(out),
               "--block_size", "256", "--micro_batch_size", "4", "--batch_size", "4", "--max_steps",
               str(args.max_steps), "--learning_rate", "3e-4", "--lora_r", "8", "--lora_alpha", "16",
               "--lora_target_modules", "[q_proj,v_proj]", "--val_set_size", "8", "--logging_steps", "1",
               "--save_strategy", "no", "--report_to", "none", "--seed", "0", "--new_embeddings", mode]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: train_clm.py failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    trainable = re.search(r"LoRA: ([\d,]+) of [\d,]+ parameters trainable", done.stderr).group(1)
    info = json.loads((out / "run_info.json").read_text(encoding="utf-8"))
    return {"mode": mode, "peak_rss_gb": round(peak_kb / 1024**2, 2),
            "train_s_per_step": round(info["train_runtime_s"] / info["global_step"], 2),
            "trainable_params": int(trainable.replace(",", "")),
            "adapter_mb": round((out / "adapter_model.safetensors").stat().st_size / 1e6, 1),
            "perplexity": round(info["perplexity"], 2)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", required=True)
    parser.add_argument("--tokenizer_path", required=True, help="an extended tokenizer (tools/merge_vocabulary.py)")
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--max_steps", type=int, default=6)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            rows.append(run_mode(mode, args, Path(tmp) / mode))
            print(json.dumps(rows[-1]), flush=True)
    full, rows_only = rows
    print(f"new_rows / full: peak memory {rows_only['peak_rss_gb'] / full['peak_rss_gb']:.2f}x, "
          f"time per step {rows_only['train_s_per_step'] / full['train_s_per_step']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
