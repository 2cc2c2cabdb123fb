"""Fixtures of the microgpt-infer tests: a tiny saved model, the GPT-2 and Llama fixtures (the loopback
Hub, `hub`, is in tests/conftest.py: train's tests use it too)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import pytest

from microgpt_core import GPTConfig, init_params, save_pretrained
from microgpt_data.tokenizer import Tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GPT2_TINY = FIXTURES / "gpt2_tiny"
LLAMA_TINY = FIXTURES / "llama_tiny"  # made by tests/fixtures/make_llama_tiny.py
LLAMA_TIED = LLAMA_TINY / "tied"

# A byte-level tokenizer (256 bytes + end-of-text) and a 2-layer model: compiles in a second or two.
TINY_INFER = GPTConfig(vocab_size=257, context_length=64, d_model=32, n_layers=2, n_heads=4)


# Long enough to take many seconds for 4,000 tokens on 2 CPU cores (about 1.5 ms a step): for Ctrl-C.
LONG_INFER = GPTConfig(
    vocab_size=257, context_length=4096, d_model=256, n_layers=4, n_heads=4, positional="sinusoidal"
)


def byte_tokenizer() -> Tokenizer:
    return Tokenizer({bytes([b]): b for b in range(256)}, {"<|endoftext|>": 256}, name="bytes")


def save_model(folder: Path, config: GPTConfig = TINY_INFER, seed: int = 0) -> Path:
    save_pretrained(folder, init_params(jax.random.key(seed), config), config)
    byte_tokenizer().save(folder)
    return folder


@pytest.fixture(scope="package", autouse=True)
def compilation_cache_in_tmp(tmp_path_factory):
    """JAX's persistent compilation cache (compile_cache.py) in a temporary folder, not in ~/.cache,
    turned on before anything compiles and for every program: the subprocesses that the CLI and
    wheel tests start then read the generation programs this process compiled."""
    from microgpt_infer.compile_cache import enable_compilation_cache

    saved = {
        k: os.environ.get(k)
        for k in ("MICROGPT_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
    }
    os.environ["MICROGPT_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    enable_compilation_cache()
    yield
    for name, value in saved.items():  # leave the process as it was for the other packages' tests
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from jax.experimental.compilation_cache import compilation_cache

    from microgpt_infer import compile_cache

    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    compilation_cache.reset_cache()
    compile_cache._state.clear()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A microGPT model folder: config.json, model.safetensors, tokenizer files (do not modify)."""
    return save_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="session")
def long_model_dir(tmp_path_factory) -> Path:
    """A model folder of `LONG_INFER` (13 MB): a generation that runs for seconds."""
    return save_model(tmp_path_factory.mktemp("long") / "model", LONG_INFER)


@pytest.fixture
def model_copy(model_dir, tmp_path) -> Path:
    """A private copy of `model_dir` that a test may damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


@pytest.fixture(scope="session")
def model(model_dir):
    from microgpt_infer import load_model

    return load_model(model_dir)
