"""`load_text_dataset(spec, split)`: any text source as a streaming ``datasets.IterableDataset``.

A `spec` is one of:

- ``pydocs``: the built-in offline corpus (`microgpt_data.corpora.pydocs`), one shard per document.
- a local path: a ``.txt``, ``.jsonl``/``.json`` or ``.parquet`` file, or a folder searched
  recursively for them (sorted paths, one shard per file). A ``.txt`` file is read by our own reader
  (`microgpt_data.text_files`): each paragraph (blank-line separated; any line ends; no final newline
  needed) is a document, and a paragraph longer than 65,536 characters (a file on one line) is cut into
  documents of at most that size; a file that is not UTF-8 is named with the byte offset.
- a Hugging Face Hub dataset id ``org/name`` or ``org/name:config`` (e.g. ``stas/openwebtext-10k``),
  streamed (`microgpt_data.hub`). Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set), or with
  the Hub unreachable, silent or answering errors, this fails within bounded time with one
  `HubUnavailableError` or `DataSourceError` naming the dataset and the endpoint, instead of
  retrying for ~25 s or waiting forever.

The result always has exactly one column, ``text`` (renamed from `text_column`). Splits: pydocs has
its own. A local source (a file, or a folder's files in turn) is split by `microgpt_data.splits`:
by the CRC-32 of each document's text (about 1 in 20 to ``validation``) wherever that gives both
splits text, which reading the source until both have a document shows (a few dozen documents, for
most data); otherwise (one document, a few, identical pieces) by position, the last 1/20 of the
source's characters to ``validation``, cut at a whitespace. So both splits hold text whenever the
source holds two characters of it. A Hub dataset cannot be read ahead: it is split by the CRC-32
rule alone. Both rules are deterministic, independent of the number of processes, and the same on
every call.

The dataset carries its name, ``SPEC (SPLIT split)`` (`source_label`), and `PackedLoader` starts its
errors with it, e.g. ``data.txt (validation split): 1 epoch(s) gave 50 tokens, fewer than one batch``
or, for a Hub split left empty, ``Hub dataset org/name (validation split; ...): no documents``.

``datasets`` is imported only inside these functions (the ``streaming`` extra): importing this
module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from microgpt_data.corpora.pydocs import pydocs_documents
from microgpt_data.errors import DataSourceError
from microgpt_data.hub import hub_timeout_seconds, open_hub_dataset
from microgpt_data.splits import VALIDATION_EVERY, checked_text, in_validation, scan_splits, split_by_position
from microgpt_data.text_files import text_documents

__all__ = [
    "SPLITS",
    "SUFFIXES",
    "is_hub_id",
    "label_dataset",
    "load_text_dataset",
    "source_label",
    "text_dataset",
]

SPLITS = ("train", "validation")
SUFFIXES = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[\w.-]+)?$")
_SPEC_HELP = (
    "a spec is 'pydocs', a Hub dataset id 'org/name[:config]', or a path to a .txt, .jsonl, .json or "
    ".parquet file or a folder of them"
)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataSourceError(
            "streaming needs Hugging Face `datasets`: pip install 'microgpt-data[streaming]'"
        ) from None
    return datasets


def is_hub_id(spec: str) -> bool:
    """True for ``org/name`` or ``org/name:config`` that names no local path and has no file suffix."""
    return bool(_HUB_ID.match(spec)) and Path(spec.split(":")[0]).suffix.lower() not in SUFFIXES


_LABEL = "microgpt_source"  # the attribute that carries a dataset's name for error messages


def source_label(dataset: Any) -> str | None:
    """``SPEC (SPLIT split)`` for a dataset `load_text_dataset` returned (None for any other), the
    name `PackedLoader` gives it in errors."""
    label = getattr(dataset, _LABEL, None)
    return label if isinstance(label, str) else None


def label_dataset(ds: Any, label: str) -> Any:
    """`ds`, named `label` (``SPEC (SPLIT split)``) for `source_label` and the loader's errors."""
    setattr(ds, _LABEL, label)
    return ds


