"""Answering LeCoQA's questions with a model (evaluate.py --benchmark lecoqa): resumable, one record per question.

``engine`` is utils/inference/engine.Engine and ``rag`` utils/legal/rag.py (passed in: this package sits below the
inference layer). With ``rag`` the prompt is the model's template with the retrieved articles as its input, as infer.py
and the web UI prompt a model trained with law_rag. Records go to ``predictions.jsonl`` as they finish (a rerun
generates only what is missing); ``answers.jsonl`` is then written in LeCoQA's own format (``{"id", "answer"}``).
"""

from __future__ import annotations

from pathlib import Path

from utils.common.datafiles import write_jsonl
from utils.common.results_log import ResultsLog

PREDICTIONS, ANSWERS = "predictions.jsonl", "answers.jsonl"


def answer_questions(engine, questions: list[dict], output_dir: Path, params, batch_size: int, rag=None,
                     top_k: int = 3, retriever: str = "auto", progress=None) -> dict[str, str]:
    """Generate the answers missing from ``output_dir``; returns ``{id: answer}`` for every question.

    Every prompt is built and length-checked before the first token (PromptTooLongError names the question)."""
    log = ResultsLog(output_dir / PREDICTIONS, key_field="id")
    todo = [q for q in questions if q["id"] not in log]
    prompts, retrieved = [], []
    for q in todo:
        if rag is not None:
            context = rag.prepare(q["question"], top_k, retriever=retriever)
            prompts.append(engine.prompt(context.instruction, context.input))
            retrieved.append([hit.article.citation for hit in context.hits])
        else:
            prompts.append(engine.prompt(q["question"]))
            retrieved.append(None)
        engine.check_fits(prompts[-1], params.max_new_tokens, f"LeCoQA question {q['id']}")
    with log:
        for batch in engine.generate_batched(prompts, params, batch_size):
            for i, generation in batch:
                record = {"id": todo[i]["id"], "answer": generation.text, "finish_reason": generation.finish_reason,
                          "new_tokens": generation.new_tokens, "seconds": round(generation.seconds, 3)}
                if retrieved[i] is not None:
                    record["retrieved"] = retrieved[i]
                log.append(record)  # flushed at once: a finished answer survives an interruption
            if progress is not None:
                progress(len(batch))
        answers = {q["id"]: log.records[q["id"]]["answer"] for q in questions}
    write_jsonl(output_dir / ANSWERS, ({"id": k, "answer": v} for k, v in answers.items()))
    return answers
