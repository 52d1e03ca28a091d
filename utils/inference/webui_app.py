"""The gradio 6 legal chat behind webui.py: ``build_app(engine, ...)`` returns the Blocks, so tests launch it too.

One chat endpoint (``/chat``, a ``gr.ChatInterface`` inside Blocks). Each reply is a list of assistant
messages: the answer itself (plain content) plus optional notes that carry a ``metadata.title`` and render
as collapsible boxes — a trimmed-history notice, the beam-search note, a polite refusal, an error raised
during generation, and with ``--rag`` the retrieved articles and the citation check. Only plain answers go
back into the next prompt's history; the notes are for the reader, not for the model.

Generation runs through utils/inference/engine.py, whose batcher generates the chats admitted at once together (one
model, several users); gradio's queue holds the rest.
The stop button cancels the event: gradio closes our generator, which closes the engine's stream, which
stops ``model.generate`` at the next token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from utils.common.datafiles import load_instruction_data
from utils.common.errors import ConfigError
from utils.common.paths import REPO_ROOT
from utils.inference.engine import Engine, GenerationParams, PromptTooLongError
from utils.legal.rag import RAG_TEMPLATE

log = logging.getLogger("lawgpt.webui")

EXAMPLES_PATH = REPO_ROOT / "resources" / "example_infer_data.json"
PROJECT = "LaWGPT 法律问答"
DISCLAIMER = (
    "本项目仅供学术研究使用，回答不构成任何法律意见；模型可能给出错误的事实、法条或结论，"
    "请以正式的法律文本和执业律师的意见为准。"
)
# Titles of the note messages (also how tests and the browser recognise them).
TITLE_NOTICE = "提示"
TITLE_TRIMMED = "上下文已满"
TITLE_BEAMS = "束搜索"
TITLE_ERROR = "⚠️ 生成出错"
TITLE_SOURCES = "检索到的法条与引用核对"
VERDICT_MARKS = {
    "verified": "✅ 已核实（现行有效、引文无误、切题）",
    "law_in_force": "ℹ️ 法律现行有效（未引具体条文）",
    "not_found": "❌ 查无此条",
    "repealed": "⛔ 已失效",
    "unknown_law": "❓ 未知法律",
    "not_in_store": "ℹ️ 未收录，未核对",
    "malformed_number": "❌ 条号不规范",
}
# A green tick means confirmed: the article exists and is in force, the quote is faithful and the article fits the
# question (utils/legal/citations.Verdict.confirmed); anything less says what is missing
MARK_MISQUOTED = "⚠️ 条文存在，但引文与原文不符"
MARK_NOT_RELEVANT = "⚠️ 条文存在，但与所问问题不对应"
MARK_UNJUDGED = "☑️ 条文存在（未判断是否切题）"


@dataclass(frozen=True)
class UISettings:
    max_input_chars: int = 2000  # longer questions get a polite note instead of a generation
    concurrency_limit: int = 16  # chats admitted at once; the engine generates them together (utils/inference/batching.py)
    queue_size: int = 64  # waiting requests beyond this are refused by gradio ("queue is full")
    rag_top_k: int = 3
    rag_retriever: str = "auto"  # or "trained", "bm25", "hybrid" (utils/legal/rag.py)

    def __post_init__(self) -> None:
        for name in ("max_input_chars", "concurrency_limit", "queue_size", "rag_top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} {getattr(self, name)} must be >= 1")


def example_questions(path: str | Path = EXAMPLES_PATH) -> list[str]:
    """The example questions shown under the chat: the instructions of resources/example_infer_data.json."""
    return [item["instruction"] for item in load_instruction_data(path, require_output=False)]


def note(title: str, text: str) -> dict:
    """An assistant message rendered as a titled, collapsible box; never fed back to the model."""
    return {"role": "assistant", "content": text, "metadata": {"title": title}}


def answer_message(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _text(content) -> str:
    """Message content as text: gradio hands it over as a str, or as a list of typed blocks after a round trip."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("value") or "")
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    return ""


