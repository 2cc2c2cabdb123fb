"""load_text_dataset: pydocs, local files and folders, Hub ids offline, and every error it names."""

from __future__ import annotations

import json
import time

import pytest

from microgpt_data import DataSourceError, HubUnavailableError, load_text_dataset, pydocs_texts
from microgpt_data.sources import is_hub_id


def texts(ds) -> list[str]:
    return [row["text"] for row in ds]


def both_splits(spec, **kwargs) -> tuple[list[str], list[str]]:
    return texts(load_text_dataset(spec, "train", **kwargs)), texts(
        load_text_dataset(spec, "validation", **kwargs)
    )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


DOCS = [f"document number {i}: " + "word " * (i % 7) for i in range(100)]


def test_pydocs_splits_match_the_corpus():
    ds = load_text_dataset("pydocs", "validation")
    assert ds.column_names == ["text"]
    assert texts(ds) == pydocs_texts("validation")


def test_jsonl_splits_partition_documents(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t, "id": i} for i, t in enumerate(DOCS)])
    train, validation = both_splits(path)
    assert sorted(train + validation) == sorted(DOCS)
    assert not set(train) & set(validation)
    assert 0 < len(validation) < 20
    assert both_splits(path) == (train, validation)  # deterministic


def test_text_column_is_renamed(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": t, "n": 1} for t in DOCS])
    ds = load_text_dataset(path, "train", text_column="body")
    assert ds.column_names == ["text"]
    assert set(texts(ds)) <= set(DOCS)


def test_missing_text_column_lists_columns(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "x", "n": 1}])
    with pytest.raises(DataSourceError, match=r"docs.jsonl.*no column 'text'.*\['body', 'n'\]"):
        load_text_dataset(path)


def test_txt_is_read_by_paragraph(tmp_path):
    path = tmp_path / "book.txt"
    paragraphs = [f"Paragraph {i}.\nIts second line." for i in range(60)]
    path.write_text("\n\n".join(paragraphs) + "\n")
    train, validation = both_splits(path)
    assert sorted(t.strip() for t in train + validation) == sorted(paragraphs)


def test_a_20_mb_line_reads_as_documents_in_both_splits(tmp_path):
    """One 20 MB line was one document (datasets' text builder, sample_by="paragraph"), so one split
    was empty and training reported "no documents"."""
    import numpy as np

    from microgpt_data.text_files import MAX_DOCUMENT_CHARS

    vocabulary = np.array([f"word{i}" for i in range(5000)])
    words = vocabulary[np.random.default_rng(0).integers(0, len(vocabulary), 3_000_000)]
    path = tmp_path / "one-line.txt"
    path.write_text(" ".join(words.tolist()))
    assert path.stat().st_size > 20_000_000
    train, validation = both_splits(path)
    assert len(train) + len(validation) > 300 and validation and len(validation) < len(train)
    assert all(len(doc) <= MAX_DOCUMENT_CHARS for doc in train + validation)
    assert sum(len(doc) + 1 for doc in train + validation) - 1 == path.stat().st_size  # minus the cut spaces


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"no trailing newline", ["no trailing newline"]),
        (b"line 1\r\nline 2\r\n\r\nsecond\r\n", ["line 1\nline 2", "second"]),
        (b"first\n\n\n  \nsecond\nthird line\n", ["first", "second\nthird line"]),
    ],
    ids=["no-final-newline", "crlf", "blank-lines"],
)
def test_txt_line_ends_and_paragraphs(tmp_path, data, expected):
    path = tmp_path / "doc.txt"
    path.write_bytes(data)
    train, validation = both_splits(path)
    assert sorted(train + validation) == sorted(expected)


@pytest.mark.parametrize("data", [b"", b"\n\n", b"  \r\n\t\n"], ids=["empty", "newlines", "whitespace"])
def test_an_empty_txt_names_the_file(tmp_path, data):
    path = tmp_path / "nothing.txt"
    path.write_bytes(data)
    with pytest.raises(DataSourceError, match=r"nothing.txt' holds no text \(a .txt file holds documents"):
        load_text_dataset(path)


