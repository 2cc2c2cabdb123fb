"""The exceptions of microgpt_data: each names the bad file, field or value and says what is valid.

All are `ValueError` subclasses under `DataError`, so callers (and the CLIs, which print
``error: ...`` and exit 2) can catch one base class.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "TokenizerFileError",
    "InvalidTextError",
    "TokenizerDownloadError",
    "DataSourceError",
    "HubUnavailableError",
    "LoaderStateError",
]


class DataError(ValueError):
    """Base class of every error microgpt_data raises for bad input; raised itself for bad arguments
    (to `train_bpe`, to `PackedLoader`) that no caller would handle apart from other bad input."""


class TokenizerFileError(DataError):
    """A tokenizer folder or file is missing, malformed or inconsistent."""


class InvalidTextError(DataError):
    """Text that cannot be tokenized losslessly (e.g. a lone surrogate code point)."""


class TokenizerDownloadError(DataError):
    """A named tiktoken encoding could not be fetched (offline, or an unknown name)."""


class DataSourceError(DataError):
    """A dataset spec that cannot be read: a path that does not exist, a file type no reader handles,
    no column of the requested name (the message lists those there are), no text at all."""


class HubUnavailableError(DataSourceError):
    """A Hugging Face Hub dataset id was given but the Hub cannot be reached (offline, silent, 429 or
    5xx): unlike other source errors, trying again later (or another source) may succeed."""


class LoaderStateError(DataError):
    """A loader state that does not fit this loader (other shapes, seed, shuffle or tokenizer): a
    resuming caller may catch it to start the data stream afresh."""
