"""The files a `Tokenizer` reads and writes, and GPT-2's byte alphabet.

``tokenizer.tiktoken`` (tiktoken's own rank format: one line per mergeable token, ``base64(bytes) id``,
ids ascending) + ``tokenizer_config.json`` (``format_version``, ``name``, ``pattern``,
``special_tokens``, ``eot_token``). Both are parsed here, never through tiktoken's path-keyed cache,
and written through `microgpt_core.files.write_atomic` (a temporary name, then a rename), so a failed
save never leaves a half-written file; they get the permissions a plain write would (0o666 less the
umask).

GPT-2 style ``vocab.json`` + ``merges.txt`` (GPT-2's own, and Hugging Face byte-level BPE) are read
into the same ranks.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path

from microgpt_data.errors import TokenizerFileError

__all__ = [
    "RANKS_FILE",
    "CONFIG_FILE",
    "TOKENIZER_FORMAT_VERSION",
    "gpt2_byte_decoder",
    "write_tokenizer_files",
    "read_tokenizer_files",
    "read_gpt2_files",
]

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FORMAT_VERSION = 1


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
    # Imported here: microgpt_core's package imports JAX, which `import microgpt_data` must not load.
    from microgpt_core.files import write_atomic

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
    config = _read_json_object(config_path, "must hold a JSON object")
    version = config.get("format_version")
    if version != TOKENIZER_FORMAT_VERSION:
        raise TokenizerFileError(
            f"{config_path}: format_version {version!r} is not supported "
            f"(expected {TOKENIZER_FORMAT_VERSION})"
        )
    for key, kind in (("pattern", str), ("special_tokens", dict), ("eot_token", str)):
        if not isinstance(config.get(key), kind):
            raise TokenizerFileError(f"{config_path}: field {key!r} must be a {kind.__name__}")
    ranks = _parse_ranks(ranks_path)
    return {
        "ranks": ranks,
        "special_tokens": {str(k): int(v) for k, v in config["special_tokens"].items()},
        "pattern": config["pattern"],
        "name": str(config.get("name", "microgpt")),
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
    vocab = _read_json_object(vocab_path, "must map token strings to ids")
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
        ranks[bytes([byte])] = int(vocab[char])
    mergeable = set(decoder)
    previous = max(ranks.values())
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerFileError(f"{merges_path}:{number}: expected two tokens separated by a space")
        merged = parts[0] + parts[1]
        if merged not in vocab:
            raise TokenizerFileError(
                f"{merges_path}:{number}: merge result {merged!r} is not in {vocab_path}"
            )
        token_id = int(vocab[merged])
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
    special = {token: int(i) for token, i in vocab.items() if token not in mergeable}
    if eot_token not in special:
        special[eot_token] = max([*ranks.values(), *special.values()]) + 1
    return ranks, special


def _read_json_object(path: Path, shape: str) -> dict:
    """The JSON object in `path`; `TokenizerFileError` (naming the file) when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TokenizerFileError(f"{path} {shape}")
    return value


def _parse_ranks(path: Path) -> dict[bytes, int]:
    """Parses a ``.tiktoken`` rank file (``base64 id`` per line) with errors naming the line."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'base64 id'")
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (ValueError, binascii.Error) as exc:
            raise TokenizerFileError(f"{path}:{number}: bad line {line[:40]!r} ({exc})") from None
        if token in ranks:
            raise TokenizerFileError(f"{path}:{number}: token {token!r} appears twice")
        ranks[token] = rank
    return ranks