def text_dataset(generator: Any, gen_kwargs: dict[str, Any]) -> Any:
    """A streaming ``datasets.IterableDataset`` of one ``text`` column, from ``generator(**gen_kwargs)``
    (one shard per item of a list among the arguments)."""
    datasets = _import_datasets()
    features = datasets.Features({"text": datasets.Value("string")})
    return datasets.IterableDataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs)


def _in_split(example: dict, *, validation: bool, where: str) -> bool:
    text = checked_text(example["text"], where)
    return text is not None and in_validation(text) == validation


def _text_files_generator(paths: list[str]):
    for path in paths:
        for document in text_documents(path):
            yield {"text": document}


def _text_files(datasets: Any, files: list[str]) -> Any:
    """`.txt` files through `text_documents` (``datasets``' text builder keeps a one-line file as
    one document and reports undecodable bytes at an offset inside its 10 MB chunk)."""
    return datasets.IterableDataset.from_generator(
        _text_files_generator,
        features=datasets.Features({"text": datasets.Value("string")}),
        gen_kwargs={"paths": files},  # a list: one shard per file
    )


def _pydocs_generator(names: list[str]):
    by_name = {doc.name: doc.text for doc in pydocs_documents()}
    for name in names:
        yield {"text": by_name[name]}


def _pydocs(split: str) -> Any:
    datasets = _import_datasets()
    names = [doc.name for doc in pydocs_documents() if doc.split == split]
    return datasets.IterableDataset.from_generator(
        _pydocs_generator,
        features=datasets.Features({"text": datasets.Value("string")}),
        gen_kwargs={"names": names},
    )


def _local_files(path: Path) -> dict[str, list[str]]:
    """Supported files under `path`, grouped by ``datasets`` builder, in sorted order."""
    if path.is_file():
        builder = SUFFIXES.get(path.suffix.lower())
        if builder is None:
            raise DataSourceError(
                f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {', '.join(SUFFIXES)}"
            )
        return {builder: [str(path)]}
    groups: dict[str, list[str]] = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        builder = SUFFIXES.get(file.suffix.lower())
        if builder is not None:
            groups.setdefault(builder, []).append(str(file))
    if not groups:
        raise DataSourceError(f"folder {path} holds no {', '.join(SUFFIXES)} files")
    return groups


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
    """Names `where` in the errors of reading it (pyarrow/json parse errors, unreadable files)."""
    try:
        yield
    except DataSourceError:
        raise
    except Exception as exc:
        raise DataSourceError(f"cannot read {where}: {type(exc).__name__}: {exc}") from None


def _first(ds: Any, where: str) -> dict | None:
    """The first example (None when there is none); a file that cannot be parsed is named."""
    with _reading(where):
        return next(iter(ds), None)


def _text_column(ds: Any, text_column: str, where: str) -> Any:
    """Keeps only `text_column`, renamed ``text``; errors list the columns there are."""
    columns = ds.column_names
    if columns is None:
        first = _first(ds, where)
        if first is None:
            raise DataSourceError(f"{where} holds no examples")
        columns = list(first)
    if text_column not in columns:
        raise DataSourceError(
            f"{where} has no column {text_column!r}; its columns are {columns}. "
            "Name the text column with text_column=... (--text-column on the command line)"
        )
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    return ds


def _hub(spec: str, text_column: str, *, timeout: float) -> Any:
    """A Hub dataset's train split with its text column, opened within bounded time (`microgpt_data.hub`)."""
    datasets = _import_datasets()
    name, _, config = spec.partition(":")

    def open_dataset() -> Any:
        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
        return _text_column(ds, text_column, f"Hub dataset {spec!r}")

    return open_hub_dataset(
        spec, timeout=timeout, open_dataset=open_dataset, not_found=datasets.exceptions.DatasetNotFoundError
    )


