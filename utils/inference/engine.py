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

What it guarantees: every call goes through one :class:`~utils.inference.batching.Batcher`, which generates
requests that arrive together as one left-padded batch, each with its own settings (so concurrent web UI
sessions and API clients share the model, and a greedy answer equals the one-by-one answer); generation
stops on EOS, on the template's end-of-turn token or next-turn markers (``Prompter.stop``) and on
``params.stop``; the returned text is only the answer; a ``threading.Event`` (or closing a stream) stops a
running generation at its next token. The template is one of ours (templates/*.json) or ``chat``, the
tokenizer's own chat_template (utils/model/chat_template.py).
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from utils.common.errors import ConfigError, LawgptError, ParamError  # noqa: F401 - ParamError re-exported
from utils.inference.batching import Batcher, Generation, QueueFullError, Request
from utils.inference.engines import EngineChoice, backend_factory, check_choice
from utils.model.chat_template import make_prompter
from utils.model.loader import LoadedModel, load_for_inference, load_prompt_side, model_limits

__all__ = ["DEFAULT_TEMPLATE", "Engine", "Generation", "GenerationParams", "PromptTooLongError", "QueueFullError"]

DEFAULT_TEMPLATE = "law_template"
# auto: requests join a running batch where the model's cache allows it (utils/inference/iteration.py);
# batch: batch-at-a-time, a request arriving during a batch waits for it to end (the baseline of benchmarks)
BATCHING = ("auto", "batch")


class PromptTooLongError(LawgptError, ValueError):
    """A prompt plus the tokens to generate does not fit the model's context window."""


MIN_TEMPERATURE = 1e-5  # vLLM's _SAMPLING_EPS: a lower temperature is greedy (1/T overflows float32 near 1e-38)
REPETITION_PENALTY_RANGE = (0.01, 100.0)  # beyond these, logits x or / the penalty overflow into inf and NaN
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes
NUMERIC_FIELDS = {"max_new_tokens": int, "min_new_tokens": int, "temperature": float, "top_p": float, "top_k": int,
                  "num_beams": int, "repetition_penalty": float, "no_repeat_ngram_size": int, "seed": int}
OPTIONAL_FIELDS = {"seed"}


def _coerce(name: str, value, kind: type):
    """``value`` as ``kind``: ints for float fields; integral floats (2.0) for int fields; never bools, NaN or inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(name, f"generation parameter {name}={value!r} must be a number")
    if not math.isfinite(value):
        raise ParamError(name, f"generation parameter {name}={value!r} must be finite")
    if kind is int:
        if value != int(value):
            raise ParamError(name, f"generation parameter {name}={value!r} must be an integer")
        return int(value)
    return float(value)


@dataclass(frozen=True)
class GenerationParams:
    """Per-call generation settings; every caller builds one (or passes overrides by name).

    ``do_sample=None`` means: sample when ``temperature > 0``, else greedy. ``temperature``,
    ``top_p`` and ``top_k`` only matter when sampling. ``repetition_penalty`` 1.1 is a mild default
    against the loops untuned small models fall into; ``no_repeat_ngram_size`` is off by default
    because legal text legitimately repeats long names (中华人民共和国…法) — raise it for a looping model.
    ``stop=None`` uses the template's next-turn markers; ``[]`` disables string stopping.
    Both repetition controls count the answer's own tokens only (as OpenAI's penalties do): counted over the
    prompt too (``penalize_prompt=True``, transformers' way), they forbid quoting the retrieved articles of
    ``--rag`` — every citation and legal word in the prompt is penalised or, as an n-gram, banned. Beam search
    (``num_beams > 1``) runs transformers' own processors, which always count the prompt.
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
    penalize_prompt: bool = False  # repetition controls also count the prompt's tokens (see above)
    ignore_eos: bool = False  # never end on EOS: generate exactly max_new_tokens (unless a stop marker hits)
    stop: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # Coerce first (an integer temperature from JSON or fire is valid; transformers' processors demand floats),
        # then bound: one rule for the API, the web UI and the command line.
        for name, kind in NUMERIC_FIELDS.items():
            value = getattr(self, name)
            if value is not None or name not in OPTIONAL_FIELDS:
                object.__setattr__(self, name, _coerce(name, value, kind))
        if 0 < self.temperature < MIN_TEMPERATURE:  # vLLM's rule: below this, sampling is greedy decoding
            object.__setattr__(self, "temperature", 0.0)
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1"),
            ("min_new_tokens", 0 <= self.min_new_tokens <= self.max_new_tokens, "must be in [0, max_new_tokens]"),
            ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("num_beams", self.num_beams >= 1, "must be >= 1"),
            ("repetition_penalty", REPETITION_PENALTY_RANGE[0] <= self.repetition_penalty <= REPETITION_PENALTY_RANGE[1],
             f"must be in [{REPETITION_PENALTY_RANGE[0]}, {REPETITION_PENALTY_RANGE[1]}] (1.0 = off)"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, "must be >= 0 (0 = off)"),
            ("seed", self.seed is None or SEED_RANGE[0] <= self.seed <= SEED_RANGE[1],
             f"must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]"),
            ("do_sample", not (self.do_sample and self.temperature <= 0), f"needs temperature >= {MIN_TEMPERATURE}"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ParamError(name, f"generation parameter {name}={getattr(self, name)!r} {rule}")
        for name in ("do_sample", "penalize_prompt", "ignore_eos"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (value is None and name == "do_sample")):
                raise ParamError(name, f"generation parameter {name}={value!r} must be true or false")
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def sampling(self) -> bool:
        return self.temperature > 0 if self.do_sample is None else self.do_sample

    def replace(self, **overrides) -> GenerationParams:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ParamError(unknown[0], f"unknown generation parameter(s) {unknown}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)


class Engine:
    """Prompts, lengths and requests over one backend: our transformers batcher (``--engine hf``, the default), or one
    of utils/inference/engines.py's (an OpenAI-compatible server, llama.cpp, vLLM). ``backend(engine)`` builds it; it
    has Batcher's interface: ``submit(requests, gather)``, ``close(timeout)``, ``running``, ``waiting``, ``busy``, and
    may have ``context_length`` and ``device``."""

    def __init__(self, loaded: LoadedModel, prompt_template: str | None = None, system_prompt: str | None = None,
                 max_batch_size: int = 16, max_queue: int = 64, batch_wait_ms: float = 30.0,
                 backend: Callable | None = None, batching: str = "auto"):
        self.loaded = loaded
        self.model = loaded.model  # None when the weights run elsewhere (backend)
        self.tokenizer = loaded.tokenizer
        if self.tokenizer.padding_side != "left":
            raise ValueError("the engine needs a left-padding tokenizer (load it with utils.model.loader.load_tokenizer)")
        # Explicit template > the one recorded in run_info.json at training time > the default; the same for
        # the system prompt the model was trained with (finetune.py --system_prompt).
        system = system_prompt if system_prompt is not None else loaded.info.get("system_prompt")
        self.prompter = make_prompter(prompt_template or loaded.prompt_template or DEFAULT_TEMPLATE, self.tokenizer,
                                      system, where=str(loaded.lora_weights or loaded.base_model))
        # read once: context length and end-of-turn ids of a model whose weights run elsewhere (config.json)
        self._limits = model_limits(loaded.base_model) if self.model is None else None
        self.eos_ids = self._eos_ids()
        if backend is None:
            if self.model is None:
                raise ConfigError("an engine without a model in this process needs a backend")
            if batching not in BATCHING:
                raise ConfigError(f"--batching {batching!r}: choose one of {', '.join(BATCHING)}")
            self.batcher = Batcher(self.model, self.tokenizer, self.eos_ids, max_batch_size, max_queue,
                                   batch_wait_ms / 1000, iterative=None if batching == "auto" else False)
        else:
            self.batcher = backend(self)

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
        choice: EngineChoice | None = None,
        **engine_options,
    ) -> Engine:
        """Load and wrap a model; ``choice``: the ``--engine*`` flags (utils/inference/engines.py; default ``hf``);
        ``engine_options``: system_prompt, max_batch_size, max_queue, batch_wait_ms, batching. Raises ConfigError,
        ModelLoadError, and UpstreamError when an ``openai`` engine's server cannot be reached."""
        choice = choice or EngineChoice()
        check_choice(choice, lora_weights)
        if choice.engine == "hf":
            loaded = load_for_inference(base_model, lora_weights, device, dtype, load_8bit, load_4bit, trust_remote_code)
            return cls(loaded, prompt_template, **engine_options)
        loaded = load_prompt_side(base_model, trust_remote_code)
        backend = backend_factory(choice, engine_options.get("max_batch_size", 16), engine_options.get("max_queue", 64))
        engine_options.pop("batching", None)  # the other engines schedule requests themselves
        return cls(loaded, prompt_template, backend=backend, **engine_options)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the batcher thread and wait up to ``timeout`` seconds for it to end (a running batch finishes first);
        the engine cannot generate afterwards. Waiting matters: a thread still winding down in torch when the
        interpreter exits aborts the process ("terminate called without an active exception", exit status 134),
        which bench_alignment.py hit in about half of its runs before."""
        self.batcher.close(timeout)

    @property
    def busy(self) -> bool:
        """True while any request is being generated or waits for its batch."""
        return self.batcher.busy

    # ------------------------------------------------------------ prompts and lengths

    @property
    def device(self):
        if self.model is None:
            return self.batcher.device
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int | None:
        if hasattr(self.batcher, "context_length"):
            return self.batcher.context_length
        if self.model is None:
            return self._limits[0]
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text_config, "max_position_embeddings", None)

    def prompt(self, instruction: str, input: str | None = None, history: Sequence[tuple[str, str]] | None = None,
               system: str | None = None) -> str:
        """The prompt string; ``system`` replaces the template's system text (as a request's system message does)."""
        return self.prompter.generate_prompt(instruction, input, history=list(history or []), system=system)

    def encode(self, prompt: str) -> list[int]:
        # A chat template writes its special tokens (BOS) itself; our templates let the tokenizer add them.
        return self.tokenizer(prompt, add_special_tokens=self.prompter.add_special_tokens)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

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
        self, instruction: str, input: str | None, history: Sequence[tuple[str, str]] | None, max_new_tokens: int,
        system: str | None = None,
    ) -> tuple[list[tuple[str, str]], int]:
        """Drop the oldest turns until the prompt fits; returns (kept history, number of turns dropped).

        Raises PromptTooLongError when even the question alone does not fit.
        """
        kept = list(history or [])
        limit = self.context_length
        while limit is not None and kept and \
                self.count_tokens(self.prompt(instruction, input, kept, system)) + max_new_tokens > limit:
            kept.pop(0)
        self.check_fits(self.prompt(instruction, input, kept, system), max_new_tokens, "question")
        return kept, len(history or []) - len(kept)

    # ------------------------------------------------------------ generation

    def _stops(self, params: GenerationParams) -> tuple[str, ...]:
        return tuple(self.prompter.stop) if params.stop is None else params.stop

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id, *self.prompter.stop_token_ids}  # + a chat template's end-of-turn token
        if self.model is None:  # e.g. Gemma also ends a turn with <end_of_turn>
            ids.update(self._limits[1])
        else:
            configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            if configured is not None:
                ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if i is not None)

    def submit(self, prompt: str, params: GenerationParams | None = None, listener: Callable | None = None,
               where: str = "prompt") -> Request:
        """Queue one prompt for the next batch; iterate the returned Request, wait() on it, or pass a listener
        (see utils/batching.Request). Raises PromptTooLongError, or QueueFullError when too many are waiting."""
        params = params or GenerationParams()
        self.check_fits(prompt, params.max_new_tokens, where)
        request = Request(self.encode(prompt), params, self._stops(params), listener, prompt)
        self.batcher.submit([request])
        return request

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams | None = None,
        stop_event: threading.Event | None = None,
    ) -> list[Generation]:
        """Answers for complete prompt strings, generated together (one left-padded batch), in input order."""
        params = params or GenerationParams()
        if not prompts:
            return []
        for i, prompt in enumerate(prompts):
            self.check_fits(prompt, params.max_new_tokens, f"prompt {i}")
        requests = [Request(self.encode(p), params, self._stops(params), prompt=p) for p in prompts]
        self.batcher.submit(requests, gather=False)  # a whole batch already: no waiting for company
        for request in requests:
            while True:
                if stop_event is not None and stop_event.is_set():
                    for r in requests:
                        r.cancel()
                if request.finished.wait(0.05):
                    break
        return [request.wait() for request in requests]

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
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
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
        """Yield the accumulated answer as tokens arrive (the request shares its batch with concurrent ones).

        Text that might be the start of a stop marker is held back until it is clearly not one, so a UI
        never flashes "### 问…". The last value equals what :meth:`generate` returns for the same prompt and
        greedy params. Setting ``stop_event`` or closing the iterator stops the generation at its next token.
        """
        params = params or GenerationParams()
        if params.num_beams > 1:
            raise ConfigError("streaming needs num_beams=1 (beam search only knows its answer at the end)")
        events: queue.Queue = queue.Queue()
        request = self.submit(prompt, params, listener=lambda kind, value: events.put((kind, value)))
        try:
            while True:
                if stop_event is not None and stop_event.is_set():
                    request.cancel()
                try:
                    kind, value = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                if kind == "text":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            request.cancel()  # a consumer that went away frees the request's place in the batch
