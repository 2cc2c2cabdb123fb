"""splits: the content rule where it gives both splits text, else the position rule (one cut)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microgpt_data import DataSourceError
from microgpt_data.splits import VALIDATION_EVERY, in_validation, scan_splits, split_by_position


def both(texts, where="src") -> tuple[list[str], list[str]]:
    scan = scan_splits(texts, where)
    assert not scan.by_content
    return tuple(
        list(split_by_position(texts, characters=scan.characters, split=split, where=where))
        for split in ("train", "validation")
    )


def hashed_to(validation: bool, stem: str) -> str:
    return next(f"{stem} {i}" for i in range(1000) if in_validation(f"{stem} {i}") == validation)


def test_the_scan_stops_once_both_splits_hold_a_document():
    read = []

    def texts():
        for i in range(10_000):
            read.append(i)
            yield f"document {i}"

    scan = scan_splits(texts(), "src")
    assert scan.by_content and scan.documents == len(read) < 200


def test_one_document_is_cut_at_a_space_near_the_last_twentieth():
    text = " ".join(f"word{i}" for i in range(400))
    train, validation = both([text])
    assert train[0] + validation[0] == text and len(train) == len(validation) == 1
    assert validation[0].startswith(" word") and not train[0].endswith(" ")
    assert abs(len(validation[0]) - len(text) / VALIDATION_EVERY) < 8


def test_identical_documents_and_blank_ones():
    piece = "the same text again"
    train, validation = both([piece, "  \n", None, piece, "", piece, piece])
    assert "".join(train + validation) == piece * 4 and train and validation
    assert all(t.strip() for t in train + validation)


@pytest.mark.parametrize("text", ["ab", " a b ", "\ta\nb"])
def test_two_characters_still_split(text):
    train, validation = both([text])
    assert train[0].strip() == "a" and validation[0].strip() == "b"


@pytest.mark.parametrize("texts", [["x"], ["  x \n"], ["", " y"]])
def test_one_character_cannot_split(texts):
    assert not scan_splits(texts, "src").splittable


def test_values_that_are_not_text_name_the_source():
    with pytest.raises(DataSourceError, match=r"^data.jsonl: the text column holds int values, not text"):
        scan_splits(["fine", 3], "data.jsonl")


@given(st.lists(st.text(st.sampled_from("ab \n"), max_size=30), max_size=6), st.booleans())
def test_the_position_rule_cuts_the_text_once(drawn, to_validation):
    """Both splits hold text, train is a prefix of the documents and validation the rest, in order."""
    texts = [t for t in drawn if t.strip() and in_validation(t) == to_validation]  # all under one hash
    texts.append(hashed_to(to_validation, "tail"))
    train, validation = both(texts)
    assert "".join(train + validation) == "".join(texts)
    assert "".join(train).strip() and "".join(validation).strip()
    assert len(train) + len(validation) in (len(texts), len(texts) + 1)  # one document at most is cut
