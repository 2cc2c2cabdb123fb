"""Chat data files: rows of messages read as JSON-text documents, split like text, bad lines named."""

from __future__ import annotations

import json

import pytest

from microgpt_data import DataSourceError
from microgpt_data.chats import is_chat_data, load_chat_dataset


def _rows(n: int) -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            "id": i,
        }
        for i in range(n)
    ]


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")
    return str(path)


def _texts(spec, split) -> list[str]:
    return [row["text"] for row in load_chat_dataset(spec, split)]


def test_chat_files_are_told_from_text_files(tmp_path):
    assert is_chat_data(_write(tmp_path / "chat.jsonl", _rows(2)))
    assert not is_chat_data(_write(tmp_path / "text.jsonl", [{"text": "a", "messages": []}]))
    (tmp_path / "notes.txt").write_text("hello")
    assert not is_chat_data(tmp_path / "notes.txt") and not is_chat_data("pydocs")


@pytest.mark.parametrize("rule", ["content", "position"])
def test_the_splits_partition_the_rows(tmp_path, rule):
    rows = _rows(60) if rule == "content" else _rows(1) * 3  # the same text thrice: one hash, one split
    spec = _write(tmp_path / "chat.jsonl", rows)
    train, validation = _texts(spec, "train"), _texts(spec, "validation")
    expected = [json.dumps(r["messages"], separators=(",", ":")) for r in rows]
    assert sorted(train + validation) == sorted(expected) and train and validation
    if rule == "position":
        assert len(validation) == 1  # the last 1/20 of the rows, at least one
    assert "(train split; " in str(load_chat_dataset(spec).microgpt_source)


def test_a_json_list_file_and_a_folder(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_rows(30)))
    _write(tmp_path / "b.jsonl", _rows(30)[::-1])
    assert len(_texts(tmp_path, "train") + _texts(tmp_path, "validation")) == 60


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"messages": []}\n{"messages": [}\n', r"chat.jsonl:2: not a JSON object"),
        (
            '{"messages": []}\n[1, 2]\n',
            r"chat.jsonl:2: a row must be a JSON object with 'messages', got list",
        ),
        ('{"messages": []}\n', r"1 conversation\(s\): too few for a train and a validation split"),
    ],
)
def test_bad_files_are_refused_naming_the_line(tmp_path, text, match):
    (tmp_path / "chat.jsonl").write_text(text)
    with pytest.raises(DataSourceError, match=match):
        _texts(tmp_path / "chat.jsonl", "train")
