"""`plot_losses`: what the records hold is what the picture shows (read back from the PNG's pixels and
the SVG's text), the suffix picks the format, and a write replaces the old file or leaves it alone."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from microgpt_train.plots import plot_losses

RECORDS = [
    {"step": 1, "loss": 4.0},
    {"step": 2, "loss": 3.5},
    {"step": 3, "loss": 3.1, "eval_loss": 3.3, "eval_perplexity": 27.1},
    {"step": 4, "loss": None},  # a step logged without its loss: skipped, not drawn as a gap or zero
    {"step": 6, "loss": 2.8, "eval_loss": 3.0},
]
TRAIN, EVAL, BASELINE = "#1f77b4", "#ff7f0e", "#808080"  # matplotlib's C0, C1 and "gray"


def _texts(path) -> list[str]:
    """The texts of an SVG written by matplotlib (it names each text element in a comment)."""
    return re.findall(r"<!-- (.*?) -->", path.read_text())


def _lines(path, colour: str) -> list[int]:
    """The number of points of each line of `colour` in an SVG written by matplotlib (a series'
    line, then its three-point sample in the legend)."""
    paths = re.findall(r'<path d="([^"]*)"[^>]*stroke: ' + colour, path.read_text())
    return [d.count("L") + 1 for d in paths]


@pytest.mark.parametrize(
    ("records", "baseline", "lines"),
    [
        (RECORDS, 2.5, {TRAIN: [4, 3], EVAL: [2, 3], BASELINE: [2, 3]}),
        (RECORDS, None, {TRAIN: [4, 3], EVAL: [2, 3], BASELINE: []}),
        ([r for r in RECORDS if "eval_loss" not in r], None, {TRAIN: [2, 3], EVAL: [], BASELINE: []}),
        ([{"step": 3, "eval_loss": 3.3}], 2.5, {TRAIN: [], EVAL: [1, 3], BASELINE: [2, 3]}),
    ],
)
def test_each_series_the_records_hold_is_drawn_point_by_point_and_no_other(
    tmp_path, records, baseline, lines
):
    path = tmp_path / "loss.svg"
    plot_losses(records, path, baseline=baseline)
    assert {colour: _lines(path, colour) for colour in lines} == lines


def test_the_png_decodes_at_770_by_462_and_shows_both_losses(tmp_path):
    import matplotlib.colors
    import matplotlib.image

    path = tmp_path / "loss.png"
    plot_losses(RECORDS, path, baseline=2.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)  # (H, W, 4) float32 in [0, 1]: 7 x 4.2 inches at 110 dpi
    assert image.shape == (462, 770, 4)
    for colour in (TRAIN, EVAL):
        rgb = np.asarray(matplotlib.colors.to_rgb(colour))
        assert (np.abs(image[..., :3] - rgb).max(-1) < 0.02).sum() > 100, colour


def test_an_svg_path_gets_an_svg_titled_by_the_run_with_a_legend(tmp_path):
    path = tmp_path / "my-run" / "loss.svg"
    path.parent.mkdir()
    plot_losses(RECORDS, path, baseline=2.5)
    assert path.read_text().lstrip().startswith("<?xml") and "<svg" in path.read_text()
    texts = _texts(path)
    assert {"my-run", "step", "cross-entropy (nats per token)"} <= set(texts)
    assert {"train loss", "validation loss", "unigram baseline"} <= set(texts)
    plot_losses(RECORDS[:2], path)
    assert "validation loss" not in _texts(path) and "unigram baseline" not in _texts(path)


def test_no_records_yet_is_an_empty_plot_without_a_legend_or_a_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_losses([], tmp_path / "loss.svg")
    assert "train loss" not in _texts(tmp_path / "loss.svg")


def test_a_new_plot_replaces_the_old_and_a_failed_one_leaves_it_and_no_temp_file(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "loss.png"
    plot_losses(RECORDS[:2], path)
    first = path.read_bytes()
    plot_losses(RECORDS, path)
    second = path.read_bytes()
    assert second != first and sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]
    bad = tmp_path / "loss.txt"  # no writer for .txt: an error, and nothing left behind
    bad.write_text("old")
    with pytest.raises(ValueError, match="txt"):
        plot_losses(RECORDS, bad)
    assert bad.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "loss.txt"]
    assert plt.get_fignums() == []  # every figure closed, the failed one too
