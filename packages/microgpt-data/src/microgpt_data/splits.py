"""The train/validation split of a source's documents: by content hash, else by position.

Two rules, chosen per source by `scan_splits` (`microgpt_data.sources` applies them):

- **By content** (the rule wherever it gives two non-empty splits, and always for Hub datasets): a
  document is in ``validation`` when the CRC-32 of its UTF-8 text is divisible by `VALIDATION_EVERY`
  (about 1 in 20), else in ``train``. It depends on neither the order of the documents nor their
  number, so adding a document moves no other.
- **By position** (a local source where the content rule leaves a split without text: one document, a
  few, or identical pieces such as a repeated text): the source's text, its documents in order, is
  cut once, as nanoGPT splits a single text. The last 1/`VALIDATION_EVERY` of its characters (at
  least one) is ``validation``, the rest ``train``. The cut falls at the whitespace character nearest
  the boundary within `CUT_WINDOW` characters (and within half the train part), else at the
  boundary itself; the document it falls in is split in two there, the whitespace starting the
  validation piece, and each split keeps some text that is not whitespace. Documents that are only
  whitespace are left out.

`scan_splits` reads the documents until both splits hold one under the content rule, so a source of
many documents costs a few documents; only a source that needs the position rule is read to its end
(to count its characters). Both rules give every process, and every call, the same documents.
`None` texts (missing values) belong to neither split; any other non-`str` value raises
`DataSourceError`.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Iterator

from microgpt_data.corpora.pydocs import VALIDATION_EVERY
from microgpt_data.errors import DataSourceError

__all__ = ["CUT_WINDOW", "VALIDATION_EVERY", "SplitScan", "in_validation", "scan_splits", "split_by_position"]

CUT_WINDOW = 1000  # characters either side of the position boundary searched for whitespace


def in_validation(text: str) -> bool:
    """The content rule: CRC-32 of the UTF-8 text divisible by `VALIDATION_EVERY`."""
    return zlib.crc32(text.encode("utf-8", "replace")) % VALIDATION_EVERY == 0


def checked_text(value: object, where: str) -> str | None:
    """`value` if it is a str, None if it is None; `DataSourceError` naming `where` otherwise."""
    if value is None or isinstance(value, str):
        return value
    raise DataSourceError(
        f"{where}: the text column holds {type(value).__name__} values, not text: {value!r:.60}"
    )


def _has_text(text: str | None) -> bool:
    return bool(text) and not text.isspace()


@dataclasses.dataclass(frozen=True)
class SplitScan:
    """What `scan_splits` found: whether the content rule gives two splits, and the text it read."""

    by_content: bool  # both splits hold a document with text under the content rule
    documents: int  # documents with text read (all of them when not by_content)
    characters: int  # their characters
    splittable: bool  # at least two non-whitespace characters: the position rule can give both splits


def scan_splits(texts: Iterable[object], where: str) -> SplitScan:
    """Reads `texts` until the content rule has put a document with text in each split."""
    seen: set[bool] = set()
    documents = characters = 0
    last = ""
    for value in texts:
        text = checked_text(value, where)
        if not _has_text(text):
            continue
        documents, characters, last = documents + 1, characters + len(text), text
        seen.add(in_validation(text))
        if len(seen) == 2:
            return SplitScan(True, documents, characters, True)
    splittable = documents > 1 or len("".join(last.split())) > 1
    return SplitScan(False, documents, characters, splittable)


def _cut(document: str, at: int, *, lo: int, hi: int, window: int) -> int:
    """The whitespace index nearest `at` within `window` and [lo, hi], else `at` moved into [lo, hi]."""
    at = min(max(at, lo), hi)
    for distance in range(window + 1):
        for i in (at - distance, at + distance):
            if lo <= i <= hi and i < len(document) and document[i].isspace():
                return i
    return at


def split_by_position(texts: Iterable[object], *, characters: int, split: str, where: str) -> Iterator[str]:
    """The documents of `split` under the position rule, for `texts` whose documents with text hold
    `characters` characters (`SplitScan.characters`, which must be `splittable`)."""
    boundary = characters - max(1, characters // VALIDATION_EVERY)  # train's characters
    window = min(CUT_WINDOW, boundary // 2)
    offset = 0
    for value in texts:
        text = checked_text(value, where)
        if not _has_text(text):
            continue
        start, offset = offset, offset + len(text)
        if offset <= boundary or start >= boundary:
            if (split == "train") == (offset <= boundary):
                yield text
        else:  # the boundary falls inside: train keeps text before the cut, validation after it
            stripped = text.lstrip()
            lo = 0 if start else len(text) - len(stripped) + 1
            hi = len(text) if offset < characters else len(text.rstrip()) - 1
            at = _cut(text, boundary - start, lo=lo, hi=hi, window=window)
            piece = text[:at] if split == "train" else text[at:]
            if piece:
                yield piece
        if split == "train" and offset >= boundary:
            return
