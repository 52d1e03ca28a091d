"""Logits only where the loss reads them: SFT with the prompt masked computes the LM head on the answer only.

A causal LM's forward projects every position through the LM head, but with the prompt masked (labels -100) the loss
reads only the positions that predict an answer token. The head is not small: Gemma-3-270M's maps 640 hidden units
to 262,144 logits (168M multiply-adds per token, more than the rest of the model), and a grounded-answer item of the
demo is ~75% prompt (three retrieved articles). transformers' own ``logits_to_keep`` (the model computes the head for
the last N positions only) and ``shift_labels`` (ForCausalLMLoss's pre-shifted targets) do it without forking the
loss: the batch gets both, the Trainer's loss, ``num_items_in_batch`` normalisation and gradient accumulation stay
the Trainer's own. Same loss and gradients as the full forward (tests/test_answer_logits.py); speed in RESULTS.md.

trl's DPOTrainer brings its own fused LM head (trl.trainer.utils.add_fused_lm_head), which scores only the
completion on CUDA/XPU but every position on other devices (fixed tile shapes for compilers such as Neuron's). On a
CPU that is the whole head again, 4x the answer: :func:`fused_head_on_answer_positions` gives the CPU the CUDA path.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

from utils.common.datafiles import IGNORE_INDEX


def answer_tail(labels) -> int:
    """How many final positions of a ``(batch, seq_len)`` label batch the loss reads: from the position before the
    batch's earliest labelled token (logits at position p predict token p + 1) to the end. ``seq_len`` when nothing
    can be trimmed (a token labelled at position 0, as in continued pretraining, or no label at all)."""
    length = labels.shape[1]
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if labelled.numel() == 0:
        return length
    return min(length, length - int(labelled[0, 0]) + 1)


def supports_answer_logits(model) -> bool:
    """Whether ``model`` (a transformers causal LM, possibly inside PEFT) takes ``logits_to_keep`` and computes its
    loss with transformers' ForCausalLMLoss, which accepts ``shift_labels``."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        takes_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        return takes_keep and base.loss_function is ForCausalLMLoss
    except (AttributeError, ValueError, TypeError):  # not a transformers causal LM: leave its forward alone
        return False


def keep_answer_logits(inputs: dict) -> dict:
    """``inputs`` with ``logits_to_keep`` (the :func:`answer_tail`) and the matching ``shift_labels`` (``(batch,
    kept)``: the next token of each kept position, -100 past the end) when that trims anything; else ``inputs``.
    ``labels`` stay (the model computes a loss only when given labels; ``shift_labels`` takes precedence)."""
    import torch

    labels = inputs.get("labels")
    if labels is None or "shift_labels" in inputs or "logits_to_keep" in inputs:
        return inputs
    keep = answer_tail(labels)
    length = labels.shape[1]
    if keep >= length:
        return inputs
    shift_labels = torch.nn.functional.pad(labels[:, length - keep + 1:], (0, 1), value=IGNORE_INDEX)
    return {**inputs, "logits_to_keep": keep, "shift_labels": shift_labels.contiguous()}


@contextmanager
def fused_head_on_answer_positions():
    """Within the block, trl's fused LM head scores only the labelled positions on a CPU too, as it does on CUDA.

    trl decides per call with ``trl.trainer.utils._use_triton(device)`` whether to pass only the labelled rows to its
    chunked log-prob function (which itself runs on any device; it asks its own module whether to use Triton, so
    this choice does not change the kernel). The rows that are left out are the ones trl zeroes afterwards, so the
    log-probs and gradients are the same (tests/test_answer_logits.py). A trl without that hook is left as it is.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


class _HeadView:
    """What trl's fused head reads of an LM head (``weight``, ``bias``) for a head peft wrapped to train new rows."""

    def __init__(self, wrapper):
        self.weight = wrapper.weight  # peft: the base rows with the active adapter's trained rows (differentiable)
        self.bias = getattr(wrapper.original_module, "bias", None)


@contextmanager
def fused_head_sees_trained_rows(model):
    """Within the block, trl's fused LM head works on a head whose new vocabulary rows peft trains
    (``--new_embeddings new_rows``: a ``TrainableTokensWrapper``): trl reads ``lm_head.bias``, which the wrapper does
    not have (AttributeError, huggingface/trl #4723); it gets the wrapper's merged weight and the base head's bias.
    ``model``: the PeftModel (or plain model) whose base trl patched; anything else is left as it is."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if not hasattr(head, "token_adapter"):
        yield
        return
    base.get_output_embeddings = lambda: _HeadView(head)
    try:
        yield
    finally:
        del base.get_output_embeddings  # the class's method again
