"""BPE training: tiktoken's ids equal the trainer's, deterministic files, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_data import (
    ENDOFTEXT,
    DataError,
    InvalidTextError,
    Tokenizer,
    pydocs_texts,
    to_hf_tokenizer,
    train_bpe,
)
from microgpt_data.tokenizer import CONFIG_FILE, RANKS_FILE


@pytest.fixture(scope="module")
def trainer(small_tokenizer):
    return to_hf_tokenizer(small_tokenizer)


def test_tiktoken_ids_equal_trainer_ids_on_corpus(small_tokenizer, trainer, small_texts):
    for text in small_texts:
        assert small_tokenizer.encode(text) == trainer.encode(text).ids


@given(st.text())
def test_tiktoken_ids_equal_trainer_ids_on_any_text(small_tokenizer, trainer, text):
    # tokenizers parses special tokens inside text, so compare with allow_special.
    assert small_tokenizer.encode(text, allow_special=True) == trainer.encode(text).ids


@given(
    st.lists(st.sampled_from(["the", " the", "ing", " ", "\n", "é", "😀", "12", "3", "'s", "!"]), max_size=40)
)
def test_tiktoken_ids_equal_trainer_ids_on_mergeable_text(small_tokenizer, trainer, pieces):
    text = "".join(pieces)
    assert small_tokenizer.encode(text) == trainer.encode(text).ids
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_trainer_decode_agrees(small_tokenizer, trainer, small_texts):
    ids = small_tokenizer.encode(small_texts[0])
    assert trainer.decode(ids) == small_tokenizer.decode(ids) == small_texts[0]


def test_training_is_deterministic(small_texts, tmp_path):
    first = train_bpe(small_texts, 400).save(tmp_path / "a")
    second = train_bpe(iter(small_texts), 400).save(tmp_path / "b")
    for name in (RANKS_FILE, CONFIG_FILE):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_vocab_size_and_special_tokens(small_texts):
    tok = train_bpe(small_texts, 300, special_tokens=["<|pad|>", ENDOFTEXT], eot_token=ENDOFTEXT)
    assert tok.vocab_size == 300
    assert tok.special_tokens == {"<|pad|>": 298, ENDOFTEXT: 299}
    assert tok.eot_id == 299
    assert len(tok.ranks) == 298


def test_small_text_may_give_a_smaller_vocabulary():
    tok = train_bpe(["ab ab ab"], 1000)
    assert 257 < tok.vocab_size < 1000
    assert tok.decode(tok.encode("ab ab")) == "ab ab"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 200}, "vocab_size must be an integer >= 257"),
        ({"vocab_size": 300, "special_tokens": []}, "special_tokens must be non-empty"),
        (
            {"vocab_size": 300, "special_tokens": [""]},
            "special_tokens: every special token must be a non-empty",
        ),
        (
            {"vocab_size": 300, "special_tokens": [ENDOFTEXT, ""]},
            "special_tokens: every special token must be a non-empty",
        ),
        ({"vocab_size": 300, "special_tokens": [ENDOFTEXT, None]}, "must be a non-empty string, got None"),
        ({"vocab_size": 300, "special_tokens": ENDOFTEXT}, "special_tokens must be a list of strings"),
        ({"vocab_size": 300, "eot_token": "<|x|>"}, "eot_token '<|x|>' must be one of"),
        ({"vocab_size": 300, "pattern": "(unclosed"}, "not a valid regular expression"),
    ],
)
def test_bad_arguments(small_texts, kwargs, match):
    with pytest.raises(DataError, match=match):
        train_bpe(small_texts[:2], **kwargs)


def test_no_text_is_an_error():
    with pytest.raises(DataError, match="no text to train on"):
        train_bpe(["", ""], 300)


def test_lone_surrogate_in_training_text():
    with pytest.raises(InvalidTextError, match="training text 1"):
        train_bpe(["fine", "bad \ud800"], 300)


def test_to_hf_tokenizer_after_load(small_tokenizer, tmp_path):
    loaded = Tokenizer.load(small_tokenizer.save(tmp_path))
    text = "Round trip through files, then tokenizers."
    assert to_hf_tokenizer(loaded).encode(text).ids == loaded.encode(text)


@pytest.fixture(scope="module")
def pydocs_8192():
    """The seed-size tokenizer on the whole built-in corpus (about a second, plus the corpus parse)."""
    texts = pydocs_texts("train") + pydocs_texts("validation")
    return texts, train_bpe(texts, 8192)


def test_pydocs_8192_tiktoken_equals_trainer_on_whole_corpus(pydocs_8192):
    texts, tok = pydocs_8192
    assert tok.vocab_size == 8192
    encoded = to_hf_tokenizer(tok).encode_batch(texts)
    assert tok.encode_batch(texts) == [e.ids for e in encoded]


@given(st.data())
def test_pydocs_8192_agrees_on_cut_and_spliced_text(pydocs_8192, data):
    """Slices of real prose cut at arbitrary points (mid-word, mid-character sequence) and joined."""
    texts, tok = pydocs_8192
    hf = to_hf_tokenizer(tok)
    pieces = []
    for _ in range(data.draw(st.integers(1, 4))):
        text = texts[data.draw(st.integers(0, len(texts) - 1))]
        start = data.draw(st.integers(0, len(text)))
        pieces.append(text[start : start + data.draw(st.integers(0, 300))])
    spliced = data.draw(st.sampled_from(["", " ", "\n", "é"])).join(pieces)
    assert tok.encode(spliced) == hf.encode(spliced).ids
    assert tok.decode(tok.encode(spliced)) == spliced
