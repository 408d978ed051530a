"""The house: gpuconv's modules import each other in one direction.

Module-level imports only (an import inside a function is a deliberate late
binding, e.g. an optional library or a layer above reached at run time), read
from the source with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gpuconv

PACKAGE = Path(gpuconv.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_level_imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text()).body:
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets.append(stem)
                targets += [f"{stem}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            # A package's __init__ importing its own submodules is how packages work.
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycles():
    graph = _module_level_imports()
    # Submodules importing their package (``from .. import x``) lean on __init__'s
    # eager imports; they are not layering: leave the package nodes out of the cycles.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    assert _cycles(graph) == []


def test_ops_chooser_and_dask_point_one_way():
    graph = _module_level_imports()
    below = {"gpuconv._geometry", "gpuconv._validation", "gpuconv._dispatch",
             "gpuconv._config", "gpuconv._frontdoor", "gpuconv._costmodel",
             "gpuconv._choose", "gpuconv.backend"}
    ops = {"gpuconv.conv", "gpuconv.correlate"}
    above = {"gpuconv._dask", "gpuconv._measure"}
    for low in below:
        assert not graph[low] & (ops | above), (low, graph[low] & (ops | above))
    for op in ops:
        assert not graph[op] & above, (op, graph[op] & above)
    assert graph["gpuconv._dask"] >= ops, "the dask layer sits above the ops it runs"
