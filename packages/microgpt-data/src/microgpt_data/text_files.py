"""Plain ``.txt`` files as documents: paragraphs, each at most `MAX_DOCUMENT_CHARS` characters.

A document is a paragraph: lines separated by one or more blank lines (empty or whitespace only).
Line ends are ``\\n``, ``\\r\\n`` or ``\\r`` (all read as ``\\n``); the last line needs none; a UTF-8
byte-order mark at the start is dropped; blank lines around a paragraph are not part of it.

A paragraph longer than `MAX_DOCUMENT_CHARS` (a 20 MB file on one line is one paragraph) is cut into
documents of at most that many characters, at its last line end in the second half of the limit, else
at its last space or tab there (the separator is dropped), else at the limit. So documents stay small
in the loader's shuffle buffer and its saved state, which hold them whole, and a long text gives many
documents for the content split between ``train`` and ``validation`` (`microgpt_data.splits`).

The file is read in `CHUNK_BYTES` pieces with an incremental decoder, so memory stays near one limit
whatever the line lengths, and the documents do not depend on the chunk size. Bytes that are not UTF-8
raise `DataSourceError` naming the file and the byte offset.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Generator, Iterator
from pathlib import Path

from microgpt_data.errors import DataSourceError

__all__ = ["CHUNK_BYTES", "MAX_DOCUMENT_CHARS", "text_documents"]

MAX_DOCUMENT_CHARS = 1 << 16  # about 16k tokens: far longer than any context, small in a shuffle buffer
CHUNK_BYTES = 1 << 20
_SEPARATOR = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)*")  # a line end, then one or more blank lines
_LEADING_BLANK_LINES = re.compile(r"^(?:[^\S\n]*\n)+")
_TRAILING_BLANK_LINES = re.compile(r"(?:\n[^\S\n]*)+$")


def _clean(paragraph: str) -> str:
    """`paragraph` without blank lines before or after it ("" when it is all blank)."""
    if not paragraph or paragraph.isspace():
        return ""
    return _TRAILING_BLANK_LINES.sub("", _LEADING_BLANK_LINES.sub("", paragraph))


def _cut(text: str, limit: int) -> tuple[str, str]:
    """(the first document, the rest) of `text`, longer than `limit`: see the module docstring."""
    head = text[:limit]
    at = head.rfind("\n", limit // 2)
    if at < 0:
        at = max(head.rfind(" ", limit // 2), head.rfind("\t", limit // 2))
    if at < 0:
        return head, text[limit:]
    return head[:at], text[at + 1 :]


def _decoded(path: Path, chunk_bytes: int) -> Iterator[str]:
    """The file's text in pieces, line ends made ``\\n``; `DataSourceError` at the first non-UTF-8 byte."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, pending_cr, first = 0, False, True
    try:
        with path.open("rb") as f:
            while True:
                data = f.read(chunk_bytes)
                buffered = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as exc:
                    at = offset - buffered + exc.start
                    raise DataSourceError(
                        f"{path} is not UTF-8 text: the byte at offset {at} ({exc.object[exc.start]:#04x}) "
                        f"cannot be decoded ({exc.reason}); convert the file to UTF-8 (e.g. iconv -t UTF-8)"
                    ) from None
                offset += len(data)
                if first and text:
                    text, first = text.removeprefix("\ufeff"), False
                if pending_cr:
                    text = "\r" + text
                pending_cr = bool(data) and text.endswith("\r")  # its "\n" may start the next piece
                if pending_cr:
                    text = text[:-1]
                yield text.replace("\r\n", "\n").replace("\r", "\n")
                if not data:
                    return
    except OSError as exc:
        raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def text_documents(
    path: str | Path, *, max_chars: int = MAX_DOCUMENT_CHARS, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[str]:
    """The documents of the text file at `path`, in order (see the module docstring)."""
    buffer = ""
    for piece in _decoded(Path(path), chunk_bytes):
        buffer = yield from _complete(buffer + piece, max_chars, at_end=False)
    yield from _complete(buffer, max_chars, at_end=True)


def _complete(buffer: str, max_chars: int, *, at_end: bool) -> Generator[str, None, str]:
    """Yields the documents that `buffer` completes; returns the text that may still grow.

    Cuts are decided on ``buffer[:max_chars]`` only, once no paragraph can end before the limit, so
    the documents are the same for any chunk size.
    """
    while True:
        buffer = _LEADING_BLANK_LINES.sub("", buffer, count=1)
        match = _SEPARATOR.search(buffer)
        # A separator at the very end of a growing buffer may go on with more blank lines.
        if match and (at_end or match.end() < len(buffer)):
            yield from _complete(buffer[: match.start()], max_chars, at_end=True)
            buffer = buffer[match.end() :]
        elif len(buffer) > max_chars and (match is None or match.start() > max_chars):
            document, buffer = _cut(buffer, max_chars)
            if document := _clean(document):
                yield document
        else:
            break
    if not at_end:
        return buffer
    if buffer := _clean(buffer):
        yield buffer
    return ""
