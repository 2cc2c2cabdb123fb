"""`pydocs`: the built-in offline corpus, English prose from the running interpreter's documentation.

Two sources, both shipped with every CPython, so the corpus is always there and never downloaded:

1. ``pydoc_data.topics.topics``: the reference manual's topic pages (``help("for")``), one document
   per topic, in sorted topic order.
2. The docstrings of the standard library, read from the ``.py`` sources with `ast` (nothing is
   imported or executed): one document per module, in sorted path order, holding the module
   docstring followed by every class, function and method docstring, each under its qualified name.
   Test suites (``test/``, ``tests/``, ``idle_test/``) and ``site-packages`` are left out.

The train/validation split is by document and deterministic: a document is in `validation` when the
CRC-32 of its name is divisible by `VALIDATION_EVERY` (about 1 in 20), so the split does not depend
on order and a document added by a new Python version moves nothing else. The corpus depends on the
Python version (about 2.2 MB of text on CPython 3.11).

Parsing the standard library takes a few seconds, so the corpus is kept on disk once built, in
``$XDG_CACHE_HOME/microgpt/pydocs/`` (else ``~/.cache/microgpt/pydocs/``), under a key made of the
interpreter's version and the path, size and modification time of every source read: any change to
them builds it again. A cache that cannot be read or written is ignored (the corpus is then built).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

from microgpt_core.files import write_atomic
from microgpt_data.errors import DataSourceError

__all__ = ["PYDOCS_SPLITS", "VALIDATION_EVERY", "PyDoc", "pydocs_documents", "pydocs_texts"]

PYDOCS_SPLITS = ("train", "validation")
VALIDATION_EVERY = 20
_SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
_DOCUMENTED = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_CACHE_VERSION = 1  # bump when the corpus's construction changes


@dataclass(frozen=True)
class PyDoc:
    """One document of the corpus: a stable `name` (``topic:for``, ``module:json.decoder``) and text."""

    name: str
    text: str

    @property
    def split(self) -> str:
        """``"validation"`` for about 1 in `VALIDATION_EVERY` documents (by name), else ``"train"``."""
        return "validation" if zlib.crc32(self.name.encode()) % VALIDATION_EVERY == 0 else "train"


def _module_text(tree: ast.Module, module: str) -> str:
    """The module docstring, then each documented class/function under its qualified name."""
    blocks = []
    doc = ast.get_docstring(tree)
    if doc:
        blocks.append(f"{module}\n\n{doc}")

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _DOCUMENTED):
                name = f"{prefix}.{child.name}"
                child_doc = ast.get_docstring(child)
                if child_doc:
                    blocks.append(f"{name}\n\n{child_doc}")
                visit(child, name)

    visit(tree, module)
    return "\n\n".join(blocks)


def _stdlib_sources(root: Path) -> list[tuple[Path, str]]:
    """(path, module name) of every standard-library source the corpus reads, in sorted path order."""
    sources = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _SKIPPED_DIRS.intersection(relative.parts[:-1]):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        sources.append((path, ".".join(parts)))
    return sources


def _stdlib_documents(sources: list[tuple[Path, str]]) -> list[PyDoc]:
    documents = []
    for path, module in sources:
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):  # e.g. lib2to3 test data written for Python 2
            continue
        text = _module_text(tree, module)
        if text:
            documents.append(PyDoc(f"module:{module}", text))
    return documents


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped interpreters
        return {}
    return topics


@functools.cache
def pydocs_documents() -> tuple[PyDoc, ...]:
    """Every document of the corpus, topics first, in a deterministic order (parsed once, then read
    from the on-disk cache)."""
    sources = _stdlib_sources(Path(sysconfig.get_paths()["stdlib"]))
    cache = _cache_path(sources)
    cached = _read_cache(cache)
    if cached is not None:
        return cached
    topics = _topics()
    documents = [PyDoc(f"topic:{key}", topics[key].strip()) for key in sorted(topics) if topics[key].strip()]
    documents.extend(_stdlib_documents(sources))
    if not documents:  # pragma: no cover - stripped interpreters
        raise DataSourceError(
            "this Python installation ships neither pydoc_data nor standard-library sources"
        )
    _write_cache(cache, documents)
    return tuple(documents)


def _cache_path(sources: list[tuple[Path, str]]) -> Path | None:
    """The cache file for these sources: keyed by the interpreter and every source's size and time."""
    key = hashlib.sha256(f"{_CACHE_VERSION} {sys.version} {sys.implementation.cache_tag}".encode())
    try:
        import pydoc_data.topics as topics_module

        paths = [Path(topics_module.__file__), *(path for path, _ in sources)]
    except ImportError:  # pragma: no cover - stripped interpreters
        paths = [path for path, _ in sources]
    try:
        for path in paths:
            info = path.stat()
            key.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    except OSError:
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "microgpt" / "pydocs" / f"{key.hexdigest()[:32]}.json"


def _read_cache(path: Path | None) -> tuple[PyDoc, ...] | None:
    if path is None or not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return tuple(PyDoc(str(name), str(text)) for name, text in rows)
    except (OSError, ValueError, TypeError, RecursionError):
        return None  # damaged: built again and rewritten


def _write_cache(path: Path | None, documents: list[PyDoc]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps([[doc.name, doc.text] for doc in documents]).encode("utf-8"))
    except OSError:  # a read-only or full home: run without the cache
        pass


def pydocs_texts(split: str = "train") -> list[str]:
    """The texts of one split (``"train"`` or ``"validation"``) in corpus order."""
    if split not in PYDOCS_SPLITS:
        raise DataSourceError(f"pydocs has splits {PYDOCS_SPLITS}, not {split!r}")
    return [doc.text for doc in pydocs_documents() if doc.split == split]
