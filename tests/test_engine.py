"""utils/inference/engine.py on the tiny random LLaMA: batching, streaming, stopping, parameters, history."""

import threading

import pytest
import torch

from utils.inference.engine import Engine, GenerationParams, PromptTooLongError
from utils.inference.stopping import held_back

QUESTIONS = ["酒驾撞人怎么判刑？", "请介绍赌博罪的定义。", "加班工资", "民间借贷受国家保护的合法利息是多少？请结合案例详细回答。"]
GREEDY = GenerationParams(max_new_tokens=20)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine.from_pretrained(str(tiny_model_dir))


@pytest.fixture()
def fresh_engine(tiny_model_dir):
    """An engine of its own, for tests that change the model's weights or config."""
    return Engine.from_pretrained(str(tiny_model_dir))


def test_batched_greedy_equals_one_by_one(engine):
    prompts = [engine.prompt(q) for q in QUESTIONS]
    lengths = {engine.count_tokens(p) for p in prompts}
    assert len(lengths) > 1, "prompts of different lengths are needed to exercise left padding"
    batched = engine.generate(prompts, GREEDY)
    single = [engine.generate([p], GREEDY)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in single]
    assert all(g.text for g in batched)
    # generate_batched groups by length but hands every answer back under its own index
    seen = {i: g.text for batch in engine.generate_batched(prompts, GREEDY, batch_size=3) for i, g in batch}
    assert seen == {i: g.text for i, g in enumerate(single)}


def test_answer_is_only_the_answer(engine):
    text = engine.answer(QUESTIONS[0], max_new_tokens=12)
    assert engine.prompter.response_split not in text and QUESTIONS[0] not in text
    assert text == engine.generate([engine.prompt(QUESTIONS[0])], GREEDY.replace(max_new_tokens=12))[0].text


def test_stream_yields_growing_text_ending_in_the_batch_answer(engine):
    pieces = list(engine.stream(QUESTIONS[1], params=GREEDY))
    assert len(pieces) > 3
    assert all(later.startswith(earlier) for earlier, later in zip(pieces, pieces[1:]))
    assert pieces[-1] == engine.generate([engine.prompt(QUESTIONS[1])], GREEDY)[0].text


def test_streamed_text_only_grows_across_byte_fallback_runs(engine):
    """A run of byte tokens decodes differently as it grows ("L", then "��" once a stray continuation byte
    follows), so the stream holds the run back; every piece extends the last and the final is the full decode."""
    from utils.inference.batching import Request, _Row, byte_fallback_ids

    tokenizer = engine.tokenizer
    byte_ids = byte_fallback_ids(tokenizer)
    assert len(byte_ids) == 256
    tokens = ["践", "广", "<0x4C>", "<0xB9>", "知", "<0xE5>", "<0x88>", "<0x91>", "害"]  # a stray run, then 刑 in bytes
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.decode(ids[:3]) == "践广L" and tokenizer.decode(ids[:4]) == "践广\ufffd\ufffd"
    request = Request([1], GREEDY.replace(max_new_tokens=len(ids)), stops=[])
    row = _Row(request, tokenizer, set(), 0.0, byte_ids)
    for token in ids:
        row.add(token)
    events = []
    while not request._events.empty():
        events.append(request._events.get())
    pieces = [value for kind, value in events if kind == "text"]
    assert all(later.startswith(earlier) for earlier, later in zip(pieces, pieces[1:])), pieces
    assert "践广L" not in pieces and pieces[-1] == tokenizer.decode(ids) == "践广\ufffd\ufffd知刑害"
    assert events[-1][0] == "done" and events[-1][1].text == pieces[-1]


def test_stream_refuses_beams_and_surfaces_errors(engine):
    with pytest.raises(ValueError, match="num_beams"):
        list(engine.stream("问题", num_beams=2))
    with pytest.raises(ValueError, match="unknown generation parameter"):
        list(engine.stream("问题", max_tokens=5))


