"""An LLM judge for LeCoQA answers (``evaluate.py --benchmark lecoqa --judge_api_base URL --judge_model NAME``).

LeCoQA's LLM-Eval asks GPT-3.5-turbo whether each answer is correct, but its prompt is not published (neither in the
README nor in the repository at commit 538b299), so this judge uses our prompt (``PROMPT``) and its figure — the
share of answers judged correct — is reported as "judge (ours)", never in the published LLM-Eval column.

Replies are cached as they come (``judge.jsonl`` in the run directory, keyed by question id and the judge's name),
so an interrupted run asks only what is missing. ``generator`` is anything with ``complete(prompts, max_new_tokens=,
temperature=) -> list[str]`` (utils/datagen/llm_backends.py's OpenAIGenerator: any OpenAI-compatible endpoint).
"""

from __future__ import annotations

from pathlib import Path

from utils.common.datafiles import DataError
from utils.common.results_log import ResultsLog

CACHE = "judge.jsonl"
PROMPT = (
    "你是法律咨询回答的评审。下面给出一个法律咨询问题、律师写的参考回答和一个待评回答。请判断待评回答的法律结论是否正确："
    "与参考回答的结论一致，或者同样正确，即为正确，不要求措辞相同；结论错误、与参考回答相反、引用明显不适用的法律，"
    "或者没有回答问题，即为不正确。只输出“正确”或“不正确”。\n\n"
    "问题：{question}\n参考回答：{reference}\n待评回答：{answer}\n判断：")


def verdict(reply: str) -> bool | None:
    """True for 正确, False for 不正确 (or 错误), None for a reply that says neither or both."""
    text = reply.strip()
    wrong = "不正确" in text or "错误" in text
    right = "正确" in text.replace("不正确", "")
    return None if wrong == right else right


def judge_answers(questions: list[dict], answers: dict[str, str], generator, judge_id: str, output_dir: Path,
                  batch_size: int = 16, progress=None) -> dict:
    """``{"judge": judge_id, "correct_share": correct / judged, "judged": n, "unclear": n}``; replies cached in
    ``output_dir/judge.jsonl``. Raises DataError when the cache holds another judge's replies."""
    log = ResultsLog(output_dir / CACHE, key_field="id")
    other = {r.get("judge") for r in log.records.values()} - {judge_id}
    if other:
        raise DataError(f"{output_dir / CACHE} holds replies of another judge ({', '.join(map(str, other))}); "
                        "use a new --output_dir or delete the file")
    todo = [q for q in questions if q["id"] not in log]
    with log:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            prompts = [PROMPT.format(question=q["question"], reference=q["answer"], answer=answers[q["id"]])
                       for q in batch]
            for q, reply in zip(batch, generator.complete(prompts, max_new_tokens=8, temperature=0.0)):
                log.append({"id": q["id"], "judge": judge_id, "reply": reply, "correct": verdict(reply)})
            if progress is not None:
                progress(len(batch))
        verdicts = [log.records[q["id"]]["correct"] for q in questions]
    judged = [v for v in verdicts if v is not None]
    return {"judge": judge_id, "correct_share": sum(judged) / len(judged) if judged else None,
            "judged": len(judged), "unclear": len(verdicts) - len(judged)}
