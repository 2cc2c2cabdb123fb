"""Damaged copies of a model folder's files, as a class: every way a file can be broken that we test.

`file_variants(data)` gives, for any file: empty, truncated at several offsets, a byte flipped at
several offsets, and garbage that is not what the name says (a pickle, a zip, random bytes, NULs,
the text in UTF-16); for JSON, also nesting 200,000 deep, a 5,000-digit integer, NaN and Infinity,
a duplicated key and other JSON values at the top. `json_field_variants(body)` gives, for a parsed
JSON object, each field set to each JSON value of the wrong type or range, each field missing, and
an unknown field. Pickles are only ever written, never loaded.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

DEEP = 200_000
WRONG_VALUES = [None, True, False, 0, -1, 1.5, 10**30, "x", "false", "true", "", [], {}, [1], {"a": 1}]


def _garbage(data: bytes) -> Iterator[tuple[str, bytes]]:
    yield "pickle", pickle.dumps({"weights": [1.0, 2.0], "config": {"d_model": 32}})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("data.pkl", pickle.dumps([1, 2, 3]))
    yield "zip", buffer.getvalue()
    yield "random", random.Random(0).randbytes(4096)
    yield "nuls", b"\0" * 1024
    yield "utf-16", data.decode("latin-1").encode("utf-16")


def file_variants(data: bytes, *, is_json: bool = False) -> Iterator[tuple[str, bytes]]:
    """(label, damaged bytes) for one file whose good contents are `data`."""
    n = len(data)
    yield "empty", b""
    for cut in sorted({1, 7, 8, 9, 16, n // 3, n // 2, n - 1}):
        if 0 < cut < n:
            yield f"cut-at-{cut}", data[:cut]
    for at in sorted({0, 1, 8, n // 4, n // 2, n - 1}):
        if 0 <= at < n:
            yield f"flip-at-{at}", data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    yield from _garbage(data)
    if is_json:
        yield "deep-list", b"[" * DEEP + b"]" * DEEP
        yield "deep-object", b'{"a":' * DEEP + b"1" + b"}" * DEEP
        yield "deep-in-a-field", b'{"vocab_size": ' + b"[" * DEEP + b"]" * DEEP + b"}"
        yield "huge-integer", b'{"vocab_size": ' + b"9" * 5000 + b"}"
        yield "nan", b'{"vocab_size": NaN, "n_embd": Infinity, "norm_eps": -Infinity}'
        yield "duplicate-key", b'{"a": 1, "a": 2}'
        for top in (b"null", b"true", b"1", b'"text"', b"[]", b"[{}]"):
            yield f"top-{top.decode()}", top


def json_field_variants(body: dict) -> Iterator[tuple[str, dict]]:
    """(label, changed body): every field with every wrong value, every field missing, one unknown."""
    for key in body:
        for value in WRONG_VALUES:
            if value != body[key] or type(value) is not type(body[key]):
                yield f"{key}={value!r}", {**body, key: value}
        yield f"no-{key}", {k: v for k, v in body.items() if k != key}
    yield "unknown-field", {**body, "n_experts": 8}


def check_class(folder: Path, load: Callable, allowed: tuple[type[BaseException], ...], names: list[str],
                config: str = "config.json") -> list[str]:  # fmt: skip
    """Loads `folder` once per damaged variant of each file in `names` (restoring the file after);
    returns a description of every variant whose load raised anything but `allowed`."""
    import time

    problems = []

    def attempt(label: str) -> None:
        start = time.perf_counter()
        try:
            load(folder)
        except allowed as e:
            if "Traceback" in str(e) or not str(e):
                problems.append(f"{label}: unclear message {e!r}")
        except BaseException as e:  # noqa: BLE001 - the class under test: anything else is a bug
            problems.append(f"{label}: {type(e).__name__}: {str(e)[:200]}")
        if time.perf_counter() - start > 30:
            problems.append(f"{label}: took {time.perf_counter() - start:.0f} s")

    for name in names:
        path = folder / name
        good = path.read_bytes()
        try:
            for label, data in file_variants(good, is_json=name.endswith(".json")):
                path.write_bytes(data)
                attempt(f"{name} {label}")
            if name == config:
                for label, body in json_field_variants(json.loads(good)):
                    path.write_text(json.dumps(body))
                    attempt(f"{name} {label}")
        finally:
            path.write_bytes(good)
    return problems
