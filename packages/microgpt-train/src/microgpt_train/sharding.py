"""The device mesh and how every array is laid out on it.

One mesh axis, ``data``, spans every device of every process. Batches are split over it (data
parallelism). Parameters and optimiser state are replicated, or, with FSDP, split over the same axis
along their ``embed`` dimension (an optimiser leaf of a parameter exactly as that parameter). Core
names each parameter's axes (`microgpt_core.param_axes`); the one table below, `LOGICAL_AXIS_RULES`,
maps those names to mesh axes. `global_batch` makes one global array of every process's rows, and
`to_host` copies arrays back.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from microgpt_core import GPTConfig, param_axes
from microgpt_core.params import flatten

__all__ = [
    "DATA",
    "LOGICAL_AXIS_RULES",
    "batch_sharding",
    "global_batch",
    "make_mesh",
    "param_shardings",
    "replicated",
    "state_shardings",
    "to_host",
]

DATA = "data"

# Logical axis -> mesh axis. "fsdp" is the data axis when FSDP is on, and no axis (replicated) when off.
LOGICAL_AXIS_RULES: dict[str, str | None] = {
    "batch": DATA,
    "embed": "fsdp",
    "vocab": None,
    "seq": None,
    "heads": None,
    "head_dim": None,
    "mlp": None,
    "layers": None,
}


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over ``data``; everything else whole."""
    return NamedSharding(mesh, PartitionSpec(LOGICAL_AXIS_RULES["batch"]))


def _spec(axes: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh, fsdp: bool) -> PartitionSpec:
    """The partition spec of one parameter; a dimension the mesh axis does not divide stays whole."""
    spec = []
    for name, size in zip(axes, shape, strict=True):
        mesh_axis = LOGICAL_AXIS_RULES[name]
        if mesh_axis == "fsdp":
            mesh_axis = DATA if fsdp else None
        if mesh_axis is not None and (size % mesh.shape[mesh_axis] or mesh_axis in spec):
            mesh_axis = None
        spec.append(mesh_axis)
    return PartitionSpec(*spec)


def param_shardings(params_shape: Any, config: GPTConfig, mesh: Mesh, *, fsdp: bool) -> Any:
    """A pytree of `NamedSharding`s mirroring the params (arrays or `ShapeDtypeStruct`s)."""
    axes = param_axes(config)
    return jax.tree.map(
        lambda a, p: NamedSharding(mesh, _spec(a, p.shape, mesh, fsdp)),
        axes,
        params_shape,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def state_shardings(state_shape: Any, params_sharding: Any, mesh: Mesh) -> Any:
    """Shardings of the train state: every optimiser leaf that stands for a parameter follows that
    parameter's sharding; the rest (counts, the step, Muon's Newton–Schulz coefficients) is replicated.

    Inside optax's states a per-parameter leaf (Adam's mu and nu, Muon's momentum) sits under the
    parameter's own dict keys (``.../mu/blocks/attn/w_qkv``), also where `optax.partition` leaves
    the other parameters out: a leaf is matched by those keys and its shape, never by shape alone
    (two parameters may share a shape but not a layout).
    """
    shardings, shapes = flatten(params_sharding), flatten(state_shape["params"])

    def opt_leaf(path, leaf):
        name = _param_name(path)
        if name in shapes and tuple(shapes[name].shape) == tuple(leaf.shape):
            return shardings[name]
        return replicated(mesh)

    return {
        "params": params_sharding,
        "opt_state": jax.tree_util.tree_map_with_path(opt_leaf, state_shape["opt_state"]),
        "step": replicated(mesh),
        "rng": replicated(mesh),
    }


def _param_name(path: tuple) -> str:
    """The dotted name that the trailing dict keys of a key path spell ("blocks.attn.w_qkv")."""
    keys: list[str] = []
    for entry in reversed(path):
        if not isinstance(entry, jax.tree_util.DictKey):
            break
        keys.append(str(entry.key))
    return ".".join(reversed(keys))


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
    """This process's rows -> one global (process_count * B_local, ...) array split over ``data``."""
    sharding = batch_sharding(mesh)
    global_shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local, global_shape)


def to_host(tree: Any) -> Any:
    """Host numpy copies of a pytree of (possibly multi-process) arrays; all processes must call it."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
