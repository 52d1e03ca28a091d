"""utils/training/answer_logits.py: the LM head on the answer positions only gives the full forward's loss and gradients."""

from __future__ import annotations

import pytest
import torch

from utils.common.datafiles import IGNORE_INDEX
from utils.training.answer_logits import answer_tail, keep_answer_logits, supports_answer_logits

M = IGNORE_INDEX


def test_answer_tail_starts_one_before_the_earliest_label():
    labels = torch.tensor([[M, M, M, 7, 8, M],    # first label at 3
                           [M, M, M, M, 5, 6]])   # at 4
    assert answer_tail(labels) == 6 - 3 + 1       # positions 2..5: position 2 predicts token 3
    assert answer_tail(torch.tensor([[1, 2, 3]])) == 3     # a label at position 0 (CLM): nothing trimmed
    assert answer_tail(torch.full((2, 4), M)) == 4         # no label at all: nothing trimmed
    inputs = {"input_ids": torch.ones(2, 6, dtype=torch.long), "labels": labels}
    kept = keep_answer_logits(inputs)
    assert kept["logits_to_keep"] == 4
    assert kept["shift_labels"].tolist() == [[7, 8, M, M], [M, 5, 6, M]]  # next token of positions 2..5
    untouched = {"labels": torch.tensor([[1, 2, 3]])}
    assert keep_answer_logits(untouched) is untouched  # nothing to trim: the batch as it was


@pytest.mark.parametrize("num_items", [None, 11])
def test_same_loss_and_gradients_as_the_full_forward(tiny_model_dir, num_items):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert supports_answer_logits(model)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (3, 20))
    labels = ids.clone()
    labels[0, :12] = M   # prompts of different lengths, right padding masked too
    labels[1, :9] = M
    labels[1, 17:] = M
    labels[2, :15] = M
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}

    def loss_and_grads(batch):
        model.zero_grad()
        loss = model(**batch, **extra).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full_loss, full_grads = loss_and_grads(inputs)
    trimmed = keep_answer_logits(inputs)
    assert trimmed["logits_to_keep"] == 20 - 9 + 1
    assert model(**{k: v for k, v in trimmed.items() if k != "labels"}).logits.shape[1] == 12
    loss, grads = loss_and_grads(trimmed)
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(full_grads)
    for g, f in zip(grads, full_grads):
        torch.testing.assert_close(g, f, rtol=1e-4, atol=1e-6)


def test_the_sft_trainer_uses_it(tiny_model_dir):
    from utils.training.trainer import make_trainer

    class Prepared:  # what make_trainer reads
        def __init__(self):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    assert make_trainer(Prepared(), args, None, None).answer_logits is True
    assert supports_answer_logits(torch.nn.Linear(2, 2)) is False  # not a causal LM: forward left alone


def test_trl_fused_head_scores_answer_rows_only_with_the_same_result(tiny_model_dir, monkeypatch):
    """dpo.py's CPU fix: trl's fused LM head given only the labelled rows (as on CUDA) gives the log-probs and
    gradients of its every-row CPU path, and really is given fewer rows (a trl upgrade that drops the hook fails)."""
    import trl.trainer.utils as trl_utils
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from utils.training.answer_logits import fused_head_on_answer_positions

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (2, 16))
    labels = ids.clone()
    labels[0, :10] = M
    labels[1, :6] = M
    labels[1, 13:] = M
    rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                        lambda hidden, *rest: rows.append(hidden.shape[0]) or apply(hidden, *rest))

    def log_probs_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    full, full_grads = log_probs_and_grads()
    with fused_head_on_answer_positions():
        answer, grads = log_probs_and_grads()
    assert rows == [2 * 15, (6 + 7)]  # every shifted position, then the 13 labelled ones
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after the block
    torch.testing.assert_close(answer, full, rtol=1e-5, atol=1e-6)
    assert (answer[0, :9] == 0).all()
    for g, f in zip(grads, full_grads):
        torch.testing.assert_close(g, f, rtol=1e-4, atol=1e-6)
