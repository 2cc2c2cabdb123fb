"""The `inspect` page in a real browser (headless Chromium): it loads without a script error, honours
#layer=L&head=H, and shows `trace`'s attention and the logit lens's predictions.

Chromium is required, not optional: CI installs it (.ci/run); without it this test fails and says so.
"""

from __future__ import annotations

import html
import re
import subprocess

import jax
import numpy as np

from microgpt_core.model import logit_lens
from microgpt_infer.inspect_command import inspect_main
from tests.infer.browser import chromium
from tests.infer.test_inspection import TEXT, jit_trace

LAYER, HEAD = 1, 2
LENS_CELL = re.compile(
    r'<td class="lens" data-layer="(\d+)" data-pos="(\d+)" data-id="(\d+)" data-p="([^"]+)"[^>]*>(.*?)</td>'
)
VISIBLE = str.maketrans({" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"})  # as the page shows tokens


def open_page(path, fragment: str) -> tuple[str, str]:
    """The DOM once the page's scripts are done, and Chromium's log (its console lines included)."""
    argv = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
        "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", path.as_uri() + fragment,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, out.stderr


def test_the_page_shows_the_head_and_the_lens_that_trace_computes(model, model_dir, tmp_path):
    page = tmp_path / "page.html"
    assert inspect_main([TEXT, "--model", str(model_dir), "--out", str(page)]) == 0
    dom, log = open_page(page, f"#layer={LAYER}&head={HEAD}")
    problems = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not problems, "\n".join(problems)
    assert 'data-ready="true"' in dom and re.search(r'data-render-ms="[0-9.]+"', dom)
    assert re.search(r'<div id="error" hidden="">\s*</div>', dom)  # no error shown

    tokens = np.asarray(model.tokenizer.encode(TEXT))  # (T,)
    _, seen = jit_trace(model.params, tokens[None], model.config)
    T = len(tokens)
    output = re.search(r'<output id="head-values"([^>]*)>(.*?)</output>', dom, re.S)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', output.group(1)))
    assert (attrs["data-layer"], attrs["data-head"]) == (str(LAYER), str(HEAD))
    rows = [[float(p) for p in line.split()] for line in output.group(2).strip().split("\n")]
    assert [len(row) for row in rows] == list(range(1, T + 1))  # the causal lower triangle
    expected = np.asarray(seen["attn_pattern"][LAYER, 0, HEAD])  # (T, T)
    for t, row in enumerate(rows):
        np.testing.assert_allclose(row, expected[t, : t + 1], atol=1e-3)

    lens = jax.nn.softmax(logit_lens(model.params, seen, model.config)[:, 0], axis=-1)  # (L, T, V)
    cells = LENS_CELL.findall(dom)
    assert len(cells) == model.config.n_layers * T
    for layer, pos, token, p, shown in cells[T + 3 : T + 5]:  # layer 1, positions 3 and 4
        layer, pos, token = int(layer), int(pos), int(token)
        assert token == int(np.argmax(lens[layer, pos]))
        assert abs(float(p) - float(lens[layer, pos].max())) < 1e-3
        assert html.unescape(shown) == model.tokenizer.decode([token]).translate(VISIBLE)
