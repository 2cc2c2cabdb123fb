"""Package names that load on first use (PEP 562), for `__init__` modules that must import cheaply.

    __getattr__, __dir__ = lazy_names(__name__, {"load_model": "microgpt_infer.model", ...})

Standard library only: importing this module imports nothing heavy.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_names"]


def lazy_names(
    package: str, names: Mapping[str, str | None]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` of `package` that import each name when first
    asked for, then keep it in the package's namespace.

    Args:
      package: the package's `__name__`.
      names: {exported name: module defining it}, or None for a submodule of the package of that
        name (`{"layers": None}` makes `package.layers` the module `package.layers`).
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names[name]
        if module is None:
            value: object = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
