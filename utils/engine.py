"""The one generator: batched and streaming generation for infer.py, webui.py, evaluate.py and the data tools.

Typical use::

    engine = Engine.from_pretrained(base_model="models/base_models/x", lora_weights="outputs/sft-x")
    engine.answer("酒驾撞人怎么判刑？")                                    # one answer, greedy by default
    params = GenerationParams(max_new_tokens=128, temperature=0.7)       # temperature > 0 turns sampling on
    for text in engine.stream("……", history=[("q1", "a1")], params=params, stop_event=event):
        print(text)                                                      # the answer so far, growing
    prompts = [engine.prompt(q) for q in questions]
    for batch in engine.generate_batched(prompts, params, batch_size=16):
        for index, generation in batch: ...                              # Generation(text, new_tokens, ...)

What it guarantees: left padding for batches (so batched greedy output equals one-by-one output),
generation stops on EOS and on the template's next-turn markers (``Prompter.stop``), the returned
text is only the answer, a ``threading.Event`` stops a running generation (the UI's stop button),
and one lock serialises calls so several UI sessions can share one model safely.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from utils.modeling import LoadedModel, load_for_inference
from utils.prompter import Prompter
from utils.stopping import CumulativeStreamer, StopOnEvent, StopOnText, held_back

DEFAULT_TEMPLATE = "law_template"


class PromptTooLongError(ValueError):
    """A prompt plus the tokens to generate does not fit the model's context window."""


@dataclass(frozen=True)
class GenerationParams:
    """Per-call generation settings; every caller builds one (or passes overrides by name).

    ``do_sample=None`` means: sample when ``temperature > 0``, else greedy. ``temperature``,
    ``top_p`` and ``top_k`` only matter when sampling. ``repetition_penalty`` 1.1 is a mild default
    against the loops untuned small models fall into; ``no_repeat_ngram_size`` is off by default
    because legal text legitimately repeats long names (中华人民共和国…法) — raise it for a looping model.
    ``stop=None`` uses the template's next-turn markers; ``[]`` disables string stopping.
    """

    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.9
    top_k: int = 40
    num_beams: int = 1
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 0
    do_sample: bool | None = None
    seed: int | None = None
    ignore_eos: bool = False  # never end on EOS: generate exactly max_new_tokens (unless a stop marker hits)
    stop: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("min_new_tokens", 0 <= self.min_new_tokens <= self.max_new_tokens, "must be in [0, max_new_tokens]"),
            ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("num_beams", self.num_beams >= 1, "must be >= 1"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1.0 = off)"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, "must be >= 0 (0 = off)"),
            ("do_sample", not (self.do_sample and self.temperature <= 0), "needs temperature > 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"generation parameter {name}={getattr(self, name)!r} {rule}")
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def sampling(self) -> bool:
        return self.temperature > 0 if self.do_sample is None else self.do_sample

    def replace(self, **overrides) -> GenerationParams:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown generation parameter(s) {unknown}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)


@dataclass
class Generation:
    text: str  # the answer only: no prompt, cut at the first next-turn marker, stripped
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "eos" | "stop" (a next-turn marker) | "length" | "stopped" (stop_event)
    seconds: float  # wall time of the batch this answer was generated in


