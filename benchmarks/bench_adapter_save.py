"""Saving the adapter of a grown vocabulary: peft's default vs what merging needs, side by side in one run.

    python benchmarks/bench_adapter_save.py --base_model models/base_models/gemma-3-270m \\
        --tokenizer_path outputs/demo/tokenizer --rounds 2

The model is prepared exactly as train_clm.py prepares it (resized embeddings, mean-of-pieces rows, LoRA r=8 on
q/v, the embedding trained whole via ``modules_to_save``, or only its new rows with ``--new_embeddings new_rows``), its trainable weights are nudged so that the adapter
differs from the base, then saved both ways in alternating rounds (the machine is shared; each keeps its best
time): ``default`` = peft's ``save_pretrained()`` (``save_embedding_layers="auto"``, which turns on when the
vocabulary was resized), ``lean`` = ``save_embedding_layers=False`` (what train_clm.py does since issue 19).
Each saved adapter is then loaded as merge_lora.py loads it (base + resize + adapter), merged, and its logits on
a legal prompt holding new-vocabulary tokens are compared with the in-memory trained model's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "《中华人民共和国刑法》第二百六十四条规定，盗窃公私财物，数额较大的，处三年以下有期徒刑、拘役或者管制。"


def prepare(args: argparse.Namespace):
    from utils.training.setup import LawTrainingArguments, LoraArguments, ModelArguments, prepare_model

    model_args = ModelArguments(base_model=args.base_model, tokenizer_path=args.tokenizer_path,
                                new_embeddings=args.new_embeddings)
    training = LawTrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none")
    return prepare_model(model_args, LoraArguments(lora_r=8, lora_alpha=16), training)


def adapter_matrices(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        return {k: f.get_slice(k).get_shape() for k in f.keys() if "lora_" not in k}


def merged_logits(args: argparse.Namespace, adapter: Path, ids):
    import torch

    from utils.model.loader import load_for_inference

    loaded = load_for_inference(args.base_model, str(adapter), device="cpu", dtype="float32")
    merged = loaded.model.merge_and_unload().eval()
    with torch.inference_mode():
        return merged(input_ids=ids).logits


def main(args: argparse.Namespace) -> dict:
    import torch

    prepared = prepare(args)
    model, tokenizer = prepared.model, prepared.tokenizer
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    model.eval()
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"] + list(range(len(tokenizer) - 8, len(tokenizer)))])
    with torch.inference_mode():
        reference = model(input_ids=ids).logits

    work = Path(tempfile.mkdtemp(prefix="bench_adapter_save."))
    ways = {"default": {}, "lean": {"save_embedding_layers": False}}
    times = {way: [] for way in ways}
    for _ in range(args.rounds):
        for way, kwargs in ways.items():
            out = work / way
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            model.save_pretrained(str(out), **kwargs)
            times[way].append(time.perf_counter() - started)
    tokenizer.save_pretrained(str(work / "lean"))
    tokenizer.save_pretrained(str(work / "default"))
    rows = []
    for way in ways:
        out = work / way
        diff = (merged_logits(args, out, ids) - reference).abs().max().item()
        matrices = adapter_matrices(out)
        rows.append({"way": way, "adapter_mb": round((out / "adapter_model.safetensors").stat().st_size / 1e6, 1),
                     "vocabulary_matrices": len(matrices), "keys": sorted(matrices),
                     "save_s": round(min(times[way]), 2), "merged_vs_trained_max_abs_logit_diff": diff})
    shutil.rmtree(work, ignore_errors=True)
    result = {"base_model": args.base_model, "tokenizer": args.tokenizer_path, "vocab": prepared.vocab,
              "new_embeddings": args.new_embeddings,
              "rounds": args.rounds, "rows": rows,
              "size_ratio_default_over_lean": round(rows[0]["adapter_mb"] / rows[1]["adapter_mb"], 2),
              "save_time_ratio_default_over_lean": round(rows[0]["save_s"] / rows[1]["save_s"], 2)}
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", required=True, help="base model directory")
    parser.add_argument("--tokenizer_path", required=True, help="a grown tokenizer (tools/merge_vocabulary.py)")
    parser.add_argument("--rounds", type=int, default=2, help="saves per way, alternating; the best time is kept")
    parser.add_argument("--new_embeddings", default="full", choices=("full", "new_rows"),
                        help="how the grown vocabulary is trained, as train_clm.py's flag")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
