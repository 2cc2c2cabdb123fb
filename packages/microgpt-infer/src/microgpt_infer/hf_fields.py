"""The JSON types of the fields of a Hugging Face `config.json`, and the one check of them.

A model folder in Hugging Face's layout (GPT-2's, `gpt2.py`; Llama's, `llama.py`) describes its model
in `config.json`. Python's `bool("false")` is True and `int(16.0)` is 16, so a field is checked as the
JSON value it is, before anything reads it: booleans must be JSON true/false, counts integers >= 1
(not 16.0), epsilons finite positive numbers, and so on. Each module lists its fields with one of
the kinds below (`FIELDS` there); `check_fields` refuses the first value that is not of its kind,
naming the file, the field and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from microgpt_infer.errors import ModelFileError

__all__ = [
    "BOOL",
    "COUNT",
    "COUNT_OR_NULL",
    "ID_OR_NULL",
    "IDS_OR_NULL",
    "NONNEGATIVE",
    "OBJECT_OR_NULL",
    "POSITIVE",
    "PROBABILITY",
    "PROBABILITY_OR_NULL",
    "STR",
    "STR_OR_NULL",
    "STRS_OR_NULL",
    "VALID",
    "check_fields",
    "require_fields",
]

# What the JSON value of a field must be (the words appear in the error message), and the test of it.
COUNT, COUNT_OR_NULL, ID_OR_NULL = "an integer >= 1", "an integer >= 1 or null", "an integer >= 0 or null"
IDS_OR_NULL = "an integer >= 0, a non-empty list of them, or null"
POSITIVE, NONNEGATIVE, PROBABILITY = "a finite number > 0", "a finite number >= 0", "a number in [0, 1]"
PROBABILITY_OR_NULL = "a number in [0, 1] or null"
BOOL, STR, STR_OR_NULL, STRS_OR_NULL = (
    "true or false",
    "a string",
    "a string or null",
    "a list of strings or null",
)
OBJECT_OR_NULL = "a JSON object or null"


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: object) -> bool:
    return (_int(x) or isinstance(x, float)) and math.isfinite(x)


def _id(x: object) -> bool:
    return _int(x) and x >= 0


VALID = {
    COUNT: lambda x: _int(x) and x >= 1,
    COUNT_OR_NULL: lambda x: x is None or (_int(x) and x >= 1),
    ID_OR_NULL: lambda x: x is None or _id(x),
    IDS_OR_NULL: lambda x: x is None or _id(x) or (isinstance(x, list) and x != [] and all(map(_id, x))),
    POSITIVE: lambda x: _number(x) and x > 0,
    NONNEGATIVE: lambda x: _number(x) and x >= 0,
    PROBABILITY: lambda x: _number(x) and 0 <= x <= 1,
    PROBABILITY_OR_NULL: lambda x: x is None or (_number(x) and 0 <= x <= 1),
    BOOL: lambda x: isinstance(x, bool),
    STR: lambda x: isinstance(x, str),
    STR_OR_NULL: lambda x: x is None or isinstance(x, str),
    STRS_OR_NULL: lambda x: x is None or (isinstance(x, list) and all(isinstance(i, str) for i in x)),
    OBJECT_OR_NULL: lambda x: x is None or isinstance(x, dict),
}


def check_fields(body: Mapping[str, Any], fields: Mapping[str, str], path: Path | str) -> None:
    """Refuses the first field of `body` listed in `fields` whose value is not of its kind.

    Fields absent from `body` are not checked (see `require_fields`); fields `fields` does not list
    are left alone (checkpoints carry many optional ones).

    Raises:
      ModelFileError: "{path}: field 'x' must be <kind>, got <the JSON value>".
    """
    for field, kind in fields.items():
        if field in body and not VALID[kind](body[field]):
            raise ModelFileError(f"{path}: field {field!r} must be {kind}, got {json.dumps(body[field])}")


def require_fields(body: Mapping[str, Any], names: tuple[str, ...], path: Path | str, layout: str) -> None:
    """Refuses a `body` without one of `names` ("a {layout} config.json has {field}")."""
    for field in names:
        if field not in body:
            raise ModelFileError(f"{path}: field {field!r} is missing; a {layout} config.json has {field}")
