"""FLOPs per token, the peak behind MFU, the unigram baseline and metrics.jsonl."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from microgpt_core import SEED_CONFIG
from microgpt_train.metrics import (
    MetricsLog,
    _cpu_peak,
    flops_per_token,
    peak_flops_per_device,
    unigram_entropy,
)


def test_flops_per_token_of_the_seed_model():
    D, L, F, V, T = 256, 4, 1024, 8192, 256
    matmul_params = L * (3 * D * D + D * D + 2 * D * F) + D * V  # qkv, out, mlp in + out; the head
    assert flops_per_token(SEED_CONFIG) == 6 * matmul_params + 12 * L * T * D == 34_603_008


def test_flops_per_token_counts_grouped_key_value_heads_and_the_gate():
    llama = SEED_CONFIG.replace(n_kv_heads=2, mlp="swiglu", d_ff=688, positional="rope")
    D, L, F, V, T, Dh = 256, 4, 688, 8192, 256, 64
    qkv = D * (4 + 2 * 2) * Dh  # 4 query heads, 2 key and 2 value heads
    matmul_params = L * (qkv + D * D + 3 * D * F) + D * V  # gate, in and out
    assert flops_per_token(llama) == 6 * matmul_params + 12 * L * T * D


def test_peak_override_wins():
    assert peak_flops_per_device(SEED_CONFIG, 123e12) == 123e12


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the measured peak is the CPU's")
def test_cpu_peak_is_measured_once_per_process_and_shared_by_its_devices():
    peak = peak_flops_per_device(SEED_CONFIG)
    assert peak == _cpu_peak("float32") / jax.local_device_count()
    assert 1e9 < _cpu_peak("float32") < 1e15  # a plausible matmul speed, in FLOP/s
    assert peak_flops_per_device(SEED_CONFIG) == peak  # cached: MFU figures of one run share it
    bf16 = SEED_CONFIG.replace(compute_dtype="bfloat16")
    assert peak_flops_per_device(bf16) == _cpu_peak("bfloat16") / jax.local_device_count()


def test_unigram_entropy():
    assert unigram_entropy(np.array([3, 3, 3])) == 0.0
    assert unigram_entropy(np.array([[0, 1], [2, 3]])) == pytest.approx(np.log(4))


def test_metrics_log_keeps_lines_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo'
    )
    log = MetricsLog(path, enabled=True, truncate_after=2)
    assert [r["step"] for r in log.records] == [1, 2]
    log.write({"step": 3, "loss": float("nan")})  # non-finite values become null, never invalid JSON
    assert [json.loads(line) for line in path.read_text().splitlines()][-1] == {"step": 3, "loss": None}
