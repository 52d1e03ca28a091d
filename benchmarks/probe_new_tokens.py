"""Do a grown vocabulary's new tokens win the softmax where the text has them? A teacher-forced probe.

For the first ``--max_chars`` characters of ``--n`` statute documents (shuffled with ``--seed``), tokenised with the
grown tokenizer and cut at 256 tokens, the model's argmax at every position is compared with the next token:

- *argmax is a new token*: share of positions whose argmax id is >= the base vocabulary (compare with the share
  of targets that are new tokens: a model that writes its new words emits them about as often);
- *new-token targets predicted exactly*: over positions whose target is a new token, share with argmax == target;
- *argmax = the target's first base piece*: there, share that predict the first piece instead (the word dropped
  into pieces — or, after a grown tokenizer, lost, since the pieces never follow each other in training);
- *base targets top-1*: accuracy on the other positions (the base vocabulary must not suffer).

    # a trained model (merged, with its grown tokenizer)
    python benchmarks/probe_new_tokens.py --model outputs/demo/legal-base --base_tokenizer models/base_models/gemma-3-270m
    # the untrained base model with the new rows initialised one way or another (utils/vocab.init_new_embeddings)
    python benchmarks/probe_new_tokens.py --model models/base_models/gemma-3-270m --tokenizer outputs/demo/tokenizer \
        --init mean mean_norm

Prints one JSON line per model/initialisation. Figures: benchmarks/RESULTS.md (issue 13).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def documents(path: str, n: int, max_chars: int, seed: int) -> list[str]:
    from utils.common.datafiles import load_documents

    docs = [d for d in load_documents(path) if d.strip()]
    random.Random(seed).shuffle(docs)
    return [d[:max_chars] for d in docs[:n]]


def probe(model, tokenizer, base_tokenizer, texts: list[str]) -> dict:
    """The four shares above over ``texts`` (teacher-forced, greedy argmax, no sampling)."""
    import torch

    from utils.model.vocabulary import base_piece_ids

    base_rows = len(base_tokenizer)
    counts = dict(pos=0, new_pos=0, new_hit=0, piece=0, argmax_new=0, base_pos=0, base_hit=0)
    first_piece: dict[int, int] = {}
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :256]
        with torch.inference_mode():
            argmax = model(ids).logits[0, :-1].argmax(-1).tolist()
        for target, guess in zip(ids[0, 1:].tolist(), argmax):
            counts["pos"] += 1
            counts["argmax_new"] += guess >= base_rows
            if target >= base_rows:
                if target not in first_piece:
                    first_piece[target] = base_piece_ids(base_tokenizer, tokenizer, target)[0]
                counts["new_pos"] += 1
                counts["new_hit"] += guess == target
                counts["piece"] += guess == first_piece[target]
            else:
                counts["base_pos"] += 1
                counts["base_hit"] += guess == target
    c = counts
    return {"positions": c["pos"], "new_share_of_targets": round(c["new_pos"] / c["pos"], 4),
            "argmax_is_new": round(c["argmax_new"] / c["pos"], 4),
            "new_targets_exact": round(c["new_hit"] / max(c["new_pos"], 1), 4),
            "argmax_first_piece": round(c["piece"] / max(c["new_pos"], 1), 4),
            "base_targets_top1": round(c["base_hit"] / max(c["base_pos"], 1), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory (merged model, or a base model with --init)")
    parser.add_argument("--tokenizer", help="the grown tokenizer (default: the model's own)")
    parser.add_argument("--base_tokenizer", help="the base model's tokenizer (default: --model, with --init)")
    parser.add_argument("--init", nargs="*", help="grow --model's embeddings for --tokenizer, new rows initialised "
                                                   "each of these ways (mean, mean_norm), untrained")
    parser.add_argument("--corpus", default="data/pretrain/statutes.jsonl")
    parser.add_argument("--n", type=int, default=40, help="documents")
    parser.add_argument("--max_chars", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.model.vocabulary import init_new_embeddings

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    base_dir = args.base_tokenizer or (args.model if args.init else None)
    if base_dir is None:
        parser.error("--base_tokenizer is required for a trained model (the vocabulary before it grew)")
    base_tokenizer = AutoTokenizer.from_pretrained(base_dir)
    texts = documents(args.corpus, args.n, args.max_chars, args.seed)
    for init in args.init or [None]:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        if init is not None:
            rows = model.get_input_embeddings().weight.shape[0]
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            init_new_embeddings(model, base_tokenizer, tokenizer, rows, init)
        print(json.dumps({"model": args.model, "init": init, **probe(model, tokenizer, base_tokenizer, texts)},
                         ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
