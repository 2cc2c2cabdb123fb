"""Per-row sampling (a batch of independent requests): settings per row, penalties, log-probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_core.sampling import filter_logits, penalize, sample_rows, top_logprobs

B, V = 4, 40
# Jitted once per module, so each example reuses the compiled programs (lax.cond's branches are
# compiled anew on every eager call). Settings given as numbers are static, as a caller's would be.
rows_filter = jax.jit(filter_logits)
rows_sample = jax.jit(sample_rows)
one_filter = jax.jit(filter_logits, static_argnums=(1, 2, 3, 4))
SETTINGS = ("temperature", "top_k", "top_p", "min_p")
logits_strategy = st.builds(
    lambda seed, scale: (np.random.default_rng(seed).standard_normal((B, V)) * scale).astype(np.float32),
    st.integers(0, 2**20),
    st.sampled_from([0.3, 1.0, 5.0]),
)
row_settings = st.fixed_dictionaries(
    {
        "temperature": st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.7]), min_size=B, max_size=B),
        "top_k": st.lists(st.sampled_from([0, 1, 3, V, V + 5]), min_size=B, max_size=B),
        "top_p": st.lists(st.sampled_from([0.2, 0.9, 1.0]), min_size=B, max_size=B),
        "min_p": st.lists(st.sampled_from([0.0, 0.05, 0.5, 1.0]), min_size=B, max_size=B),
    }
)


def one_row(name, value):
    """The scalar form of one row's setting, as a caller with one request would pass it."""
    if name == "top_k":
        return None if value == 0 else value
    return value


@settings(max_examples=6)
@given(logits=logits_strategy, chosen=row_settings)
def test_each_row_is_filtered_as_if_it_were_alone(logits, chosen):
    arrays = {name: jnp.asarray(values) for name, values in chosen.items()}
    together = np.asarray(
        rows_filter(logits, **{**arrays, "temperature": jnp.maximum(arrays["temperature"], 0.1)})
    )
    for b in range(B):
        alone = {name: one_row(name, values[b]) for name, values in chosen.items()}
        alone["temperature"] = max(alone["temperature"], 0.1)
        expected = np.asarray(one_filter(logits[b : b + 1], *(alone[n] for n in SETTINGS)))[0]
        np.testing.assert_array_equal(np.isfinite(together[b]), np.isfinite(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(together[b][finite], expected[finite], rtol=1e-6, atol=1e-6)


@settings(max_examples=6)
@given(logits=logits_strategy, chosen=row_settings, seed=st.integers(0, 1000))
def test_a_rows_token_depends_only_on_its_own_logits_key_and_settings(logits, chosen, seed):
    keys = jax.random.split(jax.random.key(seed), B)
    arrays = {name: jnp.asarray(values) for name, values in chosen.items()}
    together = np.asarray(rows_sample(logits, keys, **arrays))
    for b in range(B):
        alone = rows_sample(
            logits[b : b + 1], keys[b : b + 1], **{n: a[b : b + 1] for n, a in arrays.items()}
        )
        assert int(alone[0]) == together[b]
        z = np.asarray(one_filter(logits[b : b + 1], max(chosen["temperature"][b], 1e-3),
                                     one_row("top_k", chosen["top_k"][b]), chosen["top_p"][b],
                                     chosen["min_p"][b]))[0]  # fmt: skip
        assert np.isfinite(z[together[b]])  # never a filtered-out token
        greedy_row = chosen["temperature"][b] == 0 or chosen["top_k"][b] == 1 or chosen["min_p"][b] == 1
        if greedy_row:
            assert together[b] == int(np.argmax(logits[b]))


def test_rows_sample_their_own_softmax():
    logits = jnp.array([1.0, 0.5, 0.0, -0.5, 2.0, 0.3, -1.0, 1.5])
    n = 20_000
    keys = jax.random.split(jax.random.key(3), n)
    samples = sample_rows(jnp.tile(logits, (n, 1)), keys, jnp.full(n, 0.8), jnp.zeros(n, jnp.int32))
    expected = np.asarray(jax.nn.softmax(logits / 0.8), np.float64)
    counts = np.bincount(np.asarray(samples), minlength=8)
    chi2 = ((counts - n * expected) ** 2 / (n * expected)).sum()
    assert chi2 < 24.322  # chi-square, 7 degrees of freedom, upper 0.1% point


@settings(max_examples=10)
@given(logits=logits_strategy, seed=st.integers(0, 1000))
def test_neutral_penalties_change_nothing(logits, seed):
    rng = np.random.default_rng(seed)
    counts = jnp.asarray(rng.integers(0, 3, (B, V)), jnp.int32)
    in_prompt = jnp.asarray(rng.random((B, V)) < 0.3)
    same = penalize(logits, counts, in_prompt)
    np.testing.assert_array_equal(same, logits)
    rows = penalize(
        logits, counts, in_prompt, presence=jnp.zeros(B), frequency=jnp.zeros(B), repetition=jnp.ones(B)
    )
    np.testing.assert_array_equal(rows, logits)


@settings(max_examples=10)
@given(
    logits=logits_strategy,
    presence=st.sampled_from([-1.0, 0.5, 2.0]),
    frequency=st.sampled_from([-0.5, 0.3]),
    repetition=st.sampled_from([0.8, 1.3]),
)
def test_penalties_follow_their_equations(logits, presence, frequency, repetition):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 3, (B, V))
    in_prompt = rng.random((B, V)) < 0.3
    got = np.asarray(penalize(logits, jnp.asarray(counts), jnp.asarray(in_prompt), presence=presence,
                              frequency=frequency, repetition=repetition))  # fmt: skip
    z = logits.astype(np.float64)
    seen = in_prompt | (counts > 0)
    z = np.where(seen, np.where(z > 0, z / repetition, z * repetition), z)
    z = z - counts * frequency - (counts > 0) * presence
    np.testing.assert_allclose(got, z, rtol=1e-5, atol=1e-5)
    unseen = ~seen
    np.testing.assert_array_equal(got[unseen], logits[unseen])  # tokens never seen are untouched


def test_top_logprobs_are_the_raw_log_softmax():
    logits = jnp.asarray(np.random.default_rng(1).standard_normal((B, V)), jnp.float32)
    tokens = jnp.array([0, 5, 9, 39])
    chosen, ids, values = top_logprobs(logits, tokens, 5)
    log_p = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    np.testing.assert_allclose(chosen, log_p[np.arange(B), tokens], rtol=1e-6)
    np.testing.assert_array_equal(ids, np.argsort(-log_p, axis=-1)[:, :5])
    np.testing.assert_allclose(values, np.take_along_axis(log_p, np.asarray(ids), axis=-1), rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_p).sum(-1), 1.0, rtol=1e-5)
    assert top_logprobs(logits, tokens, 0)[1].shape == (B, 0)
