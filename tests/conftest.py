"""Shared fixtures: tiny configurations and their parameters, built once per session."""

from __future__ import annotations

import jax
import pytest
from hypothesis import HealthCheck, settings

from microgpt_core import GPTConfig, init_params

# Property tests compile a new program for every new shape: keep examples few and never time them.
settings.register_profile(
    "microgpt",
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("microgpt")


TINY = GPTConfig(vocab_size=97, context_length=32, d_model=32, n_layers=2, n_heads=4)


@pytest.fixture(scope="session")
def tiny_config() -> GPTConfig:
    """2 layers, d_model 32, 4 heads, learned positions, biases, final norm, tied embeddings."""
    return TINY


@pytest.fixture(scope="session")
def tiny_params(tiny_config):
    return init_params(jax.random.key(0), tiny_config)
