"""One process of the multi-process tests (run by test_distributed.py, never collected by pytest).

    python dist_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUT_JSON

Trains STEPS steps on the same synthetic global batches, data-parallel and then FSDP, and writes the
losses and final parameter sums (process 0). Each process feeds only its own rows of each batch.
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from microgpt_core import GPTConfig
from microgpt_train import RunConfig, init_state, make_optimizer, make_train_step
from microgpt_train.distributed import initialize
from microgpt_train.loop import to_host
from microgpt_train.sharding import batch_sharding, global_batch, make_mesh, param_shardings, state_shardings

CONFIG = GPTConfig(vocab_size=64, context_length=16, d_model=32, n_layers=2, n_heads=2, dropout=0.1)
RUN = RunConfig(model=CONFIG, batch_size=8, grad_accum=2, sample_tokens=4, warmup_steps=1, max_steps=4)
STEPS = 3


def batches() -> np.ndarray:
    """(STEPS, B, T+1) global batches, the same in every process."""
    rng = np.random.default_rng(0)
    return rng.integers(0, CONFIG.vocab_size, (STEPS, RUN.batch_size, CONFIG.context_length + 1), np.int32)


def run(fsdp: bool) -> dict:
    mesh = make_mesh()
    optimizer = make_optimizer(RUN)
    init = lambda k: init_state(k, CONFIG, optimizer)  # noqa: E731
    shape = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = state_shardings(shape, param_shardings(shape["params"], CONFIG, mesh, fsdp=fsdp), mesh)
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
    step = make_train_step(
        CONFIG,
        optimizer,
        grad_accum=RUN.grad_accum,
        state_sharding=shardings,
        batch_sharding=batch_sharding(mesh),
    )
    rows = RUN.batch_size // jax.process_count()
    losses = []
    for batch in batches():
        local = batch[jax.process_index() * rows : (jax.process_index() + 1) * rows]
        state, metrics = step(state, global_batch(local, mesh))
        losses.append(float(metrics["loss"]))
    w = state["params"]["blocks"]["attn"]["w_qkv"]
    params = to_host(state["params"])
    return {
        "losses": losses,
        "param_sums": [float(np.sum(np.abs(x))) for x in jax.tree.leaves(params)],
        "w_qkv_spec": str(w.sharding.spec),
        "devices": jax.device_count(),
    }


if __name__ == "__main__":
    coordinator, n, pid, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    initialize(coordinator, n, pid, heartbeat_timeout_s=10)
    result = {"dp": run(fsdp=False), "fsdp": run(fsdp=True)}
    if jax.process_index() == 0:
        with open(out, "w") as f:
            json.dump(result, f)
