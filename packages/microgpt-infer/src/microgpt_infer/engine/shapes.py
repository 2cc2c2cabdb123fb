"""Which program shapes give a request the same numbers, bit for bit, on this machine.

A request's tokens must not depend on what else runs (batching.py). The slot engine runs a decode
step over the first w slots and W positions it needs, and admits k requests in one prefill; a row
of those programs computes exactly what it would at the full width, or alone, only if the
backend's kernels reduce in the same order at both shapes. That is a property of the kernels, not
of the model: on a Zen 4, XLA's CPU matmuls give a row the same bits for every width >= 2, while a
width of 1 takes a matrix-vector path that rounds differently. So the engine measures it when it
warms up: each shape runs on the same random inputs as the reference shape, and is kept only if
every row it computes, and every state it writes, equals the reference's exactly.

    same_rows        step (w, W)   against the full step (N, S)
    same_admissions  admit (k, P)  against k admissions of one request each, at the same width P
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core.config import GPTConfig
from microgpt_core.params import Params
from microgpt_infer.engine import decode
from microgpt_infer.engine.slots import Programs, Settings, Slots, init_slots

__all__ = ["random_settings", "random_slots", "same_admissions", "same_rows"]


def random_settings(rng: np.random.Generator, n: int) -> Settings:
    """n rows of settings that mix greedy rows with sampled ones under every filter and penalty."""
    pick = lambda dtype, *values: rng.choice(np.asarray(values, dtype), n)  # noqa: E731
    f32 = np.float32
    return Settings(
        temperature=pick(f32, 0.0, 0.7, 1.0), top_k=pick(np.int32, 0, 5), top_p=pick(f32, 1.0, 0.9),
        min_p=pick(f32, 0.0, 0.05), presence=pick(f32, 0.0, 0.5), frequency=pick(f32, 0.0, 0.3),
        repetition=pick(f32, 1.0, 1.3),
    )  # fmt: skip


def random_slots(
    rng: np.random.Generator, *, config: GPTConfig, slots: int, max_len: int, below: int
) -> Slots:
    """N busy-looking slots, on the device: random caches, tokens, step indices, counts and prompt
    masks, positions in [1, below], `random_settings`."""
    N, V = slots, config.vocab_size
    empty = init_slots(config, N, max_len)
    dtype = jnp.dtype(config.compute_dtype)  # a NumPy dtype (bfloat16 from ml_dtypes)
    noise = lambda a: rng.standard_normal(a.shape).astype(dtype).view(a.dtype)  # noqa: E731 - as bits
    state = Slots(
        caches=decode.LayerCaches(k=tuple(map(noise, empty.caches.k)), v=tuple(map(noise, empty.caches.v))),
        tokens=rng.integers(0, V, N, np.int32),
        positions=rng.integers(1, below + 1, N, np.int32),
        steps=rng.integers(0, 100, N, np.int32),
        keys=empty.keys,
        settings=random_settings(rng, N),
        counts=rng.integers(0, 3, (N, V), np.int32) * (rng.random((N, V)) < 0.01),
        in_prompt=rng.random((N, V)) < 0.01,
    )
    return jax.device_put(state, jax.devices()[0])  # committed, as the engine's own slots


def same_rows(programs: Programs, params: Params, weights, shapes, *, config, top_k, slots, max_len):
    """The step shapes, of `shapes` (width w, window W), whose rows equal the full step's exactly
    (the draw, and the caches, tokens, positions, step indices and counts they write)."""
    below = min(window for _, window in shapes)

    def run(width: int, window: int) -> list[np.ndarray]:
        state = random_slots(
            np.random.default_rng(0), config=config, slots=slots, max_len=max_len, below=below
        )
        state, draw = programs.step(
            params, weights, state, config=config, top_k=top_k, width=width, window=window
        )
        rows = (*state.caches.k, *state.caches.v, state.tokens, state.positions, state.steps, state.counts)
        return [a[:width] for a in jax.device_get([*rows, *draw])]

    full = run(slots, max_len)
    return [
        (width, window)
        for width, window in shapes
        if all(np.array_equal(a, b[: len(a)]) for a, b in zip(run(width, window), full, strict=True))
    ]


def same_admissions(programs: Programs, params: Params, admissions, *, config, top_k, slots, max_len):
    """The admission shapes, of `admissions` (k requests, prompt width P), that give each request
    exactly what an admission of it alone at width P gives (its first token's draw, and its slot's
    cache rows, token, position, settings, counts and prompt mask). (1, P) is always kept."""
    kept = [(k, P) for k, P in admissions if k == 1]
    for P in sorted({P for _, P in admissions}):
        ks = sorted(k for k, width in admissions if width == P and k > 1)
        if not ks:
            continue
        rng, n = np.random.default_rng(P), ks[-1]
        requests = (
            rng.integers(0, config.vocab_size, (n, P), np.int32),  # prompts
            rng.integers(1, P + 1, n, np.int32),  # lengths
            rng.integers(0, 2**32, n, np.uint32),  # seeds
            random_settings(rng, n),
        )
        run = functools.partial(
            _admitted, programs, params, requests, config=config, top_k=top_k, slots=slots, max_len=max_len
        )
        alone = [run([i]) for i in range(n)]
        for k in ks:
            together = run(list(range(k)))
            if all(
                np.array_equal(t[i], a[0]) for i in range(k) for t, a in zip(together, alone[i], strict=True)
            ):
                kept.append((k, P))
    return kept


def _admitted(programs, params, requests, rows, *, config, top_k, slots, max_len) -> list[np.ndarray]:
    """Admits requests `rows` of `requests` (prompts, lengths, seeds, settings) into those slots of
    empty slots, in one batch: that many rows of every leaf of the slots (but the keys) and the draw."""
    at = np.asarray(rows, np.int32)
    prompts, lengths, seeds = (a[at] for a in requests[:3])
    settings = Settings(*(a[at] for a in requests[3]))
    state = jax.device_put(init_slots(config, slots, max_len), jax.devices()[0])
    state, draw = programs.admit(
        params, state, at, prompts, lengths, seeds, settings, config=config, top_k=top_k
    )
    state, draw = jax.device_get((state._replace(keys=None), draw))
    return [a[at] for a in jax.tree.leaves(state)] + list(draw)
