"""Length-grouped batches in random order: ``--group_by_length`` without HF's bias towards long examples.

transformers' ``LengthGroupedSampler`` shuffles the data, cuts it into mega-batches of 50 batches, and sorts each
mega-batch by length, longest first (``trainer_pt_utils.get_length_grouped_indices``). Over whole epochs that only
orders the examples; but a run of ``--max_steps`` shorter than a mega-batch (the demo's 40 steps of 4 are 160 of a
mega-batch's 200 examples) trains on the longest examples only: the demo's short identity and out-of-scope items
came last in the mega-batch and were never seen, and the model never learned who it is (benchmarks/LOG.md, alignment, second round).

:class:`ShuffledLengthGroupedSampler` keeps HF's groups (so padding stays as low) and puts them in random order, so
that any prefix of the steps is a fair sample of the data. The longest group stays first (an out-of-memory error
comes at the first step, as with HF's) and a last, shorter group stays last (the data loader cuts batches from the
flat index list: a short group moved inwards would shift every later batch across groups).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class ShuffledLengthGroupedSampler(LengthGroupedSampler):
    """HF's ``LengthGroupedSampler`` with its groups of ``batch_size`` indices (one optimizer step's examples on
    one process) in random order, drawn from ``generator`` (default: torch's global generator, which the Trainer
    seeds with ``--seed``, as HF's sampler does). Yields a permutation of ``range(len(lengths))``."""

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        size = self.batch_size
        groups = [indices[i:i + size] for i in range(0, len(indices), size)]
        tail = [groups.pop()] if groups and len(groups[-1]) < size else []
        if len(groups) > 2:
            order = (torch.randperm(len(groups) - 1, generator=self.generator) + 1).tolist()
            groups = [groups[0]] + [groups[i] for i in order]
        return iter([i for group in groups + tail for i in group])
