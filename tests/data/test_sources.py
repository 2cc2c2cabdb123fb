"""load_text_dataset: pydocs, local files and folders, Hub ids offline, and every error it names."""

from __future__ import annotations

import json
import time
import zlib

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


def hashed_to(validation: bool, stem: str) -> str:
    """A text the content rule (CRC-32 divisible by 20) puts in validation, or in train."""
    return next(
        f"{stem} {i}." for i in range(1000) if (zlib.crc32(f"{stem} {i}.".encode()) % 20 == 0) == validation
    )


def assert_split_by_position(spec, documents: list[str]) -> tuple[list[str], list[str]]:
    """Both splits hold text; train then validation is the source's text, one document cut in two;
    the same on a second call."""
    train, validation = both_splits(spec)
    assert "".join(train).strip() and "".join(validation).strip()
    assert "".join(train + validation) == "".join(documents)
    assert len(train) + len(validation) in (len(documents), len(documents) + 1)
    assert both_splits(spec) == (train, validation)
    return train, validation


def test_a_small_one_paragraph_txt_has_both_splits(tmp_path):
    """The content rule put the one document in one split: the other was empty and training (or its
    evaluation) stopped with "the dataset got no documents in epoch 0"."""
    text = "A short story on one line, told in about a hundred words. " * 8
    (path := tmp_path / "story.txt").write_text(text + "\n")
    train, validation = assert_split_by_position(path, [text])
    assert validation[0].startswith(" ") and 0 < len(validation[0]) < len(text) / 10


def test_a_one_document_txt_that_hashes_to_validation_still_trains(tmp_path):
    document = hashed_to(True, "The only document of the file, number")
    (path := tmp_path / "one.txt").write_text(document)
    assert_split_by_position(path, [document])


def test_identical_repeated_pieces_split_by_position(tmp_path):
    """A repeated text cut into identical documents: all had one CRC-32, so all were in one split."""
    from microgpt_data.text_files import MAX_DOCUMENT_CHARS, text_documents

    path = tmp_path / "repeated.txt"
    line = "the same line of text\n"
    path.write_text(line * (MAX_DOCUMENT_CHARS // len(line) * 4))  # one paragraph: 4 identical pieces
    documents = list(text_documents(path))
    assert len(documents) == 4 and len(set(documents)) == 1
    train, validation = assert_split_by_position(path, documents)
    assert 0.03 < sum(map(len, validation)) / len(path.read_text()) < 0.07


def test_a_jsonl_of_two_rows_has_both_splits(tmp_path):
    rows = [hashed_to(False, "first row"), hashed_to(False, "and the second, a longer row of the file")]
    path = write_jsonl(tmp_path / "two.jsonl", [{"text": t} for t in rows])
    train, validation = assert_split_by_position(path, rows)
    assert train[0] == rows[0]


def test_a_folder_of_few_documents_has_both_splits(tmp_path):
    folder = tmp_path / "notes"
    (folder / "b").mkdir(parents=True)
    documents = [hashed_to(False, "note a"), hashed_to(False, "a longer note b in a subfolder")]
    (folder / "a.txt").write_text(documents[0])
    (folder / "b" / "b.txt").write_text(documents[1] + "\n\n\n")
    assert_split_by_position(folder, documents)


def test_many_documents_split_by_content_exactly(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in DOCS])
    by_hash = [t for t in DOCS if zlib.crc32(t.encode()) % 20 == 0]
    assert both_splits(path) == ([t for t in DOCS if t not in by_hash], by_hash)


def test_the_dataset_carries_its_name(tmp_path):
    from microgpt_data.sources import source_label

    (path := tmp_path / "x.txt").write_text("a few words")
    assert source_label(load_text_dataset(path, "validation")) == f"{path} (validation split)"
    assert source_label(load_text_dataset("pydocs")) == "pydocs (train split)"
    assert source_label(["not", "a", "dataset"]) is None


def test_a_single_character_names_the_file(tmp_path):
    (path := tmp_path / "x.txt").write_text("\n x \n")
    with pytest.raises(DataSourceError, match=r"x.txt' holds a single character of text: too little"):
        load_text_dataset(path)


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
    train, validation = both_splits(path)  # so few documents: split by position, one of them cut
    assert "".join(train + validation) == "".join(expected)


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