def _greedy_ids(engine, prompt, n):
    ids = torch.tensor([engine.encode(prompt)])
    out = engine.model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, min_new_tokens=n,
                                pad_token_id=engine.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_stops_on_eos(fresh_engine):
    engine = fresh_engine
    prompt = engine.prompt(QUESTIONS[0])
    ids = _greedy_ids(engine, prompt, 12)
    k = next(i for i in range(3, 12) if ids[i] not in ids[:i])
    # Give EOS the same output row as the k-th greedy token: their logits tie and argmax takes the
    # lower id (EOS), so the answer must end exactly there — the first k tokens, then EOS.
    eos = engine.tokenizer.eos_token_id
    assert eos < ids[k]
    with torch.no_grad():
        engine.model.lm_head.weight[eos] = engine.model.lm_head.weight[ids[k]]
    params = GenerationParams(max_new_tokens=12, repetition_penalty=1.0)
    result = engine.generate([prompt, engine.prompt(QUESTIONS[3])], params)[0]
    assert result.finish_reason == "eos" and result.new_tokens == k + 1
    assert result.text == engine.tokenizer.decode(ids[:k], skip_special_tokens=True).strip()
    # ignore_eos generates the full budget regardless
    full = engine.generate([prompt], params.replace(ignore_eos=True))[0]
    assert full.finish_reason == "length" and full.new_tokens == 12


def test_stops_on_next_turn_marker(engine):
    prompt = engine.prompt(QUESTIONS[2])
    plain = engine.generate([prompt], GREEDY.replace(stop=()))[0]
    marker = plain.text[6:8]
    assert len(marker) == 2 and marker.strip() and plain.text.index(marker) == 6
    cut = engine.generate([prompt], GREEDY.replace(stop=(marker,)))[0]
    assert cut.finish_reason == "stop" and cut.new_tokens < plain.new_tokens
    assert cut.text == plain.text[:6].strip()
    streamed = list(engine.stream_prompt(prompt, GREEDY.replace(stop=(marker,))))
    assert streamed[-1] == cut.text and all(marker not in s for s in streamed)


def test_template_marker_is_the_default_stop(engine):
    assert engine._stops(GREEDY) == tuple(engine.prompter.stop) == ("### 问题:",)


def test_held_back_marker_prefix():
    assert held_back("答案### 问", ["### 问题:"]) == 5
    assert held_back("答案#", ["### 问题:"]) == 1
    assert held_back("答案", ["### 问题:"]) == 0


def test_stop_event(engine):
    event = threading.Event()
    event.set()
    result = engine.generate([engine.prompt(QUESTIONS[0])], GREEDY, stop_event=event)[0]
    assert result.finish_reason == "stopped" and result.new_tokens < GREEDY.max_new_tokens

    event = threading.Event()
    pieces = []
    for text in engine.stream(QUESTIONS[0], params=GenerationParams(max_new_tokens=200, ignore_eos=True, stop=()),
                              stop_event=event):
        pieces.append(text)
        event.set()
    assert 0 < len(pieces[-1]) < len(engine.answer(QUESTIONS[0], max_new_tokens=200, ignore_eos=True, stop=()))


def test_closing_a_stream_early_frees_the_engine(engine):
    stream = engine.stream(QUESTIONS[0], params=GenerationParams(max_new_tokens=400, ignore_eos=True, stop=()))
    next(stream)
    stream.close()  # must stop the thread and release the lock, or the next call would hang
    assert engine.answer(QUESTIONS[1], max_new_tokens=4)


def test_sampling_with_seed_is_reproducible_and_differs_from_greedy(engine):
    prompt = engine.prompt(QUESTIONS[0])
    sampled = GenerationParams(max_new_tokens=16, temperature=1.5, top_k=0, top_p=1.0, seed=7)
    a, b = (engine.generate([prompt], sampled)[0].text for _ in range(2))
    assert a == b
    assert a != engine.generate([prompt], GREEDY.replace(max_new_tokens=16))[0].text


