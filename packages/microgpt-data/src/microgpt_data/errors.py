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
    "BPETrainingError",
    "DataSourceError",
    "MissingPathError",
    "UnsupportedFileError",
    "MissingTextColumnError",
    "EmptyDatasetError",
    "HubUnavailableError",
    "LoaderConfigError",
    "LoaderStateError",
]


class DataError(ValueError):
    """Base class of every error microgpt_data raises for bad input."""


class TokenizerFileError(DataError):
    """A tokenizer folder or file is missing, malformed or inconsistent."""


class InvalidTextError(DataError):
    """Text that cannot be tokenized losslessly (e.g. a lone surrogate code point)."""


class TokenizerDownloadError(DataError):
    """A named tiktoken encoding could not be fetched (offline, or an unknown name)."""


class BPETrainingError(DataError):
    """Bad arguments to BPE training (vocabulary too small, no text, bad pattern)."""


class DataSourceError(DataError):
    """A dataset spec that cannot be read."""


class MissingPathError(DataSourceError):
    """A local path in a dataset spec does not exist."""


class UnsupportedFileError(DataSourceError):
    """A local file whose extension no reader handles."""


class MissingTextColumnError(DataSourceError):
    """The dataset has no column with the requested name (the message lists the columns it has)."""


class EmptyDatasetError(DataSourceError):
    """The dataset (or the requested split of it) holds no text."""


class HubUnavailableError(DataSourceError):
    """A Hugging Face Hub dataset id was given but the Hub cannot be reached (offline)."""


class LoaderConfigError(DataError):
    """Bad arguments to the packing loader (a global batch size that does not split over the
    processes, a sequence length, a process index...)."""


class LoaderStateError(DataError):
    """A loader state that does not fit this loader (other shapes, seed, shuffle or tokenizer)."""
