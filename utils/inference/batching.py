"""Dynamic batching: requests that arrive together are generated together, each with its own settings.

One thread (:class:`Batcher`) owns the model. Callers :meth:`~Batcher.submit` requests (token ids + their
GenerationParams) and read events from the returned :class:`Request`; the batcher gathers a burst of arrivals
(until ``batch_wait_s`` passes without a new one, 10x that at most) and starts it as one left-padded batch. Where the
model's cache allows it (plain and sliding-window attention: LLaMA, Qwen, Gemma-3, …), the batch is stepped token by
token and requests that arrive while it runs join it at the next step (iteration-level scheduling,
utils/inference/iteration.py); otherwise, and for beam search, it is one ``model.generate`` and later requests wait
for the next batch (batch-at-a-time).

Inside a batch, :class:`RowProcessor` applies each row's own settings — repetition penalty, n-gram ban, EOS masking
(HF's processors, on the row's own tokens, never padding) and, when it samples, a draw from its own seeded generator
that leaves only the drawn token; the next token is the argmax. :class:`_Row` ends each row on EOS, its stop
strings, its ``max_new_tokens`` or its cancellation, and streams its text. So a greedy answer does not depend on
what else is in the batch or when it joined (tested against one-by-one), and a seeded sample is reproducible.
"""

from __future__ import annotations

import atexit
import queue
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from utils.common.errors import ConfigError, LawgptError
from utils.inference.iteration import IterativeRun, supports_iteration
from utils.inference.row_processing import RowController, RowProcessor
from utils.inference.stopping import StopOnEvent, StopOnText, held_back, without_thinking

GATHER_CAP = 10  # a batch waits at most this many batch_wait_s for a burst of requests to finish arriving
_live: weakref.WeakSet = weakref.WeakSet()
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def byte_fallback_ids(tokenizer) -> frozenset[int]:
    """Ids of a byte-fallback tokenizer's raw-byte tokens (``<0xE4>``; SentencePiece/LLaMA/Gemma); empty for others.

    Their text is not stable while the run grows: the decoder turns a run of byte tokens that is not valid
    UTF-8 into one U+FFFD per byte, so ``<0x4C>`` alone reads "L" and ``<0x4C><0xB9>`` reads "��". Streaming
    holds such a run back until a token that is not a byte ends it.
    """
    return frozenset(i for t, i in tokenizer.get_vocab().items() if _BYTE_TOKEN.fullmatch(t))


@atexit.register
def _stop_batchers() -> None:
    # A batcher thread still alive when the interpreter tears torch down can abort the process at exit.
    for batcher in list(_live):
        batcher.close(timeout=1.0)


class QueueFullError(LawgptError, RuntimeError):
    """More requests are waiting than the batcher accepts (``max_queue``)."""


@dataclass
class Generation:
    text: str  # the answer only: no prompt, cut at the first stop marker, stripped
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "eos" | "stop" (a stop marker) | "length" | "stopped" (cancelled)
    seconds: float  # from the start of the batch it ran in to the end of this answer
    ids: list[int] = field(default_factory=list)  # the generated token ids (EOS excluded; a stop marker's included)


class Request:
    """A request: iterate it for the growing answer, :meth:`wait` for the :class:`Generation`, or pass
    ``listener(kind, value)``, called on the batcher thread: ("text", answer so far), ("done", Generation), ("error", e)."""

    def __init__(self, ids: Sequence[int], params, stops: Sequence[str], listener: Callable | None = None,
                 prompt: str | None = None):
        self.ids, self.params, self.stops, self.listener = list(ids), params, tuple(stops), listener
        self.prompt = prompt  # the text of ``ids``, for engines that take text (utils/inference/upstream.py)
        self.cancelled, self.finished = threading.Event(), threading.Event()
        self.result: Generation | None = None
        self.error: BaseException | None = None
        self._events: queue.Queue = queue.Queue()

    def cancel(self) -> None:
        """Stop generating this request at its next token (or before it starts); frees its slot."""
        self.cancelled.set()

    def _emit(self, kind: str, value) -> None:
        if kind in ("done", "error"):
            setattr(self, "result" if kind == "done" else "error", value)
        if self.listener is not None:
            self.listener(kind, value)
        else:
            self._events.put((kind, value))
        if kind in ("done", "error"):
            self.finished.set()

    def wait(self, timeout: float | None = None) -> Generation:
        if not self.finished.wait(timeout):
            raise TimeoutError("generation did not finish in time")
        if self.error is not None:
            raise self.error
        return self.result

    def __iter__(self) -> Iterator[str]:
        """The answer so far, growing; ends when the request finishes (raises its error, if any)."""
        while True:
            kind, value = self._events.get()
            if kind == "text":
                yield value
            elif kind == "error":
                raise value
            else:
                return


