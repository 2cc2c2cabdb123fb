"""The files a `Tokenizer` reads and writes: its own, and GPT-2's ``vocab.json`` + ``merges.txt``.

``tokenizer.tiktoken`` (tiktoken's own rank format: one line per mergeable token, ``base64(bytes) id``,
ids ascending) + ``tokenizer_config.json`` (``format_version``, ``name``, ``pattern``,
``special_tokens``, ``eot_token``, and for a chat model ``chat_template``: the Jinja source of its chat
template, a string, under the key Hugging Face's tokenizer_config.json gives it). Both are parsed
here, never through tiktoken's path-keyed cache, and written through `microgpt_core.files.write_atomic`
(a temporary name, then a rename), so a failed save never leaves a half-written file; they get the
permissions a plain write would (0o666 less the umask).

GPT-2 style ``vocab.json`` + ``merges.txt`` (GPT-2's own, and Hugging Face byte-level BPE) are read
into the same ranks (`read_gpt2_files`, through `merges.ranks_from_merges`, which the
``tokenizer.json`` reader shares) and written from them (`write_gpt2_files`, merges recovered by
`merges.merges_of`). GPT-2's byte alphabet (`gpt2_byte_decoder`) lives in `merges` and is re-exported
here. Hugging Face's ``tokenizer.json`` is `tokenizer_json`'s.

Reading validates at the boundary: every damaged file (truncated, not UTF-8, not JSON, nested too
deep, wrong types, ids that are not integers in [0, 2**32) or repeat, a binary file under a tokenizer
name) raises `TokenizerFileError` naming the file (and line, field or byte offset), never another
exception; `Tokenizer` then checks the tables as a whole. A field of ``tokenizer_config.json`` that is
not one of its six is refused (naming it, and the field it resembles), as a model's ``config.json``
refuses unknown fields: a misspelt optional field (``nmae``) would otherwise be dropped unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from microgpt_core.files import write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_data.errors import DataError, TokenizerFileError
from microgpt_data.merges import (
    ID_LIMIT,
    SPECIAL_SPELLING,
    check_id,
    gpt2_byte_decoder,
    merges_of,
    ranks_from_merges,
    spell,
)

__all__ = [
    "RANKS_FILE",
    "CONFIG_FILE",
    "GPT2_VOCAB_FILE",
    "GPT2_MERGES_FILE",
    "TOKENIZER_FORMAT_VERSION",
    "gpt2_byte_decoder",
    "write_tokenizer_files",
    "read_tokenizer_files",
    "read_gpt2_files",
    "write_gpt2_files",
    "GPT2_PATTERN",
    "TokenizerTables",
]

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer_config.json"
GPT2_VOCAB_FILE = "vocab.json"  # GPT-2's own names, as a Hugging Face GPT-2 folder holds them
GPT2_MERGES_FILE = "merges.txt"
TOKENIZER_FORMAT_VERSION = 1
_CONFIG_KEYS = ("format_version", "name", "pattern", "special_tokens", "eot_token", "chat_template")
_DECIMAL = re.compile(rb"[0-9]{1,10}")
# GPT-2's split pattern (contractions, letters, numbers, punctuation, whitespace), as tiktoken spells it;
# Hugging Face's ByteLevel pre-tokenizer (use_regex) splits with the same regular expression.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class TokenizerTables(Protocol):
    """What the writers here read of a `Tokenizer` (this module sits below `tokenizer`)."""

    @property
    def ranks(self) -> dict[bytes, int]: ...

    @property
    def special_tokens(self) -> dict[str, int]: ...

    @property
    def pattern(self) -> str: ...


def write_tokenizer_files(
    directory: str | os.PathLike,
    *,
    ranks: dict[bytes, int],
    special_tokens: dict[str, int],
    pattern: str,
    name: str,
    eot_token: str,
    chat_template: str | None = None,
) -> Path:
    """Writes both files into `directory` (created if needed); returns the folder. `chat_template` is
    written only when given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        base64.b64encode(token) + b" " + str(rank).encode()
        for token, rank in sorted(ranks.items(), key=lambda item: item[1])
    ]
    write_atomic(directory / RANKS_FILE, b"\n".join(lines) + b"\n")
    config = {
        "format_version": TOKENIZER_FORMAT_VERSION,
        "name": name,
        "pattern": pattern,
        "special_tokens": dict(sorted(special_tokens.items(), key=lambda item: item[1])),
        "eot_token": eot_token,
        **({"chat_template": chat_template} if chat_template is not None else {}),
    }
    write_atomic(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def read_tokenizer_files(directory: str | os.PathLike) -> dict:
    """The `Tokenizer` arguments stored in `directory`: ranks, special_tokens, pattern, name, eot_token,
    chat_template (None when the file has none)."""
    directory = Path(directory)
    ranks_path, config_path = directory / RANKS_FILE, directory / CONFIG_FILE
    for path in (ranks_path, config_path):
        if not path.is_file():
            raise TokenizerFileError(
                f"{path} does not exist; a tokenizer folder holds {RANKS_FILE} and {CONFIG_FILE} "
                "(written by Tokenizer.save or the train-tokenizer command)"
            )
    config = read_json_object(config_path, error=TokenizerFileError)
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _CONFIG_KEYS, n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TokenizerFileError(
            f"{config_path}: unknown field {unknown[0]!r}{hint}; a tokenizer config holds "
            f"{', '.join(_CONFIG_KEYS)}"
        )
    version = config.get("format_version")
    if type(version) is not int or version != TOKENIZER_FORMAT_VERSION:  # not True, not 1.0
        raise TokenizerFileError(
            f"{config_path}: format_version {version!r} is not supported "
            f"(expected the integer {TOKENIZER_FORMAT_VERSION})"
        )
    optional = ("name", "chat_template")
    for key, kind in (
        ("pattern", str),
        ("special_tokens", dict),
        ("eot_token", str),
        *((k, str) for k in optional),
    ):
        if (key not in optional or key in config) and not isinstance(config.get(key), kind):
            raise TokenizerFileError(
                f"{config_path}: field {key!r} must be a {kind.__name__}, got "
                f"{type(config.get(key)).__name__} {config.get(key)!r:.40}"
            )
    special = config["special_tokens"]
    for token, token_id in special.items():
        if not token:
            raise TokenizerFileError(
                f"{config_path}: field 'special_tokens' holds an empty token; special tokens are "
                "non-empty strings"
            )
        check_id(token_id, f"{config_path}: field 'special_tokens': the id of {token!r}")
    if config["eot_token"] not in special:
        raise TokenizerFileError(
            f"{config_path}: field 'eot_token' {config['eot_token']!r} is not one of the special "
            f"tokens {sorted(special)}"
        )
    return {
        "ranks": _parse_ranks(ranks_path),
        "special_tokens": dict(special),
        "pattern": config["pattern"],
        "name": config.get("name", "microgpt"),
        "eot_token": config["eot_token"],
        "chat_template": config.get("chat_template"),
    }


def read_gpt2_files(
    vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, *, eot_token: str
) -> tuple[dict[bytes, int], dict[str, int]]:
    """(ranks, special_tokens) from ``vocab.json`` + ``merges.txt``; ids are kept.

    Mergeable tokens are the 256 bytes and the result of each merge (`merges.ranks_from_merges`); any
    other vocabulary entry (``<|endoftext|>``) is special, and `eot_token` is added after the largest
    id when missing. tiktoken merges the lowest id first, so merged tokens' ids must rise in merge
    order: checked.
    """
    vocab_path, merges_path = Path(vocab_json), Path(merges_txt)
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise TokenizerFileError(f"{path} does not exist")
    vocab = read_json_object(vocab_path, error=TokenizerFileError, holds="a JSON object of tokens and ids")
    ranks, special, _ = ranks_from_merges(vocab, _merge_lines(merges_path), vocab_where=str(vocab_path))
    unmerged = sorted((i, t) for t, i in special.items() if not SPECIAL_SPELLING.fullmatch(t))
    if unmerged:  # ordinary tokens that no merge makes: merges.txt is cut short or another vocab's
        examples = ", ".join(repr(t) for _, t in unmerged[:3])
        raise TokenizerFileError(
            f"{vocab_path} holds {len(unmerged)} token(s) that no merge of {merges_path} makes (such as "
            f"{examples}): merges.txt is truncated or belongs to another vocabulary (only special "
            "tokens spelled like <...> or [...] may stand outside the merges)"
        )
    if eot_token not in special:
        special[eot_token] = max([*ranks.values(), *special.values()]) + 1
    return ranks, special


def _merge_lines(path: Path) -> Iterator[tuple[str, str, str]]:
    """``(where, left, right)`` for each merge line of a ``merges.txt`` (its ``#version`` header and
    blank lines skipped)."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerFileError(
                f"{path}:{number}: expected two tokens separated by one space, got {line[:40]!r}"
            )
        yield f"{path}:{number}", parts[0], parts[1]


def write_gpt2_files(tokenizer: TokenizerTables, directory: str | os.PathLike) -> None:
    """Writes GPT-2's ``vocab.json`` (every token, special ones too, in GPT-2's byte alphabet, by id)
    and ``merges.txt`` (a ``#version: 0.2`` header, then one ``left right`` line per merge in rank
    order, as ``transformers`` writes them) into `directory` (created), atomically: what
    ``GPT2Tokenizer`` and `read_gpt2_files` read back to the same ids.

    The two files carry no split pattern: their readers split text with GPT-2's. A tokenizer with
    another `pattern` would give other ids there, so it is refused (write ``tokenizer.json`` instead,
    `tokenizer_json.write_tokenizer_json`, which carries it).

    Raises:
      DataError: the tokenizer's pattern is not `GPT2_PATTERN`, or a token cannot be made by merging
        lower-ranked tokens (no merges describe it).
    """
    if tokenizer.pattern != GPT2_PATTERN:
        raise DataError(
            f"{GPT2_VOCAB_FILE} + {GPT2_MERGES_FILE} carry no split pattern and their readers split with "
            f"GPT-2's, but this tokenizer splits with {tokenizer.pattern!r}; write tokenizer.json "
            "(microgpt_data.tokenizer_json.write_tokenizer_json) for it instead"
        )
    ranks = tokenizer.ranks
    vocab = {spell(token): i for token, i in ranks.items()}
    vocab.update(tokenizer.special_tokens)
    vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
    lines = ["#version: 0.2", *(f"{spell(left)} {spell(right)}" for left, right in merges_of(ranks))]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(vocab, ensure_ascii=False, indent=2) + "\n"
    write_atomic(directory / GPT2_VOCAB_FILE, text.encode())
    write_atomic(directory / GPT2_MERGES_FILE, ("\n".join(lines) + "\n").encode())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TokenizerFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    """The UTF-8 text of `path`; `TokenizerFileError` naming the file and byte offset otherwise."""
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerFileError(
            f"{path} is not UTF-8 text: byte {exc.start} is {data[exc.start : exc.start + 1]!r} "
            f"({exc.reason}); is it the right file?"
        ) from None


def _parse_ranks(path: Path) -> dict[bytes, int]:
    """Parses a ``.tiktoken`` rank file (``base64 id`` per line) with errors naming the line."""
    ranks: dict[bytes, int] = {}
    lines_of: dict[int, int] = {}
    for number, line in enumerate(_read_bytes(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'base64 id'")
            token = base64.b64decode(parts[0], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise TokenizerFileError(f"{path}:{number}: bad line {line[:40]!r} ({exc})") from None
        if not token:
            raise TokenizerFileError(f"{path}:{number}: the token is empty")
        if not _DECIMAL.fullmatch(parts[1]) or int(parts[1]) >= ID_LIMIT:
            raise TokenizerFileError(
                f"{path}:{number}: the id {parts[1][:20]!r} is not an integer in [0, 2**32)"
            )
        rank = int(parts[1])
        if token in ranks:
            raise TokenizerFileError(f"{path}:{number}: token {token!r} appears twice")
        if rank in lines_of:
            raise TokenizerFileError(f"{path}:{number}: id {rank} was already given on line {lines_of[rank]}")
        ranks[token] = rank
        lines_of[rank] = number
    return ranks
