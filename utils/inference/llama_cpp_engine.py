"""``--engine llama.cpp --gguf FILE``: the weights run in-process in llama.cpp (llama-cpp-python, an optional
dependency: ``bash scripts/install_llama_cpp.sh``), on a file from tools/export_gguf.py; the rest is our engine's.

llama.cpp computes each step's logits; the choice of the next token stays ours. The same per-row processors as
``--engine hf`` (utils/inference/row_processing.RowProcessor: the answer-only repetition penalty, the n-gram ban, EOS
masking, a seeded draw when sampling) turn them into the token, and the same row logic (batching._Row: stop markers,
held-back text, streaming, cancellation, max_new_tokens) ends the answer. So a greedy answer on an f32 GGUF equals
``--engine hf``'s up to the engines' float rounding (tests/test_engines.py), and every setting means what it means
there. The prompt's token ids are ours too (our tokenizer, our template), fed to llama.cpp as ids.

One llama.cpp context serves one request at a time, in arrival order (a request that arrives during another waits
for it): llama-cpp-python's API decodes one sequence per context. ``n_ctx`` is the model's context, at most
``MAX_CTX`` unless ``--engine_ctx`` says otherwise.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from utils.common.errors import ConfigError, LawgptError, ParamError
from utils.inference.batching import QueueFullError, Request, _live, _Row, byte_fallback_ids
from utils.inference.row_processing import RowProcessor

MAX_CTX = 8192  # the KV cache llama.cpp allocates up front: Gemma-3's 32k context would cost memory for nothing
INSTALL = "bash scripts/install_llama_cpp.sh"


class LlamaCppBackend:
    """The engine's backend over one llama.cpp context (the interface of batching.Batcher). Raises ConfigError for a
    missing file or llama-cpp-python not installed, and when the GGUF's vocabulary is not the tokenizer's."""

    def __init__(self, engine, gguf: str, threads: int | None = None, n_ctx: int | None = None, max_queue: int = 64):
        if not Path(gguf).is_file():
            raise ConfigError(f"--gguf {gguf}: no such file (write one with tools/export_gguf.py)")
        try:
            import llama_cpp
        except ImportError as e:
            raise ConfigError(f"--engine llama.cpp needs llama-cpp-python ({e}): install it with `{INSTALL}`") from e
        from utils.model.loader import model_limits

        self.llama_cpp, self.engine, self.gguf = llama_cpp, engine, gguf
        trained = model_limits(engine.loaded.base_model)[0] or MAX_CTX
        self.llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx or min(trained, MAX_CTX), n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        if self.n_vocab < len(engine.tokenizer):
            raise ConfigError(f"--gguf {gguf} has {self.n_vocab} tokens, the tokenizer of {engine.loaded.base_model} "
                              f"{len(engine.tokenizer)}: export the GGUF from this model directory")
        self.threads, self.max_queue = threads, max_queue
        self.byte_ids = byte_fallback_ids(engine.tokenizer)
        self._queue: queue.Queue = queue.Queue()
        self.running = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lawgpt-llama-cpp", daemon=True)
        self._thread.start()
        _live.add(self)  # closed at exit like our batcher: a thread still in llama.cpp at teardown aborts the process

    @property
    def context_length(self) -> int:
        return self.llm.n_ctx()

    @property
    def device(self) -> str:
        return f"llama.cpp on the CPU ({Path(self.gguf).name}, {self.threads or 'all'} threads)"

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.waiting > 0

    def submit(self, requests: list[Request], gather: bool = True) -> None:
        """Queue requests in arrival order (``gather`` does not apply: one at a time)."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        if self.waiting + len(requests) > self.max_queue:
            raise QueueFullError(f"{self.waiting} requests are waiting (the limit is {self.max_queue}): try again later")
        for request in requests:
            self._queue.put(request)

    def close(self, timeout: float = 0) -> None:
        self._closed = True
        self._queue.put(None)
        if timeout:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while (request := self._queue.get()) is not None:
            self.running = 1
            try:
                if request.params.num_beams > 1:
                    raise ParamError("num_beams", "beam search runs on --engine hf only")
                self._generate(request)
            except Exception as e:  # this request alone fails; the next one is served
                if not request.finished.is_set():
                    request._emit("error", e if isinstance(e, LawgptError) else RuntimeError(f"llama.cpp: {e}"))
            finally:
                self.running = 0

    def last_logits(self):
        """The logits of the last token decoded, shape (1, vocab), as a float32 torch tensor (a copy)."""
        import numpy as np
        import torch

        pointer = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy())[None, :]

    def _generate(self, request: Request) -> None:
        started = time.perf_counter()
        row = _Row(request, self.engine.tokenizer, set(self.engine.eos_ids), started, self.byte_ids)
        if request.cancelled.is_set():
            return row.finish("stopped", 0)
        processor = RowProcessor([row], self.engine.eos_ids)
        self.llm.reset()
        self.llm.eval(request.ids)
        while not row.done:
            scores = processor(None, self.last_logits())  # it reads the row's own tokens
            token = int(scores[0, : len(self.engine.tokenizer)].argmax())  # rows past the tokenizer: padding
            row.add(token)
            if not row.done:
                if len(request.ids) + len(row.new) >= self.context_length:
                    return row.finish("length", len(row.new))
                self.llm.eval([token])
