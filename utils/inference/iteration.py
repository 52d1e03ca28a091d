"""Iteration-level scheduling for our own engine: a request that arrives while a batch runs joins it at the next
decode step, instead of waiting for the whole batch (issue 32, item 3; vLLM's and TGI's continuous batching).

:class:`IterativeRun` steps one batch token by token with the model's forward and a ``DynamicCache``; between two
steps, rows that finished leave (``batch_select_indices``) and waiting requests join:

- the batch's tensors are left-padded to one width ``W`` (prompt + answer so far), and the cache holds the first
  ``W - 1`` columns (the last token is fed at the next step);
- joining requests are prefilled on their own, left-padded to the batch's width (or the batch is padded on the left
  to theirs), so their cache has the same columns, and the two caches are concatenated along the batch;
- a sliding-window layer (Gemma-3) keeps the last ``window - 1`` columns, right-aligned, of a sequence whose length
  every row shares, so padding on the left moves nothing it keeps;
- columns that are padding in every row are dropped when rows leave, so the width follows the rows that are there.

Each row keeps its own settings and state (batching._Row, row_processing.RowProcessor read its own tokens, not the
batch layout), so a greedy answer equals the one-by-one answer and a seeded sample is the same wherever it ran.
Models whose cache is not made of these two layer kinds (recurrent, quantized, offloaded caches) and beam search run
batch-at-a-time through ``model.generate`` (batching.Batcher._run). transformers' own continuous batching
(``generate_batch``, paged attention) is not used: one generation config serves every request there, so per-request
repetition penalty, n-gram ban, minimum length and seeds would be lost.
"""

from __future__ import annotations

import inspect
import time

from utils.inference.row_processing import RowProcessor


