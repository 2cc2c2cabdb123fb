"""The shuffle buffer: a permutation, deterministic per (seed, epoch), resumable from its state."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from microgpt_data.shuffle import draw_index, shuffled


def fresh(epoch: int = 0) -> dict:
    return {"epoch": epoch, "buffer": [], "draws": 0, "source_done": False}


class Counting:
    """An iterator over a list that remembers how many items it handed out."""

    def __init__(self, items, start=0):
        self.items, self.pulled = items, start

    def __iter__(self):
        return self

    def __next__(self):
        if self.pulled >= len(self.items):
            raise StopIteration
        self.pulled += 1
        return self.items[self.pulled - 1]


docs_strategy = st.lists(st.text(max_size=5), max_size=30)


@given(docs_strategy, st.integers(0, 8), st.integers(0, 2**32))
def test_yields_a_permutation(docs, size, seed):
    out = list(shuffled(iter(docs), fresh(), size=size, seed=seed))
    assert sorted(out) == sorted(docs)


def test_size_zero_keeps_order():
    docs = [str(i) for i in range(20)]
    assert list(shuffled(iter(docs), fresh(), size=0, seed=1)) == docs


def test_deterministic_and_different_per_epoch_and_seed():
    docs = [str(i) for i in range(50)]

    def order(epoch, seed):
        return list(shuffled(iter(docs), fresh(epoch), size=50, seed=seed))

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(1, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != docs


def test_draw_index_in_range():
    assert {draw_index(3, 1, d, 7) for d in range(200)} == set(range(7))


@given(docs_strategy, st.integers(0, 8), st.integers(0, 2**32), st.integers(0, 40))
def test_resume_from_a_copy_of_the_state(docs, size, seed, k):
    source = Counting(docs)
    state = fresh(epoch=2)
    stream = shuffled(source, state, size=size, seed=seed)
    first = [text for _, text in zip(range(k), stream, strict=False)]
    saved, pulled = copy.deepcopy(state), source.pulled
    rest = list(stream)
    resumed = list(shuffled(Counting(docs, start=pulled), saved, size=size, seed=seed))
    assert resumed == rest
    assert sorted(first + rest) == sorted(docs)