class Engine:
    def __init__(self, loaded: LoadedModel, prompt_template: str | None = None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        # Explicit template > the one recorded in run_info.json at training time > the default.
        self.prompter = Prompter(prompt_template or loaded.prompt_template or DEFAULT_TEMPLATE)
        if self.tokenizer.padding_side != "left":
            raise ValueError("the engine needs a left-padding tokenizer (load it with utils.modeling.load_tokenizer)")
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        base_model: str | None = None,
        lora_weights: str | None = None,
        prompt_template: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        load_8bit: bool = False,
        load_4bit: bool = False,
        trust_remote_code: bool = False,
    ) -> Engine:
        loaded = load_for_inference(base_model, lora_weights, device, dtype, load_8bit, load_4bit, trust_remote_code)
        return cls(loaded, prompt_template)

    # ------------------------------------------------------------ prompts and lengths

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int | None:
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text_config, "max_position_embeddings", None)

    def prompt(self, instruction: str, input: str | None = None, history: Sequence[tuple[str, str]] | None = None) -> str:
        return self.prompter.generate_prompt(instruction, input, history=list(history or []))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def check_fits(self, prompt: str, max_new_tokens: int, where: str = "prompt") -> int:
        """The prompt's token count; raises PromptTooLongError when prompt + answer exceed the context."""
        n = self.count_tokens(prompt)
        limit = self.context_length
        if limit is not None and n + max_new_tokens > limit:
            raise PromptTooLongError(
                f"{where}: {n} prompt tokens + max_new_tokens {max_new_tokens} exceed the model's context of "
                f"{limit} tokens — shorten the input or lower max_new_tokens"
            )
        return n

    def fit_history(
        self, instruction: str, input: str | None, history: Sequence[tuple[str, str]] | None, max_new_tokens: int
    ) -> tuple[list[tuple[str, str]], int]:
        """Drop the oldest turns until the prompt fits; returns (kept history, number of turns dropped).

        Raises PromptTooLongError when even the question alone does not fit.
        """
        kept = list(history or [])
        limit = self.context_length
        while limit is not None and kept and self.count_tokens(self.prompt(instruction, input, kept)) + max_new_tokens > limit:
            kept.pop(0)
        self.check_fits(self.prompt(instruction, input, kept), max_new_tokens, "question")
        return kept, len(history or []) - len(kept)

    # ------------------------------------------------------------ generation

    def _stops(self, params: GenerationParams) -> tuple[str, ...]:
        return tuple(self.prompter.stop) if params.stop is None else params.stop

    def _generate_kwargs(self, params: GenerationParams, prompt_len: int, stop_event: threading.Event | None) -> dict:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        sampling = params.sampling
        # ignore_eos: EOS is masked out for the whole budget (benchmarks need a fixed token count;
        # leaving eos_token_id unset would not do it, transformers fills it from the model's config).
        min_new = params.max_new_tokens if params.ignore_eos else params.min_new_tokens
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=min_new or None,
            do_sample=sampling,
            # Sampling knobs only when sampling (greedy ignores them; setting them makes transformers warn).
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=params.top_k if sampling else None,
            num_beams=params.num_beams,
            repetition_penalty=params.repetition_penalty,
            no_repeat_ngram_size=params.no_repeat_ngram_size,
            eos_token_id=self._eos_ids(),
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        criteria = StoppingCriteriaList()
        stops = self._stops(params)
        if stops:
            criteria.append(StopOnText(self.tokenizer, stops, prompt_len))
        if stop_event is not None:
            criteria.append(StopOnEvent(stop_event))
        if params.seed is not None:
            torch.manual_seed(params.seed)
        return {"generation_config": config, "stopping_criteria": criteria}

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if configured is not None:  # e.g. Gemma also ends a turn with <end_of_turn>
            ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(ids)

    def _encode(self, prompts: Sequence[str]):
        batch = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def _finish(self, new_ids: list[int], text: str, params: GenerationParams, stop_event) -> tuple[str, int, str]:
        """(answer, new token count, finish reason) for one row of generated ids (padding after the end)."""
        eos = set() if params.ignore_eos else set(self._eos_ids())
        cut = next((i for i, t in enumerate(new_ids) if t in eos), None)
        if cut is not None:
            return self._answer_text(text, params), cut + 1, "eos"
        n = len(new_ids)
        pad = self.tokenizer.pad_token_id
        while n and new_ids[n - 1] == pad:  # rows that stopped early are filled with padding
            n -= 1
        if any(m in text for m in self._stops(params)):
            reason = "stop"
        elif n < params.max_new_tokens and stop_event is not None and stop_event.is_set():
            reason = "stopped"
        else:
            reason = "length"
        return self._answer_text(text, params), n, reason

    def _answer_text(self, text: str, params: GenerationParams) -> str:
        for marker in self._stops(params):
            text = text.split(marker, 1)[0]
        return text.strip()

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams | None = None,
        stop_event: threading.Event | None = None,
    ) -> list[Generation]:
        """Answers for complete prompt strings, generated as ONE batch (left-padded), in input order."""
        import torch

        params = params or GenerationParams()
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            self.check_fits(prompt, params.max_new_tokens, f"prompt {i}")
        inputs = self._encode(prompts)
        prompt_len = inputs["input_ids"].shape[1]
        kwargs = self._generate_kwargs(params, prompt_len, stop_event)
        start = time.perf_counter()
        with self._lock, torch.inference_mode():
            sequences = self.model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - start
        new = sequences[:, prompt_len:].tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        out = []
        for ids, text, n_prompt in zip(new, texts, prompt_tokens):
            answer, n_new, reason = self._finish(ids, text, params, stop_event)
            out.append(Generation(answer, int(n_prompt), n_new, reason, seconds))
        return out

    def generate_batched(
        self,
        prompts: Sequence[str],
        params: GenerationParams | None = None,
        batch_size: int = 8,
        stop_event: threading.Event | None = None,
    ) -> Iterator[list[tuple[int, Generation]]]:
        """Yields one list of ``(index into prompts, Generation)`` per batch, as each batch finishes.

        Prompts are grouped by token length (less padding, less wasted compute); callers key results
        by the index. All prompts are length-checked before the first batch runs.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        params = params or GenerationParams()
        lengths = [self.check_fits(p, params.max_new_tokens, f"prompt {i}") for i, p in enumerate(prompts)]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        for start in range(0, len(order), batch_size):
            if stop_event is not None and stop_event.is_set():
                return
            chunk = order[start:start + batch_size]
            results = self.generate([prompts[i] for i in chunk], params, stop_event)
            yield list(zip(chunk, results))

    def answer(
        self,
        instruction: str,
        input: str | None = None,
        history: Sequence[tuple[str, str]] | None = None,
        params: GenerationParams | None = None,
        stop_event: threading.Event | None = None,
        **overrides,
    ) -> str:
        params = (params or GenerationParams()).replace(**overrides)
        return self.generate([self.prompt(instruction, input, history)], params, stop_event)[0].text

    def stream(
        self,
        instruction: str,
        input: str | None = None,
        history: Sequence[tuple[str, str]] | None = None,
        params: GenerationParams | None = None,
        stop_event: threading.Event | None = None,
        **overrides,
    ) -> Iterator[str]:
        """Yields the answer so far (the whole text each time, growing); see :meth:`stream_prompt`."""
        params = (params or GenerationParams()).replace(**overrides)
        yield from self.stream_prompt(self.prompt(instruction, input, history), params, stop_event)

    def stream_prompt(
        self, prompt: str, params: GenerationParams | None = None, stop_event: threading.Event | None = None
    ) -> Iterator[str]:
        """Generate in a thread and yield the accumulated answer as tokens arrive.

        Text that might be the start of a next-turn marker is held back until it is clearly not one,
        so a UI never flashes "### 问…". The last value equals what :meth:`generate` returns for the
        same prompt and greedy params. Closing the iterator early stops the generation.
        """
        import torch

        params = params or GenerationParams()
        if params.num_beams > 1:
            raise ValueError("streaming needs num_beams=1 (beam search only knows its answer at the end)")
        self.check_fits(prompt, params.max_new_tokens)
        inputs = self._encode([prompt])
        halt = threading.Event()  # set by the caller's stop_event or by the consumer going away
        kwargs = self._generate_kwargs(params, inputs["input_ids"].shape[1], halt)
        streamer = CumulativeStreamer(self.tokenizer)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(**inputs, **kwargs, streamer=streamer)
            except Exception as e:  # re-raised in the consumer below; the queue must still be closed
                failure.append(e)
                streamer.end()

        def relay() -> None:  # forwards the caller's stop event to the generation
            while not halt.is_set():
                if stop_event.wait(0.05):
                    halt.set()

        thread = threading.Thread(target=run, name="lawgpt-generate", daemon=True)
        thread.start()
        if stop_event is not None:
            threading.Thread(target=relay, name="lawgpt-stop-relay", daemon=True).start()
        stops = self._stops(params)
        shown = None
        try:
            for text in streamer:
                answer = text
                for marker in stops:
                    answer = answer.split(marker, 1)[0]
                answer = answer[: len(answer) - held_back(answer, stops)].strip()
                if answer != shown:
                    shown = answer
                    yield answer
            final = self._answer_text(streamer.text, params)
            if failure:
                raise failure[0]
            if final != shown:
                yield final
        finally:
            halt.set()
            thread.join()
