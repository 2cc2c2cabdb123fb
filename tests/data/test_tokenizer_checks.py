"""The checks every Tokenizer passes before tiktoken sees it: ids, tokens, special tokens, pattern."""

from __future__ import annotations

import threading

import pytest

from microgpt_data import ENDOFTEXT, InvalidTextError, Tokenizer, TokenizerFileError
from microgpt_data.tokenizer_checks import check_text


def finishes(fn, seconds: float = 20.0):
    """`fn()`'s result or exception, or a failure if it is still running after `seconds` (tiktoken
    releases the GIL while encoding, so a looping encode cannot block this thread's timeout)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def build(small_tokenizer, *, ranks=None, special=None, **kwargs):
    ranks = small_tokenizer.ranks if ranks is None else ranks
    special = small_tokenizer.special_tokens if special is None else special
    return finishes(lambda: Tokenizer(ranks, special, **kwargs).encode("a <|x|> b", allow_special=True))


@pytest.mark.parametrize(
    "special",
    [{"": 600}, {ENDOFTEXT: 511, "": 600}, {ENDOFTEXT: 511, 5: 600}, {ENDOFTEXT: 511, b"<|x|>": 600}],
    ids=["only-empty", "empty-beside-eot", "int-token", "bytes-token"],
)
def test_special_tokens_must_be_non_empty_strings(small_tokenizer, special):
    """An empty special token made `encode(allow_special=True)` loop forever."""
    with pytest.raises(TokenizerFileError, match="special_tokens: every special token must be a non-empty"):
        build(small_tokenizer, special=special)


@pytest.mark.parametrize("bad_id", [-1, 2**32, 2**40, 1.5, "511", True, None])
def test_ids_must_be_integers_in_range(small_tokenizer, bad_id):
    """A negative or >= 2**32 id was an OverflowError from tiktoken; floats, strings, bools slipped in."""
    with pytest.raises(TokenizerFileError, match=r"special_tokens: the id of .* integer in \[0, 2\*\*32\)"):
        build(small_tokenizer, special={ENDOFTEXT: bad_id})
    ranks = small_tokenizer.ranks
    ranks[b"zz-new"] = bad_id
    with pytest.raises(TokenizerFileError, match=r"ranks: the id of b'zz-new' must be an integer"):
        build(small_tokenizer, ranks=ranks)


def test_tokens_must_be_non_empty_bytes_and_ids_unique(small_tokenizer):
    for token in (b"", "ab"):
        ranks = small_tokenizer.ranks
        ranks[token] = 600
        with pytest.raises(TokenizerFileError, match="ranks: every token must be non-empty bytes"):
            build(small_tokenizer, ranks=ranks)
    with pytest.raises(TokenizerFileError, match=r"token ids must be unique; repeated ids include \[7\]"):
        build(small_tokenizer, special={ENDOFTEXT: 7})
    with pytest.raises(TokenizerFileError, match="special_tokens: special token holds a lone surrogate"):
        build(small_tokenizer, special={ENDOFTEXT: 511, "\ud800": 512})


@pytest.mark.parametrize(
    "pattern",
    ["", "a*", r"(?=a)", r"\p{L}+", "x", r"\S+"],
    ids=["empty", "star", "lookahead", "letters-only", "one-letter", "no-whitespace"],
)
def test_a_pattern_must_cover_text(small_tokenizer, pattern):
    """Empty matches panicked tiktoken's Rust core; a pattern that skips characters dropped them."""
    with pytest.raises(TokenizerFileError, match="does not split text into pieces that cover it"):
        build(small_tokenizer, pattern=pattern)


@pytest.mark.parametrize(("field", "value"), [("pattern", 5), ("name", None), ("eot_token", 511)])
def test_strings_must_be_strings(small_tokenizer, field, value):
    with pytest.raises(TokenizerFileError, match=f"{field} must be a str"):
        build(small_tokenizer, **{field: value})


def test_a_good_tokenizer_passes(small_tokenizer):
    assert build(small_tokenizer, special={ENDOFTEXT: 511, "<|x|>": 512}) == [
        *small_tokenizer.encode("a "),
        512,
        *small_tokenizer.encode(" b"),
    ]


def test_check_text_refuses_non_text():
    with pytest.raises(InvalidTextError, match="must be a str"):
        check_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidTextError, match="lone surrogate"):
        check_text("\udfff")