@pytest.mark.parametrize(
    "bad", [{"max_new_tokens": 0}, {"top_p": 0}, {"temperature": -1}, {"num_beams": 0}, {"do_sample": True}]
)
def test_bad_parameters_name_themselves(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        GenerationParams(**bad)


def test_history_in_prompt_and_trimmed_to_context(fresh_engine):
    engine = fresh_engine
    history = [(f"第{i}个问题：" + "盗窃" * 40, "回答" * 40) for i in range(6)]
    assert "第0个问题" in engine.prompt("现在的问题", history=history)
    engine.model.config.max_position_embeddings = 600
    kept, dropped = engine.fit_history("现在的问题", None, history, max_new_tokens=64)
    assert dropped > 0 and kept == history[dropped:]
    assert engine.count_tokens(engine.prompt("现在的问题", history=kept)) + 64 <= 600
    with pytest.raises(PromptTooLongError, match="context of 600"):
        engine.fit_history("长" * 2000, None, [], max_new_tokens=64)
    with pytest.raises(PromptTooLongError):
        engine.generate([engine.prompt("长" * 2000)], GREEDY)


def test_requests_with_different_settings_share_a_batch_and_keep_their_answers(tiny_model_dir):
    """Dynamic batching: whatever else is in the batch, a request gets its one-by-one answer."""
    engine = Engine.from_pretrained(str(tiny_model_dir), batch_wait_ms=200)
    settings = [
        (QUESTIONS[0], GREEDY),
        (QUESTIONS[1], GREEDY.replace(max_new_tokens=5, repetition_penalty=1.0)),
        (QUESTIONS[2], GenerationParams(max_new_tokens=12, temperature=1.2, top_k=20, top_p=0.9, seed=5)),
        (QUESTIONS[3], GREEDY.replace(ignore_eos=True, no_repeat_ngram_size=3, stop=())),
        (QUESTIONS[0], GREEDY.replace(max_new_tokens=30, min_new_tokens=25)),
    ]
    alone = [engine.generate([engine.prompt(q)], p)[0] for q, p in settings]
    before = engine.batcher.batches
    requests = [engine.submit(engine.prompt(q), p) for q, p in settings]  # all within the batch window
    together = [r.wait(60) for r in requests]
    assert engine.batcher.batches - before == 1
    assert [(g.text, g.new_tokens, g.finish_reason) for g in together] == \
        [(g.text, g.new_tokens, g.finish_reason) for g in alone]
    streamed = list(engine.submit(engine.prompt(QUESTIONS[1]), GREEDY))  # a Request iterates its growing text
    assert streamed[-1] == engine.generate([engine.prompt(QUESTIONS[1])], GREEDY)[0].text
    engine.close()


def test_a_request_cancelled_while_waiting_never_runs(tiny_model_dir):
    from utils.inference.engine import QueueFullError

    engine = Engine.from_pretrained(str(tiny_model_dir), max_batch_size=1, max_queue=1)
    running = engine.submit(engine.prompt(QUESTIONS[0]), GREEDY.replace(max_new_tokens=300, ignore_eos=True, stop=()))
    next(iter(running))  # it is generating
    waiting = engine.submit(engine.prompt(QUESTIONS[1]), GREEDY)
    with pytest.raises(QueueFullError, match="limit is 1"):
        engine.submit(engine.prompt(QUESTIONS[2]), GREEDY)
    waiting.cancel()
    running.cancel()
    assert waiting.wait(30).finish_reason == "stopped" and waiting.result.new_tokens == 0
    assert running.wait(30).finish_reason == "stopped" and running.result.new_tokens < 300
    engine.close()
    assert not engine.batcher._thread.is_alive()  # joined: a thread left in torch at exit aborts the process



@pytest.mark.parametrize("penalize_prompt, banned", [(False, {7}), (True, {3, 4, 7})])
def test_repetition_controls_count_the_answer_only_unless_told(penalize_prompt, banned):
    """--rag answers must be able to quote the prompt's articles: by default the n-gram ban (and the penalty) see
    only the answer's own tokens; penalize_prompt=True counts the prompt too (transformers' way)."""
    from utils.inference.batching import Request, _Row
    from utils.inference.row_processing import RowProcessor

    params = GREEDY.replace(no_repeat_ngram_size=1, repetition_penalty=1.0, penalize_prompt=penalize_prompt)
    row = _Row(Request([3, 4], params, ()), tokenizer=None, eos_ids=set(), started=0.0)
    row.new = [7]
    input_ids = torch.tensor([[0, 3, 4, 7]])  # one pad, a 2-token prompt, one generated token (not read: the row's own)
    scores = RowProcessor([row], eos_ids=[])(input_ids, torch.zeros(1, 10))
    assert {i for i in range(10) if scores[0, i] == -float("inf")} == banned


@pytest.mark.parametrize("given, field, kept", [
    ({"temperature": 2}, "temperature", 2.0), ({"repetition_penalty": 2}, "repetition_penalty", 2.0),
    ({"top_p": 1}, "top_p", 1.0), ({"max_new_tokens": 64.0}, "max_new_tokens", 64),
    ({"temperature": 1e-40}, "temperature", 0.0),  # below vLLM's 1e-5: greedy, never NaN
])
def test_numbers_are_coerced_once_for_every_front_end(given, field, kept):
    """An integer temperature (valid JSON, valid OpenAI, what fire makes of `--temperature 2`) is a float here."""
    value = getattr(GenerationParams(**given), field)
    assert value == kept and type(value) is type(kept)


@pytest.mark.parametrize("bad, field", [
    ({"temperature": float("nan")}, "temperature"), ({"top_k": 2.5}, "top_k"), ({"seed": True}, "seed"),
    ({"repetition_penalty": 1e-45}, "repetition_penalty"), ({"repetition_penalty": 1e9}, "repetition_penalty"),
    ({"max_new_tokens": "64"}, "max_new_tokens"), ({"do_sample": "yes"}, "do_sample"), ({"seed": 2**70}, "seed"),
])
def test_bad_numbers_are_refused_naming_the_field(bad, field):
    from utils.inference.engine import ParamError

    with pytest.raises(ParamError, match=field) as error:
        GenerationParams(**bad)
    assert error.value.field == field


def _poisoned(params: GenerationParams, **raw) -> GenerationParams:
    """Settings that slipped past validation (as an integer temperature did): the batch must survive them."""
    for name, value in raw.items():
        object.__setattr__(params, name, value)
    return params


def test_a_poisoned_request_fails_alone_and_its_batch_mates_keep_their_answers(tiny_model_dir):
    engine = Engine.from_pretrained(str(tiny_model_dir), batch_wait_ms=300)
    alone = [engine.generate([engine.prompt(q)], GREEDY)[0].text for q in QUESTIONS]
    poisons = [
        _poisoned(GenerationParams(max_new_tokens=20, temperature=1.0, seed=1), temperature=1e-40),  # NaN sampling
        _poisoned(GenerationParams(max_new_tokens=20), repetition_penalty=-1.0),  # transformers refuses it
        _poisoned(GenerationParams(max_new_tokens=20, temperature=1.0, seed=1), seed=2**80),  # torch refuses it
    ]
    for poison in poisons:
        before = engine.batcher.batches
        good = [engine.submit(engine.prompt(q), GREEDY) for q in QUESTIONS[:2]]
        bad = engine.submit(engine.prompt(QUESTIONS[2]), poison)
        rest = [engine.submit(engine.prompt(q), GREEDY) for q in QUESTIONS[2:]]
        with pytest.raises(Exception):  # noqa: B017 - the poisoned request fails, whatever the library raised
            bad.wait(60)
        assert [r.wait(60).text for r in good + rest] == alone
        assert engine.batcher.batches - before == 1  # all five shared one batch
    engine.close()
