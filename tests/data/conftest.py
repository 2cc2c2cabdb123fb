"""Fixtures for the microgpt_data tests: one small BPE tokenizer and small in-memory datasets (the
stand-in Hub, `fake_hub`, is in tests/conftest.py: the train tests use it too)."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest

from microgpt_data import Tokenizer, train_bpe


@pytest.fixture(scope="session")
def small_texts() -> list[str]:
    """About 100 KB of English prose (reference-manual topics), in a fixed order."""
    texts = [topics[key] for key in sorted(topics)]
    return texts[:40]


@pytest.fixture(scope="session")
def small_tokenizer(small_texts) -> Tokenizer:
    """A 512-token byte-level BPE trained on `small_texts` (well under a second)."""
    return train_bpe(small_texts, 512)


def _generate(texts):
    for text in texts:
        yield {"text": text}


def _make_dataset(texts: list[str]):
    import datasets

    return datasets.IterableDataset.from_generator(
        _generate,
        features=datasets.Features({"text": datasets.Value("string")}),
        gen_kwargs={"texts": list(texts)},
    )


@pytest.fixture(scope="session")
def make_dataset():
    """`make_dataset(texts)`: a streaming dataset with one shard per text, like pydocs (so processes
    split it by shard)."""
    return _make_dataset
