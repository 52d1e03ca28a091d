"""Throughput arithmetic: model FLOPs per token, MFU, steady-state step statistics, GPU peak FLOP/s.

MFU (model FLOPs utilisation) as PaLM defines it (Chowdhery et al. 2022, "PaLM", appendix B): the FLOPs the model
needs per token times the tokens per second, over the hardware's peak; recomputation (gradient checkpointing) and
quantisation overhead are not model FLOPs and do not count. Per trained token::

    6·N + 12·L·A·T      (full training: forward 2N, backward 2N for activations + 2N for weight gradients)
    4·N + 12·L·A·T      (LoRA: the frozen weights get no weight gradient; LoRA's own matrices are negligible)

N = weights that multiply activations (every Linear, the output head included; the input embedding is a lookup),
L = layers, A = attention width (heads × head dim), T = tokens per sequence; the attention term counts the full
T×T score matrix as PaLM does. Pure functions: tools/gpu_check.py feeds them what its workers recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def train_flops_per_token(matmul_params: int, layers: int, attn_width: int, seq_len: float, lora: bool) -> float:
    """Model FLOPs per trained token (see the module docstring)."""
    return (4 if lora else 6) * matmul_params + 12 * layers * attn_width * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float, gpus: int = 1) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all ``gpus`` together (0..1)."""
    if peak_tflops <= 0 or gpus < 1:
        raise ValueError(f"peak_tflops={peak_tflops}, gpus={gpus}: both must be positive")
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12 * gpus)


@dataclass(frozen=True)
class StepStats:
    steps: int  # steps measured (after the warm-up)
    seconds_per_step: float
    tokens_per_s: float
    samples_per_step: float
    tokens_per_sample: float


def step_stats(steps: list[dict], warmup: int = 1) -> StepStats:
    """Steady-state statistics from step records ``{"step", "time", "tokens", "samples"}`` (time at the end of the
    optimizer step, tokens and samples cumulative over all processes). The first ``warmup`` steps (allocation,
    kernel selection, compilation) are left out: timing starts at the end of the ``warmup``-th step."""
    if warmup < 1:
        raise ValueError(f"warmup={warmup}: must be >= 1 (a step is timed from the end of the one before it)")
    ordered = sorted(steps, key=lambda r: r["step"])
    if len(ordered) <= warmup:
        raise ValueError(f"{len(ordered)} step records: need more than the {warmup} warm-up step(s) to time any")
    first, last = ordered[warmup - 1], ordered[-1]
    count = last["step"] - first["step"]
    seconds = last["time"] - first["time"]
    if count <= 0 or seconds <= 0:
        raise ValueError(f"step records do not advance (steps {first['step']}..{last['step']}, {seconds:.3g} s)")
    tokens, samples = last["tokens"] - first["tokens"], last["samples"] - first["samples"]
    return StepStats(count, seconds / count, tokens / seconds, samples / count,
                     tokens / samples if samples else float("nan"))


@dataclass(frozen=True)
class GpuPeak:
    name: str
    tflops: float  # dense 16-bit tensor-core TFLOP/s (BF16; FP16 where the GPU has no BF16)
    source: str


# First match wins (GH200 is an H200; A10 must not catch A100/A10G). Datasheets quote 2:4 sparsity figures for
# Ampere and later; the dense figure is half of them.
GPU_PEAKS: tuple[tuple[str, GpuPeak], ...] = tuple((pattern, GpuPeak(*peak)) for pattern, peak in (
    (r"H100 NVL", ("H100 NVL", 835.5, "NVIDIA H100 datasheet: NVL 1,671 TFLOPS BF16 with sparsity")),
    (r"H100.*PCIe", ("H100 PCIe", 756.0, "NVIDIA H100 datasheet: PCIe 1,513 TFLOPS BF16 with sparsity")),
    (r"H100", ("H100 SXM", 989.4, "NVIDIA H100 datasheet: SXM 1,979 TFLOPS BF16 with sparsity")),
    (r"H200 NVL", ("H200 NVL", 835.5, "NVIDIA H200 datasheet: NVL 1,671 TFLOPS BF16 with sparsity")),
    (r"H200", ("H200 SXM", 989.4, "NVIDIA H200 datasheet: SXM 1,979 TFLOPS BF16 with sparsity")),
    (r"A100", ("A100", 312.0, "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense (624 with sparsity)")),
    (r"L40S", ("L40S", 362.05, "NVIDIA L40S datasheet: 733 TFLOPS BF16 with sparsity")),
    (r"L40\b", ("L40", 181.05, "NVIDIA L40 datasheet: 362.1 TFLOPS BF16 with sparsity")),
    (r"\bL4\b", ("L4", 121.0, "NVIDIA L4 datasheet: 242 TFLOPS BF16 with sparsity")),
    (r"\bA10\b", ("A10", 125.0, "NVIDIA A10 datasheet: 250 TFLOPS BF16 with sparsity")),
    (r"V100.*PCIE", ("V100 PCIe", 112.0, "NVIDIA V100 datasheet: PCIe 112 TFLOPS FP16 tensor (no BF16)")),
    (r"V100", ("V100 SXM2", 125.0, "NVIDIA V100 datasheet: SXM2 125 TFLOPS FP16 tensor (no BF16)")),
    (r"RTX 4090", ("RTX 4090", 165.2, "NVIDIA Ada GPU architecture whitepaper: 165.2 TFLOPS FP16/BF16 tensor "
                                      "with FP32 accumulate")),
    (r"RTX 3090", ("RTX 3090", 71.0, "NVIDIA Ampere GA102 whitepaper: 71 TFLOPS FP16 tensor with FP32 "
                                     "accumulate")),
))


def gpu_peak(device_name: str, override_tflops: float | None = None) -> GpuPeak | None:
    """The peak of ``torch.cuda.get_device_name()``'s GPU; ``override_tflops`` (a number you trust) wins; None
    when the GPU is not in the table (MFU then stays unreported rather than guessed)."""
    if override_tflops:
        return GpuPeak(device_name, float(override_tflops), "given with --peak_tflops")
    for pattern, peak in GPU_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None
