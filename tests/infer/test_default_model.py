"""The model microgpt-infer ships ("default"): the committed preset trained to its end, loaded through
every model's checks, small enough for the wheel, and what `generate_text` uses when no model is named."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors import safe_open

from microgpt_core import save_pretrained
from microgpt_infer import generate, generate_text, load_model
from microgpt_infer.model import DEFAULT_MODEL, DEFAULT_MODEL_DIR, find_default_model
from microgpt_train.config import PRESETS, RunConfig
from tests.infer.conftest import TINY_INFER, byte_tokenizer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packages" / "microgpt-infer" / "scripts" / "ship_default_model.py"
PROMPT = "Once upon a time"


def _script():
    spec = importlib.util.spec_from_file_location("ship_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads((DEFAULT_MODEL_DIR / "training_summary.json").read_text())


def test_it_is_the_default_preset_trained_to_its_last_step(shipped, summary):
    run = PRESETS["default"]
    assert shipped.config == run.model and shipped.source == DEFAULT_MODEL_DIR
    # Read as a run config, as --resume reads one: a field added since the run (init_from) takes its
    # default, which is what the run did. progress: the bar only.
    recorded = RunConfig.from_dict(summary["run"])
    assert dataclasses.replace(recorded, progress=run.progress) == run
    assert summary["step"] == run.max_steps
    assert summary["tokens"] == run.max_steps * run.batch_size * run.model.context_length
    assert shipped.tokenizer.vocab_size == run.model.vocab_size


def test_its_files_pass_the_shipping_checks_and_fit_the_wheel(summary):
    script = _script()
    assert script.check(DEFAULT_MODEL_DIR) == summary  # load_folder's checks, bfloat16, size, finished
    names = {p.name for p in DEFAULT_MODEL_DIR.iterdir()}
    assert names == {*script.FILES, "README.md"}
    with safe_open(DEFAULT_MODEL_DIR / "model.safetensors", framework="numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    assert sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()) < 14 * 2**20


def test_its_card_says_what_it_was_trained_on_and_how_well(summary):
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "# microGPT default model (pydocs)" in card and 'load_model("default")' in card
    assert "Python's own documentation" in card and "no general model" in card
    for row in (
        f"| validation loss (nats/token) | {summary['eval_loss']:.3f} |",
        f"| validation bits per byte | {summary['eval_bits_per_byte']:.3f} |",
        f"| machine | {summary['machine']} |",
        f"| training time (s) | {summary['train_seconds']:.0f} |",
        "| weights stored as | bfloat16 (they load as float32) |",
    ):
        assert row in card, row
    assert summary["sample"].startswith(PROMPT) and f"```text\n{summary['sample']}\n```" in card


def test_the_originals_example_uses_it_with_no_model_named(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    assert find_default_model() == DEFAULT_MODEL
    rng = jax.random.PRNGKey(443)
    text = generate_text(rng=rng, text=PROMPT)
    assert text.startswith(PROMPT) and len(text) > len(PROMPT) + 20
    assert text == PROMPT + generate(shipped, PROMPT, rng=rng, max_new_tokens=50, temperature=1.0)
    assert generate_text(rng, PROMPT, model="default") == text


@pytest.mark.parametrize("prompt", ["Was ist ein Tensor? 張量 🙂", "", "\x00\n\t"])
def test_a_prompt_from_outside_its_domain_still_gets_text(shipped, prompt):
    text = generate_text(jax.random.key(1), prompt, 12, model=shipped)
    assert text.startswith(prompt) and len(text) > len(prompt)


def test_the_ship_script_refuses_what_it_must_not_ship_and_ships_a_good_folder(model_dir, tmp_path):
    script = _script()
    params = load_model(model_dir).params

    def folder(name: str, dtype: str, step: int) -> Path:
        save_pretrained(tmp_path / name, params, TINY_INFER, dtype=dtype)
        byte_tokenizer().save(tmp_path / name)
        (tmp_path / name / "training_summary.json").write_text(
            json.dumps({"step": step, "run": {"max_steps": 6}})
        )
        return tmp_path / name

    with pytest.raises(SystemExit, match=r"missing \['training_summary.json'\]"):
        script.check(model_dir)
    with pytest.raises(SystemExit, match=r"weights are \['F32'\]; train with weights_dtype bfloat16"):
        script.check(folder("f32", "float32", 6))
    with pytest.raises(SystemExit, match="step 3 of 6: ship a finished run"):
        script.check(folder("unfinished", "bfloat16", 3))
    target = tmp_path / "pkg" / "default_model"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("from the model shipped before")
    assert script.ship(folder("good", "bfloat16", 6), target) == target
    assert sorted(p.name for p in target.iterdir()) == sorted({*script.FILES, "README.md"})
    assert [p.name for p in target.parent.iterdir()] == ["default_model"]  # no staging folder left
    assert 'load_model("default")' in (target / "README.md").read_text()
    np.testing.assert_array_equal(
        np.asarray(load_model(target).params["embed"]["tokens"]),
        np.asarray(params["embed"]["tokens"]).astype(jax.numpy.bfloat16).astype(np.float32),
    )
