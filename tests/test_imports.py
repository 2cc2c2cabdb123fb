"""The modules of the four packages import one another without a cycle.

The graph is grimp's (import-linter's engine): every `import` and `from ... import` of every module,
also those inside functions, so a cycle cannot hide behind an import made at call time.
"""

from __future__ import annotations

import grimp

PACKAGES = ("microgpt_core", "microgpt_data", "microgpt_train", "microgpt_infer")


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of the four packages it imports directly}."""
    graph = grimp.build_graph(*PACKAGES)
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    return {m: graph.find_modules_directly_imported_by(m) & ours for m in sorted(ours)}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic (depth-first search)."""
    done: set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(edges[start]))]
        while stack:
            following = next(stack[-1], None)
            if following is None:  # every import of path[-1] explored: no cycle through it
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif following in on_path:
                return [*path[path.index(following) :], following]
            elif following not in done:
                path.append(following)
                on_path.add(following)
                stack.append(iter(sorted(edges.get(following, ()))))
    return None


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None  # a diamond


def test_the_graph_covers_every_package():
    graph = import_graph()
    assert {module.split(".")[0] for module in graph} == set(PACKAGES)
    assert "microgpt_infer.model" in graph["microgpt_infer.cli"]  # imported inside a function: counted


def test_no_module_imports_itself_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


REFERENCE = {"microgpt_core.layers", "microgpt_core.model", "microgpt_core.cache", "microgpt_core.sampling"}
REFERENCE_MAY_IMPORT = REFERENCE | {"microgpt_core.config", "microgpt_core.params", "microgpt_core.precision"}


def test_the_reference_contract_forbids_every_other_core_module():
    """pyproject.toml's contract lists what the reference may not import; this makes it an allow-list:
    every core module outside the reference and its three contract modules is on it."""
    import tomllib
    from pathlib import Path

    contracts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"][
        "importlinter"
    ]
    (contract,) = [
        c for c in contracts["contracts"] if c["name"] == "The reference path imports only the reference"
    ]
    assert set(contract["source_modules"]) == REFERENCE
    core = {m for m in import_graph() if m.startswith("microgpt_core")}
    assert set(contract["forbidden_modules"]) == core - REFERENCE_MAY_IMPORT


def test_the_reference_imports_only_the_reference():
    graph = import_graph()
    for module in REFERENCE:
        assert graph[module] <= REFERENCE_MAY_IMPORT, (module, graph[module] - REFERENCE_MAY_IMPORT)
