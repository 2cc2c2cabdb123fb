"""Fixtures of the microgpt-infer tests: a tiny saved model, the GPT-2 fixture, a loopback Hub."""

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

# A byte-level tokenizer (256 bytes + end-of-text) and a 2-layer model: compiles in a second or two.
TINY_INFER = GPTConfig(vocab_size=257, context_length=64, d_model=32, n_layers=2, n_heads=4)


def byte_tokenizer() -> Tokenizer:
    return Tokenizer({bytes([b]): b for b in range(256)}, {"<|endoftext|>": 256}, name="bytes")


def save_model(folder: Path, config: GPTConfig = TINY_INFER, seed: int = 0) -> Path:
    save_pretrained(folder, init_params(jax.random.key(seed), config), config)
    byte_tokenizer().save(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def compilation_cache_in_tmp(tmp_path_factory):
    """JAX's persistent compilation cache (compile_cache.py) in a temporary folder, not in ~/.cache;
    subprocesses started by the tests share it."""
    name = "MICROGPT_COMPILATION_CACHE"
    before = os.environ.get(name)
    os.environ[name] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    if before is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = before


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A microGPT model folder: config.json, model.safetensors, tokenizer files (do not modify)."""
    return save_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture
def model_copy(model_dir, tmp_path) -> Path:
    """A private copy of `model_dir` that a test may damage."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


@pytest.fixture(scope="session")
def model(model_dir):
    from microgpt_infer import load_model

    return load_model(model_dir)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hub (tests/infer/hub_server.py) with the environment pointing at it."""
    from tests.infer.hub_server import HubServer

    with HubServer() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        yield fake