def supports_iteration(model) -> bool:
    """True when the model's DynamicCache is made of plain and sliding-window layers only, and its forward takes
    ``logits_to_keep`` (what :class:`IterativeRun` needs)."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        cache = DynamicCache(config=model.config)
        layers = getattr(cache, "layers", [])
        forward = inspect.signature(model.forward).parameters
    except Exception:
        return False
    kinds_ok = bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)
    return kinds_ok and ("logits_to_keep" in forward or any(p.kind is p.VAR_KEYWORD for p in forward.values()))


class IterativeRun:
    """One running batch of a :class:`~utils.inference.batching.Batcher`, stepped token by token (module docstring).

    ``admit(capacity)`` returns the requests waiting to join (up to ``capacity`` of them, whole groups);
    ``make_row(request, started)`` builds a batching._Row; ``counters`` (the Batcher) has ``running`` (unfinished
    rows, set after each step), ``batches`` (starts from an empty batch) and ``joined`` (requests that joined a
    running batch), kept up to date as the run goes.
    """

    def __init__(self, model, pad_id: int, eos_ids, max_rows: int, make_row, admit, counters):
        self.model, self.pad_id, self.eos_ids, self.max_rows = model, pad_id, list(eos_ids), max_rows
        self.make_row, self.admit, self.counters = make_row, admit, counters
        self.device = next(model.parameters()).device
        self.rows: list = []
        self.processor = RowProcessor([], self.eos_ids)
        self.ids = self.mask = self.cache = None

    # ------------------------------------------------------------ the loop

    def run(self, requests) -> None:
        import torch

        with torch.inference_mode():
            logits = self._join(requests)
            while self.rows:
                if logits is None:
                    logits = self._forward(self.ids[:, -1:], self.mask, self.cache)
                scores = self.processor(None, logits)
                tokens = scores.argmax(dim=-1)
                for row, token in zip(self.rows, tokens.tolist()):
                    if not row.done:
                        row.add(token)
                self.ids = torch.cat([self.ids, tokens[:, None].to(self.ids.device)], dim=1)
                self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
                self._drop_finished()
                logits = None
                if len(self.rows) < self.max_rows and (waiting := self.admit(self.max_rows - len(self.rows))):
                    logits = self._join(waiting)
                self.counters.running = len(self.rows)

    def _forward(self, ids, mask, cache):
        """Logits (rows, vocab) for the token after ``ids``' last column, float32 (as generate takes them)."""
        import torch

        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -ids.shape[1]:]
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].to(dtype=torch.float32)

    # ------------------------------------------------------------ rows joining and leaving

    def _join(self, requests):
        """Prefill ``requests`` and add them to the batch. Joining a running batch, their cache gets its width less one
        column (the last token is fed with the batch's next step) and None is returned; starting a batch, the whole
        prompt is prefilled and the logits of its next token are returned (one forward less per batch)."""
        import torch
        from transformers import DynamicCache

        started = time.perf_counter()
        rows = []
        for request in requests:
            try:
                rows.append(self.make_row(request, started))
            except Exception as e:  # e.g. a seed torch refuses: this request alone fails
                request._emit("error", e)
        if not rows:
            return None
        width = max(len(r.request.ids) for r in rows)
        if self.ids is not None and width < self.ids.shape[1]:
            width = self.ids.shape[1]
        elif self.ids is not None and width > self.ids.shape[1]:
            self._pad_left(width - self.ids.shape[1])
        ids = torch.tensor([[self.pad_id] * (width - len(r.request.ids)) + r.request.ids for r in rows],
                           device=self.device)
        mask = torch.tensor([[0] * (width - len(r.request.ids)) + [1] * len(r.request.ids) for r in rows],
                            device=self.device)
        cache = DynamicCache(config=self.model.config)
        for row in rows:
            self.processor.add(row)
        self.rows += rows
        if self.ids is None:  # a new batch: the whole prompt at once
            self.ids, self.mask, self.cache = ids, mask, cache
            self.counters.batches += 1
            return self._forward(ids, mask, cache)
        self._forward(ids[:, :-1], mask[:, :-1], cache)  # width - 1 columns, as the batch's cache holds
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.ids, self.mask = torch.cat([self.ids, ids]), torch.cat([self.mask, mask])
        self.counters.joined += len(rows)
        return None

    def _drop_finished(self) -> None:
        import torch

        keep = [i for i, row in enumerate(self.rows) if not row.done]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self.processor.keep(keep)
        if not keep:  # the batch is empty: whoever comes next starts a new one
            self.ids = self.mask = self.cache = None
            return
        index = torch.tensor(keep, device=self.device)
        self.ids, self.mask = self.ids[index], self.mask[index]
        self.cache.batch_select_indices(index)
        empty = int((self.mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())  # leading columns padded in every row
        if empty:
            self._trim_left(empty)

    def _pad_left(self, columns: int) -> None:
        """``columns`` more padding on the left of every running row (a longer prompt joins)."""
        import torch

        self.ids = torch.cat([torch.full_like(self.ids[:, :1], self.pad_id).expand(-1, columns), self.ids], dim=1)
        self.mask = torch.cat([torch.zeros_like(self.mask[:, :1]).expand(-1, columns), self.mask], dim=1)
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            zeros = layer.keys.new_zeros(*layer.keys.shape[:2], columns, layer.keys.shape[3])
            layer.keys, layer.values = torch.cat([zeros, layer.keys], dim=2), torch.cat([zeros, layer.values], dim=2)
            if layer.is_sliding:
                layer.cumulative_length += columns
                layer.keys = layer.keys[:, :, -(layer.sliding_window - 1):]
                layer.values = layer.values[:, :, -(layer.sliding_window - 1):]

    def _trim_left(self, columns: int) -> None:
        """Drop ``columns`` leading columns that are padding in every row."""
        self.ids, self.mask = self.ids[:, columns:], self.mask[:, columns:]
        for layer in self.cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            if layer.is_sliding:
                layer.cumulative_length -= columns
                kept = min(layer.keys.shape[2], layer.cumulative_length)
                layer.keys, layer.values = layer.keys[:, :, layer.keys.shape[2] - kept:], \
                    layer.values[:, :, layer.values.shape[2] - kept:]
            else:
                layer.keys, layer.values = layer.keys[:, :, columns:], layer.values[:, :, columns:]
