"""`read_json_object`: the JSON object of a file, or the caller's exception naming the file in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from microgpt_core.jsonfile import read_json_object


class BadFile(ValueError):
    """A caller's own exception class."""


def error_of(path) -> str:
    with pytest.raises(BadFile) as info:
        read_json_object(path, error=BadFile, holds="a JSON object of settings")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert info.value.__cause__ is None  # never chained to the parser's exception as its reason
    assert info.value.__context__ is None or info.value.__suppress_context__
    return message


def test_reads_an_object_in_file_order(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"b": 1, "a": [true, null, 1.5], "c": {"d": "é"}}', encoding="utf-8")
    body = read_json_object(path, error=BadFile)
    assert body == {"b": 1, "a": [True, None, 1.5], "c": {"d": "é"}} and list(body) == ["b", "a", "c"]
    assert read_json_object(str(path), error=BadFile) == body  # str paths too


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (b'{"a": \xff}', "not UTF-8 text (byte 0xff at offset 6)"),
        (b'{\n  "a": 1,\n  "b": ,\n}', "not valid JSON: Expecting value (line 3, column 8)"),
        (b"", "not valid JSON: Expecting value (line 1, column 1)"),
        (b'{"a": 1, "a": 2}', "key 'a' appears more than once"),
        (b'{"a": {"b": 1, "b": 1}}', "key 'b' appears more than once"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply to read"),
        (b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested too deeply to read"),
        (b'{"a": ' + b"9" * 5000 + b"}", f"an integer of more than {sys.get_int_max_str_digits()} digits"),
        (b"[1, 2]", "must hold a JSON object of settings, got a JSON array"),
        (b"null", "must hold a JSON object of settings, got a JSON null"),
        (b"true", "got a JSON boolean"),
        (b'"text"', "got a JSON string"),
        (b"1.5", "got a JSON number"),
    ],
    ids=[
        "utf8", "syntax", "empty", "duplicate", "nested-duplicate", "deep", "deep-field", "huge-int",
        "array", "null", "bool", "string", "number",
    ],
)  # fmt: skip
def test_anything_but_an_object_is_the_callers_error(tmp_path, contents, message):
    path = tmp_path / "bad.json"
    path.write_bytes(contents)
    assert message in error_of(path)


def test_a_missing_file(tmp_path):
    assert error_of(tmp_path / "nothing.json") == f"{tmp_path / 'nothing.json'}: file not found"
    assert error_of(tmp_path) == f"{tmp_path}: file not found"  # a folder is not the file


def test_importing_it_does_not_import_jax():
    code = "import sys, microgpt_core.jsonfile; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
