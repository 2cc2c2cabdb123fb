"""The run's tokenizer: the BPE cached in a run folder is reused only for the data and size it was
trained for; a BPE smaller than asked is kept with a warning, and such a run trains, samples and
exports to the end; every file of a run folder gets the permissions the umask gives."""

from __future__ import annotations

import os
import stat

import pytest

from microgpt_infer import generate, load_model
from microgpt_train import train
from microgpt_train.pipeline import BPE_SOURCE_FILE, TOKENIZER_DIR, cache_tokenizer, resolve_tokenizer

from .conftest import TINY_MODEL, tiny_run

TEXT = "\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(40))


def test_a_cached_bpe_is_reused_only_for_the_data_it_was_made_for(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT.replace("fox", "cat").replace("dog", "owl"))
    run_dir = tmp_path / "runs" / "tiny"
    lines = []
    run_a = tiny_run(tmp_path, data=str(tmp_path / "a.txt"))
    first = resolve_tokenizer(run_a, run_dir, log=lines.append)
    assert any("training a 320-token BPE" in line for line in lines)
    assert not run_dir.exists()  # nothing is written before the run starts
    assert cache_tokenizer(run_a, run_dir, first) == run_dir / TOKENIZER_DIR  # which the run does then
    assert (run_dir / TOKENIZER_DIR / BPE_SOURCE_FILE).is_file()
    lines.clear()
    again = resolve_tokenizer(run_a, run_dir, log=lines.append)
    assert again == first and lines == []  # the cache, silently: it is the same BPE
    assert cache_tokenizer(run_a, run_dir, again) is None  # and not written again
    other = resolve_tokenizer(tiny_run(tmp_path, data=str(tmp_path / "b.txt")), run_dir, log=lines.append)
    assert any("was trained for" in line and "a.txt" in line and "b.txt" in line for line in lines)
    assert other != first and other.encode("cat") != first.encode("cat")
    given = tiny_run(tmp_path, data=str(tmp_path / "a.txt"), tokenizer=str(run_dir / TOKENIZER_DIR))
    assert cache_tokenizer(given, tmp_path / "runs" / "given", first) is None  # a given tokenizer: no cache


def test_a_bpe_smaller_than_asked_warns_with_the_size_reached(tmp_path):
    (tmp_path / "small.txt").write_text(TEXT)
    run = tiny_run(tmp_path, data=str(tmp_path / "small.txt"), model=TINY_MODEL.replace(vocab_size=4096))
    warnings = []
    tokenizer = resolve_tokenizer(run, tmp_path / "run", log=lambda *a: None, warn=warnings.append)
    assert tokenizer.vocab_size < 4096
    assert warnings == [
        f"warning: the BPE reached only {tokenizer.vocab_size} tokens of the 4096 asked ({run.data} has too "
        f"few distinct pairs to merge): {4096 - tokenizer.vocab_size} of the model's ids will never occur; "
        f"--vocab-size {tokenizer.vocab_size} would match it"
    ]


@pytest.mark.slow
def test_a_run_with_a_small_bpe_exports_and_every_file_follows_the_umask(tmp_path, capsys):
    (tmp_path / "small.txt").write_text(TEXT)
    run = tiny_run(tmp_path, data=str(tmp_path / "small.txt"))  # 299 tokens of the model's 320
    old = os.umask(0o002)  # group-writable: not what tempfile.mkstemp (0o600) would give
    try:
        run_dir = train(run, log=lambda *a: None)
    finally:
        os.umask(old)
    assert "the BPE reached only" in capsys.readouterr().err
    model = load_model(run_dir / "model")  # trained, sampled and exported to the end
    assert isinstance(generate(model, "The", rng=0, max_new_tokens=5), str)
    modes = {
        str(p.relative_to(run_dir)): stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*") if p.is_file()
    }
    expected = {"model/tokenizer.tiktoken", "model/tokenizer_config.json", "model/model.safetensors",
                "tokenizer/tokenizer.tiktoken", "train_config.json", "metrics.jsonl", "loss.png"}  # fmt: skip
    assert expected <= set(modes)
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != 0o664}
    assert wrong == {}, wrong


def test_the_tokenizer_may_be_any_model_name(hub, tmp_path, monkeypatch, tiny_tokenizer_dir):
    """--tokenizer takes what load_model takes ("default", a model or run folder, a Hub id) besides a
    tokenizer folder; a local path with a typo is said to be missing, and the Hub is not asked."""
    import shutil

    import jax

    from microgpt_core import init_params, save_pretrained
    from microgpt_data import Tokenizer
    from microgpt_infer import ModelNotFoundError
    from microgpt_infer.model import DEFAULT_MODEL_DIR

    monkeypatch.chdir(tmp_path)
    shipped = Tokenizer.load(DEFAULT_MODEL_DIR)
    wide = TINY_MODEL.replace(vocab_size=shipped.vocab_size)
    assert resolve_tokenizer(tiny_run("runs", tokenizer="default", model=wide), tmp_path / "a") == shipped
    folder = save_pretrained(tmp_path / "model", init_params(jax.random.key(0), TINY_MODEL), TINY_MODEL)
    expected = Tokenizer.load(tiny_tokenizer_dir)
    expected.save(folder)
    shutil.copytree(folder, tmp_path / "runs" / "done" / "model")
    hub.add_folder("org/tiny", folder)
    for spec in (str(tiny_tokenizer_dir), str(folder), "runs/done", "org/tiny"):
        assert resolve_tokenizer(tiny_run("runs", tokenizer=spec), tmp_path / "a") == expected, spec
    asked = len(hub.requests)
    with pytest.raises(ModelNotFoundError, match=r"^runs/nope: no such folder \(runs/ holds: done\)"):
        resolve_tokenizer(tiny_run("runs", tokenizer="runs/nope"), tmp_path / "a")
    assert len(hub.requests) == asked
