"""Reading a JSON object from a file: the one reader of every JSON file microGPT loads.

    read_json_object(path, error=SomeError)   {key: value}, or `SomeError` naming the file

Model configs (`config.json`, GPT-2's too), training summaries, tokenizer configs and GPT-2
vocabularies are all read here. Anything that is not a JSON object raises the caller's exception
class with one line that starts with the path: a missing or unreadable file, bytes that are not
UTF-8, a syntax error (with its line and column), a key given twice (`json` would keep the last one
silently), nesting deeper than the interpreter's recursion limit, an integer longer than Python
converts (4,300 digits by default), or another JSON value at the top. JAX-free, so `microgpt_data`
can use it without importing JAX.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["read_json_object"]

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def read_json_object(
    path: str | os.PathLike[str], *, error: type[Exception], holds: str = "a JSON object"
) -> dict[str, Any]:
    """The JSON object stored in `path`.

    Args:
      path: the file.
      error: the exception class to raise (the caller's own: `CheckpointError`, `TokenizerFileError`,
        `ModelFileError`...); it is called with one message.
      holds: what the file must hold, for the message when its top-level value is not an object
        (e.g. "a JSON object of GPTConfig fields").
    Returns:
      The object, as a dict (keys in file order).
    Raises:
      error: the file is missing or unreadable, or its bytes are not one JSON object (see the module
        docstring); the message starts with `path`, is one line and never chains the parser's error.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot be read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except _DuplicateKey as e:
        raise error(f"{path}: not valid JSON here: key {e.args[0]!r} appears more than once") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON here: nested too deeply to read") from None
    except ValueError:  # int() refused a number (JSONDecodeError is a ValueError too: caught above)
        raise error(
            f"{path}: not valid JSON here: an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
        raise error(f"{path}: must hold {holds}, got a JSON {kind}")
    return value


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out
