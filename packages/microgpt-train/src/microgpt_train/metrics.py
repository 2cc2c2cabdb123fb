"""What a run measures: FLOPs and MFU, the unigram baseline, and `metrics.jsonl`.

    FLOPs per token ≈ 6 N + 12 L T D        (Kaplan et al. 2020; Chowdhery et al. 2022, appendix B)

N counts the non-embedding parameters plus the output projection (the tied embedding used as the
head does a V x D matmul per token); the second term is the attention scores and weighted values
over T positions, forward and backward. MFU = achieved FLOP/s / (peak FLOP/s per device x devices).
Accelerators take their peak from a table; a CPU's peak differs widely from one machine to the
next, so it is measured once per process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core import GPTConfig
from microgpt_core.precision import accumulation_dtype

__all__ = [
    "METRICS_FILE",
    "MetricsLog",
    "bits_per_byte",
    "cpu_model",
    "flops_per_token",
    "machine",
    "peak_flops_per_device",
    "text_bytes",
    "unigram_entropy",
]

METRICS_FILE = "metrics.jsonl"  # in the run folder: one JSON record per logged step or evaluation

# Dense peak FLOP/s per device, by platform and compute dtype; CPUs are measured (`_cpu_peak`).
_PEAKS = {
    ("gpu", "bfloat16"): 989e12,  # H100 SXM dense bf16
    ("gpu", "float32"): 67e12,
    ("tpu", "bfloat16"): 197e12,  # v5e
    ("tpu", "float32"): 197e12,
}
CPU_PEAK_MATMUL = 1024  # n of the n x n matmul timed for a CPU's peak (2048 was no faster here)


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs (forward + backward) per token: 6 N + 12 L T D, N = matmul parameters."""
    D, L, F, V, T = config.d_model, config.n_layers, config.d_ff, config.vocab_size, config.context_length
    mlp_matrices = 3 if config.mlp == "swiglu" else 2
    matmul_params = L * (D * config.qkv_dim + D * D + mlp_matrices * D * F) + D * V
    return 6.0 * matmul_params + 12.0 * L * T * D


def peak_flops_per_device(config: GPTConfig, override: float = 0.0) -> float:
    """`override` if given, else a table entry for the platform and compute dtype."""
    if override > 0:
        return override
    platform = jax.devices()[0].platform
    if platform == "cpu":  # the simulated devices of one process share its cores
        return _cpu_peak(config.compute_dtype) / jax.local_device_count()
    return _PEAKS.get((platform, config.compute_dtype), _PEAKS.get((platform, "float32"), 1e12))


@functools.cache
def _cpu_peak(dtype: str) -> float:
    """FLOP/s of this process's fastest of 5 timed n x n matmuls (n = CPU_PEAK_MATMUL) the way the
    model multiplies in `dtype`: both inputs in `dtype`, products accumulated and returned in float32
    (`layers.matmul`), measured once per process. For bfloat16 that is the CPU's bfloat16 rate
    (AVX512-BF16, AMX): a bfloat16 result instead takes a slower path on XLA's CPU backend."""
    n = CPU_PEAK_MATMUL
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda a: jnp.matmul(a, a, preferred_element_type=accumulation_dtype(dtype)))
    matmul(a).block_until_ready()  # compile
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def unigram_entropy(tokens: np.ndarray) -> float:
    """H = -Σ_v p(v) ln p(v) of the empirical token distribution (nats): the loss of a model that
    knows only each token's frequency in these very tokens (a lower bound for unigram models)."""
    counts = np.bincount(np.asarray(tokens).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows of it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """What the run trains on, for its summary and card: the accelerators, or the CPU and the cores
    this process may use (e.g. "AMD EPYC, 2 cores"), with the process count when there are several."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        what = f"{cpu_model()}, {cores} cores"
    else:
        what = f"{len(devices)} x {devices[0].device_kind}"
    return what if jax.process_count() == 1 else f"{what} per process, {jax.process_count()} processes"


def text_bytes(tokens: np.ndarray, tokenizer: Any) -> int:
    """The UTF-8 bytes of text that `tokens` stand for: the sum of each id's byte length, with
    special tokens (end of text) counted as 0 bytes, as they stand for no text."""
    lengths = np.asarray([len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)], np.int64)
    lengths[list(tokenizer.special_tokens.values())] = 0
    return int(lengths[np.asarray(tokens).ravel()].sum())


def bits_per_byte(loss: float, tokens: int, n_bytes: int) -> float:
    """bits/byte = (loss / ln 2) x tokens / bytes: the mean loss `loss` (nats per token) over
    `tokens` predicted tokens that stand for `n_bytes` bytes of text, as bits per byte of that text,
    so models with different tokenizers compare on the same text."""
    if n_bytes <= 0:
        raise ValueError(f"bits per byte needs text: {tokens} tokens stand for {n_bytes} bytes")
    return loss / math.log(2) * tokens / n_bytes


class MetricsLog:
    """Appends one JSON object per line to `metrics.jsonl` (process 0 only) and keeps the history."""

    def __init__(self, path: Path, *, enabled: bool, truncate_after: int | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if truncate_after is None or record.get("step", 0) <= truncate_after:
                    self.records.append(record)
        if enabled:
            # Rewrite what a resumed run keeps, so steps after its checkpoint appear only once.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = "".join(json.dumps(r) + "\n" for r in self.records)
            self.path.write_text(text)

    def write(self, record: dict[str, Any]) -> None:
        record = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
        }
        self.records.append(record)
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
