"""docs/tour/tour.py: its scores on hand-built attention patterns, its analysis functions on the tiny
random model, and docs/tour.md quoting only numbers the script wrote to docs/tour/findings.json."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOUR_DOC = ROOT / "docs" / "tour.md"
FINDINGS = ROOT / "docs" / "tour" / "findings.json"

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
NUMBER = re.compile(r"^[-+]?\d+(?:\.\d+)?$")
DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])")


@pytest.fixture(scope="module")
def tour():
    spec = importlib.util.spec_from_file_location("tour", ROOT / "docs" / "tour" / "tour.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def causal(rows: list[list[float]]) -> np.ndarray:
    """(T, T) attention pattern from each query's weights over keys 0..t (padded with zeros)."""
    T = len(rows)
    return np.array([row + [0.0] * (T - len(row)) for row in rows])


def test_previous_and_first_token_scores_on_hand_built_patterns(tour):
    T = 6
    previous = causal([[1.0]] + [[0.0] * (t - 1) + [1.0, 0.0] for t in range(1, T)])  # key t-1
    first = causal([[1.0] + [0.0] * t for t in range(T)])  # key 0
    uniform = causal([[1.0 / (t + 1)] * (t + 1) for t in range(T)])
    pattern = jnp.asarray(np.stack([previous, first, uniform])[None, None])  # (L=1, B=1, H=3, T, T)
    np.testing.assert_allclose(tour.previous_token_scores(pattern), [[1.0, 0.0, tour.uniform_score(T)]])
    np.testing.assert_allclose(tour.first_token_scores(pattern), [[0.0, 1.0, tour.uniform_score(T)]])


def test_induction_score_on_a_hand_built_pattern_and_repeated_tokens(tour):
    n = 4
    tokens = tour.repeated_tokens(0, rows=3, n=n, vocab_size=7, skip=6)  # (3, 8)
    assert tokens.shape == (3, 2 * n) and (tokens[:, :n] == tokens[:, n:]).all() and (tokens != 6).all()
    induction = causal(
        [[1.0] + [0.0] * t for t in range(n)] + [[0.0] * (t - n + 1) + [1.0] for t in range(n, 2 * n)]
    )
    previous = causal([[1.0]] + [[0.0] * (t - 1) + [1.0, 0.0] for t in range(1, 2 * n)])
    pattern = jnp.asarray(np.stack([induction, previous])[None, None])  # (1, 1, 2, 2n, 2n)
    np.testing.assert_allclose(tour.induction_scores(pattern, n), [[1.0, 0.0]])


def test_the_analysis_functions_on_the_tiny_model(tour, tiny_params, tiny_config):
    config, params = tiny_config, tiny_params
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, size=(2, 9))  # (B, T+1)
    losses, agreement, echo = tour.lens_curve(params, config, tokens)
    assert losses.shape == agreement.shape == (config.n_layers + 1,)
    assert agreement[-1] == 1.0 and 0 <= echo <= 1  # the last layer's lens is the model's prediction
    assert losses[-1] == pytest.approx(tour.validation_loss(params, config, tokens), rel=1e-5)
    ablated = tour.head_ablation_losses(params, config, tokens)
    assert ablated.shape == (config.n_layers, config.n_heads) and np.isfinite(ablated).all()
    first, second = tour.half_losses(params, config, np.concatenate([tokens[:, :4]] * 2, axis=1), 4, [(0, 1)])
    assert math.isfinite(first) and math.isfinite(second)

    clean, corrupt = [5, 6, 7, 8, 9, 10], [5, 6, 50, 8, 9, 10]
    grid, ld_clean, ld_corrupt = tour.patching_grid(params, config, clean, corrupt, answer=3, wrong=4)
    assert grid.shape == (config.n_layers, len(clean)) and abs(ld_clean - ld_corrupt) > 1e-4
    np.testing.assert_allclose(grid[:, :2], 0.0, atol=1e-3)  # the prompts agree there: nothing to restore
    assert grid[-1, -1] == pytest.approx(1.0, abs=1e-3)  # the last layer at the last token is the output
    assert tour.logit_difference(params, config, clean, 3, 4) == pytest.approx(ld_clean, abs=1e-5)


def quoted_numbers(text: str) -> list[str]:
    """Every number in a table cell of the tour (a cell that is only a number), and every decimal
    number in its prose; code blocks and inline code are left out."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    numbers = []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            numbers += [
                cell for cell in (c.strip() for c in line.strip().strip("|").split("|")) if NUMBER.match(cell)
            ]
        else:
            numbers += DECIMAL.findall(line)
    return numbers


def leaves(tree) -> list[float]:
    if isinstance(tree, dict):
        return [v for value in tree.values() for v in leaves(value)]
    if isinstance(tree, list):
        return [v for value in tree for v in leaves(value)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def test_the_number_finder():
    text = "| L0 | 0.304 | -0.029 | 3 random heads |\n|---|---|\nloss 3.429 (`0.5` is code)\n```\n9.99\n```\n"
    assert quoted_numbers(text) == ["0.304", "-0.029", "3.429"]


def test_every_number_the_tour_quotes_is_in_findings():
    values = leaves(json.loads(FINDINGS.read_text(encoding="utf-8")))
    numbers = quoted_numbers(TOUR_DOC.read_text(encoding="utf-8"))
    assert len(numbers) > 50, "the tour's tables were not found"
    missing = []
    for number in numbers:
        decimals = len(number.partition(".")[2])
        if not any(abs(v - float(number)) <= 0.5 * 10**-decimals + 1e-6 for v in values):
            missing.append(number)
    assert not missing, f"docs/tour.md quotes numbers findings.json does not hold: {missing}"
