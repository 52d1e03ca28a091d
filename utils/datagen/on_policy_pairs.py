"""``tools/preference_data.py --source model``: sample a model's own answers, rank them with the citation checker
(utils/training/preference_pairs.py), keep the pairs with a clear winner. Resumable: one record per question in
``<output>.samples.jsonl``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from utils.common.datafiles import DataError, read_records, write_jsonl
from utils.common.results_log import ResultsLog, item_key
from utils.legal.statutes import StatuteError, StatuteStore
from utils.training.preference_pairs import assess, pick_pair, tier


def read_questions(path: Path, store: StatuteStore) -> list[dict]:
    questions = []
    for record in read_records(path):
        instruction = record.data.get("instruction") or record.data.get("question")
        if not isinstance(instruction, str) or not instruction.strip():
            raise DataError(f"{record.where}: a question needs a non-empty 'instruction' (or 'question') string")
        gold = record.data.get("gold") or []
        if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold):
            raise DataError(f"{record.where}: 'gold' must be a list of citations like 《刑法》第二百六十四条")
        for citation in gold:
            try:
                store.parse_citation(citation)
            except StatuteError as e:
                raise DataError(f"{record.where}: gold citation: {e}") from e
        questions.append({"instruction": instruction, "input": record.data.get("input") or "", "gold": gold})
    return questions


def samples_path(output: str) -> Path:
    return Path(output).with_suffix(".samples.jsonl")


def on_policy_pairs(args: argparse.Namespace, questions: list[dict], store: StatuteStore, generator) -> Counter:
    """Sample and rank answers, one record per question appended to ``<output>.samples.jsonl`` (so a rerun resumes),
    then write the pairs with a clear winner to ``args.output``; returns the sampled answers' tier counts."""
    counts = Counter()
    with ResultsLog(samples_path(args.output)) as log:
        todo = [(i, q) for i, q in enumerate(questions)
                if item_key(i, q["instruction"], q["input"]) not in log]
        print(f"[preference_data] {len(questions)} questions, {len(questions) - len(todo)} done already")
        for start in range(0, len(todo), args.request_batch):
            batch = todo[start:start + args.request_batch]
            prompts = [q["instruction"] + (f"\n\n{q['input']}" if q["input"] else "") for _, q in batch
                       for _ in range(args.num_samples)]
            answers = generator.complete(prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                         seed=args.seed + start)
            for k, (i, q) in enumerate(batch):
                mine = answers[k * args.num_samples:(k + 1) * args.num_samples]
                checked = [assess(a, store, q["gold"]) for a in mine]
                counts.update(tier(c) for c in checked)
                picked = pick_pair(mine, checked)
                record = {"key": item_key(i, q["instruction"], q["input"]), "instruction": q["instruction"],
                          "input": q["input"], "gold": q["gold"], "kind": "on_policy",
                          "samples": [{"text": a, **c.to_dict()} for a, c in zip(mine, checked)]}
                if picked:
                    record["pair"] = list(picked)
                log.append(record)
        pairs = []
        for r in log.records.values():
            if "pair" in r:
                chosen, rejected = (r["samples"][i] for i in r["pair"])
                pairs.append({"instruction": r["instruction"], "input": r["input"], "chosen": chosen["text"],
                              "rejected": rejected["text"], "kind": "on_policy", "gold": r["gold"],
                              "chosen_tier": chosen["tier"], "rejected_tier": rejected["tier"]})
    write_jsonl(args.output, pairs)
    print(f"[preference_data] {len(pairs)} of {len(log.records)} questions gave a pair with a clear winner: "
          f"{args.output} (all samples: {samples_path(args.output)})")
    return counts
