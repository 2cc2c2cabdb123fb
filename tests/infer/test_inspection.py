"""inspection.py and the `inspect` command: the page's data is what `trace` and `logit_lens` say, the
page holds it whole and loads nothing, and bad input exits 2 with one error line."""

from __future__ import annotations

import io
import json
import re
import sys

import jax
import numpy as np
import pytest

from microgpt_core import cross_entropy
from microgpt_core.model import logit_lens, trace
from microgpt_infer.errors import InferError, PromptTooLongError
from microgpt_infer.inspect_command import inspect_main
from microgpt_infer.inspection import (
    LENS_TOP_K,
    NEXT_TOP_K,
    inspect_text,
    pack_attention,
    page_data,
    render_page,
    unpack_attention,
)
from tests.infer.test_cli import one_error_line

# Bytes are tokens here (tests/infer/conftest.py's byte tokenizer): 30 tokens, one compiled program for
# every test of this module and of test_inspect_page.py. It would close a careless page's <script>.
TEXT = 'x </script><!-- "a" & b\n<p>é!'
DATA_SCRIPT = re.compile(r'<script id="inspection-data" type="application/json">(.*?)</script>', re.S)
jit_trace = jax.jit(trace, static_argnames=("config",))


@pytest.fixture(scope="module")
def inspected(model):
    return inspect_text(model.params, model.config, model.tokenizer, TEXT)


@pytest.fixture(scope="module")
def traced(model, inspected):
    logits, seen = jit_trace(model.params, inspected.tokens[None], model.config)
    return np.asarray(logits[0]), seen, np.asarray(logit_lens(model.params, seen, model.config)[:, 0])


def test_the_data_is_what_trace_and_the_logit_lens_say(model, inspected, traced):
    logits, seen, lens = traced  # (T, V), {name: (L, 1, ...)}, (L, T, V)
    L, H, T = model.config.n_layers, model.config.n_heads, len(TEXT.encode())
    assert inspected.tokens.tolist() == list(TEXT.encode())
    np.testing.assert_allclose(inspected.attention, seen["attn_pattern"][:, 0], atol=1e-6)
    lens_probs = np.asarray(jax.nn.softmax(lens, axis=-1))  # (L, T, V)
    assert inspected.lens_ids.shape == (L, T, LENS_TOP_K)
    np.testing.assert_array_equal(inspected.lens_ids[..., 0], lens.argmax(-1))
    np.testing.assert_allclose(inspected.lens_probs[..., 0], lens_probs.max(-1), rtol=1e-5)
    np.testing.assert_allclose(
        inspected.lens_probs, np.take_along_axis(lens_probs, inspected.lens_ids, -1), rtol=1e-5
    )
    next_probs = np.asarray(jax.nn.softmax(logits, axis=-1))  # (T, V)
    assert inspected.next_ids.shape == (T, NEXT_TOP_K)
    np.testing.assert_allclose(inspected.next_probs, -np.sort(-next_probs, -1)[:, :NEXT_TOP_K], rtol=1e-5)
    assert all(np.all(np.diff(row) <= 0) for row in inspected.next_probs)
    tokens = inspected.tokens[None]  # (1, T)
    expected = [float(cross_entropy(logits[None, t : t + 1], tokens[:, t + 1 : t + 2])) for t in range(T - 1)]
    np.testing.assert_allclose(inspected.losses, expected, rtol=1e-5)
    pattern = np.asarray(seen["attn_pattern"][:, 0], np.float64)  # (L, H, T, T)
    entropy = -np.where(pattern > 0, pattern * np.log(np.where(pattern > 0, pattern, 1)), 0).sum(-1).mean(-1)
    assert inspected.entropy.shape == (L, H)
    np.testing.assert_allclose(inspected.entropy, entropy, rtol=1e-4)
    norms = np.linalg.norm(np.asarray(seen["resid_post"][:, 0]), axis=-1)  # (L, T)
    np.testing.assert_allclose(inspected.resid_norms, norms, rtol=1e-5)
    shown = {*tokens[0].tolist(), *inspected.lens_ids.ravel().tolist(), *inspected.next_ids.ravel().tolist()}
    assert set(inspected.vocab) == shown
    assert inspected.vocab[ord("x")] == "x"


def test_attention_packs_to_uint16_and_back(inspected):
    attention = inspected.attention
    L, H, T, _ = attention.shape
    back = unpack_attention(pack_attention(attention), L, H, T)
    np.testing.assert_allclose(back, attention, atol=0.5 / 65535 + 1e-7)
    assert not np.triu(back, 1).any()  # the causal mask's zeros are not stored


def test_the_page_holds_the_data_whole_and_loads_nothing(model, inspected):
    data = page_data(inspected, model.config, text=TEXT, model="tiny")
    page = render_page(data)
    scripts = DATA_SCRIPT.findall(page)
    assert len(scripts) == 1 and "<" not in scripts[0]  # nothing in the text can end the element
    assert json.loads(scripts[0]) == json.loads(json.dumps(data))
    assert data["text"] == TEXT and data["attention"]["shape"] == [2, 4, len(TEXT.encode())]
    loads = ("http://", "https://", "src=", "href=", "url(", "@import", "fetch(", "XMLHttpRequest", "import(")
    assert not [load for load in loads if load in page]
    with pytest.raises(InferError, match="exactly once"):
        render_page(data, "<html></html>")


def test_texts_that_do_not_fit_are_refused(model):
    with pytest.raises(InferError, match="the text is empty"):
        inspect_text(model.params, model.config, model.tokenizer, "")
    with pytest.raises(PromptTooLongError, match="the text has 65 tokens; the model's context_length is 64"):
        inspect_text(model.params, model.config, model.tokenizer, "y" * 65)


def test_the_command_writes_the_page(model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "page.html"
    assert inspect_main([TEXT, "--model", str(model_dir), "--out", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert stdout == "" and f"inspect: wrote {out} ({out.stat().st_size:,} bytes; 30 tokens)" in err
    assert json.loads(DATA_SCRIPT.search(out.read_text(encoding="utf-8")).group(1))["text"] == TEXT
    monkeypatch.setattr(sys, "stdin", io.StringIO(TEXT))  # the text from stdin, the same page
    monkeypatch.chdir(tmp_path)
    assert inspect_main(["--model", str(model_dir)]) == 0
    assert (tmp_path / "inspect.html").read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        inspect_main(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(words in out for words in ("--model", "--out", "attention", "logit lens", "attention entropy"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([""], "the text is empty"),
        (["z" * 65], "the text has 65 tokens; the model's context_length is 64"),
        (["z", "--out", "/no/such/folder/page.html"], "--out /no/such/folder/page.html: no such folder"),
        (["z", "--out", "."], "--out . is a folder"),
        (["z", "--model", "/no/such/model"], "/no/such/model: no such folder"),
        (["a\udc80b"], "lone surrogate"),
        (["z", "--bogus"], "unrecognized arguments"),
    ],
    ids=["empty", "too-long", "no-folder", "out-is-folder", "bad-model", "surrogate", "bad-flag"],
)
def test_bad_input_exits_2_with_one_error_line(model_dir, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = argv if "--model" in argv else [*argv, "--model", str(model_dir)]
    try:
        status = inspect_main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    assert status == 2
    out, err = capsys.readouterr()
    assert out == "" and message in one_error_line(err), err
    assert list(tmp_path.iterdir()) == []  # nothing written
