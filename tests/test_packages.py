"""Every public name of the four packages is the object it means, whatever was imported before it.

A package attribute that shares its name with a submodule is overwritten by the submodule once that
submodule is imported (`import pkg.name` sets `pkg.name`), so `from microgpt_infer import generate`
once gave the module `microgpt_infer.generate` instead of the function, depending on import order.
Here, in fresh interpreters: every submodule is imported first (`pkgutil.walk_packages`), then each
name of `__all__` must be what its definition says (a name that is a submodule's must be that module,
as `microgpt_core.layers` is; any other name must not be a module), and `from pkg import a, b` must
give the same objects in either order.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PACKAGES = ["microgpt_core", "microgpt_data", "microgpt_train", "microgpt_infer"]

CHECK = r"""
import importlib, inspect, json, pkgutil, sys, types
name, order = sys.argv[1], sys.argv[2]
pkg = importlib.import_module(name)
exported = list(pkg.__all__)
if order == "reversed":
    exported.reverse()
problems = []
# `from pkg import a, b, ...` before any submodule is imported, in this order.
first = {n: getattr(pkg, n) for n in exported}
submodules = sorted(m.name for m in pkgutil.walk_packages(pkg.__path__, name + "."))
for sub in submodules:
    importlib.import_module(sub)
for n in exported:
    value = getattr(pkg, n)
    module_name = f"{name}.{n}"
    if module_name in sys.modules:  # the name is a submodule's: it must be that module
        if value is not sys.modules[module_name]:
            problems.append(f"{name}.{n} is {value!r}, but {module_name} is a module")
    elif isinstance(value, types.ModuleType):
        problems.append(f"{name}.{n} is the module {value.__name__}, not a function, class or constant")
    if value is not first[n]:
        problems.append(f"{name}.{n} changed once every submodule was imported: {first[n]!r} -> {value!r}")
    defined_in = getattr(value, "__module__", None)
    if inspect.isfunction(value) or inspect.isclass(value):
        home = sys.modules.get(defined_in)
        if home is not None and getattr(home, getattr(value, "__name__", ""), None) is not value:
            problems.append(f"{name}.{n} is not the object of that name in {defined_in}")
# Every exported name is also in the `__all__` of a submodule that holds that very object.
for n in exported:
    value = getattr(pkg, n)
    if isinstance(value, types.ModuleType):
        continue
    homes = [m for m in submodules if n in getattr(sys.modules[m], "__all__", ())]
    if not any(getattr(sys.modules[m], n, None) is value for m in homes):
        problems.append(f"{name}.{n} is in no submodule's __all__")
describe = lambda v: f"{type(v).__name__} {getattr(v, '__module__', None)}.{getattr(v, '__qualname__', None)}"
print(json.dumps({"problems": problems, "objects": {n: describe(getattr(pkg, n)) for n in exported},
                  "submodules": submodules}))
"""


def check(package: str, *orders: str) -> list[dict]:
    """The report of CHECK for each import order, from fresh interpreters started together."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", CHECK, package, order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for order in orders
    ]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        reports.append(json.loads(out.splitlines()[-1]))
    return reports


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_what_it_means_in_any_import_order(package):
    forward, backward = check(package, "forward", "reversed")
    assert forward["problems"] == [] and backward["problems"] == []
    assert forward["objects"] == backward["objects"]
    assert forward["submodules"], f"{package} has no submodules?"


def test_no_public_function_shares_its_name_with_a_submodule():
    """The class of the `microgpt_infer.generate` bug, checked by name for every package at once."""
    import importlib
    import pkgutil

    clashes = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        for name in set(pkg.__all__) & names:
            value = getattr(pkg, name)
            if getattr(value, "__name__", None) != f"{package}.{name}":
                clashes.append(f"{package}.{name}")
    assert clashes == []


def test_no_module_imports_another_modules_private_name():
    """`from microgpt_x.y import _helper` across modules means the helper is not internal: name it."""
    import ast
    from pathlib import Path

    found = []
    for path in sorted(Path(__file__).resolve().parent.parent.glob("packages/*/src/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("microgpt_"):
                found += [
                    f"{path.name}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert found == []
