"""Across packages: a model trained a few steps by microgpt-train, exported, loaded by microgpt-infer.

For any prompt text, temperature-0 generation through `generate` gives exactly the tokens that greedy
argmax over the full (uncached) forward gives, and a batch of prompts of different lengths gives
each row what that prompt gives alone.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_core import GPTConfig, forward
from microgpt_data.tokenizer import Tokenizer
from microgpt_infer import generate, generate_text, load_model

N = 8  # new tokens per prompt
MODEL = GPTConfig(vocab_size=257, context_length=32, d_model=32, n_layers=2, n_heads=2, dropout=0.1)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache_in_tmp(tmp_path_factory):
    """microgpt-infer's persistent compilation cache in a temporary folder, not in ~/.cache."""
    before = os.environ.get("MICROGPT_COMPILATION_CACHE")
    os.environ["MICROGPT_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("jax_cache"))
    yield
    if before is None:
        os.environ.pop("MICROGPT_COMPILATION_CACHE", None)
    else:
        os.environ["MICROGPT_COMPILATION_CACHE"] = before


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, loaded model): 4 steps of `microgpt_train.train` on pydocs, byte tokenizer."""
    from microgpt_train import RunConfig, train

    root = tmp_path_factory.mktemp("infer_props")
    tokenizer_dir = root / "bytes"
    Tokenizer({bytes([b]): b for b in range(256)}, {"<|endoftext|>": 256}, name="bytes").save(tokenizer_dir)
    run = RunConfig(
        model=MODEL, name="props", runs_dir=str(root / "runs"), tokenizer=str(tokenizer_dir),
        batch_size=8, max_steps=4, warmup_steps=1, learning_rate=3e-3, eval_every=0, eval_batches=1,
        sample_every=0, sample_tokens=4, checkpoint_every=4, log_every=1, shuffle_buffer=8, progress=False,
    )  # fmt: skip
    run_dir = train(run, log=lambda *args, **kwargs: None)
    return run_dir, load_model(run_dir / "model")


@pytest.fixture(scope="module")
def full_forward(trained):
    _, model = trained
    return jax.jit(lambda params, tokens: forward(params, tokens, model.config))


def greedy_by_full_forward(model, full_forward, text: str) -> str:
    """Greedy decoding the slow way: the whole (padded) sequence through `forward` for every token."""
    eot, T = model.tokenizer.eot_id, model.config.context_length
    ids = model.tokenizer.encode(text) or [eot]
    new: list[int] = []
    for _ in range(N):
        seq = ids + new
        padded = jnp.asarray([seq + [0] * (T - len(seq))])  # (1, T): causal, so padding is never seen
        logits = np.asarray(full_forward(model.params, padded))[0, len(seq) - 1]  # (V,)
        token = int(np.argmax(logits))
        if token == eot:
            break
        new.append(token)
    return model.tokenizer.decode(new)


@pytest.mark.slow
def test_trained_model_is_exported_and_loads_from_its_run_folder(trained, monkeypatch):
    run_dir, model = trained
    assert model.config.d_model == MODEL.d_model and model.tokenizer.eot_id == 256
    monkeypatch.chdir(run_dir.parent.parent)
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    out = generate_text(jax.random.key(0), "The", N, 0.0, model="runs/props")  # the run's model/
    assert out == "The" + generate(model, "The", rng=0, max_new_tokens=N, temperature=0)


@pytest.mark.slow
@given(texts=st.lists(st.text(max_size=6), min_size=1, max_size=3))
def test_greedy_generation_equals_argmax_over_the_full_forward(trained, full_forward, texts):
    _, model = trained
    batched = generate(model, texts, rng=0, max_new_tokens=N, temperature=0)
    for text, row in zip(texts, batched, strict=True):
        assert row == greedy_by_full_forward(model, full_forward, text)
        assert row == generate(model, text, rng=1, max_new_tokens=N, temperature=0)
