"""infer.py: batch records, resume after a crash or a kill, interactive mode over stdin, data errors."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import infer
from utils.common.datafiles import DataError
from utils.common.results_log import ResultsLog
from utils.inference.engine import Engine, GenerationParams

ROOT = Path(__file__).resolve().parent.parent
PARAMS = GenerationParams(max_new_tokens=12)
QUESTIONS = [{"instruction": f"第{i}个问题：盗窃{'财物' * i}怎么处罚？", "input": "材料" if i % 3 == 0 else "",
              "output": f"参考答案{i}"} for i in range(7)]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.from_pretrained(str(tiny_model_dir))


def write_questions(path: Path, questions=QUESTIONS) -> Path:
    path.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in questions) + "\n", encoding="utf-8")
    return path


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batch_writes_one_record_per_question(engine, tmp_path):
    data = write_questions(tmp_path / "q.jsonl")
    items, _ = infer.read_questions(str(data))
    out = tmp_path / "answers.jsonl"
    summary = infer.run_batch(engine, items, str(out), PARAMS, batch_size=3, run_id="r1")
    records = read_output(out)
    assert sorted(r["index"] for r in records) == list(range(len(QUESTIONS)))
    assert summary["generated"] == len(QUESTIONS) and summary["skipped"] == 0
    for r in records:
        q = QUESTIONS[r["index"]]
        assert (r["instruction"], r["input"], r["reference"]) == (q["instruction"], q["input"], q["output"])
        assert r["timing"]["new_tokens"] >= 1 and r["timing"]["batch_size"] <= 3
        # batching does not change the greedy answer
        assert r["answer"] == engine.answer(q["instruction"], q["input"], params=PARAMS)


class FailingEngine:
    """The real engine, except that generation dies after ``good_batches`` batches (a crash mid-run)."""

    def __init__(self, engine, good_batches):
        self.engine, self.left = engine, good_batches

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate_batched(self, *args, **kwargs):
        for batch in self.engine.generate_batched(*args, **kwargs):
            if self.left == 0:
                raise RuntimeError("simulated crash")
            self.left -= 1
            yield batch


def test_rerun_after_a_crash_completes_each_record_exactly_once(engine, tmp_path):
    items, _ = infer.read_questions(str(write_questions(tmp_path / "q.jsonl")))
    out = tmp_path / "answers.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        infer.run_batch(FailingEngine(engine, good_batches=1), items, str(out), PARAMS, batch_size=2, run_id="r1")
    assert len(read_output(out)) == 2
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"key": "5:half a line from a kil')  # torn write: the process died mid-line
    summary = infer.run_batch(engine, items, str(out), PARAMS, batch_size=2, run_id="r1")
    assert summary["skipped"] == 2 and summary["generated"] == len(QUESTIONS) - 2
    keys = [r["key"] for r in read_output(out)]
    assert len(keys) == len(set(keys)) == len(QUESTIONS)


def test_resume_refuses_other_settings_or_other_data(engine, tmp_path):
    items, _ = infer.read_questions(str(write_questions(tmp_path / "q.jsonl")))
    out = tmp_path / "answers.jsonl"
    infer.run_batch(engine, items[:2], str(out), PARAMS, batch_size=2, run_id="r1")
    with pytest.raises(DataError, match="another model or other generation settings"):
        infer.run_batch(engine, items[:2], str(out), PARAMS, batch_size=2, run_id="r2")
    changed = [dict(items[0], instruction="另一个问题")] + items[1:2]
    with pytest.raises(DataError, match="written for other data"):
        infer.run_batch(engine, changed, str(out), PARAMS, batch_size=2, run_id="r1")
    assert infer.run_fingerprint(engine, PARAMS, False, 3) != infer.run_fingerprint(
        engine, PARAMS.replace(max_new_tokens=13), False, 3)


def test_corrupt_results_line_is_an_error_with_its_line(tmp_path):
    out = tmp_path / "answers.jsonl"
    out.write_text('{"key": "0:a"}\nnot json\n{"key": "2:c"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"answers.jsonl:2: invalid JSON"):
        ResultsLog(out)


def test_bad_data_line_fails_before_loading_or_generating(tiny_model_dir, tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"instruction": "好问题"}\n{"instruction": ["不是字符串"]}\n', encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'instruction' must be a string"):
        infer.main(base_model=str(tiny_model_dir), infer_data_path=str(data), output_path=str(out))
    assert not out.exists()


def test_too_long_question_fails_before_generating(engine, tmp_path):
    items, _ = infer.read_questions(str(write_questions(tmp_path / "q.jsonl", QUESTIONS[:2] + [
        {"instruction": "长" * 3000}])))
    out = tmp_path / "answers.jsonl"
    with pytest.raises(ValueError, match=r"q.jsonl:3: .* exceed the model's context"):
        infer.run_batch(engine, items, str(out), PARAMS, batch_size=2, run_id="r1")
    assert not out.exists()


def test_interactive_keeps_history_and_resets(engine):
    stdin = io.StringIO("第一个问题：什么是盗窃罪？\n那么抢劫罪呢？\n/reset\n那么抢劫罪呢？\n/exit\n不会被读到\n")
    stdout = io.StringIO()
    infer.interactive(engine, PARAMS, stdin, stdout)
    answers = [line.split("LaWGPT: ", 1)[1] for line in stdout.getvalue().splitlines() if "LaWGPT: " in line]
    assert len(answers) == 3 and "conversation cleared" in stdout.getvalue()
    first = engine.answer("第一个问题：什么是盗窃罪？", params=PARAMS)
    with_history = engine.answer("那么抢劫罪呢？", history=[("第一个问题：什么是盗窃罪？", first)], params=PARAMS)
    fresh = engine.answer("那么抢劫罪呢？", params=PARAMS)
    assert with_history != fresh, "the history must change the prompt"
    assert answers == [first, with_history, fresh]


def _infer_cmd(model_dir, data, out, *extra):
    return [sys.executable, str(ROOT / "infer.py"), "--base_model", str(model_dir), "--infer_data_path", str(data),
            "--output_path", str(out), *extra]


@pytest.mark.slow
def test_interactive_mode_over_stdin_when_the_data_file_is_empty(tiny_model_dir, tmp_path):
    data = tmp_path / "empty.json"
    data.write_text("")
    done = subprocess.run(_infer_cmd(tiny_model_dir, data, tmp_path / "o.jsonl", "--max_new_tokens", "8"),
                          input="什么是盗窃罪？\n/reset\n抢劫罪呢？\n/exit\n", capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"[infer] --infer_data_path {data}: the file is empty: starting interactive mode"
    assert done.stdout.count("LaWGPT: ") == 2 and "conversation cleared" in done.stdout
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_killed_run_resumes_with_every_record_once(tiny_model_dir, tmp_path):
    data = write_questions(tmp_path / "q.jsonl", QUESTIONS * 2)  # 14 questions (repeats get their own keys)
    out = tmp_path / "answers.jsonl"
    cmd = _infer_cmd(tiny_model_dir, data, out, "--batch_size", "1", "--max_new_tokens", "48")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(read_output(out)) if out.read_bytes().endswith(b"\n") else None
    assert written is None or 2 <= written < 14, "the kill must land mid-run"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "already in" in done.stdout
    records = read_output(out)
    assert sorted(r["index"] for r in records) == list(range(14))


@pytest.mark.slow
def test_rag_records_carry_articles_and_citation_verdicts(tiny_model_dir, tmp_path):
    rag_engine = Engine.from_pretrained(str(tiny_model_dir), prompt_template="law_rag")
    from utils.legal import rag

    hook = infer.RagHook(rag, top_k=1)
    items, _ = infer.read_questions(str(write_questions(tmp_path / "q.jsonl", [
        {"instruction": "入户盗窃怎么处罚？"}, {"instruction": "公司不签劳动合同要付双倍工资吗？"}])))
    out = tmp_path / "answers.jsonl"
    infer.run_batch(rag_engine, items, str(out), PARAMS, batch_size=2, run_id="rag", rag=hook)
    records = sorted(read_output(out), key=lambda r: r["index"])
    assert len(records) == 2
    for record, item in zip(records, items):
        assert len(record["articles"]) == 1 and record["articles"][0]["text"]
        assert isinstance(record["citations"], list) and "verified" in record["citation_summary"]
        context = hook.context(item["instruction"], item["input"])
        prompt = rag_engine.prompt(context.instruction, context.input)
        assert record["articles"][0]["text"][:50] in prompt  # the answer was generated from the article
        assert record["answer"] == rag_engine.generate([prompt], PARAMS)[0].text


def test_rag_hybrid_without_vectors_fails_before_the_model_loads(tmp_path, monkeypatch):
    from tiny_model import write_tiny_statute_db

    from utils.legal import rag
    from utils.legal.bm25 import BM25Index
    from utils.legal.statutes import StatuteStore

    write_tiny_statute_db(tmp_path / "laws.db")  # a store whose e5 vectors were never built
    tiny = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(rag, "default_index", lambda: tiny)
    questions = write_questions(tmp_path / "q.jsonl", [{"instruction": "入户盗窃怎么处罚？"}])
    with pytest.raises(ValueError, match="--rag_retriever hybrid"):  # not a model error: the check comes first
        infer.main(base_model=str(tmp_path / "no-model"), infer_data_path=str(questions), rag=True,
                   rag_retriever="hybrid")


def test_chat_template_answers_with_the_tokenizers_own_format(tiny_chat_model_dir, tmp_path):
    data = write_questions(tmp_path / "q.jsonl", QUESTIONS[:3])
    out = tmp_path / "chat.jsonl"
    infer.main(base_model=str(tiny_chat_model_dir), prompt_template="chat", infer_data_path=str(data),
               output_path=str(out), max_new_tokens=8, batch_size=2)
    engine = Engine.from_pretrained(str(tiny_chat_model_dir), prompt_template="chat")
    prompts = [engine.prompt(q["instruction"], q["input"]) for q in QUESTIONS[:3]]
    assert all(p.startswith("<|im_start|>system\n") and p.endswith("<|im_start|>assistant\n") for p in prompts)
    want = [g.text for g in engine.generate(prompts, GenerationParams(max_new_tokens=8))]
    assert [r["answer"] for r in sorted(read_output(out), key=lambda r: r["index"])] == want
    engine.close()


def test_a_model_trained_with_law_rag_retrieves_by_default_and_warns_with_no_rag(tiny_model_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    """Without retrieved articles a law_rag model has nothing to quote and invents citations: it retrieves unless
    --no_rag, and then the user is told, once."""
    import shutil

    from tiny_model import write_tiny_statute_db

    from utils.legal import rag
    from utils.legal.bm25 import BM25Index
    from utils.legal.rag import missing_rag_warning
    from utils.legal.statutes import StatuteStore

    write_tiny_statute_db(tmp_path / "laws.db")
    tiny = BM25Index.load(StatuteStore.load(tmp_path / "laws.db"), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(rag, "default_index", lambda: tiny)

    assert missing_rag_warning("law_rag", rag_on=False) and "--rag" in missing_rag_warning("law_rag", False)
    assert missing_rag_warning("law_rag", rag_on=True) is None
    assert missing_rag_warning("law_template", rag_on=False) is None and missing_rag_warning(None, False) is None
    model = tmp_path / "rag-model"
    shutil.copytree(tiny_model_dir, model)
    (model / "run_info.json").write_text(json.dumps({"prompt_template": "law_rag"}), encoding="utf-8")
    data = write_questions(tmp_path / "q.jsonl", [{"instruction": "入户盗窃怎么处罚？"}])
    infer.main(base_model=str(model), infer_data_path=str(data), output_path=str(tmp_path / "auto.jsonl"),
               max_new_tokens=2)  # no flag: retrieval on, the record carries the articles and the checks
    assert "--rag is on" in capsys.readouterr().err
    assert {"articles", "citations", "citation_summary"} <= set(read_output(tmp_path / "auto.jsonl")[0])
    infer.main(base_model=str(model), infer_data_path=str(data), output_path=str(tmp_path / "a.jsonl"),
               max_new_tokens=2, no_rag=True)
    assert capsys.readouterr().err.count("[infer] warning: this model was trained to answer from retrieved") == 1
    assert "articles" not in read_output(tmp_path / "a.jsonl")[0]
    infer.main(base_model=str(tiny_model_dir), infer_data_path=str(data), output_path=str(tmp_path / "b.jsonl"),
               max_new_tokens=2)
    assert "trained to answer from retrieved" not in capsys.readouterr().err


def test_two_runs_on_one_output_file_cannot_interleave(tmp_path):
    """A second infer.py on the same --output_path wrote every answer twice and left a file that could not be
    resumed; now the first run holds a lock and the second stops with one line."""
    from utils.common.results_log import ResultsLog

    path = tmp_path / "answers.jsonl"
    first = ResultsLog(path)
    first.append({"key": "0:a", "answer": "x"})
    with pytest.raises(DataError, match="another run is writing this file now"):
        ResultsLog(path)
    first.close()
    with ResultsLog(path) as again:  # released: a rerun resumes
        assert list(again.records) == ["0:a"]


def test_a_relative_model_path_is_the_same_run(tiny_model_dir, tmp_path, monkeypatch):
    """Resuming with --base_model models/x from the repo root after /abs/.../models/x: the same model, not 'another'."""
    data = write_questions(tmp_path / "q.jsonl", QUESTIONS[:2])
    out = tmp_path / "answers.jsonl"
    infer.main(base_model=str(tiny_model_dir), infer_data_path=str(data), output_path=str(out), max_new_tokens=2)
    monkeypatch.chdir(tiny_model_dir.parent)
    infer.main(base_model=tiny_model_dir.name, infer_data_path=str(data), output_path=str(out), max_new_tokens=2)
    assert len(read_output(out)) == 2


def test_a_folder_with_only_a_gguf_says_so(tmp_path):
    """It said 'cannot load a tokenizer … sentencepiece …', which sends a user looking in the wrong place."""
    from utils.model.loader import ModelLoadError, load_for_inference

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="holds a GGUF file \\(model.gguf\\) but no transformers model"):
        load_for_inference(str(tmp_path))


def test_an_adapter_on_another_base_is_warned_about(tmp_path):
    from utils.model.loader import other_base_warning

    trained_on, other = tmp_path / "base-a", tmp_path / "base-b"
    trained_on.mkdir()
    other.mkdir()
    info = {"base_model": str(trained_on)}
    assert other_base_warning(str(trained_on), "adapter", info) is None
    assert other_base_warning(str(tmp_path / "copies" / "base-a"), "adapter", info) is None  # moved: same name
    assert "was trained on" in other_base_warning(str(other), "adapter", info)
    assert other_base_warning(str(other), None, info) is None  # no adapter: nothing to compare
