"""The built-in corpus: there, deterministic, split by document, all the prose there is."""

from __future__ import annotations

import pytest

from microgpt_data import DataSourceError, pydocs_documents, pydocs_texts
from microgpt_data.corpora.pydocs import VALIDATION_EVERY, _module_text


def test_corpus_is_large_prose():
    documents = pydocs_documents()
    size = sum(len(doc.text.encode()) for doc in documents)
    assert size > 1_500_000  # ~2.5 MB on CPython 3.11: more than nanoGPT's 1 MB Shakespeare
    names = [doc.name for doc in documents]
    assert len(set(names)) == len(names)
    assert any(name.startswith("topic:") for name in names)
    assert "module:json" in names and "module:collections" in names
    assert not any(".test." in name or name.startswith("module:test.") for name in names)


def test_order_and_split_are_deterministic():
    documents = pydocs_documents()
    topics = [d.name for d in documents if d.name.startswith("topic:")]
    modules = [d.name for d in documents if d.name.startswith("module:")]
    assert topics == sorted(topics)
    assert [d.name for d in documents] == topics + modules
    assert pydocs_texts("train") == pydocs_texts("train")


def test_splits_partition_the_corpus():
    train, validation = pydocs_texts("train"), pydocs_texts("validation")
    assert len(train) + len(validation) == len(pydocs_documents())
    assert 0 < len(validation) < len(train) / (VALIDATION_EVERY / 3)
    assert sum(map(len, validation)) > 50_000


def test_unknown_split():
    with pytest.raises(DataSourceError, match="splits .*'train', 'validation'.*not 'test'"):
        pydocs_texts("test")


def test_module_text_reads_docstrings_without_importing():
    import ast

    source = (
        '"""Module doc."""\nclass A:\n    """Class doc."""\n    def f(self):\n        """Method doc."""\n'
    )
    text = _module_text(ast.parse(source), "pkg.mod")
    assert text == "pkg.mod\n\nModule doc.\n\npkg.mod.A\n\nClass doc.\n\npkg.mod.A.f\n\nMethod doc."


def test_the_corpus_is_cached_on_disk_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    from microgpt_data.corpora import pydocs

    built = pydocs_documents()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        pydocs_documents.cache_clear()
        assert pydocs_documents() == built  # built (or read) and written under the new cache home
        (cache,) = (tmp_path / "microgpt" / "pydocs").glob("*.json")
        monkeypatch.setattr(pydocs, "_stdlib_documents", lambda sources: pytest.fail("parsed again"))
        pydocs_documents.cache_clear()
        assert pydocs_documents() == built  # read back, not parsed
        monkeypatch.undo()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        cache.write_text('[["topic:x", ')  # cut short
        pydocs_documents.cache_clear()
        assert pydocs_documents() == built and cache.read_bytes().startswith(b'[["topic:')
        assert len(cache.read_bytes()) > 1_000_000
    finally:
        pydocs_documents.cache_clear()