class _Row:
    """A request's state inside a running batch."""

    def __init__(self, request: Request, tokenizer, eos_ids: set[int], started: float,
                 byte_ids: frozenset[int] = frozenset()):
        import torch

        self.request, self.tokenizer, self.started, self.byte_ids = request, tokenizer, started, byte_ids
        self.params = request.params
        self.eos = set() if self.params.ignore_eos else eos_ids
        self.new: list[int] = []
        self.text = self.shown = ""
        self.done = False
        self.generator = None
        if self.params.sampling and self.params.num_beams == 1:
            seed = self.params.seed if self.params.seed is not None else int(torch.randint(0, 2**62, ()).item())
            self.generator = torch.Generator().manual_seed(seed)

    def add(self, token: int) -> None:
        """Take the row's next token; finish the row when it ends the answer."""
        if token in self.eos:
            return self.finish("eos", len(self.new) + 1)
        self.new.append(token)
        settled = len(self.new)
        while settled and self.new[settled - 1] in self.byte_ids:  # a byte run still open (see byte_fallback_ids)
            settled -= 1
        text = self.tokenizer.decode(self.new[:settled], skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # byte-level BPE: an incomplete multi-byte character, wait for its bytes
            self.text = text
        if any(m in self.text for m in self.request.stops):  # checked on the settled text, as it is shown
            return self.finish("stop", len(self.new))
        if len(self.new) >= self.params.max_new_tokens:
            return self.finish("length", len(self.new))
        if self.request.cancelled.is_set():
            return self.finish("stopped", len(self.new))
        answer = self._cut(self.text)
        answer = answer[: len(answer) - held_back(answer, self.request.stops)].strip()
        # text that may still become a stop marker is held back; what is shown only ever grows, so a stream's
        # deltas add up to the final answer (a decode that rewrote shown text waits for the end instead)
        if answer != self.shown and answer.startswith(self.shown):
            self.shown = answer
            self.request._emit("text", answer)

    def _cut(self, text: str) -> str:
        for marker in self.request.stops:
            text = text.split(marker, 1)[0]
        return without_thinking(text)

    def fail(self, error: BaseException) -> None:
        """End this row alone with ``error`` (its settings or numbers failed); the batch goes on without it."""
        if not self.done:
            self.done = True
            self.request._emit("error", error)

    def finish(self, reason: str, new_tokens: int, text: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        if text is None:
            text = self.tokenizer.decode(self.new, skip_special_tokens=True)
        answer = self._cut(text).strip()
        if answer != self.shown:
            self.request._emit("text", answer)
        seconds = time.perf_counter() - self.started
        self.request._emit("done", Generation(answer, len(self.request.ids), new_tokens, reason, seconds, list(self.new)))


class Batcher:
    """The model's one user: gathers submitted requests into batches and runs them (see the module docstring)."""

    def __init__(self, model, tokenizer, eos_ids: Sequence[int], max_batch_size: int = 16, max_queue: int = 64,
                 batch_wait_s: float = 0.03, iterative: bool | None = None):
        if max_batch_size < 1 or max_queue < 1 or batch_wait_s < 0:
            raise ConfigError("max_batch_size and max_queue must be >= 1, batch_wait_s >= 0")
        self.model, self.tokenizer, self.eos_ids = model, tokenizer, sorted(eos_ids)
        self.byte_ids = byte_fallback_ids(tokenizer)
        self.max_batch_size, self.max_queue, self.batch_wait_s = max_batch_size, max_queue, batch_wait_s
        self._pending: deque[tuple[float, list[Request], bool]] = deque()  # (arrival time, group, gather)
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.running = 0  # requests in the batch being generated that have not finished yet
        self.batches = 0  # batches started so far (for tests and benchmarks)
        self.joined = 0  # requests that joined a batch already running (utils/inference/iteration.py)
        # iteration-level scheduling where the model's cache allows it, else batch-at-a-time (module docstring)
        self.iterative = iterative if iterative is not None else supports_iteration(model)

    @property
    def waiting(self) -> int:  # requests queued for a later batch
        with self._cv:
            return self._waiting()

    def _waiting(self) -> int:
        return sum(1 for _, group, _ in self._pending for r in group if not r.cancelled.is_set())

    @property
    def busy(self) -> bool:
        return self.running > 0 or self.waiting > 0

    def submit(self, requests: Sequence[Request], gather: bool = True) -> None:
        """Queue requests to be generated together (a group is never split across batches); ``gather=False``: a
        whole batch from one caller, which starts without waiting for others to arrive."""
        with self._cv:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            waiting = self._waiting()
            if waiting + len(requests) > self.max_queue:
                raise QueueFullError(f"{waiting} requests are waiting (the limit is {self.max_queue}): try again later")
            self._pending.append((time.monotonic(), list(requests), gather))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lawgpt-batcher", daemon=True)
                self._thread.start()
                _live.add(self)
            self._cv.notify()

    def close(self, timeout: float = 0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if timeout and self._thread is not None:
            self._thread.join(timeout)

    def _take(self) -> list[Request] | None:
        with self._cv:
            while not self._pending and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            # Gather a burst: wait while requests keep coming (until batch_wait_s passes without one, at most
            # GATHER_CAP times that in all), since a request that misses the batch waits for all of it.
            # Requests that queued behind a running batch have waited long enough: they go at once.
            while sum(len(g) for _, g, _ in self._pending) < self.max_batch_size and self._pending[0][2]:
                first, last = self._pending[0][0], self._pending[-1][0]
                deadline = min(first + GATHER_CAP * self.batch_wait_s, last + self.batch_wait_s)
                if time.monotonic() >= deadline:
                    break
                self._cv.wait(deadline - time.monotonic())
            batch: list[Request] = []
            while self._pending:
                group = self._pending[0][1]
                beams = group[0].params.num_beams > 1
                if batch and (beams or batch[0].params.num_beams > 1 or len(batch) + len(group) > self.max_batch_size):
                    break
                batch += self._pending.popleft()[1]
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = []
            for request in batch:
                if request.cancelled.is_set():  # gone before it started
                    request._emit("done", Generation("", len(request.ids), 0, "stopped", 0.0))
                else:
                    live.append(request)
            if not live:
                continue
            self.running = len(live)
            if not (self.iterative and live[0].params.num_beams == 1):  # an iterative run counts its own starts
                self.batches += 1  # counted at the start: its callers may hear "done" before the batch winds up
            try:
                if live[0].params.num_beams > 1:
                    self._run_beams(live[0])
                elif self.iterative:
                    self._run_iterative(live)
                else:
                    self._run(live)
            except Exception as e:  # handed to every caller of the batch; the batcher keeps serving
                for request in live:
                    if not request.finished.is_set():
                        request._emit("error", e)
            finally:
                self.running = 0

    def _admit(self, capacity: int) -> list[Request]:
        """Whole groups of waiting requests, in arrival order, that fit ``capacity`` rows (beam search waits for the
        batch to end); the ones cancelled meanwhile end here."""
        taken, gone = [], []
        with self._cv:
            while self._pending and not self._closed:
                group = self._pending[0][1]
                if group[0].params.num_beams > 1 or len(taken) + len(group) > capacity:
                    break
                self._pending.popleft()
                for request in group:
                    (gone if request.cancelled.is_set() else taken).append(request)
        for request in gone:
            request._emit("done", Generation("", len(request.ids), 0, "stopped", 0.0))
        return taken

    def _run_iterative(self, requests: list[Request]) -> None:
        """The batch stepped token by token, admitting waiting requests between steps (utils/inference/iteration.py)."""
        run = IterativeRun(self.model, self.tokenizer.pad_token_id, self.eos_ids, self.max_batch_size,
                           make_row=lambda r, started: _Row(r, self.tokenizer, set(self.eos_ids), started, self.byte_ids),
                           admit=self._admit, counters=self)
        try:
            run.run(requests)
        except Exception as e:  # the batch failed: every row in it hears it, joined ones too
            for row in run.rows:
                if not row.request.finished.is_set():
                    row.request._emit("error", e)
            raise

    def _config(self, **overrides):
        from transformers import GenerationConfig

        # Everything explicit: unset values would be filled from the model's generation_config (e.g. a
        # repetition_penalty there would also penalise the padding of other rows).
        settings = dict(do_sample=False, num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0,
                        eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
                        bos_token_id=self.tokenizer.bos_token_id)
        return GenerationConfig(**{**settings, **overrides})

    def _inputs(self, requests: list[Request]):
        import torch

        width = max(len(r.ids) for r in requests)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in requests])
        mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in requests])
        device = next(self.model.parameters()).device
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, width

    def _run(self, requests: list[Request]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        started = time.perf_counter()
        rows, kept = [], []
        for r in requests:
            try:
                rows.append(_Row(r, self.tokenizer, set(self.eos_ids), started, self.byte_ids))
                kept.append(r)
            except Exception as e:  # e.g. a seed torch refuses: this request alone fails
                r._emit("error", e)
        if not rows:
            return
        requests = kept
        inputs, width = self._inputs(requests)
        config = self._config(max_new_tokens=max(r.params.max_new_tokens for r in requests))
        controller = RowController(rows, on_step=lambda unfinished: setattr(self, "running", unfinished))
        with torch.inference_mode():
            self.model.generate(**inputs, generation_config=config,
                                logits_processor=LogitsProcessorList([RowProcessor(rows, self.eos_ids)]),
                                stopping_criteria=StoppingCriteriaList([controller]))
        for row in rows:  # generate ended on its own length limit
            row.finish("stopped" if row.request.cancelled.is_set() else "length", len(row.new))

    def _run_beams(self, request: Request) -> None:
        """Beam search (one request; it only knows its answer at the end): HF's own processors."""
        import torch
        from transformers import StoppingCriteriaList

        started = time.perf_counter()
        p = request.params
        inputs, width = self._inputs([request])
        sampling = p.sampling
        config = self._config(
            max_new_tokens=p.max_new_tokens, num_beams=p.num_beams, do_sample=sampling,
            min_new_tokens=(p.max_new_tokens if p.ignore_eos else p.min_new_tokens) or None,
            temperature=p.temperature if sampling else None, top_p=p.top_p if sampling else None,
            top_k=p.top_k if sampling else None, repetition_penalty=p.repetition_penalty,
            no_repeat_ngram_size=p.no_repeat_ngram_size)
        criteria = StoppingCriteriaList([StopOnEvent(request.cancelled)])
        if request.stops:
            criteria.append(StopOnText(self.tokenizer, request.stops, width))
        if p.seed is not None:
            torch.manual_seed(p.seed)
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, generation_config=config, stopping_criteria=criteria)
        new = sequences[0, width:].tolist()
        row = _Row(request, self.tokenizer, set(self.eos_ids), started)
        cut = next((i for i, t in enumerate(new) if t in row.eos), None)
        if cut is not None:
            row.new = new[:cut]
            return row.finish("eos", cut + 1)
        while new and new[-1] == self.tokenizer.pad_token_id:
            new.pop()
        row.new, text = new, self.tokenizer.decode(new, skip_special_tokens=True)
        stopped = len(new) < p.max_new_tokens and request.cancelled.is_set()
        row.finish("stop" if any(m in text for m in request.stops) else "stopped" if stopped else "length", len(new), text)