def history_pairs(history: Sequence[dict]) -> list[tuple[str, str]]:
    """(question, answer) turns from gradio's message history; notes and unanswered questions are left out."""
    pairs: list[tuple[str, str]] = []
    question, answer = None, []
    for message in history:
        role = message.get("role")
        if role == "user":
            if question is not None and answer:
                pairs.append((question, "".join(answer)))
            question, answer = _text(message.get("content")), []
        elif role == "assistant" and not (message.get("metadata") or {}).get("title"):
            answer.append(_text(message.get("content")))
    if question is not None and answer:
        pairs.append((question, "".join(answer)))
    return [(q, a) for q, a in pairs if q.strip() and a.strip()]


def render_sources(articles: Sequence[dict], citations: Sequence[dict]) -> str:
    """Markdown for the retrieved articles and the verdict on each citation the answer makes.

    ``articles``: dicts with ``citation``, ``text`` and optionally ``rank``, ``charges``, ``cited``
    (utils/retrieval.Hit.to_dict + utils/rag.finalize). ``citations``: dicts with ``text``, ``status``
    (utils/legal/citations.py VERDICTS), ``quote_matches`` and ``message`` (utils/legal/citations.Verdict.to_dict); a
    verified citation whose quote does not match — in wording or in a number — or whose article does not fit the
    question (``relevant`` False) is shown as a warning, not a tick; one not judged against a question is unticked.
    """
    lines = []
    if articles:
        lines.append(f"**检索到的法条（{len(articles)} 条）**")
        for i, article in enumerate(articles, start=1):
            charges = f"（罪名：{'、'.join(article['charges'])}）" if article.get("charges") else ""
            cited = " · 回答已引用" if article.get("cited") else ""
            lines.append(f"\n{article.get('rank', i)}. **{article['citation']}**{charges}{cited}")
            lines.extend(f"   > {row}" for row in str(article.get("text", "")).splitlines() if row.strip())
    else:
        lines.append("**检索到的法条**：无")
    lines.append("\n**回答中的引用**")
    if not citations:
        lines.append("回答没有引用具体法条。")
    for citation in citations:
        mark = VERDICT_MARKS.get(citation.get("status"), f"? {citation.get('status')}")
        if citation.get("status") == "verified":
            if citation.get("quote_matches") is False:
                mark = MARK_MISQUOTED
            elif citation.get("relevant") is False:
                mark = MARK_NOT_RELEVANT
            elif citation.get("relevant") is None:
                mark = MARK_UNJUDGED
        message = f" — {citation['message']}" if citation.get("message") else ""
        lines.append(f"- {mark}：{citation.get('text', '')}{message}")
    return "\n".join(lines)


