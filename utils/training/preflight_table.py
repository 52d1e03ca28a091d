"""The table tools/gpu_check.py prints and writes: one row per accelerator path, from the records its worker wrote.

Seconds per step and tokens/s after the warm-up steps, peak GPU memory, and MFU by utils/training/throughput.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from utils.training.throughput import GpuPeak, mfu, step_stats, train_flops_per_token


@dataclass
class Row:
    """One path's line of the table: ok or not and why, and its figures (None where not measured)."""

    path: str
    ok: bool
    reason: str = ""
    seconds_per_step: float | None = None
    tokens_per_s: float | None = None
    peak_gib: float | None = None
    mfu: float | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float | None = None


def last_error_line(stderr: str) -> str:
    """The last line of a log that names an error (else its last line; progress bars left out), at most 200 chars."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and "%|" not in line]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines or [""])[-1][:200]


def summarise(path, records: list[dict], returncode: int | None, stderr: str, peak: GpuPeak | None,
              warmup: int, timeout_s: float | None = None, wall_s: float | None = None) -> Row:
    """One table row from a worker's records and exit: ok/failed and why, and the figures the records hold.

    ``path`` is tools/gpu_check.py's CheckPath (its ``name`` and ``kind``); ``records`` are the worker's JSON
    records (tools/gpu_check_worker.py); ``returncode`` None means it timed out after ``timeout_s`` seconds."""
    row = Row(path.name, ok=returncode == 0, wall_s=wall_s)
    errors = [r["message"] for r in records if r["kind"] == "error"]
    if returncode is None:
        row.reason = f"timed out after {timeout_s:g} s" if timeout_s else "timed out"
    elif errors:
        row.ok, row.reason = False, errors[-1]
    elif returncode != 0:
        row.reason = last_error_line(stderr) or f"exit status {returncode}"
    memory = [r["peak_bytes"] for r in records if r["kind"] == "memory"]
    row.peak_gib = max(memory) / 2**30 if memory else None
    row.notes = [r["text"] for r in records if r["kind"] == "note"]
    steps = [r for r in records if r["kind"] == "step"]
    if path.kind == "train" and row.ok:
        try:
            stats = step_stats(steps, warmup)
        except ValueError as e:
            row.notes.append(f"not timed: {e}")
            return row
        row.seconds_per_step, row.tokens_per_s = stats.seconds_per_step, stats.tokens_per_s
        model = next((r for r in records if r["kind"] == "model"), None)
        if model is not None and peak is not None:
            flops = train_flops_per_token(model["matmul_params"], model["layers"], model["attn_width"],
                                          stats.tokens_per_sample, model["lora"])
            row.mfu = mfu(stats.tokens_per_s, flops, peak.tflops, model["world_size"])
        if model is not None:
            row.notes.append(f"{model['world_size']} GPU(s), {stats.tokens_per_sample:.0f} tokens/sample, "
                             f"{stats.steps} steps timed")
    generated = [r for r in records if r["kind"] == "generate"]
    if generated and row.ok:
        row.tokens_per_s = generated[-1]["tokens"] / generated[-1]["seconds"]
    return row


def _fmt(value, pattern: str) -> str:
    return "–" if value is None else format(value, pattern)


def render_table(rows: list[Row]) -> str:
    """A Markdown table (it goes into RESULTS.md as it is)."""
    lines = ["| path | result | s/step | tokens/s | peak GPU mem | MFU | notes |", "|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        result = "ok" if row.ok else f"**failed**: {row.reason}".replace("|", "/")
        lines.append(f"| {row.path} | {result} | {_fmt(row.seconds_per_step, '.3f')} | "
                     f"{_fmt(row.tokens_per_s, ',.0f')} | "
                     f"{'–' if row.peak_gib is None else f'{row.peak_gib:.2f} GiB'} | "
                     f"{'–' if row.mfu is None else f'{100 * row.mfu:.1f}%'} | "
                     f"{'; '.join(row.notes).replace('|', '/')} |")
    return "\n".join(lines)
