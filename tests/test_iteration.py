"""Iteration-level scheduling (utils/inference/iteration.py): requests that arrive while a batch runs join it at the
next step, and every answer is still the one-by-one answer — on the tiny LLaMA (full attention) and on a tiny
Gemma-3 whose sliding window (8 tokens) is far shorter than the answers, so joining, padding on the left and
trimming all cross the window."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from api_harness import QUESTIONS

from utils.inference.engine import Engine, GenerationParams

LONG = GenerationParams(max_new_tokens=40, repetition_penalty=1.1, ignore_eos=True, stop=())


@pytest.fixture(scope="module")
def gemma_dir(tiny_model_dir, tmp_path_factory):
    """A random Gemma-3 text model (3 sliding-window layers of 8 tokens, 1 global) with the tiny tokenizer."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from utils.model.loader import load_tokenizer

    out = tmp_path_factory.mktemp("tiny-gemma3")
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        shutil.copy(tiny_model_dir / name, out / name)
    tokenizer = load_tokenizer(out)
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=8,
                              layer_types=["sliding_attention"] * 3 + ["full_attention"], max_position_embeddings=1024,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    Gemma3ForCausalLM(config).save_pretrained(str(out))
    return out


@pytest.mark.parametrize("model", ["llama", "gemma3"])
def test_requests_join_a_running_batch_and_answer_as_alone(model, tiny_model_dir, gemma_dir):
    directory = tiny_model_dir if model == "llama" else gemma_dir
    engine = Engine.from_pretrained(str(directory), max_batch_size=8, batch_wait_ms=0)
    try:
        assert engine.batcher.iterative
        questions = [QUESTIONS[0], QUESTIONS[1] * 4, QUESTIONS[2], "罪"]  # longer and shorter than the running width
        prompts = [engine.prompt(q) for q in questions]
        first = LONG.replace(max_new_tokens=600)  # still running long after the others joined, however fast
        settings = [first, LONG, LONG, LONG]
        alone = [engine.generate([p], params)[0] for p, params in zip(prompts, settings)]
        joined_before = engine.batcher.joined
        first_text = {}

        def listener(i):
            def hear(kind, value):
                if kind == "text" and i not in first_text:
                    first_text[i] = time.monotonic()
            return hear

        running = engine.submit(prompts[0], first, listener=listener(0))
        while len(first_text) < 1 or engine.batcher.running < 1:  # the first request is being generated
            time.sleep(0.001)
        time.sleep(0.05)
        late = [engine.submit(p, LONG, listener=listener(i)) for i, p in enumerate(prompts[1:], 1)]
        results = [running.wait(60)] + [r.wait(60) for r in late]
        assert [r.text for r in results] == [a.text for a in alone]
        assert [r.new_tokens for r in results] == [600, 40, 40, 40]
        assert engine.batcher.joined - joined_before == 3  # they joined the running batch ...
        assert all(first_text[i] < first_text[0] + results[0].seconds for i in (1, 2, 3))  # ... before it ended
    finally:
        engine.close()


def test_a_joined_row_keeps_its_settings_and_seed(tiny_model_dir):
    engine = Engine.from_pretrained(str(tiny_model_dir), max_batch_size=4, batch_wait_ms=0)
    try:
        sampled = GenerationParams(max_new_tokens=30, temperature=0.9, top_k=20, seed=5, no_repeat_ngram_size=2,
                                   ignore_eos=True, stop=())
        want = engine.generate([engine.prompt(QUESTIONS[3])], sampled)[0].text
        running = engine.submit(engine.prompt(QUESTIONS[4]), LONG.replace(max_new_tokens=600))
        while engine.batcher.running < 1:
            time.sleep(0.001)
        got = engine.submit(engine.prompt(QUESTIONS[3]), sampled).wait(60).text
        running.wait(60)
        assert got == want and engine.batcher.joined >= 1
    finally:
        engine.close()


def test_cancelling_one_joined_row_leaves_the_others(tiny_model_dir):
    engine = Engine.from_pretrained(str(tiny_model_dir), max_batch_size=4, batch_wait_ms=0)
    try:
        alone = engine.generate([engine.prompt(QUESTIONS[6])], LONG)[0].text
        keep = engine.submit(engine.prompt(QUESTIONS[6]), LONG)
        event = threading.Event()
        stream = engine.stream_prompt(engine.prompt(QUESTIONS[5]), LONG.replace(max_new_tokens=400), stop_event=event)
        next(stream)
        event.set()
        list(stream)
        assert keep.wait(60).text == alone
    finally:
        engine.close()
