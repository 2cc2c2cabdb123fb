"""What a `Tokenizer`'s inputs must be before tiktoken sees them: valid text, sound tables, a pattern
that covers text.

tiktoken trusts its inputs: a negative or 2**32 id raises OverflowError, an empty special token makes
``encode(..., allowed_special="all")`` loop forever, a split pattern that matches the empty string
panics its Rust core, and one that skips characters silently drops them. `check_tables` refuses all
of these with `TokenizerFileError` naming the argument; `make_encoding` builds the
`tiktoken.Encoding` and proves the pattern on a probe text (letters, digits, punctuation, runs of
whitespace, accents, CJK, emoji) that must decode back exactly. `check_text` refuses text that is
not valid Unicode (lone surrogates), which tiktoken would silently turn into U+FFFD.
"""

from __future__ import annotations

import tiktoken

from microgpt_core.config import is_integer
from microgpt_data.errors import InvalidTextError, TokenizerFileError

__all__ = ["REPLACEMENT", "check_tables", "check_text", "make_encoding"]


def check_text(text: str, where: str = "text") -> None:
    """Raises `InvalidTextError` unless `text` is a str that is valid Unicode (no lone surrogates)."""
    if not isinstance(text, str):
        raise InvalidTextError(f"{where} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTextError(
            f"{where} holds a lone surrogate {text[exc.start]!r} at index {exc.start}: it is not valid "
            "Unicode and cannot round-trip; repair it first (e.g. s.encode('utf-8', 'replace').decode())"
        ) from None


REPLACEMENT = "\ufffd".encode()
_ID_LIMIT = 2**32  # tiktoken's ids are 32-bit unsigned
# Letters, digits, punctuation, runs of spaces, tabs and newlines, accents, CJK, emoji: a split pattern
# must cover all of it (tiktoken encodes only what the pattern matches).
_PROBE = "Hello, World!  It's 2024:\tx_y = [1, 2.5]\n\n  naïve café 中文 😀 e\u0301 \r\n end "


def _is_id(value: object) -> bool:
    return is_integer(value) and 0 <= value < _ID_LIMIT


def check_tables(
    ranks: object, special_tokens: object, *, pattern: object, name: object, eot_token: object
) -> None:
    """Raises `TokenizerFileError` (naming the argument) unless the tables are what tiktoken needs."""
    if not isinstance(ranks, dict):
        raise TokenizerFileError(f"ranks must be a dict of bytes -> id, got {type(ranks).__name__}")
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token:
            raise TokenizerFileError(f"ranks: every token must be non-empty bytes, got {token!r}")
        if not _is_id(rank):
            raise TokenizerFileError(
                f"ranks: the id of {token!r} must be an integer in [0, 2**32), got {rank!r}"
            )
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerFileError(
            f"the rank table lacks {len(missing)} of the 256 single bytes (first: {missing[0]}); "
            "a byte-level tokenizer needs all of them"
        )
    if not isinstance(special_tokens, dict):
        raise TokenizerFileError(
            f"special_tokens must be a dict of str -> id, got {type(special_tokens).__name__}"
        )
    for token, token_id in special_tokens.items():
        if not isinstance(token, str) or not token:
            raise TokenizerFileError(
                f"special_tokens: every special token must be a non-empty string, got {token!r}"
            )
        _check_special_text(token)
        if not _is_id(token_id):
            raise TokenizerFileError(
                f"special_tokens: the id of {token!r} must be an integer in [0, 2**32), got {token_id!r}"
            )
    for label, value in (("pattern", pattern), ("name", name), ("eot_token", eot_token)):
        if not isinstance(value, str):
            raise TokenizerFileError(f"{label} must be a str, got {type(value).__name__} {value!r:.40}")
    if eot_token not in special_tokens:
        raise TokenizerFileError(
            f"eot_token {eot_token!r} is not one of the special tokens {sorted(special_tokens)}"
        )
    ids = [*ranks.values(), *special_tokens.values()]
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        repeated = sorted({i for i in ids if i in seen or seen.add(i)})
        raise TokenizerFileError(f"token ids must be unique; repeated ids include {repeated[:5]}")


def _check_special_text(token: str) -> None:
    try:
        check_text(token, "special token")
    except InvalidTextError as exc:
        raise TokenizerFileError(f"special_tokens: {exc}") from None


def make_encoding(
    name: str, pattern: str, ranks: dict[bytes, int], special: dict[str, int]
) -> tiktoken.Encoding:
    """The `tiktoken.Encoding`, once its pattern has split and rebuilt the probe text exactly."""
    try:
        encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
    except ValueError as exc:  # tiktoken reports a bad regular expression as ValueError
        raise TokenizerFileError(f"tiktoken rejected the tokenizer (pattern {pattern!r}): {exc}") from None
    try:
        rebuilt = encoding.decode(encoding.encode_ordinary(_PROBE))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - tiktoken panics (a BaseException) on empty matches
        rebuilt = f"{type(exc).__name__}: {exc}"
    if rebuilt != _PROBE:
        raise TokenizerFileError(
            f"pattern {pattern!r} does not split text into pieces that cover it (encoding {_PROBE!r} "
            f"gave back {rebuilt[:80]!r}); it must match every character and never the empty string, "
            "like the default GPT2_PATTERN"
        )
    return encoding
