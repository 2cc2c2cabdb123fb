"""Tokenizer files: GPT-2 vocab.json + merges.txt import, GPT-2's byte alphabet, file permissions."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from microgpt_data import ENDOFTEXT, Tokenizer, TokenizerFileError, to_hf_tokenizer
from microgpt_data.tokenizer_files import CONFIG_FILE, RANKS_FILE, gpt2_byte_decoder


def test_gpt2_byte_decoder_is_a_bijection_onto_bytes():
    decoder = gpt2_byte_decoder()
    assert sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == ord(" ") and decoder["!"] == ord("!")
    assert all(c.isprintable() and not c.isspace() for c in decoder)


@pytest.fixture()
def gpt2_files(small_tokenizer, tmp_path):
    """vocab.json + merges.txt written by Hugging Face tokenizers for the small vocabulary."""
    hf = to_hf_tokenizer(small_tokenizer)
    vocab_path, merges_path = hf.model.save(str(tmp_path))
    vocab = json.loads(Path(vocab_path).read_text())
    vocab[ENDOFTEXT] = small_tokenizer.eot_id  # as GPT-2's vocab.json carries it
    Path(vocab_path).write_text(json.dumps(vocab))
    return vocab_path, merges_path


def test_from_gpt2_files_keeps_ids(small_tokenizer, small_texts, gpt2_files):
    imported = Tokenizer.from_gpt2_files(*gpt2_files)
    assert imported.ranks == small_tokenizer.ranks
    assert imported.special_tokens == small_tokenizer.special_tokens
    for text in small_texts[:5]:
        assert imported.encode(text) == small_tokenizer.encode(text)


def test_from_gpt2_files_adds_missing_eot(small_tokenizer, gpt2_files):
    vocab_path, merges_path = gpt2_files
    vocab = json.loads(Path(vocab_path).read_text())
    del vocab[ENDOFTEXT]
    Path(vocab_path).write_text(json.dumps(vocab))
    assert Tokenizer.from_gpt2_files(vocab_path, merges_path).eot_id == small_tokenizer.eot_id


def test_merges_out_of_id_order_are_refused(gpt2_files):
    vocab_path, merges_path = gpt2_files
    lines = Path(merges_path).read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]  # after the "#version" header
    Path(merges_path).write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerFileError, match=r"merges.txt:3: id \d+ .* does not rise in merge order"):
        Tokenizer.from_gpt2_files(vocab_path, merges_path)


def test_missing_and_malformed_files(gpt2_files, tmp_path):
    vocab_path, merges_path = gpt2_files
    with pytest.raises(TokenizerFileError, match="nothing.json does not exist"):
        Tokenizer.from_gpt2_files(tmp_path / "nothing.json", merges_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerFileError, match="bad.json is not valid JSON"):
        Tokenizer.from_gpt2_files(bad, merges_path)
    bad.write_text('{"a": 0}')
    with pytest.raises(TokenizerFileError, match="lacks the single-byte token"):
        Tokenizer.from_gpt2_files(bad, merges_path)


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_saved_files_get_the_permissions_of_a_plain_write(small_tokenizer, tmp_path, umask):
    """Not mkstemp's 0o600: a shared tokenizer (or model folder) stays readable by others."""
    previous = os.umask(umask)
    try:
        folder = small_tokenizer.save(tmp_path / "tok")
        small_tokenizer.save(folder)  # overwriting too
    finally:
        os.umask(previous)
    for name in (RANKS_FILE, CONFIG_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in folder.iterdir()) == sorted([RANKS_FILE, CONFIG_FILE])
