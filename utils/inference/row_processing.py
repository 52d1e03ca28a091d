"""Each row of a batched ``generate`` with its own settings: the logits processor and the stopping criterion that
utils/inference/batching.py hands to ``model.generate``.

``rows`` are the batcher's rows: each has ``params`` (GenerationParams), ``request.ids`` (the prompt's ids),
``new`` (its generated ids), ``generator`` (a seeded torch.Generator when it samples, else None), ``done`` and
``add(token)`` and ``fail(error)``. Generation itself runs greedy: :class:`RowProcessor` turns each row's scores into
its own choice. A row whose settings or numbers fail ends alone with its error (``fail``); the other rows of the batch
go on untouched, so one user's request never fails another's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class RowProcessor:
    """Per-row logits processing inside one greedy ``generate`` (see the module docstring)."""

    def __init__(self, rows: list, width: int, eos_ids: Sequence[int]):
        self.rows, self.width, self.eos_ids = rows, width, list(eos_ids)
        self.chains = []
        for row in rows:
            try:
                self.chains.append(self._chain(row.params, row.generator is not None))
            except Exception as e:  # this row's settings: it alone ends with the error
                row.fail(e)
                self.chains.append(([], []))

    @staticmethod
    def _chain(p, sampling: bool) -> tuple[list, list]:
        from transformers import (
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        chain = []
        if p.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
        if p.no_repeat_ngram_size:
            chain.append(NoRepeatNGramLogitsProcessor(p.no_repeat_ngram_size))
        warpers = []
        if sampling:  # the order of HF's sampling warpers
            if p.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(p.temperature))
            if p.top_k:
                warpers.append(TopKLogitsWarper(p.top_k))
            if p.top_p < 1.0:
                warpers.append(TopPLogitsWarper(p.top_p))
        return chain, warpers

    def __call__(self, input_ids, scores):
        for i, row in enumerate(self.rows):
            if row.done:
                continue
            try:
                scores[i] = self._row_scores(i, row, input_ids, scores)
            except Exception as e:  # numerics or a processor failed for this row: it alone ends with the error
                row.fail(e)
            if row.done:  # failed now or before: a fixed, finite choice keeps the batch's tensors clean
                scores[i] = -float("inf")
                scores[i, self.eos_ids[0] if self.eos_ids else 0] = 0.0
        return scores

    def _row_scores(self, i: int, row, input_ids, scores):
        import torch

        chain, warpers = self.chains[i]
        seen = input_ids[i:i + 1, self.width - len(row.request.ids):]  # the row's own tokens, no padding
        s = scores[i:i + 1]
        counted = seen if row.params.penalize_prompt else input_ids[i:i + 1, self.width:]  # answer only
        for proc in chain:
            s = proc(counted, s)
        if row.params.ignore_eos or len(row.new) < row.params.min_new_tokens:
            s = s.clone()
            s[:, self.eos_ids] = -float("inf")
        if row.generator is not None:
            for warp in warpers:
                s = warp(seen, s)
            probs = torch.softmax(s.float(), dim=-1)
            if not bool(torch.isfinite(probs).all()):
                raise FloatingPointError("the sampling probabilities are not finite (NaN or inf logits)")
            token = torch.multinomial(probs.cpu(), 1, generator=row.generator).item()
            s = torch.full_like(s, -float("inf"))
            s[0, token] = 0.0  # greedy decoding then picks exactly the sampled token
        elif bool(torch.isnan(s).any()) or not bool(torch.isfinite(s.max())):
            raise FloatingPointError("the scores are NaN or infinite")
        return s[0]


class RowController:
    """A stopping criterion that feeds each row its new token and says which rows are finished."""

    def __init__(self, rows: list, on_step: Callable[[int], None] | None = None):
        self.rows, self.on_step = rows, on_step

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last):
            if not row.done:
                row.add(token)
        done = [row.done for row in self.rows]
        if self.on_step is not None:
            self.on_step(done.count(False))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
