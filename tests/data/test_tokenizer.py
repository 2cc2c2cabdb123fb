"""Tokenizer: exact round trips, special tokens as text, lone surrogates, save/load, offline errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tiktoken
import tiktoken.load
from hypothesis import given
from hypothesis import strategies as st

from microgpt_data import (
    ENDOFTEXT,
    InvalidTextError,
    Tokenizer,
    TokenizerDownloadError,
    TokenizerFileError,
)
from microgpt_data.tokenizer import CONFIG_FILE, RANKS_FILE

AWKWARD = [
    "",
    "\x00",
    "a\x00b\x00",
    "emoji 😀👩‍👩‍👧 flags 🇫🇷",
    "e\u0301 combining a\u0308\u0304 marks",
    "中文字符 and ﷽ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "tabs\tand\r\nnewlines\n\n\n   spaces   ",
    "<|endoftext|> inside text",
    "\ufeffBOM \uffff \U0010ffff",
]


@pytest.mark.parametrize("text", AWKWARD)
def test_round_trip_awkward_text(small_tokenizer, text):
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


@given(st.text())
def test_round_trip_arbitrary_unicode(small_tokenizer, text):
    ids = small_tokenizer.encode(text)
    assert all(0 <= i < small_tokenizer.vocab_size for i in ids)
    assert small_tokenizer.decode(ids) == text


def test_empty_text_has_no_tokens(small_tokenizer):
    assert small_tokenizer.encode("") == []
    assert small_tokenizer.decode([]) == ""


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", "a\ud83d"])
def test_lone_surrogates_are_refused(small_tokenizer, text):
    with pytest.raises(InvalidTextError, match="lone surrogate"):
        small_tokenizer.encode(text)
    with pytest.raises(InvalidTextError, match=r"texts\[1\]"):
        small_tokenizer.encode_batch(["fine", text])


def test_non_str_is_refused(small_tokenizer):
    with pytest.raises(InvalidTextError, match="must be a str"):
        small_tokenizer.encode(b"bytes")  # type: ignore[arg-type]


def test_special_tokens_in_text_are_ordinary_unless_allowed(small_tokenizer):
    eot = small_tokenizer.eot_id
    text = f"a{ENDOFTEXT}b"
    assert eot not in small_tokenizer.encode(text)
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text
    allowed = small_tokenizer.encode(text, allow_special=True)
    assert allowed.count(eot) == 1
    assert small_tokenizer.decode(allowed) == text
    assert small_tokenizer.encode_batch([text], allow_special=True) == [allowed]


def test_eot_and_vocab_size(small_tokenizer):
    assert small_tokenizer.vocab_size == 512
    assert small_tokenizer.eot_id == 511
    assert small_tokenizer.eot_token == ENDOFTEXT
    assert small_tokenizer.special_tokens == {ENDOFTEXT: 511}
    assert small_tokenizer.decode([small_tokenizer.eot_id]) == ENDOFTEXT


def test_encode_batch_equals_encode(small_tokenizer, small_texts):
    texts = small_texts[:10] + AWKWARD
    assert small_tokenizer.encode_batch(texts) == [small_tokenizer.encode(t) for t in texts]
    assert small_tokenizer.encode_batch(texts, num_threads=1) == small_tokenizer.encode_batch(texts)


def test_save_load_round_trip(small_tokenizer, small_texts, tmp_path):
    folder = small_tokenizer.save(tmp_path / "tok")
    assert sorted(p.name for p in folder.iterdir()) == sorted([RANKS_FILE, CONFIG_FILE])
    loaded = Tokenizer.load(folder)
    assert loaded == small_tokenizer
    assert loaded.encode(small_texts[0]) == small_tokenizer.encode(small_texts[0])
    # tiktoken's own reader agrees with our rank file.
    assert tiktoken.load.load_tiktoken_bpe(str(folder / RANKS_FILE)) == small_tokenizer.ranks


def test_numpy_integer_ids_are_kept_as_ints(small_tokenizer, tmp_path):
    ranks = {token: np.int64(rank) for token, rank in small_tokenizer.ranks.items()}
    special = {token: np.uint32(i) for token, i in small_tokenizer.special_tokens.items()}
    tokenizer = Tokenizer(ranks, special)
    assert tokenizer == small_tokenizer and {type(i) for i in tokenizer.special_tokens.values()} == {int}
    assert Tokenizer.load(tokenizer.save(tmp_path / "tok")) == small_tokenizer  # its config is JSON


def test_save_overwrites_and_leaves_no_temporary_files(small_tokenizer, tmp_path):
    small_tokenizer.save(tmp_path)
    small_tokenizer.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RANKS_FILE, CONFIG_FILE])


def test_load_missing_folder_names_the_file(tmp_path):
    with pytest.raises(TokenizerFileError, match=RANKS_FILE):
        Tokenizer.load(tmp_path / "nothing")


def test_load_bad_rank_line_names_file_and_line(small_tokenizer, tmp_path):
    small_tokenizer.save(tmp_path)
    path = tmp_path / RANKS_FILE
    lines = path.read_text().splitlines()
    lines[2] = "not-base64!! x"
    path.write_text("\n".join(lines))
    with pytest.raises(TokenizerFileError, match=rf"{RANKS_FILE}:3"):
        Tokenizer.load(tmp_path)


def test_load_wrong_format_version(small_tokenizer, tmp_path):
    small_tokenizer.save(tmp_path)
    path = tmp_path / CONFIG_FILE
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(TokenizerFileError, match="format_version 99"):
        Tokenizer.load(tmp_path)


def test_missing_single_bytes_are_refused(small_tokenizer):
    ranks = small_tokenizer.ranks
    del ranks[b"\x07"]
    with pytest.raises(TokenizerFileError, match="lacks 1 of the 256 single bytes"):
        Tokenizer(ranks, small_tokenizer.special_tokens)


def test_eot_must_be_special(small_tokenizer):
    with pytest.raises(TokenizerFileError, match="eot_token"):
        Tokenizer(small_tokenizer.ranks, small_tokenizer.special_tokens, eot_token="<|nope|>")


def test_from_encoding_wraps_tiktoken(small_tokenizer):
    again = Tokenizer.from_encoding(small_tokenizer.encoding)
    assert again.encode("hello world") == small_tokenizer.encode("hello world")


def test_from_tiktoken_unknown_name():
    with pytest.raises(TokenizerDownloadError, match="unknown tiktoken encoding 'nope'.*gpt2"):
        Tokenizer.from_tiktoken("nope")


def test_from_tiktoken_offline_says_what_to_do(monkeypatch, tmp_path):
    def offline(url):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    with pytest.raises(TokenizerDownloadError, match="could not download.*'gpt2'.*Tokenizer.load"):
        Tokenizer.from_tiktoken("gpt2")


def test_from_tiktoken_gives_up_after_timeout(monkeypatch, tmp_path):
    def hang(url):
        time.sleep(3)
        raise ConnectionError("late")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", hang)
    start = time.perf_counter()
    with pytest.raises(TokenizerDownloadError, match="no answer within 0.3 s"):
        Tokenizer.from_tiktoken("r50k_base", timeout=0.3)
    assert time.perf_counter() - start < 2


def test_ids_the_tokenizer_lacks_decode_to_one_replacement_each(small_tokenizer):
    """A model with a padded vocabulary (GPT-2's 50304) samples ids past the tokenizer's: the final
    sample of a training run crashed on tiktoken's KeyError."""
    hello, world = small_tokenizer.encode("hello"), small_tokenizer.encode(" world")
    size = small_tokenizer.vocab_size
    for unknown in ([size], [size + 1000, 50303], [-1], [2**32], [2**70], [size, -5, 2**40]):
        ids = hello + unknown + world
        assert small_tokenizer.decode(ids) == "hello" + "\ufffd" * len(unknown) + " world", unknown
        assert small_tokenizer.decode(unknown) == "\ufffd" * len(unknown)
    # A gap inside the vocabulary (special tokens placed past an unused id) is unknown too.
    gapped = Tokenizer(small_tokenizer.ranks, {ENDOFTEXT: size + 3})
    assert gapped.vocab_size == size + 4
    assert gapped.decode([*hello, size + 1, size + 3]) == "hello\ufffd" + ENDOFTEXT
    # Bytes split by an unknown id stay replacement characters; the unknown id adds exactly one.
    euro = small_tokenizer.encode("€")
    if len(euro) > 1:
        assert small_tokenizer.decode([euro[0], size, *euro[1:]]).count("\ufffd") >= 2


def test_check_fits_names_where_and_both_sizes(small_tokenizer):
    small_tokenizer.check_fits(512, "tok/")
    small_tokenizer.check_fits(50304, "tok/")  # a larger model vocabulary is fine
    with pytest.raises(
        TokenizerFileError,
        match=r"^runs/x/tokenizer: the tokenizer has 512 tokens but the model's vocab_size is 300; ",
    ):
        small_tokenizer.check_fits(300, "runs/x/tokenizer")
    for bad in (0, -1, 1.5, True, "512"):
        with pytest.raises(TokenizerFileError, match="vocab_size must be a positive integer"):
            small_tokenizer.check_fits(bad, "tok/")  # type: ignore[arg-type]
