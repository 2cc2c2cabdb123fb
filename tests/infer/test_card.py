"""The one model card writer: configuration, training summary, snippets for where it is read."""

from __future__ import annotations

import json

import pytest

from microgpt_core import SEED_CONFIG
from microgpt_infer.card import MARKER, is_generated, model_card

SUMMARY = {
    "step": 300, "tokens": 1000, "eval_loss": 4.5, "eval_bits_per_byte": 2.125, "unigram_entropy": 6.0,
    "train_seconds": 12.0, "machine": "AMD EPYC, 2 cores", "sample": "The list of",
    "run": {"data": "pydocs", "max_steps": 800, "batch_size": 16, "sample_prompt": "The",
            "weights_dtype": "bfloat16"},
}  # fmt: skip


def test_a_trained_models_card_states_its_training_and_where_it_is():
    card = model_card(SEED_CONFIG, "runs/seed/model", name="seed", n_params=5_256_192, summary=SUMMARY)
    assert card.startswith("---\nlibrary_name: microgpt\n") and is_generated(card)
    assert "| parameters | 5,256,192 |" in card and "| validation loss (nats/token) | 4.500 |" in card
    assert (
        "a checkpoint at step 300 of 800" in card
        and "| steps x batch x context | 300 of 800 x 16 x 256 |" in card
    )
    assert (
        'model = load_model("runs/seed/model")' in card and 'generate --model runs/seed/model "The"' in card
    )
    assert 'load_pretrained("runs/seed/model")' in card and "```text\nThe list of\n```" in card
    assert json.dumps(SUMMARY["run"], indent=2) in card
    assert "| validation bits per byte | 2.125 |" in card and "| machine | AMD EPYC, 2 cores |" in card
    assert "| weights stored as | bfloat16 (they load as float32) |" in card
    assert "Python's own documentation" in card and "no general model" in card  # what it was trained on


def test_on_the_hub_the_card_names_the_repo_and_no_local_folder():
    card = model_card(
        SEED_CONFIG, "me/seed", name="me/seed", n_params=1, summary={**SUMMARY, "step": 800}, on_hub=True
    )
    assert 'load_model("me/seed")' in card and "load_pretrained" not in card and "the finished run" in card


def test_a_card_without_a_run_and_an_edited_card():
    card = model_card(SEED_CONFIG, "gpt2-folder", name="gpt2", n_params=1)
    assert "training data" not in card and "## Limitations" not in card and "## Configuration" in card
    assert not is_generated(card.replace(MARKER, "my notes")) and not is_generated("# my own card\n")


def test_the_card_names_the_positions_and_the_attention():
    assert "| positions / norm / MLP | sinusoidal / layernorm / gelu |" in model_card(
        SEED_CONFIG, "x", name="x", n_params=1
    )
    assert "| attention | multi-head |" in model_card(SEED_CONFIG, "x", name="x", n_params=1)
    llama = SEED_CONFIG.replace(positional="rope", rope_theta=500000.0, norm="rmsnorm", mlp="swiglu")
    card = model_card(llama.replace(n_kv_heads=2, qk_norm=True), "x", name="x", n_params=1)
    assert "| positions / norm / MLP | rope (theta 500000) / rmsnorm / swiglu |" in card
    assert "| attention | grouped-query, 2 key/value heads, QK-norm |" in card
    assert "| attention | multi-query |" in model_card(llama.replace(n_kv_heads=1), "x", name="x", n_params=1)


def test_a_card_for_hugging_faces_layout_names_transformers_as_its_library():
    card = model_card(SEED_CONFIG, "me/x", name="me/x", n_params=1, on_hub=True, library="transformers")
    assert card.startswith("---\nlibrary_name: transformers\n") and is_generated(card)
    with pytest.raises(
        ValueError, match=r"library must be one of \['microgpt', 'transformers'\], got 'torch'"
    ):
        model_card(SEED_CONFIG, "x", name="x", n_params=1, library="torch")
