"""Each row of a batched ``generate`` with its own settings: the logits processor and the stopping criterion that
utils/inference/batching.py hands to ``model.generate``.

``rows`` are the batcher's rows: each has ``params`` (GenerationParams), ``request.ids`` (the prompt's ids),
``new`` (its generated ids), ``generator`` (a seeded torch.Generator when it samples, else None), ``done`` and
``add(token)`` and ``fail(error)``. The processor reads a row's tokens from ``request.ids`` and ``new``, never from
the batch's padded layout, so a row keeps its settings when it moves between batches (mid-batch admission,
utils/inference/iteration.py) and on engines that keep no batch tensor (llama.cpp). Generation itself runs greedy: :class:`RowProcessor` turns each row's scores into
its own choice. A row whose settings or numbers fail ends alone with its error (``fail``); the other rows of the batch
go on untouched, so one user's request never fails another's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class RowProcessor:
    """Per-row logits processing inside one greedy ``generate`` (see the module docstring)."""

    def __init__(self, rows: list, eos_ids: Sequence[int]):
        self.rows, self.eos_ids = list(rows), list(eos_ids)
        self.chains = [self.chain_of(row) for row in self.rows]

    @classmethod
    def chain_of(cls, row) -> tuple[list, list]:
        """The row's processors and warpers; on bad settings the row alone fails and gets none."""
        try:
            return cls._chain(row.params, row.generator is not None)
        except Exception as e:  # this row's settings: it alone ends with the error
            row.fail(e)
            return [], []

    def add(self, row) -> None:
        """A row joins the batch (mid-batch admission): its scores are the next row of ``scores``."""
        self.rows.append(row)
        self.chains.append(self.chain_of(row))

    def keep(self, indices: Sequence[int]) -> None:
        """Only the rows at ``indices`` stay (the others finished and left the batch)."""
        self.rows = [self.rows[i] for i in indices]
        self.chains = [self.chains[i] for i in indices]

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
        """``scores`` (rows, vocab) with each row's settings applied; ``input_ids`` is not read (see the module)."""
        for i, row in enumerate(self.rows):
            if row.done:
                continue
            try:
                scores[i] = self._row_scores(i, row, scores)
            except Exception as e:  # numerics or a processor failed for this row: it alone ends with the error
                row.fail(e)
            if row.done:  # failed now or before: a fixed, finite choice keeps the batch's tensors clean
                scores[i] = -float("inf")
                scores[i, self.eos_ids[0] if self.eos_ids else 0] = 0.0
        return scores

    def _row_scores(self, i: int, row, scores):
        import torch

        chain, warpers = self.chains[i]
        s = scores[i:i + 1]
        if not chain and row.generator is None and not (row.params.ignore_eos or len(row.new) < row.params.min_new_tokens):
            if bool(torch.isnan(s).any()) or not bool(torch.isfinite(s.max())):
                raise FloatingPointError("the scores are NaN or infinite")
            return s[0]  # greedy, nothing to apply
        seen = torch.tensor([row.request.ids + row.new], device=s.device)  # the row's own tokens, no padding
        counted = seen if row.params.penalize_prompt else seen[:, len(row.request.ids):]  # answer only
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
