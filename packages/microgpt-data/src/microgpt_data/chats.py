"""Chat data: local files whose rows hold OpenAI-style conversations, read as the loader's documents.

A chat file is ``.jsonl`` (one JSON object per line; blank lines skipped) or ``.json`` (a JSON list of
objects, or JSON lines), or a folder of them (sorted paths, one shard per file), whose rows hold
``messages``, as OpenAI's and Hugging Face's chat datasets do::

    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}]}

Other keys of a row are ignored. `is_chat_data(spec)` tells such a source from text data (its first
row has ``messages`` and no text column); `load_chat_dataset(spec, split)` reads it as a streaming
dataset with one column, ``text``: each row's ``messages`` value as compact JSON. So splits, the
loader's shuffle buffer and its saved state treat a conversation as they treat a document, and the
trainer renders it with a chat template (`microgpt_train.chat_data`, which also drops and counts the
rows that are not a conversation it can train on: that check needs the template and tokenizer).

Splits, as for text (`microgpt_data.splits`): by the CRC-32 of that JSON text (about 1 in 20 to
``validation``) when that gives both splits a row; otherwise by position, the last 1/20 of the rows
(at least one) to ``validation``. A line that is not JSON, or a row that is not an object, raises
`DataSourceError` naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from microgpt_data.errors import DataSourceError
from microgpt_data.sources import SPLITS, label_dataset, text_dataset
from microgpt_data.splits import VALIDATION_EVERY, in_validation

__all__ = ["CHAT_SUFFIXES", "MESSAGES", "is_chat_data", "load_chat_dataset"]

CHAT_SUFFIXES = (".jsonl", ".json")
MESSAGES = "messages"  # the key of a row's conversation


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix.lower() in CHAT_SUFFIXES else []
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CHAT_SUFFIXES)
    return []


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of a chat file: `where` is ``file:line`` (or ``file[i]``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"{path}: not JSON: {exc}") from None
        for i, row in enumerate(rows):
            yield _checked(row, f"{path}[{i}]")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataSourceError(f"{path}:{number}: not a JSON object: {exc}") from None
            yield _checked(row, f"{path}:{number}")


def _checked(row: Any, where: str) -> tuple[str, Any]:
    if not isinstance(row, dict):
        raise DataSourceError(
            f"{where}: a row must be a JSON object with {MESSAGES!r}, got {type(row).__name__}"
        )
    return where, row


def _conversations(paths: tuple[str, ...] | list[str]) -> Iterator[str]:
    """Each row's messages as compact JSON text (null when the row has none: the trainer drops it)."""
    for path in paths:
        for _, row in _rows(Path(path)):
            yield json.dumps(row.get(MESSAGES), ensure_ascii=False, separators=(",", ":"))


def is_chat_data(spec: str | os.PathLike, text_column: str = "text") -> bool:
    """Whether `spec` is a local chat source: its files are .jsonl/.json and its first row holds
    ``messages`` but not `text_column`."""
    files = _files(Path(spec).expanduser())
    if not files:
        return False
    first = next((row for _, row in _rows(files[0])), None)
    return isinstance(first, dict) and MESSAGES in first and text_column not in first


def _generate(paths: tuple[str, ...], split: str, by_content: bool, validation_rows: int, rows: int):
    for i, text in enumerate(_conversations(paths)):
        in_val = in_validation(text) if by_content else i >= rows - validation_rows
        if in_val == (split == "validation"):
            yield {"text": text}


def load_chat_dataset(spec: str | os.PathLike, split: str = "train") -> Any:
    """A streaming ``datasets.IterableDataset`` with one column, ``text``: the `split` of the chat
    source `spec`, each row's ``messages`` as JSON text (see the module docstring).

    Raises:
      DataSourceError: `spec` holds no chat file, a file cannot be read or parsed (names the file and
        line), or it holds fewer than two rows (too few for both splits).
    """
    if split not in SPLITS:
        raise DataSourceError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(spec).expanduser()
    paths = [str(p) for p in _files(path)]
    if not paths:
        raise DataSourceError(f"{spec}: no {' or '.join(CHAT_SUFFIXES)} chat file there")
    seen, rows = set(), 0
    for text in _conversations(paths):  # read until both splits have a row under the content rule
        rows += 1
        seen.add(in_validation(text))
        if len(seen) == 2:
            break
    by_content = len(seen) == 2
    if not by_content and rows < 2:
        raise DataSourceError(f"{spec}: {rows} conversation(s): too few for a train and a validation split")
    validation_rows = 0 if by_content else max(1, rows // VALIDATION_EVERY)
    # A tuple, not a list: one shard, so that the position rule counts rows across files.
    gen_kwargs = {"paths": tuple(paths), "split": split, "by_content": by_content,
                  "validation_rows": validation_rows, "rows": rows}  # fmt: skip
    how = f"1 in {VALIDATION_EVERY} by a hash" if by_content else f"the last {validation_rows} to validation"
    return label_dataset(text_dataset(_generate, gen_kwargs), f"{spec} ({split} split; {how})")