@pytest.mark.parametrize("at", [0, 5000, 3_000_000], ids=["first-byte", "first-chunk", "later-chunk"])
def test_a_txt_that_is_not_utf8_names_the_file_and_offset(tmp_path, at):
    """Was a UnicodeDecodeError with an offset inside datasets' 10 MB chunk (or raised mid-training)."""
    path = tmp_path / "latin1.txt"
    text = ("plain words and lines\n" * 200_000).encode()
    path.write_bytes(text[:at] + "café".encode("latin-1") + text[at:])
    with pytest.raises(DataSourceError, match=rf"latin1.txt is not UTF-8 text: the byte at offset {at + 3} "):
        texts(load_text_dataset(path))


def test_parquet_and_folder_of_mixed_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    pq.write_table(pa.table({"text": DOCS[:50]}), folder / "a.parquet")
    write_jsonl(folder / "sub" / "b.jsonl", [{"text": t} for t in DOCS[50:]])
    (folder / "notes.md").write_text("ignored: not a supported suffix")
    parquet_train, parquet_validation = both_splits(folder / "a.parquet")
    assert sorted(parquet_train + parquet_validation) == sorted(DOCS[:50])
    train, validation = both_splits(folder)
    assert sorted(train + validation) == sorted(DOCS)


def test_missing_path(tmp_path):
    with pytest.raises(DataSourceError, match=r"nothing.jsonl' does not exist; a spec is 'pydocs'"):
        load_text_dataset(tmp_path / "nothing.jsonl")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(DataSourceError, match=r"data.csv: unsupported file type '.csv'; supported"):
        load_text_dataset(path)
    with pytest.raises(DataSourceError, match="holds no .txt, .jsonl, .json, .parquet files"):
        load_text_dataset(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(DataSourceError, match="empty.txt.*holds no"):
        load_text_dataset(path)


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(DataSourceError, match="broken.jsonl.*ArrowInvalid"):
        texts(load_text_dataset(path))


def test_non_text_values(tmp_path):
    path = write_jsonl(tmp_path / "numbers.jsonl", [{"text": 1}, {"text": 2}])
    with pytest.raises(DataSourceError, match="holds int values, not text"):
        texts(load_text_dataset(path))


def test_unknown_split():
    with pytest.raises(DataSourceError, match="split must be one of"):
        load_text_dataset("pydocs", "test")


def test_hub_id_shapes():
    assert is_hub_id("stas/openwebtext-10k")
    assert is_hub_id("org/name:config")
    assert not is_hub_id("data/file.jsonl")
    assert not is_hub_id("openwebtext")
    assert not is_hub_id("a/b/c")


def test_bare_word_is_a_missing_path():
    with pytest.raises(DataSourceError, match="'openwebtext' does not exist"):
        load_text_dataset("openwebtext")


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hub_id_offline_flag_fails_at_once(monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=rf"stas/openwebtext-10k.*{variable} is set.*--data pydocs"):
        load_text_dataset("stas/openwebtext-10k")
    assert time.perf_counter() - start < 2


@pytest.fixture()
def reachable_hub(fake_hub):
    """A stand-in Hub that answers the probe (`GET /api/datasets/...`) with 200; tests replace
    `datasets.load_dataset` (failures of the Hub itself: tests/data/test_hub.py)."""
    fake_hub(200)


def test_hub_id_streams_train_with_config_and_text_column(reachable_hub, monkeypatch, make_dataset):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return make_dataset(DOCS).rename_column("text", "content")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train = texts(load_text_dataset("org/name:cfg", "train", text_column="content"))
    validation = texts(load_text_dataset("org/name", "validation", text_column="content"))
    assert calls[0] == ("org/name", "cfg", {"split": "train", "streaming": True})
    assert calls[1][:2] == ("org/name", None)
    assert sorted(train + validation) == sorted(DOCS) and validation


def test_hub_errors_are_translated(reachable_hub, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/name' on the Hub")

    def not_found(*args, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError("Dataset 'org/name' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(
        HubUnavailableError, match=r"cannot stream Hub dataset 'org/name' \(http.*--data pydocs"
    ):
        load_text_dataset("org/name")
    monkeypatch.setattr(datasets, "load_dataset", not_found)
    with pytest.raises(DataSourceError, match=r"Hub dataset 'org/name' \(http.*\) was not found .*HF_TOKEN"):
        load_text_dataset("org/name")

    def bad_config(*args, **kwargs):
        raise ValueError("BuilderConfig 'nope' not found. Available: ['plain_text']")

    monkeypatch.setattr(datasets, "load_dataset", bad_config)
    with pytest.raises(DataSourceError, match=r"'org/name:nope' \(http.*\): ValueError.*plain_text"):
        load_text_dataset("org/name:nope")
