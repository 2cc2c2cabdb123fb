"""Packing with a loss mask: the mask travels with its tokens; a document that fits in a row is never
split across rows; the loader yields (B, 2, T+1) and resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microgpt_data import LoaderStateError, PackedLoader
from microgpt_data.masked_packing import pack_masked

EOT, ROW = 99, 6
documents = st.lists(
    st.lists(st.tuples(st.integers(0, 98), st.integers(0, 1)), min_size=1, max_size=ROW - 1), max_size=12
)


def _split(doc):
    return [t for t, _ in doc], [m for _, m in doc]


@settings(max_examples=40, deadline=None)
@given(documents, st.integers(1, 3), st.integers(0, 12))
def test_every_document_lies_whole_in_one_row_with_its_mask(docs, rows, cut):
    window = rows * ROW
    out, carry = [], np.zeros((2, 0), np.int32)
    for part in (docs[:cut], docs[cut:]):  # chained calls: the same as one
        windows, carry = pack_masked(carry, [_split(d) for d in part], EOT, window, ROW)
        out += list(windows)
    whole, rest = pack_masked(np.zeros((2, 0), np.int32), [_split(d) for d in docs], EOT, window, ROW)
    assert np.array_equal(np.asarray(out).reshape(-1, 2, window), whole) and np.array_equal(rest, carry)
    stream = np.concatenate([*(w for w in whole), rest], axis=1) if len(whole) else rest  # (2, n)
    assert set(stream[1][stream[0] == EOT]) <= {0}  # separators and padding are never counted
    found = stream[:, stream[0] != EOT]  # the documents' own tokens, in order, mask beside each
    assert found.T.tolist() == [[t, m] for d in docs for t, m in d]
    starts = np.flatnonzero(np.r_[True, stream[0, :-1] == EOT] & (stream[0] != EOT))
    for start, doc in zip(starts, docs, strict=False):  # a document (+ EOT) never crosses a row end
        assert start // ROW == (start + len(doc)) // ROW


def test_a_document_longer_than_a_row_is_cut_and_the_mask_follows():
    windows, carry = pack_masked(
        np.zeros((2, 0)), [([1, 2, 3, 4, 5, 6, 7], [0, 1, 1, 0, 0, 1, 1])], EOT, 4, 4
    )
    assert windows.tolist() == [[[1, 2, 3, 4], [0, 1, 1, 0]], [[5, 6, 7, EOT], [0, 1, 1, 0]]]
    assert carry.shape == (2, 0)
    with pytest.raises(ValueError, match="2 ids but 1 mask values"):
        pack_masked(np.zeros((2, 0)), [([1, 2], [1])], EOT, 4, 4)


def _encode(tokenizer):
    """A test `encode`: the text's ids, counted from the second word on; "skip" leaves a text out."""

    def encode(text):
        if text.startswith("skip"):
            return None
        head, _, tail = text.partition(" ")
        ids, tail_ids = tokenizer.encode(head), tokenizer.encode(" " + tail) if tail else []
        return ids + tail_ids, [0] * len(ids) + [1] * len(tail_ids)

    return encode


def test_the_loader_yields_tokens_and_mask_and_resumes_exactly(make_dataset, small_tokenizer, small_texts):
    texts = [" ".join(t.split()[:6]) for t in small_texts[:30]] + ["skip me"] * 3
    options = dict(batch_size=4, seq_len=15, shuffle_buffer=5, seed=1, encode=_encode(small_tokenizer))
    with PackedLoader(make_dataset(texts), small_tokenizer, **options) as loader:
        expected = [next(loader) for _ in range(8)]
    assert expected[0].shape == (4, 2, 16) and expected[0].dtype == np.int32
    assert all(set(np.unique(b[:, 1])) <= {0, 1} and b[:, 1].sum() > 0 for b in expected)
    skip = small_tokenizer.encode("skip")
    assert not any(np.array_equal(b[r, 0, i : i + len(skip)], skip) for b in expected for r in range(4)
                   for i in range(16 - len(skip)))  # fmt: skip
    with PackedLoader(make_dataset(texts), small_tokenizer, **options) as first:
        head = [next(first) for _ in range(3)]
        state = json.loads(json.dumps(first.state_dict()))
    with PackedLoader(make_dataset(texts), small_tokenizer, **options) as resumed:
        resumed.load_state_dict(state)
        tail = [next(resumed) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(head + tail, expected, strict=True))
    plain = PackedLoader(make_dataset(texts), small_tokenizer, **{**options, "encode": None})
    with pytest.raises(LoaderStateError, match="built differently: masked"):
        plain.load_state_dict(state)
