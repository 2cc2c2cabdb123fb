"""Every error of microgpt_data is a ValueError under DataError, so one except clause catches all."""

from __future__ import annotations

import microgpt_data
from microgpt_data import errors


def test_errors_are_value_errors():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.DataError) and issubclass(cls, ValueError), name
        assert getattr(microgpt_data, name, cls) is cls  # re-exported ones are the same class


def test_source_errors_share_a_base():
    for cls in (
        errors.MissingPathError,
        errors.UnsupportedFileError,
        errors.MissingTextColumnError,
        errors.EmptyDatasetError,
        errors.HubUnavailableError,
    ):
        assert issubclass(cls, errors.DataSourceError)
