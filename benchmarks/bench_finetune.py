"""LoRA fine-tune throughput on the tiny model, with and without --group_by_length.

    python benchmarks/bench_finetune.py --examples 256 --rounds 2

Instruction data: statute articles from laws.db (「请解释下面的法律条文。」 + article → article text), so
answer lengths vary as in real legal Q&A. Each configuration runs finetune.py's main() for one epoch
(LoRA q,v r=8, micro batch 8, cutoff 512, law_template); configurations alternate for ``--rounds``
rounds (the machine is shared). Useful tokens/s = real (non-padding) tokens of the epoch / train time.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tiny_model import build_tiny_model, statute_sample

    import finetune
    from utils.model.loader import read_run_info

    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    model_dir = build_tiny_model(work / "model")
    data = work / "train.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for text in statute_sample(limit=args.examples, stride=3, offset=1):
            f.write(json.dumps({"instruction": "请解释下面的法律条文。", "input": text[:40], "output": text},
                               ensure_ascii=False) + "\n")
    runs: dict[str, list[float]] = {"random order": [], "group_by_length": []}
    for r in range(args.rounds):
        for name in runs:
            out = work / f"{name.replace(' ', '_')}-{r}"
            argv = ["--base_model", str(model_dir), "--data_path", str(data), "--output_dir", str(out),
                    "--num_epochs", "1", "--micro_batch_size", "8", "--batch_size", "8", "--cutoff_len", "512",
                    "--lora_r", "8", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1000",
                    "--disable_tqdm", "True", "--group_by_length", str(name == "group_by_length")]
            finetune.main(*finetune.parse(argv))
            info = read_run_info(out)
            runs[name].append(info["train_tokens"] / info["train_runtime_s"])
    result = {"examples": args.examples, "rounds": args.rounds}
    for name, values in runs.items():
        result[name] = {"useful_tokens_per_s": round(statistics.mean(values), 1),
                        "per_round": [round(v, 1) for v in values]}
    result["speedup"] = round(result["group_by_length"]["useful_tokens_per_s"]
                              / result["random order"]["useful_tokens_per_s"], 2)
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
