"""Packed blocks (train_clm.py) vs the original LaWGPT's per-document truncate-and-pad, one run.

    python benchmarks/bench_packing.py --data data/pretrain/statutes.jsonl --block_size 256 --steps 30

Same tiny LLaMA (tests/tiny_model.py), same tokenizer, same corpus, batch 8, AdamW full training on CPU.
The two data pipelines take turns step by step (the machine is shared; turns keep the comparison fair).
Reported per pipeline: share of the corpus's tokens that are ever trained on, useful (non-padding,
non-truncated) tokens per second, and the padding share of what the model computes on.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=[str(ROOT / "data/pretrain/statutes.jsonl")])
    p.add_argument("--block_size", type=int, default=256, help="block size = the original's cutoff_len")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="timed steps per pipeline")
    args = p.parse_args()

    import torch
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from utils.common.datafiles import IGNORE_INDEX, load_documents, truncate_documents
    from utils.model.loader import load_tokenizer
    from utils.training.streamed_blocks import iter_blocks
    from utils.training.tokenized_data import document_ids

    torch.manual_seed(0)
    model_dir = build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-packing-")))
    tokenizer = load_tokenizer(model_dir, padding_side="right")
    docs = [d for f in args.data for d in load_documents(f)]
    per_doc = document_ids(tokenizer, docs)
    total = sum(map(len, per_doc))
    datasets = {
        "packed blocks": list(iter_blocks(per_doc, args.block_size)),
        "truncate-and-pad (original)": truncate_documents(per_doc, args.block_size),
    }
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=8, label_pad_token_id=IGNORE_INDEX,
                                      return_tensors="pt")
    models = {name: AutoModelForCausalLM.from_pretrained(str(model_dir)) for name in datasets}
    optims = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in models.items()}
    rng = random.Random(0)
    stats = {name: {"seconds": 0.0, "useful": 0, "computed": 0} for name in datasets}
    for _ in range(args.steps):
        for name, data in datasets.items():
            batch = collator([{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}
                              for ids in rng.sample(data, args.batch)])
            start = time.perf_counter()
            loss = models[name](**batch).loss
            loss.backward()
            optims[name].step()
            optims[name].zero_grad()
            stats[name]["seconds"] += time.perf_counter() - start
            stats[name]["useful"] += int(batch["attention_mask"].sum())
            stats[name]["computed"] += batch["input_ids"].numel()
    result = {"documents": len(docs), "corpus_tokens": total, "block_size": args.block_size, "batch": args.batch,
              "steps": args.steps}
    for name, data in datasets.items():
        s = stats[name]
        result[name] = {
            "examples": len(data),
            "coverage": round(sum(map(len, data)) / total, 4),
            "useful_tokens_per_s": round(s["useful"] / s["seconds"], 1),
            "padding_share": round(1 - s["useful"] / s["computed"], 4),
        }
    packed, orig = result["packed blocks"], result["truncate-and-pad (original)"]
    result["speedup_useful_tokens_per_s"] = round(packed["useful_tokens_per_s"] / orig["useful_tokens_per_s"], 2)
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
