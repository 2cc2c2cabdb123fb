"""Sampling: greedy, top-k, top-p, min-p and the softmax distribution; generate_tokens compiled once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_core import SamplingError, generate_tokens, sample_logits
from microgpt_core.sampling import _generate, filter_logits, greedy

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


@given(
    logits=logits_strategy,
    min_p=st.sampled_from([0.01, 0.1, 0.5, 0.9, 1.0]),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_min_p_keeps_the_tokens_at_least_min_p_times_as_likely_as_the_best(logits, min_p, temperature):
    kept = np.isfinite(np.asarray(filter_logits(logits, temperature, min_p=min_p)))
    probs = np.exp((logits - logits.max(-1, keepdims=True)).astype(np.float64) / temperature)
    probs /= probs.sum(-1, keepdims=True)  # (B, V) after the temperature
    ratio = probs / probs.max(-1, keepdims=True)
    clear = np.abs(ratio - min_p) > 1e-5  # float32 rounding decides a token on the boundary
    np.testing.assert_array_equal(kept[clear], (ratio >= min_p)[clear])
    assert kept[np.arange(len(logits)), logits.argmax(-1)].all()  # the best token always stays


@given(logits=logits_strategy, temperature=st.sampled_from([0.5, 1.0]), top_k=st.sampled_from([None, 3]),
       top_p=st.sampled_from([None, 0.8]))  # fmt: skip
def test_neutral_min_p_changes_nothing(logits, temperature, top_k, top_p):
    plain = filter_logits(logits, temperature, top_k, top_p)
    for neutral in (None, 0, 0.0):
        np.testing.assert_array_equal(filter_logits(logits, temperature, top_k, top_p, neutral), plain)
        key = jax.random.key(7)
        np.testing.assert_array_equal(
            sample_logits(logits, key, temperature, top_k, top_p, neutral),
            sample_logits(logits, key, temperature, top_k, top_p),
        )


def test_min_p_one_is_greedy_and_samples_stay_in_the_support():
    logits = jnp.array([[1.0, 0.5, 0.0, -0.5, 2.0, 0.3, -1.0, 1.5]] * 2000)
    np.testing.assert_array_equal(sample_logits(logits, jax.random.key(0), min_p=1.0), 4)
    samples = np.asarray(sample_logits(logits, jax.random.key(1), min_p=0.5))
    assert set(samples.tolist()) == {4, 7}  # e^1.5 / e^2 = 0.61 >= 0.5; e^1 / e^2 = 0.37 < 0.5


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


# --- arguments at and past every boundary ----------------------------------------------------
NOT_NUMBERS = [True, False, np.True_, "1", None, [1.0], jnp.float32(0.5)]
BAD = {
    "temperature": [-1.0, -1e-300, float("nan"), float("inf"), -float("inf"), np.float32("nan"),
                    *NOT_NUMBERS],
    "top_k": [0, -1, -(2**40), 2.0, 5.5, float("nan"), np.float32(3), True, False, np.True_, "5", [5]],
    "top_p": [0, 0.0, -0.1, 1.0000001, 1.5, float("nan"), float("inf"), -float("inf"), np.float64("nan"),
              *[x for x in NOT_NUMBERS if x is not None]],
    "min_p": [-0.1, -1e-300, 1.0000001, 2, float("nan"), float("inf"),
              *[x for x in NOT_NUMBERS if x is not None]],
    "presence_penalty": [-2.1, 2.5, float("nan"), float("inf"), *NOT_NUMBERS],
    "frequency_penalty": [-3, 2.0001, float("-inf"), *NOT_NUMBERS],
    "repetition_penalty": [0, 0.0, -1.0, float("inf"), float("nan"), *NOT_NUMBERS],
}  # fmt: skip
MESSAGE = {
    "temperature": r"temperature must be a finite number >= 0 \(0 = greedy\), got ",
    "top_k": r"top_k must be an integer >= 1 or None, got ",
    "top_p": r"top_p must be a number in \(0, 1\] or None, got ",
    "min_p": r"min_p must be a number in \[0, 1\] or None, got ",
    "presence_penalty": r"presence_penalty must be a number in \[-2, 2\] \(0 = none\), got ",
    "frequency_penalty": r"frequency_penalty must be a number in \[-2, 2\] \(0 = none\), got ",
    "repetition_penalty": r"repetition_penalty must be a finite number > 0 \(1 = none\), got ",
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in BAD.items() for value in values], ids=repr
)
def test_bad_sampling_arguments_are_refused(tiny_config, tiny_params, name, value):
    if not name.endswith("_penalty"):  # penalties belong to the loop, not to one draw
        with pytest.raises(SamplingError, match=MESSAGE[name]):
            sample_logits(jnp.zeros((1, 5)), jax.random.key(0), **{name: value})
    with pytest.raises(SamplingError, match=MESSAGE[name]):  # refused before anything is traced
        generate_tokens(tiny_params, tiny_config, jnp.ones((1, 2), jnp.int32), jnp.asarray([2]),
                        rng=jax.random.key(0), max_new_tokens=2, **{name: value})  # fmt: skip


GOOD = [
    {"temperature": np.float32(0.8)},
    {"temperature": np.float64(1e-50), "top_p": np.float32(0.9)},
    {"temperature": 3, "top_k": np.int64(5)},
    {"temperature": np.int32(0)},
    {"top_k": 10**9},  # more than V: every token is kept
    {"top_k": np.uint8(2), "top_p": 1},
    {"temperature": 1e300, "top_p": 1e-300},
    {"min_p": np.float32(0.2), "top_k": 4},
    {"min_p": 1, "temperature": 5},
    {"min_p": 5e-324},
]


@pytest.mark.parametrize("kwargs", GOOD, ids=repr)
def test_numbers_of_any_kind_are_accepted(kwargs):
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((3, 7)), jnp.float32)
    out = sample_logits(logits, jax.random.key(0), **kwargs)
    assert out.shape == (3,) and out.dtype == jnp.int32 and bool(((out >= 0) & (out < 7)).all())


ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 0.0, 1.0, 1e-50, 1e-38, 5e-324, 1e308, -0.0, np.float32(0.5), np.int64(3)]),
    st.just(np.bool_(True)),
    st.text(max_size=3),
)  # fmt: skip


@given(temperature=ANYTHING, top_k=ANYTHING, top_p=ANYTHING)
def test_any_settings_sample_valid_ids_or_raise_a_sampling_error(temperature, top_k, top_p):
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9)), jnp.float32)
    try:
        out = sample_logits(logits, jax.random.key(0), temperature, top_k, top_p)
    except SamplingError:
        return
    assert out.shape == (2,) and bool(((out >= 0) & (out < 9)).all())
    if temperature == 0 or top_k == 1:
        np.testing.assert_array_equal(out, np.argmax(np.asarray(logits), axis=-1))


TINY_TEMPERATURES = [1e-50, 1e-45, 1.1754943e-38, 1e-38, 1e-30, 1e-12]


@pytest.mark.parametrize("temperature", TINY_TEMPERATURES)
def test_tiny_temperatures_sample_the_argmax(temperature):
    # 2,000 rows of random logits (no ties), each sampled with its own key stream: every draw is the
    # argmax, where a temperature that underflows to 0 in float32 gave 0/0 = NaN and garbage.
    logits = np.random.default_rng(7).standard_normal((2000, 50)).astype(np.float32) * 3
    for top_k, top_p in [(None, None), (10, None), (None, 0.5)]:
        sampled = sample_logits(logits, jax.random.key(1), temperature, top_k, top_p)
        np.testing.assert_array_equal(sampled, np.argmax(logits, axis=-1))
    z = np.asarray(filter_logits(jnp.asarray(logits), temperature))
    assert not np.isnan(z).any() and (z.max(axis=-1) == 0).all()


def test_top_k_holds_at_any_finite_temperature():
    # Top-k picks from the raw logits: at τ = 1e30 the k kept tokens are equally likely and no other
    # token is ever drawn (dividing first flattened every logit to 0 and top-k kept them all).
    logits = jnp.tile(jnp.arange(8.0), (20_000, 1))  # (N, 8)
    counts = np.bincount(np.asarray(sample_logits(logits, jax.random.key(3), 1e30, top_k=3)), minlength=8)
    assert counts[:5].sum() == 0
    chi2 = ((counts[5:] - 20_000 / 3) ** 2 / (20_000 / 3)).sum()
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, upper 0.1% point


BAD_KEYS = {
    "int": 0,
    "none": None,
    "str": "key",
    "typed-batch": jax.random.split(jax.random.key(0), 2),
    "typed-2d": jax.random.split(jax.random.key(0), 4).reshape(2, 2),
    "uint32-3": jnp.zeros(3, jnp.uint32),
    "uint32-2x2": jnp.zeros((2, 2), jnp.uint32),
    "int32-2": jnp.zeros(2, jnp.int32),
    "float32-2": jnp.zeros(2, jnp.float32),
    "uint32-scalar": jnp.uint32(3),
}


@pytest.mark.parametrize("rng", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_a_key_of_the_wrong_kind_is_refused(tiny_config, tiny_params, rng):
    message = r"rng must be one key: jax\.random\.key\(seed\) .*PRNGKey\(seed\) \(uint32 \(2,\)\), got "
    with pytest.raises(SamplingError, match=message):
        sample_logits(jnp.zeros((1, 5)), rng)
    with pytest.raises(SamplingError, match=message):
        generate_tokens(tiny_params, tiny_config, jnp.ones((1, 2), jnp.int32), jnp.asarray([2]), rng=rng,
                        max_new_tokens=2, temperature=0)  # fmt: skip


def test_legacy_keys_sample_as_typed_keys(tiny_config, tiny_params):
    prompt, lengths = jnp.asarray([[5, 9, 2]]), jnp.asarray([3])
    run = lambda key: (  # the settings of test_sampled_generation_is_reproducible_per_key: no compilation
        generate_tokens(
            tiny_params, tiny_config, prompt, lengths, rng=key, max_new_tokens=12, top_k=20, top_p=0.9
        ).tokens
    )
    np.testing.assert_array_equal(run(jax.random.PRNGKey(443)), run(jax.random.key(443)))
    np.testing.assert_array_equal(run(np.asarray(jax.random.PRNGKey(443))), run(jax.random.key(443)))
    logits = jnp.zeros((2, 9))
    np.testing.assert_array_equal(
        sample_logits(logits, jax.random.PRNGKey(1)), sample_logits(logits, jax.random.key(1))
    )


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


@pytest.mark.parametrize(
    "penalties",
    [
        {"repetition_penalty": 1.5},
        {"presence_penalty": 1.0, "frequency_penalty": 0.5},
        {"presence_penalty": -0.5, "frequency_penalty": 0.2, "repetition_penalty": 0.8},
    ],
    ids=["repetition", "presence-frequency", "all"],
)
def test_penalised_greedy_generation_equals_a_host_loop_over_the_full_forward(
    jit_forward, tiny_config, tiny_params, penalties
):
    prompts = [[5, 9, 2, 7, 1, 3], [11, 4]]
    padded = jnp.asarray([p + [0] * (6 - len(p)) for p in prompts])
    kwargs = dict(rng=jax.random.key(0), max_new_tokens=12, temperature=0)
    out = generate_tokens(tiny_params, tiny_config, padded, jnp.asarray([6, 2]), **kwargs, **penalties)
    theta = penalties.get("repetition_penalty", 1.0)
    alpha_p, alpha_f = penalties.get("presence_penalty", 0.0), penalties.get("frequency_penalty", 0.0)
    for row, prompt in enumerate(prompts):
        tokens, new = list(prompt), []
        for _ in range(12):
            padded_row = jnp.asarray([tokens + [0] * (18 - len(tokens))])  # one shape: one compilation
            z = np.asarray(jit_forward(tiny_params, padded_row, tiny_config)[0, len(tokens) - 1], np.float64)
            counts = np.bincount(new, minlength=z.size)
            seen = (counts > 0) | np.isin(np.arange(z.size), prompt)
            z = (
                np.where(seen, np.where(z > 0, z / theta, z * theta), z)
                - counts * alpha_f
                - (counts > 0) * alpha_p
            )
            new.append(int(np.argmax(z)))
            tokens.append(new[-1])
        assert out.tokens[row].tolist() == new
    plain = generate_tokens(tiny_params, tiny_config, padded, jnp.asarray([6, 2]), **kwargs)
    assert not np.array_equal(plain.tokens, out.tokens)  # the penalties changed something


def test_neutral_penalties_compile_the_plain_loop(tiny_config, tiny_params):
    prompt, lengths = jnp.asarray([[3, 1, 4]]), jnp.asarray([3])
    kwargs = dict(rng=jax.random.key(1), max_new_tokens=6, temperature=0.9, top_k=20)
    plain = generate_tokens(tiny_params, tiny_config, prompt, lengths, **kwargs)
    neutral = generate_tokens(tiny_params, tiny_config, prompt, lengths, **kwargs, presence_penalty=0,
                              frequency_penalty=0.0, repetition_penalty=np.float32(1))  # fmt: skip
    np.testing.assert_array_equal(plain.tokens, neutral.tokens)


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
        _generate.clear_cache()
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


@pytest.mark.parametrize(
    ("prompt", "lengths", "n", "message"),
    [
        ([[1, 2, 3]], [4], 5, r"lengths must be in \[1, 3\]"),
        ([[1, 2, 3]], [0], 5, r"lengths must be in \[1, 3\]"),
        ([[1, 2, 3]], [3], 30, r"plus max_new_tokens \(30\) exceeds context_length 32"),
        ([[1, 2, 3]], [3], 0, "max_new_tokens must be an integer >= 1"),
        ([[1, 2, 3]], [3], -1, "max_new_tokens must be an integer >= 1"),
        ([[1, 2, 3]], [3], True, "max_new_tokens must be an integer >= 1, got True"),
        ([[1, 2, 3]], [3], 2.0, "max_new_tokens must be an integer >= 1, got 2.0"),
        ([[1, 2, 3]], [3], None, "max_new_tokens must be an integer >= 1, got None"),
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
