"""How generation stops: next-turn markers, the UI's stop button, and the held-back tail of a streamed answer
that may still become a marker. Used by utils/inference/batching.py (beam search uses the two criteria)."""

from __future__ import annotations

import threading
from collections.abc import Sequence


class StopOnText:
    """Stops a row once its generated text contains a next-turn marker (checked on a decoded tail)."""

    def __init__(self, tokenizer, markers: Sequence[str], prompt_len: int):
        self.tokenizer = tokenizer
        self.markers = list(markers)
        self.prompt_len = prompt_len
        # A character can take up to 4 byte-fallback tokens; the margin covers a marker split anywhere.
        self.window = max(len(m) for m in self.markers) * 4 + 8

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        hits = [any(m in tail for m in self.markers) for tail in tails]
        return torch.tensor(hits, dtype=torch.bool, device=input_ids.device)


class StopOnEvent:
    """Stops every row when the caller sets the event (the UI's stop button)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def held_back(text: str, markers: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a marker (not shown yet)."""
    longest = 0
    for marker in markers:
        for k in range(min(len(marker) - 1, len(text)), longest, -1):
            if marker.startswith(text[-k:]):
                longest = k
                break
    return longest


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def without_thinking(text: str) -> str:
    """``text`` without a leading think block (Qwen3, DeepSeek-R1: ``<think>…</think>``): a model's reasoning is
    never shown as its answer. An unclosed block (still thinking, mid-stream) leaves nothing to show yet."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return text
    end = stripped.find(THINK_CLOSE)
    return "" if end < 0 else stripped[end + len(THINK_CLOSE):].lstrip()
