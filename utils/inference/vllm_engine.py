"""``--engine vllm``: the weights run in-process in vLLM (NVIDIA GPUs; ``pip install vllm``), with its continuous
batching and ``--engine_tensor_parallel N`` GPUs; prompts, ``--rag``, citation checks and streaming stay ours.

The prompt's token ids are ours (our tokenizer and template) and go to vLLM as ``TokensPrompt``; its cumulative text
comes back through utils/inference/upstream.TextStream (stop markers, held-back text, cancellation = vLLM's abort).
Where vllm cannot be imported or no CUDA GPU is visible, :class:`VLLMBackend` refuses in one line and names the ways
that do run here. Not run in CI (no GPU there); tests/test_engines.py drives it against a stand-in module.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from utils.common.errors import ConfigError, LawgptError, ParamError
from utils.inference.batching import QueueFullError, Request
from utils.inference.upstream import TextStream

ELSEWHERE = ("use --engine hf or --engine llama.cpp here, or run vLLM on a GPU machine (scripts/serve.sh) and point "
             "--engine openai --engine_url at it")


class VLLMBackend:
    """The engine's backend over vLLM's AsyncLLMEngine (the interface of batching.Batcher). Raises ConfigError when
    vllm is missing or no GPU is visible."""

    def __init__(self, engine, tensor_parallel_size: int = 1, max_queue: int = 256, gpu_memory_utilization: float = 0.9):
        try:
            import vllm
        except ImportError as e:
            raise ConfigError(f"--engine vllm needs vllm, which runs on NVIDIA GPUs ({e}): {ELSEWHERE}") from e
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--engine vllm needs a CUDA GPU and none is visible: {ELSEWHERE}")
        self.vllm, self.engine, self.max_queue = vllm, engine, max_queue
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lawgpt-vllm", daemon=True)
        self._thread.start()
        args = vllm.AsyncEngineArgs(model=engine.loaded.base_model, tokenizer=engine.loaded.base_model,
                                    tensor_parallel_size=tensor_parallel_size,
                                    gpu_memory_utilization=gpu_memory_utilization)
        self.llm = vllm.AsyncLLMEngine.from_engine_args(args)
        self.tensor_parallel_size = tensor_parallel_size
        self._ids = itertools.count()
        self.running = self._waiting = 0

    @property
    def device(self) -> str:
        return f"vLLM on {self.tensor_parallel_size} GPU(s)"

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def busy(self) -> bool:
        return self.running > 0

    def submit(self, requests: list[Request], gather: bool = True) -> None:
        """Hand requests to vLLM at once (it schedules them: ``gather`` does not apply)."""
        if self.running + len(requests) > self.max_queue:
            raise QueueFullError(f"{self.running} requests are running (the limit is {self.max_queue}): try again later")
        for request in requests:
            self.running += 1
            asyncio.run_coroutine_threadsafe(self._serve(request), self.loop)

    def close(self, timeout: float = 0) -> None:
        shutdown = getattr(self.llm, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        if timeout:
            self._thread.join(timeout)

    def sampling_params(self, p, stops):
        """vLLM's SamplingParams for our GenerationParams (its repetition penalty also counts the prompt)."""
        if p.num_beams > 1:
            raise ParamError("num_beams", "beam search runs on --engine hf only")
        if p.no_repeat_ngram_size:
            raise ParamError("no_repeat_ngram_size", "vLLM has no n-gram ban: set no_repeat_ngram_size to 0 or use "
                                                     "--engine hf or llama.cpp")
        return self.vllm.SamplingParams(
            max_tokens=p.max_new_tokens, min_tokens=p.min_new_tokens, temperature=p.temperature if p.sampling else 0.0,
            top_p=p.top_p if p.sampling else 1.0, top_k=(p.top_k or -1) if p.sampling else -1, seed=p.seed,
            repetition_penalty=p.repetition_penalty, ignore_eos=p.ignore_eos, stop=list(stops),
            stop_token_ids=list(self.engine.eos_ids), skip_special_tokens=True)

    async def _serve(self, request: Request) -> None:
        stream = TextStream(request, time.perf_counter())
        request_id = f"lawgpt-{next(self._ids)}"
        reason, new_tokens = "length", None
        try:
            sampling = self.sampling_params(request.params, request.stops)
            prompt = {"prompt_token_ids": list(request.ids)}  # vLLM's TokensPrompt is this TypedDict
            async for output in self.llm.generate(prompt, sampling, request_id):
                if request.cancelled.is_set():
                    await self.llm.abort(request_id)
                    reason = "stopped"
                    break
                completion = output.outputs[0]
                if stream.add(completion.text[len(stream.raw):]):
                    await self.llm.abort(request_id)
                    reason = "stop"
                    break
                new_tokens = len(completion.token_ids)
                if completion.finish_reason:
                    reason = "length" if completion.finish_reason == "length" else \
                        "stop" if isinstance(completion.stop_reason, str) else "eos"
            stream.finish(reason, self.engine.tokenizer, len(request.ids), new_tokens)
        except Exception as e:  # this request alone fails
            if not request.finished.is_set():
                request._emit("error", e if isinstance(e, LawgptError) else RuntimeError(f"vLLM: {e}"))
        finally:
            self.running -= 1
