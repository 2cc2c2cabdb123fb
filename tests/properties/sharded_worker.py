"""The sharding property on 8 simulated CPU devices (run by test_train_properties.py in a subprocess
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``, never collected by pytest).

    python sharded_worker.py EXAMPLES

Data's packed windows, as one global batch split by rows over the ``data`` axis, feed an FSDP train
step, with AdamW and with Muon (the examples alternate). Every leaf of the state keeps its shape,
dtype and sharding through the step; every parameter with an ``embed`` dimension (core's logical
axes), and the optimiser's moments of it (Adam's two, Muon's momentum), is split over the 8 devices
along that dimension (each holds 1/8 of it), before the step and after; the rest is whole on every
device. Prints one JSON line: the devices, the examples run per optimiser and the leaves found split.
"""

from __future__ import annotations

import json
import math
import sys

import jax
import numpy as np
import optax
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from microgpt_core import GPTConfig, param_axes
from microgpt_core.params import flatten
from microgpt_data import pack_windows
from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step
from microgpt_train.config import OPTIMIZERS
from microgpt_train.muon import MUON, muon_labels
from microgpt_train.sharding import batch_sharding, global_batch, make_mesh, param_shardings, state_shardings
from microgpt_train.step import loss_fn

DEVICES = 8
B = 8  # one row per device
# d_model 16 splits 8 ways (2 columns a device); n_layers, the vocabulary and the rest stay whole.
configs = st.builds(
    GPTConfig,
    vocab_size=st.sampled_from([32, 97]),
    context_length=st.just(16),
    d_model=st.just(16),
    n_layers=st.sampled_from([1, 2]),
    n_heads=st.just(2),
    positional=st.sampled_from(["learned", "sinusoidal"]),
    tie_embeddings=st.booleans(),
    bias=st.booleans(),
)
seen = {"examples": 0, "split_leaves": 0, **{name: 0 for name in OPTIMIZERS}}


def _compiled(config: GPTConfig, optimizer_name: str):
    run = RunConfig(
        model=config, batch_size=B, sample_tokens=4, warmup_steps=1, fsdp=True, optimizer=optimizer_name
    )
    optimizer = make_optimizer(run)
    mesh = make_mesh()
    init = lambda k: init_state(k, config, optimizer)  # noqa: E731
    shape = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, param_shardings(shape["params"], config, mesh, fsdp=run.fsdp), mesh)
    step = make_train_step(config, optimizer, state_sharding=shardings, batch_sharding=batch_sharding(mesh))
    return mesh, jax.jit(init, out_shardings=shardings), step


def _layout(state) -> dict:
    """name -> (shape, dtype, sharding) of every leaf of the state."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {jax.tree_util.keystr(path): (x.shape, x.dtype, x.sharding) for path, x in leaves}


def _moments(opt_state) -> list[dict]:
    """Each per-parameter tree of the optimiser state (Adam's mu and nu, Muon's mu) by parameter name,
    without the parameters the other part of a partition updates (optax's masked nodes)."""
    has_mu = lambda node: hasattr(node, "mu")  # noqa: E731  (optax's ScaleByAdamState, MuonState)
    states = [s for s in jax.tree.leaves(opt_state, is_leaf=has_mu) if has_mu(s)]
    trees = [getattr(s, field) for s in states for field in ("mu", "nu") if hasattr(s, field)]
    return [{n: x for n, x in flatten(t).items() if not isinstance(x, optax.MaskedNode)} for t in trees]


def _check_split(state, config: GPTConfig, optimizer_name: str) -> int:
    """Asserts that each parameter with an embed axis, and each moment of it, is split 8 ways
    along that axis and that every other parameter is whole; returns how many leaves are split."""
    axes = flatten(param_axes(config))
    moments = _moments(state["opt_state"])
    # AdamW keeps two moments of each parameter; Muon one of each matrix it updates.
    labels = flatten(muon_labels(state["params"]))
    one = {n for n, label in labels.items() if label == MUON} if optimizer_name == MUON else set()
    counts = {n: sum(n in m for m in moments) for n in axes}
    assert counts == {n: 1 if n in one else 2 for n in axes}, counts
    split = 0
    for tree in (flatten(state["params"]), *moments):
        for name, x in tree.items():
            shard_shapes = {s.data.shape for s in x.addressable_shards}
            assert len(x.addressable_shards) == DEVICES, name
            if "embed" in axes[name]:
                dim = axes[name].index("embed")
                want = x.shape[:dim] + (x.shape[dim] // DEVICES,) + x.shape[dim + 1 :]
                assert not x.sharding.is_fully_replicated, f"{name} {x.sharding.spec}: should be split"
                assert shard_shapes == {want}, (name, shard_shapes, want)
                split += 1
            else:
                assert x.sharding.is_fully_replicated and shard_shapes == {x.shape}, (name, x.sharding.spec)
    for name in ("step", "rng"):
        assert state[name].sharding.is_fully_replicated, name
    return split


def check(examples: int) -> None:
    # No shrinking: each smaller example compiles anew, and a failure must be reported within the
    # caller's timeout (Hypothesis still prints the failing example).
    phases = [Phase.explicit, Phase.reuse, Phase.generate]

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, phases=phases)
    @given(
        config=configs,
        seed=st.integers(0, 2**16),
        doc_lengths=st.lists(st.integers(5, 40), min_size=24, max_size=32),
    )
    def property_(config, seed, doc_lengths):
        rng = np.random.default_rng(seed)
        docs = [rng.integers(0, config.vocab_size - 1, n).tolist() for n in doc_lengths]
        windows = list(pack_windows(docs, config.vocab_size - 1, config.context_length + 1))
        assert len(windows) >= B  # at least 24 * 6 tokens in windows of 17
        optimizer_name = OPTIMIZERS[seen["examples"] % len(OPTIMIZERS)]
        mesh, init, step = _compiled(config, optimizer_name)
        batch = global_batch(np.stack(windows[:B]), mesh)  # (B, T+1) int32 from data, a row per device
        assert {s.data.shape for s in batch.addressable_shards} == {(1, config.context_length + 1)}
        state = init(jax.random.PRNGKey(seed))
        before = _layout(state)
        split = _check_split(state, config, optimizer_name)
        loss0 = float(loss_fn(state["params"], batch, config, None, False))
        assert abs(loss0 - math.log(config.vocab_size)) < 0.25  # N(0, 0.02) init: near-uniform predictions
        state, metrics = step(state, batch)
        after = _layout(state)
        assert after.keys() == before.keys()
        for name, (shape, dtype, sharding) in before.items():
            assert after[name][:2] == (shape, dtype), name
            assert after[name][2] == sharding, f"{name}: {sharding} -> {after[name][2]}"
        assert _check_split(state, config, optimizer_name) == split > 0
        assert np.isfinite(float(metrics["loss"]))
        seen["examples"] += 1
        seen[optimizer_name] += 1
        seen["split_leaves"] = max(seen["split_leaves"], split)

    property_()


if __name__ == "__main__":
    assert jax.device_count() == DEVICES, f"{jax.device_count()} devices: set XLA_FLAGS (see the docstring)"
    check(int(sys.argv[1]))
    print(json.dumps({"devices": jax.device_count(), **seen}))