def load_text_dataset(
    spec: str | os.PathLike,
    split: str = "train",
    *,
    text_column: str = "text",
    hub_timeout: float | None = None,
) -> Any:
    """A streaming ``datasets.IterableDataset`` with one column, ``text``, for `spec` (see module doc).

    Args:
      spec: ``pydocs``, a local path, or a Hub id ``org/name[:config]``.
      split: ``train`` or ``validation``.
      text_column: the column holding the text (JSON/Parquet files, Hub datasets).
      hub_timeout: seconds the Hub has to answer the probe before it is reported unreachable;
        ``datasets``' opening and first read get `HUB_OPEN_FACTOR` (12) times as long. None: the
        ``MICROGPT_HUB_TIMEOUT`` environment variable, else 10.

    Raises:
      DataSourceError: a path that does not exist, a file type no reader handles, no column
        `text_column`, no text, or a Hub dataset that cannot be streamed; each naming the spec and
        what would be valid.
      HubUnavailableError: (a DataSourceError) the Hub cannot be reached, is silent or failing.
    """
    if split not in SPLITS:
        raise DataSourceError(f"split must be one of {SPLITS}, got {split!r}")
    spec_str = os.fspath(spec)
    if spec_str == "pydocs":
        return label_dataset(_pydocs(split), f"pydocs ({split} split)")
    path = Path(spec_str).expanduser()
    if path.exists():
        ds = _local_split(path, spec_str, split, text_column)
    elif is_hub_id(spec_str):  # its first example is read (within bounded time) by _hub
        ds = _hub(spec_str, text_column, timeout=hub_timeout_seconds(hub_timeout))
        ds = ds.filter(functools.partial(_in_split, validation=split == "validation", where=spec_str))
        hashed = f"1 in {VALIDATION_EVERY} documents to validation by a hash of their text"
        return label_dataset(ds, f"Hub dataset {spec_str} ({split} split; {hashed})")
    else:
        raise DataSourceError(f"{spec_str!r} does not exist; {_SPEC_HELP}")
    return label_dataset(ds, f"{spec_str} ({split} split)")


def _local(datasets: Any, path: Path, text_column: str) -> Any:
    """The local file or folder at `path` as one dataset of all its documents, in order."""
    parts = []
    for builder, files in _local_files(path).items():
        try:
            if builder == "text":
                ds = _text_files(datasets, files)
            else:
                ds = datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
        except Exception as exc:
            raise DataSourceError(f"cannot read {path} as {builder}: {type(exc).__name__}: {exc}") from None
        # A .txt file's column is always called "text"; the text column applies to the others.
        parts.append(_text_column(ds, "text" if builder == "text" else text_column, f"{path} ({builder})"))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _local_split(path: Path, spec: str, split: str, text_column: str) -> Any:
    """`split` of the local source at `path`, by content where that gives both splits text, else by
    position (`microgpt_data.splits`)."""
    datasets = _import_datasets()
    ds = _local(datasets, path, text_column)
    with _reading(spec):
        scan = scan_splits((row["text"] for row in ds), spec)
    if not scan.documents:
        raise DataSourceError(
            f"{spec!r} holds no text"
            + (" (a .txt file holds documents separated by blank lines)" if path.suffix == ".txt" else "")
        )
    if scan.by_content:
        return ds.filter(functools.partial(_in_split, validation=split == "validation", where=spec))
    if not scan.splittable:
        raise DataSourceError(
            f"{spec!r} holds a single character of text: too little for both a train and a validation split"
        )
    return datasets.IterableDataset.from_generator(
        _by_position_generator,
        features=datasets.Features({"text": datasets.Value("string")}),
        # No list among the arguments: one shard.
        gen_kwargs={
            "path": str(path),
            "text_column": text_column,
            "characters": scan.characters,
            "split": split,
        },
    )


def _by_position_generator(path: str, text_column: str, characters: int, split: str):
    ds = _local(_import_datasets(), Path(path), text_column)
    texts = (row["text"] for row in ds)
    for text in split_by_position(texts, characters=characters, split=split, where=path):
        yield {"text": text}
