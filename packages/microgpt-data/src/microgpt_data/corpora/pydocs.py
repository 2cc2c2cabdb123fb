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
"""

from __future__ import annotations

import ast
import functools
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

from microgpt_data.errors import DataSourceError

__all__ = ["PYDOCS_SPLITS", "VALIDATION_EVERY", "PyDoc", "pydocs_documents", "pydocs_texts"]

PYDOCS_SPLITS = ("train", "validation")
VALIDATION_EVERY = 20
_SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
_DOCUMENTED = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


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


def _stdlib_documents(root: Path) -> list[PyDoc]:
    documents = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _SKIPPED_DIRS.intersection(relative.parts[:-1]):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):  # e.g. lib2to3 test data written for Python 2
            continue
        text = _module_text(tree, module)
        if text:
            documents.append(PyDoc(f"module:{module}", text))
    return documents


@functools.cache
def pydocs_documents() -> tuple[PyDoc, ...]:
    """Every document of the corpus, topics first, in a deterministic order (parsed once, ~3 s)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # pragma: no cover - stripped interpreters
        topics = {}
    documents = [PyDoc(f"topic:{key}", topics[key].strip()) for key in sorted(topics) if topics[key].strip()]
    documents.extend(_stdlib_documents(Path(sysconfig.get_paths()["stdlib"])))
    if not documents:  # pragma: no cover - stripped interpreters
        raise DataSourceError(
            "this Python installation ships neither pydoc_data nor standard-library sources"
        )
    return tuple(documents)


def pydocs_texts(split: str = "train") -> list[str]:
    """The texts of one split (``"train"`` or ``"validation"``) in corpus order."""
    if split not in PYDOCS_SPLITS:
        raise DataSourceError(f"pydocs has splits {PYDOCS_SPLITS}, not {split!r}")
    return [doc.text for doc in pydocs_documents() if doc.split == split]
