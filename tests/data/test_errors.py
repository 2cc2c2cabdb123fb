"""Every error of microgpt_data is a ValueError under DataError, so one except clause catches all."""

from __future__ import annotations

import microgpt_data
from microgpt_data import errors


def test_errors_are_value_errors():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.DataError) and issubclass(cls, ValueError), name
        assert getattr(microgpt_data, name, cls) is cls  # re-exported ones are the same class


def test_only_errors_a_caller_would_catch_apart_are_classes():
    """Bad arguments are DataError itself; a bad dataset spec is DataSourceError (HubUnavailableError
    when the Hub cannot be reached: trying again may succeed)."""
    assert errors.__all__ == [
        "DataError",
        "TokenizerFileError",
        "InvalidTextError",
        "TokenizerDownloadError",
        "DataSourceError",
        "HubUnavailableError",
        "LoaderStateError",
    ]
    assert issubclass(errors.HubUnavailableError, errors.DataSourceError)
