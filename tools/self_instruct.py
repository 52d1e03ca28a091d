"""Self-instruct (Stanford Alpaca style) generation of Chinese legal instruction data.

Each request shows the model a few example tasks — sampled from resources/seed_tasks.jsonl and from
what it generated so far — and asks it to continue the numbered list with new legal tasks. Replies
are parsed into instruction / input / output, filtered (format, length, banned words, Chinese), and
deduplicated against the whole pool with character ROUGE-L (``utils.lawbench.metrics.rouge_l``, the
same ROUGE-L the evaluation uses): a task whose instruction+input scores >= 0.7 with any task
already in the pool is dropped. Kept tasks are appended to the output JSONL and flushed one by one,
so an interrupted run loses nothing and a rerun continues up to ``--num_instructions_to_generate``.

    # an OpenAI-compatible API (the key is read from $OPENAI_API_KEY, never printed)
    python tools/self_instruct.py --backend openai --model gpt-4o-mini --output data/sft/self_instruct.jsonl \
        --num_instructions_to_generate 500
    # a local model (base models continue the raw prompt; --prompt_mode template for a tuned model)
    python tools/self_instruct.py --backend local --model_path models/lawgpt-7b --output data/sft/si.jsonl
    # any vLLM / llama.cpp server speaking the same API
    python tools/self_instruct.py --backend openai --api_base http://127.0.0.1:8000/v1 --model qwen

Then clean the result with tools/clean_data.py before training.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from utils.common.datafiles import DataError, read_records  # noqa: E402
from utils.common.entry import run_entry  # noqa: E402
from utils.common.results_log import repair_tail  # noqa: E402
from utils.datagen.llm_backends import add_generator_arguments, generator_from_args  # noqa: E402
from utils.lawbench.metrics import rouge_l  # noqa: E402

DEFAULT_SEEDS = ROOT / "resources" / "seed_tasks.jsonl"
NO_INPUT = "<无输入>"
# Tasks a text model cannot do (the Alpaca list, in Chinese) and tell-tale chat-assistant refusals.
BANNED_WORDS = ("图片", "图像", "照片", "视频", "音频", "音乐", "绘制", "画出", "画一", "流程图", "示意图",
                "链接", "网址", "打开网页", "附件", "作为AI", "作为一个AI", "人工智能模型", "语言模型")
HEADER = """你是中国法律领域的数据构建助手。请编写{n}条多样化的法律任务，用于训练中文法律大模型。要求：
1. 每条任务包含“指令”“输入”“输出”三部分；任务不需要输入时，输入写“{no_input}”。
2. 任务类型要多样：法律概念解释、法条适用、案情分析、罪名判断、赔偿计算、文书写作、文书改错、案件分类等。
3. 指令用中文，一到两句话，不同任务的措辞不要重复；内容涉及中华人民共和国现行法律。
4. 输出准确、完整，引用法律时写明法律全称和条号，例如《中华人民共和国民法典》第一百八十八条。
5. 不要编写需要图片、音频、视频或网页链接才能完成的任务。输出不超过300字。
按下面的格式编写，任务之间用###分隔：
"""
_TASK = re.compile(
    r"^\s*(\d+)\s*[.．、]\s*指令\s*[:：]\s*(?P<instruction>.+?)\s*\n"
    r"\s*\1\s*[.．、]\s*输入\s*[:：]\s*(?P<input>.*?)\s*\n"
    r"\s*\1\s*[.．、]\s*输出\s*[:：]\s*(?P<output>.+?)\s*$",
    re.S,
)
_NUMBERED = re.compile(r"^\s*\d+\s*[.．、]\s*指令")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def format_task(number: int, task: dict) -> str:
    return (f"###\n{number}. 指令：{task['instruction']}\n{number}. 输入：{task.get('input') or NO_INPUT}\n"
            f"{number}. 输出：{task['output']}\n")


def encode_prompt(examples: list[dict], num_tasks: int) -> str:
    """The request: header, the examples numbered 1..k, then the opening of task k+1 to continue."""
    body = "".join(format_task(i, task) for i, task in enumerate(examples, start=1))
    return HEADER.format(n=num_tasks, no_input=NO_INPUT) + body + f"###\n{len(examples) + 1}. 指令："


def parse_response(response: str, first_number: int) -> tuple[list[dict], int]:
    """(tasks parsed from a reply, number of chunks that did not parse).

    The prompt ends inside task ``first_number`` ("N. 指令："); a completion model continues from
    there, a chat model may restart the line itself — both are accepted.
    """
    text = response if _NUMBERED.match(response) else f"{first_number}. 指令：{response}"
    tasks, bad = [], 0
    for chunk in text.split("###"):
        if not chunk.strip():
            continue
        match = _TASK.match(chunk)
        if not match:
            bad += 1
            continue
        task = {key: match.group(key).strip() for key in ("instruction", "input", "output")}
        if task["input"] in (NO_INPUT, "无", "无输入", "<无>", "（无）"):
            task["input"] = ""
        tasks.append(task)
    return tasks, bad


def reject_reason(task: dict, min_instruction: int = 5, max_instruction: int = 200, min_output: int = 2,
                  max_output: int = 2000) -> str | None:
    """Why a parsed task is unusable (a short stable reason name), or None."""
    instruction, output = task["instruction"], task["output"]
    if not min_instruction <= len(instruction) <= max_instruction:
        return "instruction_length"
    if not min_output <= len(output) <= max_output:
        return "output_length"
    if re.match(r"^[\W_]", instruction):
        return "starts_with_punctuation"
    if len(_CJK.findall(instruction)) < 0.3 * len(instruction):
        return "not_chinese"
    if any(word in instruction or word in output for word in BANNED_WORDS):
        return "banned_word"
    if NO_INPUT in output or "指令：" in output:  # the model ran the template into the answer
        return "template_leak"
    return None


def _key(task: dict) -> str:
    """What dedup compares: the question as asked (instruction plus its case material)."""
    return task["instruction"] + ("\n" + task["input"] if task.get("input") else "")


@dataclass
class Pool:
    """Everything a new task must not resemble: seeds plus all generated tasks."""

    threshold: float = 0.7
    keys: list[str] = field(default_factory=list)

    def add(self, task: dict) -> None:
        self.keys.append(_key(task))

    def most_similar(self, task: dict) -> float:
        key = _key(task)
        best = 0.0
        n = len(key)
        for other in self.keys:
            # F1 of an LCS can be at most 2·min/(m+n): skip pairs whose lengths already rule it out.
            if 2 * min(n, len(other)) / (n + len(other)) < self.threshold:
                continue
            best = max(best, rouge_l(key, other))
            if best >= self.threshold:
                break
        return best


def load_tasks(path: Path, what: str) -> list[dict]:
    tasks = []
    for record in read_records(path):
        data = record.data
        for name in ("instruction", "output"):
            if not isinstance(data.get(name), str) or not data[name].strip():
                raise DataError(f"{record.where}: {what} needs a non-empty string field {name!r}")
        if not isinstance(data.get("input", ""), str):
            raise DataError(f"{record.where}: field 'input' must be a string")
        tasks.append({"instruction": data["instruction"], "input": data.get("input", ""), "output": data["output"]})
    return tasks


@dataclass
class Summary:
    existing: int = 0
    kept: int = 0
    requests: int = 0
    parsed: int = 0
    rejected: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.existing + self.kept


def generate(args: argparse.Namespace, generator) -> Summary:
    output = Path(args.output)
    seeds = load_tasks(Path(args.seed_tasks), "a seed task")
    dropped = repair_tail(output)
    if dropped:
        print(f"[self_instruct] {output}: dropped an unfinished last line ({dropped} bytes) from an interrupted run")
    previous = load_tasks(output, "a generated task") if output.is_file() else []
    summary = Summary(existing=len(previous))
    pool = Pool(args.similarity_threshold)
    for task in seeds + previous:
        pool.add(task)
    machine = list(previous)
    remaining = args.num_instructions_to_generate - len(previous)
    print(f"[self_instruct] {len(seeds)} seed tasks, {len(previous)} already in {output}, "
          f"{max(remaining, 0)} to go")
    if remaining <= 0:
        return summary
    max_requests = args.max_requests or 10 * math.ceil(remaining / args.num_tasks_per_prompt)
    # Seeded by the state on disk, so a resumed run is as reproducible as an uninterrupted one.
    rng = random.Random(f"{args.seed}:{len(previous)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=args.num_instructions_to_generate, initial=len(previous), desc="self-instruct", unit="task")
    with bar, open(output, "a", encoding="utf-8") as sink:
        while summary.total < args.num_instructions_to_generate and summary.requests < max_requests:
            n = min(args.request_batch_size, max_requests - summary.requests)
            prompts, firsts = [], []
            for _ in range(n):
                k_machine = min(args.num_machine_examples, len(machine))
                examples = rng.sample(seeds, min(args.num_prompt_examples - k_machine, len(seeds)))
                examples += rng.sample(machine, k_machine)
                rng.shuffle(examples)
                prompts.append(encode_prompt(examples, args.num_tasks_per_prompt))
                firsts.append(len(examples) + 1)
            replies = generator.complete(prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                         seed=args.seed + summary.total * 1000 + summary.requests)
            summary.requests += n
            for reply, first in zip(replies, firsts):
                tasks, bad = parse_response(reply, first)
                summary.parsed += len(tasks)
                if bad:
                    summary.rejected["unparseable"] += bad
                for task in tasks:
                    reason = reject_reason(task)
                    if reason is None and pool.most_similar(task) >= args.similarity_threshold:
                        reason = "similar"
                    if reason:
                        summary.rejected[reason] += 1
                        continue
                    if summary.total >= args.num_instructions_to_generate:
                        break
                    sink.write(json.dumps(task, ensure_ascii=False) + "\n")
                    sink.flush()
                    pool.add(task)
                    machine.append(task)
                    summary.kept += 1
                    bar.update(1)
            bar.set_postfix(requests=summary.requests, rejected=sum(summary.rejected.values()))
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="JSONL to append generated tasks to (resumed if it exists)")
    parser.add_argument("--seed_tasks", default=str(DEFAULT_SEEDS), help="seed tasks (.jsonl/.json, instruction/input/output)")
    parser.add_argument("--num_instructions_to_generate", type=int, default=100, help="target size of --output")
    parser.add_argument("--num_prompt_examples", type=int, default=3, help="example tasks shown in each request")
    parser.add_argument("--num_machine_examples", type=int, default=1,
                        help="how many of those come from the generated pool once it has some")
    parser.add_argument("--num_tasks_per_prompt", type=int, default=10, help="tasks asked for per request")
    parser.add_argument("--request_batch_size", type=int, default=4, help="requests sent together")
    parser.add_argument("--max_requests", type=int, default=0,
                        help="stop after this many requests in this run (0: 10x the requests the target needs)")
    parser.add_argument("--similarity_threshold", type=float, default=0.7, help="ROUGE-L at or above which a task is a duplicate")
    parser.add_argument("--max_new_tokens", type=int, default=3072)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42, help="example sampling and generation seed")
    add_generator_arguments(parser, default_template_mode="raw")
    args = parser.parse_args(argv)
    for name in ("num_instructions_to_generate", "num_prompt_examples", "num_tasks_per_prompt", "request_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if not 0 <= args.num_machine_examples < args.num_prompt_examples:
        parser.error("--num_machine_examples must be in [0, --num_prompt_examples)")
    if not 0 < args.similarity_threshold <= 1:
        parser.error("--similarity_threshold must be in (0, 1]")
    if args.max_requests < 0:
        parser.error("--max_requests must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one line on stderr (utils/common/entry.py)."""
    return run_entry("self_instruct", lambda: _run(argv))


def _run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = generate(args, generator_from_args(args))
    reasons = ", ".join(f"{k} {v}" for k, v in summary.rejected.most_common()) or "none"
    print(f"[self_instruct] {summary.requests} requests, {summary.parsed} tasks parsed, {summary.kept} kept; "
          f"rejected: {reasons}")
    print(f"[self_instruct] {args.output}: {summary.total}/{args.num_instructions_to_generate} tasks")
    if summary.total < args.num_instructions_to_generate:
        print(f"self_instruct: error: stopped after {summary.requests} requests (--max_requests) short of the target; "
              "rerun the same command to continue", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
