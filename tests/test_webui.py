"""The web UI driven over HTTP with gradio_client, on the tiny model (one app per module, ~4 s to start).

What the answers should be is computed with the engine directly (greedy, same parameters): the UI must
give exactly the engine's answer for the prompt it claims to build (with history, with max_new_tokens).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from utils.common.datafiles import load_instruction_data
from utils.inference.engine import Engine, GenerationParams
from utils.inference.webui_app import (
    TITLE_BEAMS,
    TITLE_ERROR,
    TITLE_NOTICE,
    TITLE_SOURCES,
    TITLE_TRIMMED,
    ChatHandler,
    UISettings,
    build_app,
    example_questions,
    header_markdown,
    history_pairs,
    launch_options,
    parse_auth,
    render_sources,
)

ROOT = Path(__file__).resolve().parent.parent
MAX_INPUT_CHARS = 300
QUESTION = "请问加班工资怎么算？"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def params(temperature=0.0, top_p=0.9, top_k=40, num_beams=1, max_new_tokens=16, repetition_penalty=1.1,
           streaming=True) -> tuple:
    """The /chat endpoint's parameters after the message, in the panel's order."""
    return temperature, top_p, top_k, num_beams, max_new_tokens, repetition_penalty, streaming


def answer_of(reply: list[dict]) -> str:
    plain = [m["content"] for m in reply if not (m.get("metadata") or {}).get("title")]
    assert len(plain) <= 1, reply
    return plain[0] if plain else ""


def notes_of(reply: list[dict]) -> dict[str, str]:
    return {m["metadata"]["title"]: m["content"] for m in reply if (m.get("metadata") or {}).get("title")}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    engine = Engine.from_pretrained(str(tiny_model_dir))
    app = build_app(engine, UISettings(max_input_chars=MAX_INPUT_CHARS, concurrency_limit=2))
    _, url, _ = app.launch(**launch_options("127.0.0.1", free_port()), prevent_thread_lock=True, quiet=True)
    yield url, engine
    app.close()


def client(url, **kwargs):
    from gradio_client import Client

    return Client(url, verbose=False, **kwargs)


def test_streamed_answer_arrives(server):
    url, engine = server
    job = client(url).submit(QUESTION, *params(max_new_tokens=24), api_name="/chat")
    updates = [answer_of(reply) for reply in job]
    final = answer_of(job.result())
    assert final == engine.answer(QUESTION, max_new_tokens=24)
    growing = [u for i, u in enumerate(updates) if u and (i == 0 or u != updates[i - 1])]
    assert len(growing) >= 3, f"expected a stream of growing answers, got {updates}"
    assert all(final.replace(" ", "").startswith(u.replace(" ", "")) for u in growing)


def test_max_new_tokens_is_honoured(server):
    url, engine = server
    c = client(url)
    short = answer_of(c.predict(QUESTION, *params(max_new_tokens=4), api_name="/chat"))
    long = answer_of(client(url).predict(QUESTION, *params(max_new_tokens=40), api_name="/chat"))
    expected = engine.generate([engine.prompt(QUESTION)], GenerationParams(max_new_tokens=4))[0]
    assert expected.new_tokens == 4 and short == expected.text
    assert long == engine.answer(QUESTION, max_new_tokens=40) and len(long) > len(short)


def test_multi_turn_history_goes_into_the_prompt(server):
    url, engine = server
    first, follow_up = "酒驾撞人怎么判刑？", "那要赔多少钱？"
    c = client(url)  # one client = one session = one conversation
    a1 = answer_of(c.predict(first, *params(), api_name="/chat"))
    a2 = answer_of(c.predict(follow_up, *params(), api_name="/chat"))
    with_history = engine.answer(follow_up, history=[(first, a1)], max_new_tokens=16)
    without = engine.answer(follow_up, max_new_tokens=16)
    assert with_history != without  # otherwise this test could not tell the difference
    assert a2 == with_history
    assert answer_of(client(url).predict(follow_up, *params(), api_name="/chat")) == without  # new session


def test_trimmed_history_notice_and_stop(server):
    """A turn too long for the context drops the oldest turn with a visible notice; Stop frees the model."""
    url, engine = server
    c = client(url)
    c.predict("中华人民共和国刑法第二百六十四条规定盗窃公私财物数额较大的" * 5, *params(max_new_tokens=64),
              api_name="/chat")
    alone = engine.count_tokens(engine.prompt(QUESTION))
    budget = min(engine.context_length - 16, engine.context_length - alone - 4)  # fits alone, not with turn 1
    job = c.submit(QUESTION, *params(max_new_tokens=budget), api_name="/chat")
    deadline = time.monotonic() + 30
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.01)
    notes = notes_of(job.outputs()[0])
    assert "最早的 1 轮对话" in notes[TITLE_TRIMMED]
    assert engine.busy, "the generation should still be running when Stop is pressed"
    job.cancel()
    stopped = time.monotonic()
    while engine.busy and time.monotonic() - stopped < 5:
        time.sleep(0.01)
    # Running to the end would take ~900 more tokens (~3 s here); stopped, the model is free at once.
    assert time.monotonic() - stopped < 1.5
    assert answer_of(client(url).predict(QUESTION, *params(max_new_tokens=4), api_name="/chat"))


def test_over_long_input_gets_a_polite_message(server):
    url, _ = server
    reply = client(url).predict("盗" * (MAX_INPUT_CHARS + 1), *params(), api_name="/chat")
    assert answer_of(reply) == ""
    assert f"{MAX_INPUT_CHARS} 字以内" in notes_of(reply)[TITLE_NOTICE]


def test_generation_errors_are_shown_in_the_chat(server, monkeypatch):
    url, engine = server

    def broken(*args, **kwargs):
        raise RuntimeError("simulated CUDA out of memory")

    monkeypatch.setattr(engine.model, "generate", broken)  # batch-at-a-time
    monkeypatch.setattr(engine.model, "forward", broken)  # iteration-level (utils/inference/iteration.py)
    for streaming in (True, False):
        reply = client(url).predict(QUESTION, *params(streaming=streaming), api_name="/chat")
        assert "RuntimeError: simulated CUDA out of memory" in notes_of(reply)[TITLE_ERROR]
    monkeypatch.undo()
    assert answer_of(client(url).predict(QUESTION, *params(), api_name="/chat"))  # and the server is fine


def test_beams_turn_streaming_off_with_a_note(server):
    url, engine = server
    job = client(url).submit(QUESTION, *params(num_beams=2, max_new_tokens=12), api_name="/chat")
    updates = [answer_of(reply) for reply in job]
    reply = job.result()
    assert TITLE_BEAMS in notes_of(reply)
    expected = engine.generate([engine.prompt(QUESTION)], GenerationParams(num_beams=2, max_new_tokens=12))[0].text
    assert answer_of(reply) == expected
    assert set(updates) <= {"", expected}  # no partial answers: one answer at the end


def test_eight_clients_at_once(server):
    url, engine = server
    questions = [item["instruction"] for item in load_instruction_data(ROOT / "resources" / "example_infer_data.json",
                                                                       require_output=False)]
    questions = (questions + ["请问离婚时财产怎么分？", "交通事故责任怎么认定？"])[:8]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda q: answer_of(client(url).predict(q, *params(max_new_tokens=12), api_name="/chat")), questions))
    assert replies == [engine.answer(q, max_new_tokens=12) for q in questions]
    assert all(replies)
    assert answer_of(client(url).predict(QUESTION, *params(max_new_tokens=4), api_name="/chat"))  # still up


def test_page_has_header_examples_and_disclaimer(server, tiny_model_dir):
    import httpx

    url, _ = server
    config = httpx.get(url.rstrip("/") + "/config", timeout=10).text
    for question in example_questions():
        assert question in config
    assert "LaWGPT" in config and "不构成任何法律意见" in config and str(tiny_model_dir) in config


def test_auth_takes_effect(server):
    _, engine = server
    app = build_app(engine, UISettings())
    _, url, _ = app.launch(**launch_options("127.0.0.1", free_port(), auth=("alice", "s3:cret")),
                           prevent_thread_lock=True, quiet=True)
    try:
        with pytest.raises(Exception, match="(?i)login|auth|401|403"):
            client(url)
        reply = client(url, auth=("alice", "s3:cret")).predict(QUESTION, *params(max_new_tokens=4), api_name="/chat")
        assert answer_of(reply)
    finally:
        app.close()


def test_rag_shows_articles_and_citation_check(tiny_model_dir):
    from utils.legal import rag

    engine = Engine.from_pretrained(str(tiny_model_dir), prompt_template=rag.RAG_TEMPLATE)
    app = build_app(engine, UISettings(rag_top_k=2), rag=rag)
    _, url, _ = app.launch(**launch_options("127.0.0.1", free_port()), prevent_thread_lock=True, quiet=True)
    try:
        question = "入户盗窃怎么判？"
        reply = client(url).predict(question, *params(), api_name="/chat")
    finally:
        app.close()
    context = rag.prepare(question, top_k=2)
    answer = answer_of(reply)
    assert answer == engine.answer(context.instruction, context.input, max_new_tokens=16)  # articles in the prompt
    checked = rag.finalize(answer, context)
    sources = notes_of(reply)[TITLE_SOURCES]
    assert sources == render_sources(checked["articles"], checked["citations"])
    assert all(hit.article.citation in sources for hit in context.hits) and len(context.hits) == 2


def test_chat_retrieves_with_the_configured_retriever(tiny_model_dir):
    from utils.legal import rag

    seen = []

    class RecordingRag:  # utils/legal/rag.py, noting how it is asked to retrieve
        def prepare(self, question, top_k, retriever):
            seen.append((top_k, retriever))
            return rag.prepare(question, top_k)

        def finalize(self, answer, context):
            return rag.finalize(answer, context)

    engine = Engine.from_pretrained(str(tiny_model_dir), prompt_template=rag.RAG_TEMPLATE)
    handler = ChatHandler(engine, UISettings(rag_top_k=2, rag_retriever="hybrid"), rag=RecordingRag())
    replies = list(handler.chat("入户盗窃怎么判？", [], *params()))
    assert seen == [(2, "hybrid")] and TITLE_SOURCES in notes_of(replies[-1])
    assert "（BM25 + e5）" in header_markdown(engine, True, 2, "hybrid")
    assert "（BM25）" in header_markdown(engine, True, 2)
    assert "法条检索：关闭" in header_markdown(engine, False, 2)  # the page says when retrieval is off


# ---------------------------------------------------------------- pieces without a server


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("alice:s3:cret", ("alice", "s3:cret"))])
def test_parse_auth(value, expected):
    assert parse_auth(value) == expected


@pytest.mark.parametrize("value", ["alice", ":pw", "alice:"])
def test_parse_auth_rejects_malformed(value):
    with pytest.raises(ValueError, match="user:password"):
        parse_auth(value)


def test_history_pairs_skip_notes_and_unanswered_questions():
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "notice", "metadata": {"title": TITLE_TRIMMED}},
        {"role": "assistant", "content": [{"type": "text", "text": "a1"}]},
        {"role": "user", "content": "too long"},
        {"role": "assistant", "content": "please shorten", "metadata": {"title": TITLE_NOTICE}},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert history_pairs(history) == [("q1", "a1"), ("q2", "a2")]


def test_render_sources_marks_each_verdict():
    articles = [{"rank": 1, "citation": "《刑法》第二百六十四条", "text": "盗窃公私财物，数额较大的……", "charges": ["盗窃罪"],
                 "cited": True}]
    citations = [{"text": "《刑法》第二百六十四条", "status": "verified", "relevant": True, "message": ""},
                 {"text": "《民法典》第一千零七十九条", "status": "verified", "relevant": False, "message": ""},
                 {"text": "《刑法》第二百六十三条", "status": "verified", "message": ""},
                 {"text": "《合同法》第五十二条", "status": "repealed", "message": "合同法已废止"},
                 {"text": "《刑法》第九百条", "status": "not_found", "message": ""},
                 {"text": "《网络法》第一条", "status": "unknown_law", "message": ""},
                 {"text": "《刑法》第三百零三条", "status": "verified", "quote_matches": False, "message": "the quote changes a number"},
                 {"text": "《刑法》第二百六三条", "status": "malformed_number", "message": ""},
                 {"text": "《某某市物业管理办法》第三条", "status": "not_in_store", "message": ""}]
    text = render_sources(articles, citations)
    assert "《刑法》第二百六十四条**（罪名：盗窃罪） · 回答已引用" in text and "> 盗窃公私财物" in text
    for mark in ("✅ 已核实（现行有效、引文无误、切题）：《刑法》第二百六十四条", "⚠️ 条文存在，但与所问问题不对应：《民法典》第一千零七十九条",
                 "☑️ 条文存在（未判断是否切题）：《刑法》第二百六十三条", "⛔ 已失效：《合同法》第五十二条 — 合同法已废止", "❌ 查无此条", "❓ 未知法律",
                 "⚠️ 条文存在，但引文与原文不符：《刑法》第三百零三条", "❌ 条号不规范：《刑法》第二百六三条", "ℹ️ 未收录，未核对"):
        assert mark in text
    assert text.count("✅") == 1  # a misquoted, off-topic or unjudged article never gets the tick


# ---------------------------------------------------------------- webui.py's command line


def test_flags_reach_launch(tiny_model_dir, monkeypatch):
    import gradio as gr

    import webui

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: seen.update(kwargs))
    monkeypatch.setenv(webui.AUTH_ENV, "bob:pw")
    webui.main(base_model=str(tiny_model_dir), server_name="127.0.0.2", server_port=7999, share_gradio=True)
    assert (seen["server_name"], seen["server_port"], seen["share"], seen["auth"]) == ("127.0.0.2", 7999, True,
                                                                                       ("bob", "pw"))
    webui.main(base_model=str(tiny_model_dir), auth="carol:pw2")
    assert (seen["server_name"], seen["server_port"], seen["share"], seen["auth"]) == ("127.0.0.1", 7860, False,
                                                                                       ("carol", "pw2"))


def test_default_model_and_the_one_line_hint(tmp_path, monkeypatch, capsys):
    import webui

    (tmp_path / "base_models" / "gemma-3-270m").mkdir(parents=True)
    (tmp_path / "base_models" / "gemma-3-270m" / "config.json").write_text("{}")
    assert webui.default_model(tmp_path) == str(tmp_path / "base_models" / "gemma-3-270m")
    (tmp_path / "lawgpt-demo").mkdir()
    (tmp_path / "lawgpt-demo" / "config.json").write_text("{}")
    assert webui.default_model(tmp_path) == str(tmp_path / "lawgpt-demo")

    monkeypatch.setattr(webui, "MODELS_DIR", tmp_path / "empty")
    monkeypatch.setattr(sys, "argv", ["webui.py"])
    with pytest.raises(SystemExit) as exit_info:
        webui.run()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bash scripts/demo.sh" in err and "Traceback" not in err


def test_examples_come_from_the_resource_file():
    items = load_instruction_data(ROOT / "resources" / "example_infer_data.json", require_output=False)
    assert example_questions() == [item["instruction"] for item in items] and len(items) == 6


def test_stop_event_thread_does_not_linger(server):
    """After all the tests above, no generation thread is left running."""
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name in ("lawgpt-generate", "lawgpt-webui-generate")]