class ChatHandler:
    """``chat`` is the function gradio calls: ``(message, history, *parameters) -> iterator of message lists``.

    ``rag`` is a module-like object with ``prepare(question, top_k) -> context`` (``context.input``: the
    articles as the template's input) and ``finalize(answer, context) -> {articles, citations, ...}``:
    utils/legal/rag.py. The engine must then use a template with an input slot (templates/law_rag.json).
    """

    def __init__(self, engine: Engine, settings: UISettings = UISettings(), rag=None):
        self.engine = engine
        self.settings = settings
        self.rag = rag

    def chat(self, message: str, history: list[dict], temperature: float = 0.0, top_p: float = 0.9,
                 top_k: float = 40, num_beams: float = 1, max_new_tokens: float = 256,
                 repetition_penalty: float = 1.1, streaming: bool = True) -> Iterator[list[dict]]:
        question = (message or "").strip()
        limit = self.settings.max_input_chars
        if not question:
            yield [note(TITLE_NOTICE, "请先输入一个法律问题。")]
            return
        if len(question) > limit:
            yield [note(TITLE_NOTICE, f"抱歉，问题太长了（{len(question)} 字）。请把问题缩短到 {limit} 字以内再发送，"
                                      "可以只保留关键事实。")]
            return
        notes: list[dict] = []
        shown = ""
        try:
            params = GenerationParams(temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                                      num_beams=int(num_beams), max_new_tokens=int(max_new_tokens),
                                      repetition_penalty=float(repetition_penalty))
            context = None
            if self.rag:
                context = self.rag.prepare(question, top_k=self.settings.rag_top_k, retriever=self.settings.rag_retriever)
            # With --rag the retrieved articles are the template's input (templates/law_rag.json).
            instruction, material = (context.instruction, context.input) if context is not None else (question, None)
            try:
                kept, dropped = self.engine.fit_history(instruction, material, history_pairs(history),
                                                        params.max_new_tokens)
            except PromptTooLongError as e:
                yield [note(TITLE_NOTICE, f"抱歉，这个问题加上要生成的回答放不进模型的上下文（{e}）。"
                                          "请缩短问题，或在参数里调小“最多生成 token 数”。")]
                return
            if dropped:
                notes.append(note(TITLE_TRIMMED, f"对话太长，模型的上下文（{self.engine.context_length} 个 token）"
                                                 f"放不下：最早的 {dropped} 轮对话没有放进这次的提示，回答不会参考它们。"))
            if params.num_beams > 1 and streaming:
                notes.append(note(TITLE_BEAMS, f"束搜索（beams={params.num_beams}）要到结束才知道答案，"
                                               "这次不流式输出，请稍候。"))
            if streaming and params.num_beams == 1:
                with closing(self.engine.stream(instruction, material, kept, params)) as stream:
                    for text in stream:
                        shown = text
                        yield notes + [answer_message(shown)]
            else:
                prompt = self.engine.prompt(instruction, material, kept)
                result: list = []
                yield from self._wait(lambda stop: result.extend(self.engine.generate([prompt], params, stop)),
                                      notes + [note(TITLE_NOTICE, "正在生成，完成后一次显示……")])
                shown = result[0].text
            reply = notes + [answer_message(shown)]
            if context is not None:
                record = self.rag.finalize(shown, context)
                reply.append(note(TITLE_SOURCES, render_sources(record["articles"], record["citations"])))
            yield reply
        except Exception as e:  # shown to the user in the chat and logged with its traceback, never swallowed
            log.exception("generation failed")
            partial = [answer_message(shown)] if shown else []
            yield notes + partial + [note(TITLE_ERROR, f"生成时出错：{type(e).__name__}: {e}")]

    @staticmethod
    def _wait(work: Callable[[threading.Event], None], waiting: list[dict]) -> Iterator[list[dict]]:
        """Run a non-streaming generation in a thread, yielding ``waiting`` until it is done.

        The yields are what lets the stop button work here too: gradio can only close a generator at a
        yield, and closing it sets the stop event, which ends ``model.generate`` at its next step.
        """
        stop, failure = threading.Event(), []

        def run() -> None:
            try:
                work(stop)
            except Exception as e:  # re-raised in the chat function, which shows it
                failure.append(e)

        thread = threading.Thread(target=run, name="lawgpt-webui-generate", daemon=True)
        thread.start()
        try:
            yield waiting
            while thread.is_alive():
                thread.join(0.5)
                if thread.is_alive():
                    yield waiting
        finally:
            stop.set()
            thread.join()
        if failure:
            raise failure[0]


def _shown_path(path: str) -> str:
    """Paths inside the repository relative to it (shorter, and no home directory on the page)."""
    root = EXAMPLES_PATH.parent.parent
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def header_markdown(engine: Engine, rag: bool, rag_top_k: int, rag_retriever: str = "bm25") -> str:
    """The page header; ``rag_retriever`` is the resolved name (utils/legal/rag.resolve_retriever)."""
    loaded = engine.loaded
    model = f"`{_shown_path(loaded.base_model)}`"
    if loaded.lora_weights:
        model += f" + LoRA `{_shown_path(loaded.lora_weights)}`"
    parts = [f"模型：{model}", f"模板：`{engine.prompter.name}`", f"上下文：{engine.context_length} tokens",
             f"设备：{engine.device}"]
    if rag:
        label = {"hybrid": "BM25 + e5", "trained": "BM25 + 训练的排序模型"}.get(rag_retriever, "BM25")
        parts.append(f"法条检索：每问 {rag_top_k} 条（{label}）")
    else:  # say it: a model trained on retrieved articles invents citations without them
        parts.append("法条检索：关闭" + ("（本模型依检索法条作答，关闭后引用多为编造）"
                                       if loaded.prompt_template == RAG_TEMPLATE else ""))
    return f"# {PROJECT}\n{' · '.join(parts)}\n\n> **免责声明**：{DISCLAIMER}"


