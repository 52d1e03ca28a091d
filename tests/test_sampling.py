"""utils/training/length_grouped_sampler.py: HF's length groups, in random order — a short run sees short examples at their share."""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from utils.training.length_grouped_sampler import ShuffledLengthGroupedSampler

# 1,000 examples: one in five short (a persona item), the rest long (a grounded answer), in random positions.
LENGTHS = [40 if torch.rand(1, generator=torch.Generator().manual_seed(i)).item() < 0.2 else 300 + i % 200
           for i in range(1000)]
BATCH = 4


def draw(sampler_class, seed):
    return list(sampler_class(BATCH, lengths=LENGTHS, generator=torch.Generator().manual_seed(seed)))


def groups(indices):
    return [indices[i:i + BATCH] for i in range(0, len(indices), BATCH)]


def short_share_of_first_steps(indices, steps=40):
    first = indices[:steps * BATCH]
    return sum(LENGTHS[i] == 40 for i in first) / len(first)


def test_the_same_groups_as_hf_in_random_order():
    for seed in range(3):
        ours, hf = draw(ShuffledLengthGroupedSampler, seed), draw(LengthGroupedSampler, seed)
        assert sorted(ours) == list(range(len(LENGTHS)))  # a permutation
        assert sorted(map(sorted, groups(ours))) == sorted(map(sorted, groups(hf)))  # padding as low as HF's
        assert groups(ours)[0] == groups(hf)[0] and LENGTHS[ours[0]] == max(LENGTHS)  # longest first (OOM early)
        assert groups(ours) != groups(hf)


def test_a_short_run_sees_short_examples_at_their_share():
    share = sum(length == 40 for length in LENGTHS) / len(LENGTHS)
    hf = [short_share_of_first_steps(draw(LengthGroupedSampler, s)) for s in range(5)]
    ours = [short_share_of_first_steps(draw(ShuffledLengthGroupedSampler, s)) for s in range(5)]
    # HF: 40 steps of 4 are the 160 longest of a 200-example mega-batch, the short fifth never comes
    assert max(hf) < 0.1  # (only when the mega-batch drew more than 40 short ones)
    assert abs(sum(ours) / len(ours) - share) < 0.06


def test_a_last_shorter_group_stays_last():
    lengths = LENGTHS[:998]  # 249 full groups and one of 2
    ours = list(ShuffledLengthGroupedSampler(BATCH, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    hf = list(LengthGroupedSampler(BATCH, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    assert ours[-2:] == hf[-2:] and sorted(ours) == list(range(998))
