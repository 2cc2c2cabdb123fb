"""The exceptions of microgpt_infer: each names the bad file, field or value and says what is valid.

All are `ValueError` subclasses under `InferError`, so callers (and the CLIs, which print
``error: ...`` and exit 2) can catch one base class.
"""

from __future__ import annotations

__all__ = [
    "InferError",
    "ModelNotFoundError",
    "ModelFileError",
    "UnsupportedModelError",
    "HubError",
    "PromptTooLongError",
    "ExportError",
]


class InferError(ValueError):
    """Base class of every error microgpt_infer raises for bad input."""


class ModelNotFoundError(InferError):
    """No model at the given source, or no model to fall back on; the message says how to get one."""


class ModelFileError(InferError):
    """A model folder holds a missing, corrupted or inconsistent file; the message names the file."""


class UnsupportedModelError(ModelFileError):
    """A checkpoint of a kind (or a GPT-2 variant) this package cannot run; names the field."""


class HubError(InferError):
    """The Hugging Face Hub refused or failed a download or upload; names the repository."""


class PromptTooLongError(InferError):
    """A prompt plus `max_new_tokens` does not fit in the model's context (and cropping was not asked)."""


class ExportError(InferError):
    """A model cannot be exported to the Hugging Face layout asked for (names the fields in the way),
    or the destination folder is in the way (not empty, a file, the model's own folder)."""
