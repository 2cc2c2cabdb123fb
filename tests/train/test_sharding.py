"""Where every array goes on an 8-way ``data`` mesh (an `AbstractMesh`: layouts need no devices):
batches split by rows; parameters whole without FSDP, split along their ``embed`` dimension with it
unless 8 does not divide that dimension; Adam's moments and Muon's momentum laid out exactly like
their parameter, even where two parameters share a shape but not a layout. The same layouts on 8 real
(simulated) devices, kept by a train step, are checked by tests/properties/sharded_worker.py."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from microgpt_core import GPTConfig
from microgpt_core.params import flatten
from microgpt_train import RunConfig, init_state, make_optimizer
from microgpt_train.sharding import (
    batch_sharding,
    global_batch,
    make_mesh,
    param_shardings,
    replicated,
    state_shardings,
    to_host,
)

MESH = AbstractMesh((8,), ("data",))
# d_model 16 and 4 x 16 = 64 divide by 8; 3 x 16 = 48 does too; the vocabulary (20) and context (12) do not.
CONFIG = GPTConfig(vocab_size=20, context_length=12, d_model=16, n_layers=2, n_heads=2, tie_embeddings=False)

FSDP_SPECS = {  # the embed dimension of each parameter carries "data"; nothing else does
    "embed.tokens": P(None, "data"),
    "embed.positions": P(None, "data"),
    "blocks.ln1.scale": P(None, "data"),
    "blocks.ln1.bias": P(None, "data"),
    "blocks.ln2.scale": P(None, "data"),
    "blocks.ln2.bias": P(None, "data"),
    "blocks.attn.w_qkv": P(None, "data", None),
    "blocks.attn.b_qkv": P(None, None),
    "blocks.attn.w_out": P(None, None, "data"),
    "blocks.attn.b_out": P(None, "data"),
    "blocks.mlp.w_in": P(None, "data", None),
    "blocks.mlp.b_in": P(None, None),
    "blocks.mlp.w_out": P(None, None, "data"),
    "blocks.mlp.b_out": P(None, "data"),
    "final_norm.scale": P("data"),
    "final_norm.bias": P("data"),
    "head.w": P("data", None),
}


def _shapes(config: GPTConfig, run: RunConfig | None = None):
    run = run or RunConfig(model=config, sample_tokens=4)
    return jax.eval_shape(lambda k: init_state(k, config, make_optimizer(run)), jax.random.PRNGKey(0))


def _specs(tree) -> dict:
    return {name: s.spec for name, s in flatten(tree).items()}


def _same(a: P, b: P) -> bool:
    """Equal partition specs, trailing unsplit dimensions aside (P(None, "data") == P(None, "data", None))."""
    strip = lambda spec: tuple(spec) + (None,) * (8 - len(spec))  # noqa: E731
    return strip(a) == strip(b)


def test_fsdp_splits_each_parameter_along_its_embed_dimension():
    specs = _specs(param_shardings(_shapes(CONFIG)["params"], CONFIG, MESH, fsdp=True))
    assert specs.keys() == FSDP_SPECS.keys()
    for name, spec in specs.items():
        assert _same(spec, FSDP_SPECS[name]), (name, spec)


def test_without_fsdp_every_parameter_is_whole_on_every_device():
    shardings = flatten(param_shardings(_shapes(CONFIG)["params"], CONFIG, MESH, fsdp=False))
    assert all(all(axis is None for axis in s.spec) for s in shardings.values())


@pytest.mark.parametrize(("devices", "split"), [(8, False), (4, True), (2, True)])
def test_a_dimension_the_mesh_does_not_divide_stays_whole(devices, split):
    config = CONFIG.replace(d_model=20, n_heads=2)  # 20 = 4 x 5: splits 4 or 2 ways, not 8
    mesh = AbstractMesh((devices,), ("data",))
    specs = _specs(param_shardings(_shapes(config)["params"], config, mesh, fsdp=True))
    assert _same(specs["blocks.attn.w_qkv"], P(None, "data" if split else None, None))
    assert _same(specs["final_norm.scale"], P("data" if split else None))
    assert _same(specs["blocks.mlp.w_in"], P(None, "data" if split else None, None))


def test_adam_moments_follow_their_parameter_not_another_of_the_same_shape():
    # vocab = d_model = context: the token table, the position table and the head are all (16, 16),
    # but the head is split on its rows and the tables on their columns.
    config = CONFIG.replace(vocab_size=16, context_length=16)
    shapes = _shapes(config)
    params = param_shardings(shapes["params"], config, MESH, fsdp=True)
    assert _specs(params)["head.w"] != _specs(params)["embed.tokens"]
    state = state_shardings(shapes, params, MESH)
    is_adam = lambda node: hasattr(node, "mu")  # noqa: E731  (optax's ScaleByAdamState)
    adam = [s for s in jax.tree.leaves(state["opt_state"], is_leaf=is_adam) if is_adam(s)]
    assert len(adam) == 1  # one AdamW inside the chain
    assert _specs(adam[0].mu) == _specs(adam[0].nu) == _specs(params)
    assert state["params"] is params
    others = [
        s for s in jax.tree.leaves(state["opt_state"]) if s.spec != P() and s not in jax.tree.leaves(params)
    ]
    assert others == []
    assert all(state[k].spec == P() for k in ("step", "rng"))
    assert jax.tree.structure(state) == jax.tree.structure(jax.tree.map(lambda _: 0, shapes))


def test_muons_momentum_and_the_adamw_moments_follow_their_parameters():
    # d_model = d_ff: the MLP's w_in (L, D, F) and w_out (L, F, D) share a shape, split on other axes.
    config = CONFIG.replace(vocab_size=16, context_length=16, d_ff=16)
    shapes = _shapes(config, RunConfig(model=config, sample_tokens=4, optimizer="muon"))
    params = param_shardings(shapes["params"], config, MESH, fsdp=True)
    expected = _specs(params)
    assert expected["blocks.mlp.w_in"] != expected["blocks.mlp.w_out"]
    state = state_shardings(shapes, params, MESH)
    has_mu = lambda node: hasattr(node, "mu")  # noqa: E731  (optax's MuonState, ScaleByAdamState)
    states = [s for s in jax.tree.leaves(state["opt_state"], is_leaf=has_mu) if has_mu(s)]
    (muon,), (adam,) = ([s for s in states if hasattr(s, "ns_coeffs") == muon] for muon in (True, False))
    assert muon.ns_coeffs.spec == P() and muon.count.spec == P()

    def specs(tree) -> dict:  # leaves only: the other part's parameters are optax's masked nodes
        return {n: s.spec for n, s in flatten(tree).items() if not isinstance(s, optax.MaskedNode)}

    matrices = {"blocks.attn.w_qkv", "blocks.attn.w_out", "blocks.mlp.w_in", "blocks.mlp.w_out"}
    assert specs(muon.mu) == {n: expected[n] for n in matrices}
    assert specs(adam.mu) == specs(adam.nu) == {n: s for n, s in expected.items() if n not in matrices}
    assert any(spec != P() for spec in specs(muon.mu).values())


def test_batches_are_split_by_rows_and_the_mesh_spans_every_device():
    assert batch_sharding(MESH).spec == P("data") and replicated(MESH).spec == P()
    mesh = make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    rows = np.arange(8 * 5, dtype=np.int32).reshape(8, 5)
    batch = global_batch(rows, mesh)  # one process: the global batch is this process's rows
    assert batch.shape == (8, 5) and isinstance(batch.sharding, NamedSharding)
    assert batch.sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(batch), rows)
    back = to_host({"rows": batch})  # and back: one numpy copy of the whole global array
    assert isinstance(back["rows"], np.ndarray)
    np.testing.assert_array_equal(back["rows"], rows)
