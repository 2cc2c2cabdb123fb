"""text_documents: .txt files as paragraphs of bounded size, for any line ends and any chunk size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_data import DataSourceError
from microgpt_data.text_files import MAX_DOCUMENT_CHARS, text_documents


def documents(tmp_path, data: bytes, **kwargs) -> list[str]:
    path = tmp_path / "file.txt"
    path.write_bytes(data)
    return list(text_documents(path, **kwargs))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"one line, no newline", ["one line, no newline"]),
        (b"p1 line1\np1 line2\n\np2\n", ["p1 line1\np1 line2", "p2"]),
        (b"p1\n\n\n\n\np2", ["p1", "p2"]),
        (b"p1\r\nline 2\r\n\r\np2\r\n", ["p1\nline 2", "p2"]),  # CRLF
        (b"p1\rline 2\r\rp2", ["p1\nline 2", "p2"]),  # old Mac CR
        (b"p1\n  \t \np2\n \n", ["p1", "p2"]),  # whitespace-only lines are blank
        (b"\n\n  \n  indented\n", ["  indented"]),
        (b"\xef\xbb\xbfBOM first", ["BOM first"]),
        (b"", []),
        (b"\n \n\r\n", []),
    ],
    ids=[
        "one-line",
        "paragraphs",
        "many-blank",
        "crlf",
        "cr",
        "blank-ws",
        "indented",
        "bom",
        "empty",
        "blank",
    ],
)
def test_paragraphs_are_documents(tmp_path, data, expected):
    assert documents(tmp_path, data) == expected
    assert documents(tmp_path, data, chunk_bytes=1) == expected


def test_a_long_line_is_cut_at_spaces_into_bounded_documents(tmp_path):
    words = [f"w{i}" for i in range(40_000)]  # about 230 KB on one line
    docs = documents(tmp_path, " ".join(words).encode())
    assert len(docs) > 3 and all(MAX_DOCUMENT_CHARS // 2 <= len(d) <= MAX_DOCUMENT_CHARS for d in docs[:-1])
    assert " ".join(docs).split(" ") == words  # cut between words, nothing lost
    unbroken = documents(tmp_path, b"x" * (3 * MAX_DOCUMENT_CHARS + 5))
    assert [len(d) for d in unbroken] == [MAX_DOCUMENT_CHARS] * 3 + [5]


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b"fine\n" * 100 + b"\xff rest", 500), (b"\xc3\xa9" * 10 + b"\xc3", 20), (b"ok \xe2\x82 x", 3)],
    ids=["bad-start-byte", "truncated-at-end", "truncated-inside"],
)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_bytes_that_are_not_utf8_name_the_file_and_offset(tmp_path, data, offset, chunk):
    with pytest.raises(DataSourceError, match=rf"file.txt is not UTF-8 text: the byte at offset {offset} "):
        documents(tmp_path, data, chunk_bytes=chunk)


pieces = st.sampled_from(["word", "x" * 23, " ", "\t", "\n", "\n\n", " \n \n", "\r\n", "\r", "é", "😀", "  "])


@given(st.lists(pieces, max_size=80), st.sampled_from([1, 2, 5, 64]))
def test_documents_do_not_depend_on_the_chunk_size(tmp_path_factory, parts, chunk):
    text = "".join(parts)
    folder = tmp_path_factory.mktemp("chunks")
    whole = documents(folder, text.encode(), max_chars=30)
    assert documents(folder, text.encode(), max_chars=30, chunk_bytes=chunk) == whole
    assert all(0 < len(d) <= 30 and d.strip() and d == d.strip("\n") for d in whole)
    # Nothing but separators (line ends, blank lines, the whitespace at a cut) is lost, in order.
    assert "".join("".join(whole).split()) == "".join(text.split())