def build_app(engine: Engine, settings: UISettings = UISettings(), rag=None,
              examples: Sequence[str] | None = None, handler: Callable | None = None):
    """The Blocks app, queued; launch it with ``app.launch(**launch_options(...))``."""
    import gradio as gr

    defaults = GenerationParams()
    context = engine.context_length or 2048
    max_tokens_cap = max(1, min(2048, context - 16))
    # A bound generator method, so gradio sees a generator function and streams it.
    handler = handler or ChatHandler(engine, settings, rag).chat
    with gr.Blocks(title="LaWGPT") as app:
        gr.Markdown(header_markdown(engine, rag is not None, settings.rag_top_k, settings.rag_retriever), elem_id="lawgpt-header")
        with gr.Accordion("生成参数", open=False) as panel:
            streaming = gr.Checkbox(True, label="流式输出（逐字显示）", elem_id="lawgpt-streaming")
            temperature = gr.Slider(0.0, 2.0, defaults.temperature, step=0.05, label="temperature（0 = 贪心解码）")
            top_p = gr.Slider(0.05, 1.0, defaults.top_p, step=0.05, label="top-p（采样时）")
            top_k = gr.Slider(0, 200, defaults.top_k, step=1, label="top-k（采样时，0 = 不限）")
            num_beams = gr.Slider(1, 8, defaults.num_beams, step=1, label="beams（束搜索宽度；> 1 时不流式输出）")
            max_new_tokens = gr.Slider(1, max_tokens_cap, min(defaults.max_new_tokens, max_tokens_cap), step=1,
                                       label="最多生成 token 数")
            repetition_penalty = gr.Slider(1.0, 2.0, defaults.repetition_penalty, step=0.05,
                                           label="repetition penalty（> 1 抑制重复）")
        num_beams.change(
            lambda beams: gr.Checkbox(interactive=int(beams) == 1,
                                      info=None if int(beams) == 1 else "beams > 1：束搜索只在结束时给出答案，流式输出已关闭"),
            num_beams, streaming, queue=False, api_visibility="undocumented",
        )
        chat = gr.ChatInterface(
            handler,
            chatbot=gr.Chatbot(height=480, label="对话", elem_id="lawgpt-chatbot", placeholder="请输入法律问题"),
            textbox=gr.Textbox(placeholder="输入法律问题，按回车发送", elem_id="lawgpt-input", submit_btn="发送",
                               stop_btn="停止", show_label=False),
            additional_inputs=[temperature, top_p, top_k, num_beams, max_new_tokens, repetition_penalty, streaming],
            additional_inputs_accordion=panel,
            examples=[[q] for q in (example_questions() if examples is None else examples)],
            examples_label="示例问题",
            api_name="chat",
            concurrency_limit=settings.concurrency_limit,
            fill_height=False,
        )
        clear = gr.Button("清空对话", elem_id="lawgpt-clear", size="sm")
        clear.click(lambda: ([], []), None, [chat.chatbot, chat.chatbot_state], queue=False,
                    api_visibility="undocumented")
    app.queue(max_size=settings.queue_size, default_concurrency_limit=settings.concurrency_limit)
    return app


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``user:password`` (the password may contain ':') → a gradio auth tuple; empty → no login."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth / LAWGPT_WEBUI_AUTH must look like user:password (both non-empty)")
    return user, password


def launch_options(server_name: str = "127.0.0.1", server_port: int = 7860, share: bool = False,
                   auth: tuple[str, str] | None = None) -> dict:
    """Keyword arguments for ``app.launch``: the command line's flags, all of them taking effect."""
    if not 0 <= server_port <= 65535:
        raise ConfigError(f"--server_port {server_port} must be in 0..65535")
    return {"server_name": server_name, "server_port": server_port, "share": share, "auth": auth,
            "show_error": True, "footer_links": ["api", "gradio"]}
