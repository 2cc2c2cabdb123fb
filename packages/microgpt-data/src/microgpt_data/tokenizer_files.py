"""The files a `Tokenizer` reads and writes, and GPT-2's byte alphabet.

``tokenizer.tiktoken`` (tiktoken's own rank format: one line per mergeable token, ``base64(bytes) id``,
ids ascending) + ``tokenizer_config.json`` (``format_version``, ``name``, ``pattern``,
``special_tokens``, ``eot_token``). Both are parsed here, never through tiktoken's path-keyed cache,
and written through `microgpt_core.files.write_atomic` (a temporary name, then a rename), so a failed
save never leaves a half-written file; they get the permissions a plain write would (0o666 less the
umask).

GPT-2 style ``vocab.json`` + ``merges.txt`` (GPT-2's own, and Hugging Face byte-level BPE) are read
into the same ranks.

Reading validates at the boundary: every damaged file (truncated, not UTF-8, not JSON, nested too
deep, wrong types, ids that are not integers in [0, 2**32) or repeat, a binary file under a tokenizer
name) raises `TokenizerFileError` naming the file (and line, field or byte offset), never another
exception; `Tokenizer` then checks the tables as a whole.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path

from microgpt_core.files import write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_data.errors import TokenizerFileError

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
]

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer_config.json"
GPT2_VOCAB_FILE = "vocab.json"  # GPT-2's own names, as a Hugging Face GPT-2 folder holds them
GPT2_MERGES_FILE = "merges.txt"
TOKENIZER_FORMAT_VERSION = 1
_ID_LIMIT = 2**32  # tiktoken's ids are 32-bit unsigned
_DECIMAL = re.compile(rb"[0-9]{1,10}")


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes (``"Ġ"`` for a space), mapped back to the byte values.

    ``vocab.json``/``merges.txt`` files (GPT-2's and Hugging Face ``tokenizers``' byte-level BPE) spell
    every byte as one printable character; this undoes that spelling.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    byte_values, chars, extra = list(printable), list(printable), 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(byte_values, chars, strict=True)}


def write_tokenizer_files(
    directory: str | os.PathLike,
    *,
    ranks: dict[bytes, int],
    special_tokens: dict[str, int],
    pattern: str,
    name: str,
    eot_token: str,
) -> Path:
    """Writes both files into `directory` (created if needed); returns the folder."""
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
    }
    write_atomic(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def read_tokenizer_files(directory: str | os.PathLike) -> dict:
    """The `Tokenizer` arguments stored in `directory`: ranks, special_tokens, pattern, name, eot_token."""
    directory = Path(directory)
    ranks_path, config_path = directory / RANKS_FILE, directory / CONFIG_FILE
    for path in (ranks_path, config_path):
        if not path.is_file():
            raise TokenizerFileError(
                f"{path} does not exist; a tokenizer folder holds {RANKS_FILE} and {CONFIG_FILE} "
                "(written by Tokenizer.save or the train-tokenizer command)"
            )
    config = read_json_object(config_path, error=TokenizerFileError)
    version = config.get("format_version")
    if type(version) is not int or version != TOKENIZER_FORMAT_VERSION:  # not True, not 1.0
        raise TokenizerFileError(
            f"{config_path}: format_version {version!r} is not supported "
            f"(expected the integer {TOKENIZER_FORMAT_VERSION})"
        )
    for key, kind in (("pattern", str), ("special_tokens", dict), ("eot_token", str), ("name", str)):
        if (key != "name" or key in config) and not isinstance(config.get(key), kind):
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
        _check_id(token_id, f"{config_path}: field 'special_tokens': the id of {token!r}")
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
    }


def read_gpt2_files(
    vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, *, eot_token: str
) -> tuple[dict[bytes, int], dict[str, int]]:
    """(ranks, special_tokens) from ``vocab.json`` + ``merges.txt``; ids are kept.

    Mergeable tokens are the 256 bytes and the result of each merge; any other vocabulary entry
    (``<|endoftext|>``) is special, and `eot_token` is added after the largest id when missing.
    tiktoken merges the lowest id first, so merged tokens' ids must rise in merge order: checked.
    """
    vocab_path, merges_path = Path(vocab_json), Path(merges_txt)
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise TokenizerFileError(f"{path} does not exist")
    vocab = read_json_object(vocab_path, error=TokenizerFileError, holds="a JSON object of tokens and ids")
    for token, token_id in vocab.items():
        if not token:
            raise TokenizerFileError(f"{vocab_path}: holds an empty token; every token is non-empty")
        _check_id(token_id, f"{vocab_path}: the id of {token!r}")
    if len(set(vocab.values())) != len(vocab):
        seen: set[int] = set()
        repeated = sorted({i for i in vocab.values() if i in seen or seen.add(i)})
        raise TokenizerFileError(f"{vocab_path}: ids must be unique; repeated ids include {repeated[:5]}")
    decoder = gpt2_byte_decoder()

    def to_bytes(token: str, where: str) -> bytes:
        try:
            return bytes(decoder[c] for c in token)
        except KeyError:
            raise TokenizerFileError(f"{where}: token {token!r} is not in GPT-2's byte alphabet") from None

    ranks: dict[bytes, int] = {}
    for char, byte in decoder.items():
        if char not in vocab:
            raise TokenizerFileError(f"{vocab_path} lacks the single-byte token {char!r} (byte {byte})")
        ranks[bytes([byte])] = vocab[char]
    mergeable = set(decoder)
    previous = max(ranks.values())
    lines = _read_text(merges_path).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerFileError(
                f"{merges_path}:{number}: expected two tokens separated by one space, got {line[:40]!r}"
            )
        merged = parts[0] + parts[1]
        if merged not in vocab:
            raise TokenizerFileError(
                f"{merges_path}:{number}: merge result {merged!r} is not in {vocab_path}"
            )
        token_id = vocab[merged]
        if merged in mergeable:
            continue  # the same bytes reached by another merge: tiktoken keeps the first
        if token_id <= previous:
            raise TokenizerFileError(
                f"{merges_path}:{number}: id {token_id} of {merged!r} does not rise in merge order; "
                "tiktoken merges lowest id first, so ids must follow merges.txt"
            )
        previous = token_id
        mergeable.add(merged)
        ranks[to_bytes(merged, f"{merges_path}:{number}")] = token_id
    special = {token: i for token, i in vocab.items() if token not in mergeable}
    unmerged = sorted((i, t) for t, i in special.items() if not _SPECIAL_SPELLING.fullmatch(t))
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


# How special tokens are spelled in GPT-2 style vocabularies: <|endoftext|>, <s>, </s>, <pad>, [CLS].
_SPECIAL_SPELLING = re.compile(r"<[^<>\s]+>|\[[^\[\]\s]+\]")


def _check_id(value: object, where: str) -> None:
    """`TokenizerFileError` unless `value` is an integer id in [0, 2**32) (not a bool, float or str)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _ID_LIMIT:
        raise TokenizerFileError(
            f"{where} must be an integer in [0, 2**32), got {type(value).__name__} {value!r:.40}"
        )


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
        if not _DECIMAL.fullmatch(parts[1]) or int(parts[1]) >= _ID_LIMIT:
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
