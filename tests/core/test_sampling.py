"""Sampling: greedy, top-k, top-p and the softmax distribution; generate_tokens compiled once."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_core import SamplingError, generate_tokens, greedy, sample_logits
from microgpt_core.sampling import _generation_program, filter_logits

logits_strategy = st.builds(
    lambda seed, scale: (np.random.default_rng(seed).standard_normal((4, 50)) * scale).astype(np.float32),
    st.integers(0, 2**20),
    st.sampled_from([0.1, 1.0, 10.0]),
)


@given(logits=logits_strategy, seed=st.integers(0, 1000))
def test_temperature_zero_and_top_k_one_are_argmax(logits, seed):
    expected = np.argmax(logits, axis=-1)
    np.testing.assert_array_equal(sample_logits(logits, jax.random.key(seed), temperature=0), expected)
    np.testing.assert_array_equal(sample_logits(logits, jax.random.key(seed), top_k=1), expected)
    np.testing.assert_array_equal(greedy(jnp.asarray(logits)), expected)


def test_greedy_breaks_ties_towards_the_smallest_id():
    np.testing.assert_array_equal(greedy(jnp.array([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0]])), [1, 0])


def np_nucleus(logits_row, p):
    """The smallest set of highest-probability tokens whose probability sums to >= p."""
    probs = np.exp(logits_row - logits_row.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    size = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)
    return set(order[: min(size, len(order))].tolist())


@given(logits=logits_strategy, p=st.sampled_from([0.05, 0.3, 0.5, 0.9, 0.99]))
def test_top_p_keeps_exactly_the_smallest_nucleus(logits, p):
    kept = np.isfinite(np.asarray(filter_logits(logits, top_p=p)))
    for row in range(logits.shape[0]):
        assert set(np.flatnonzero(kept[row]).tolist()) == np_nucleus(logits[row].astype(np.float64), p)


@given(logits=logits_strategy, k=st.sampled_from([1, 3, 10]))
def test_top_k_keeps_the_k_largest(logits, k):
    kept = np.isfinite(np.asarray(filter_logits(logits, top_k=k)))
    for row in range(logits.shape[0]):
        assert set(np.flatnonzero(kept[row])) == set(np.argsort(-logits[row])[:k])


CHI2_CRITICAL_DF7_P001 = 24.322  # chi-square with 7 degrees of freedom, upper 0.1% point


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, None), (1.3, 5)])
def test_samples_follow_the_softmax_distribution(temperature, top_k):
    logits = jnp.array([1.0, 0.5, 0.0, -0.5, 2.0, 0.3, -1.0, 1.5])
    n = 40_000
    samples = sample_logits(jnp.tile(logits, (n, 1)), jax.random.key(1234), temperature, top_k)
    expected = np.asarray(jax.nn.softmax(filter_logits(logits[None], temperature, top_k)[0]), np.float64)
    counts = np.bincount(np.asarray(samples), minlength=8)
    support = expected > 0
    assert counts[~support].sum() == 0
    chi2 = ((counts[support] - n * expected[support]) ** 2 / (n * expected[support])).sum()
    assert chi2 < CHI2_CRITICAL_DF7_P001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature must be a number >= 0"),
        ({"top_k": 0}, "top_k must be an integer >= 1"),
        ({"top_p": 0.0}, r"top_p must be a number in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be a number in \(0, 1\]"),
    ],
)
def test_bad_sampling_arguments_are_refused(kwargs, message):
    with pytest.raises(SamplingError, match=message):
        sample_logits(jnp.zeros((1, 5)), jax.random.key(0), **kwargs)


# --- generate_tokens ---------------------------------------------------------------------------
def naive_greedy(forward, params, config, prompt, n):
    """Greedy decoding by re-running the full forward on the growing sequence (the reference).

    The sequence is right-padded to the context length so one compiled forward serves every step;
    causality (tested in test_model.py) makes the padding invisible at the last real position.
    """
    tokens = list(prompt)
    for _ in range(n):
        padded = jnp.asarray(tokens + [0] * (config.context_length - len(tokens)))[None]
        logits = forward(params, padded, config)
        tokens.append(int(np.argmax(logits[0, len(tokens) - 1])))
    return tokens[len(prompt) :]


def test_greedy_generation_equals_argmax_over_the_full_forward(jit_forward, tiny_config, tiny_params):
    prompts = [[5, 9, 2, 7, 1, 3], [11, 4], [8, 8, 8, 1]]
    lengths = [len(p) for p in prompts]
    padded = jnp.asarray([p + [0] * (6 - len(p)) for p in prompts])
    out = generate_tokens(
        tiny_params,
        tiny_config,
        padded,
        jnp.asarray(lengths),
        rng=jax.random.key(0),
        max_new_tokens=10,
        temperature=0,
    )
    for row, prompt in enumerate(prompts):
        assert out.tokens[row].tolist() == naive_greedy(jit_forward, tiny_params, tiny_config, prompt, 10)
    np.testing.assert_array_equal(out.num_tokens, [10, 10, 10])


def test_rows_stop_at_end_of_text_independently(tiny_config, tiny_params):
    prompt, lengths = jnp.asarray([[5, 9, 2], [11, 4, 0]]), jnp.asarray([3, 2])
    free = generate_tokens(
        tiny_params, tiny_config, prompt, lengths, rng=jax.random.key(0), max_new_tokens=8, temperature=0
    )
    eot = int(free.tokens[0, 3])  # row 0 emits this at step 3: make it the end-of-text id
    stopped = generate_tokens(
        tiny_params,
        tiny_config,
        prompt,
        lengths,
        rng=jax.random.key(0),
        max_new_tokens=8,
        temperature=0,
        eot_id=eot,
    )
    first = int(np.flatnonzero(np.asarray(free.tokens[0]) == eot)[0])
    assert int(stopped.num_tokens[0]) == first
    assert stopped.tokens[0, : first + 1].tolist() == free.tokens[0, : first + 1].tolist()
    assert (np.asarray(stopped.tokens[0, first:]) == eot).all()
    row1 = np.asarray(free.tokens[1])
    if eot not in row1:
        assert stopped.tokens[1].tolist() == row1.tolist() and int(stopped.num_tokens[1]) == 8


def test_sampled_generation_is_reproducible_per_key(tiny_config, tiny_params):
    prompt, lengths = jnp.asarray([[5, 9, 2]]), jnp.asarray([3])
    run = lambda seed: (
        generate_tokens(
            tiny_params,
            tiny_config,
            prompt,
            lengths,
            rng=jax.random.key(seed),
            max_new_tokens=12,
            temperature=1.0,
            top_k=20,
            top_p=0.9,
        ).tokens
    )
    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_compilations_do_not_grow_with_the_number_of_new_tokens(tiny_config, tiny_params):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: (
            compiles.append(event) if event.endswith("backend_compile_duration") else None
        )
    )
    prompt, lengths = jnp.asarray([[5, 9, 2, 4]]), jnp.asarray([4])
    counts = {}
    for n in (3, 24):
        _generation_program(tiny_config).clear_cache()
        del compiles[:]
        out = generate_tokens(
            tiny_params, tiny_config, prompt, lengths, rng=jax.random.key(0), max_new_tokens=n, temperature=0
        )
        out.tokens.block_until_ready()
        counts[n] = len(compiles)
    assert counts[3] == counts[24]
    assert counts[24] <= 3  # the generation program plus at most a couple of tiny helper ops
    del compiles[:]
    generate_tokens(
        tiny_params, tiny_config, prompt, lengths, rng=jax.random.key(1), max_new_tokens=24, temperature=0
    ).tokens.block_until_ready()
    assert compiles == []  # a second generation of the same shape compiles nothing


def test_streaming_callback_sees_every_token_in_order(tiny_config, tiny_params):
    seen = []
    out = generate_tokens(
        tiny_params,
        tiny_config,
        jnp.asarray([[5, 9], [1, 2]]),
        jnp.asarray([2, 1]),
        rng=jax.random.key(0),
        max_new_tokens=6,
        temperature=0,
        on_token=lambda step, tokens: seen.append((int(step), np.asarray(tokens).tolist())),
    )
    assert [step for step, _ in seen] == list(range(6))
    np.testing.assert_array_equal(np.asarray([tokens for _, tokens in seen]).T, out.tokens)


@pytest.mark.parametrize(
    ("prompt", "lengths", "n", "message"),
    [
        ([[1, 2, 3]], [4], 5, r"lengths must be in \[1, 3\]"),
        ([[1, 2, 3]], [0], 5, r"lengths must be in \[1, 3\]"),
        ([[1, 2, 3]], [3], 30, r"plus max_new_tokens \(30\) exceeds context_length 32"),
        ([[1, 2, 3]], [3], 0, "max_new_tokens must be an integer >= 1"),
        ([1, 2, 3], [3], 5, r"prompt must be a \(batch, length\) integer array"),
        ([[1, 2, 3]], [3, 3], 5, r"lengths must be \(1,\) integers"),
    ],
)
def test_bad_generation_arguments_are_refused(tiny_config, tiny_params, prompt, lengths, n, message):
    with pytest.raises(SamplingError, match=message):
        generate_tokens(
            tiny_params,
            tiny_config,
            jnp.asarray(prompt),
            jnp.asarray(lengths),
            rng=jax.random.key(0),
            max_new_tokens=n,
        )


def test_decode_loop_updates_the_cache_in_place(tiny_config, tiny_params):
    # The generation's while-loop carries the per-layer cache; XLA must update it in place. A copy of
    # a cache array inside the loop body costs a full pass over the cache per layer and token (the
    # regression this guards: without region-based copy insertion XLA inserted one per layer).
    prompt, lengths = jnp.zeros((2, 4), jnp.int32), jnp.asarray([4, 2])
    compiled = _generation_program(tiny_config).lower(
        tiny_params, prompt, lengths, jax.random.key(0), config=tiny_config, max_new_tokens=8,
        temperature=0.0, top_k=None, top_p=None, eot_id=None, on_token=None,
    ).compile()  # fmt: skip
    hlo = compiled.as_text()
    cache_shape = "f32[2,4,11,8]"  # (B, H, P + N - 1, Dh) of one layer
    bodies = re.findall(r"body=%?([\w.\-]+)", hlo)
    assert bodies, "the generation has no while-loop"
    for body in bodies:
        start = hlo.index(f"%{body} ")
        computation = hlo[start : hlo.index("\n}\n", start)]
        assert cache_shape in computation
        copies = [line for line in computation.splitlines() if " copy(" in line and cache_shape in line]
        assert copies == [], "\n".join(copies)
