"""The import-graph checker behind test_layers.py: floors of the code base, imports (lazy ones too), cycles.

It reads source with ``ast`` and executes nothing.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("xcore", "tasks", "flows")

FLOORS: dict[str, int] = {
    "xcore.errors": 0,
    "xcore.registry": 0,
    "xcore.core": 1,
    "xcore.io": 1,
    "xcore.data": 2,
    "xcore.models": 3,
    "xcore.explain": 4,
    "xcore.metrics": 4,
    "xcore.filters": 5,
    "xcore.analysis": 5,
    "xcore.viz": 5,
    "xcore.datasets": 6,
    "xcore.pipeline": 6,
    "xcore.report": 7,
}
FORBIDDEN_SAME_FLOOR: frozenset[tuple[str, str]] = frozenset(
    {
        ("xcore.explain", "xcore.metrics"),
        ("xcore.metrics", "xcore.explain"),
        ("xcore.datasets", "xcore.pipeline"),
    }
)
EXEMPT_IMPORTERS = frozenset({"xcore"})
# importer top-level package -> top-level names it must never import (first-party or third-party)
FORBIDDEN_TOP_LEVEL: dict[str, frozenset[str]] = {
    "xcore": frozenset({"ray", "prefect", "tasks", "flows"}),
    "tasks": frozenset({"flows"}),
}


# ----------------------------------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported name, resolved to the longest known module when first-party, else as written
    line: int
    path: Path

    def where(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every ``.py`` file under ``root/<package>`` as a dotted module name (packages named by their ``__init__``)."""
    modules: dict[str, Module] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    return modules


def _resolve_relative(module: Module, level: int, name: str | None) -> str:
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join([*package, name] if name else package)


def _longest_known(name: str, modules: Mapping[str, Module]) -> str:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return name


def find_imports(modules: Mapping[str, Module]) -> list[Edge]:
    """All imports of all modules, wherever they sit in the file (module level, functions, ``if`` blocks ...)."""
    edges: list[Edge] = []
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_relative(module, node.level, node.module) if node.level else (node.module or "")
                if base == "__future__":
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if alias.name != "*" and sub in modules else base)
            for target in targets:
                resolved = _longest_known(target, modules)
                if resolved != module.name:
                    edges.append(Edge(module.name, resolved, node.lineno, module.path))
    return sorted(set(edges), key=lambda e: (e.source, e.line, e.target))


def layer_of(name: str, floors: Mapping[str, int]) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in floors:
            return ".".join(parts[:n])
    return None


def floor_violations(
    edges: Iterable[Edge],
    modules: Mapping[str, Module],
    floors: Mapping[str, int],
    forbidden_same_floor: Iterable[tuple[str, str]],
    forbidden_top_level: Mapping[str, Iterable[str]],
    exempt: Iterable[str],
    floored_package: str,
    root: Path,
) -> list[str]:
    forbidden_same_floor = set(forbidden_same_floor)
    exempt = set(exempt)
    edges = list(edges)
    root_imports = [e for e in edges if e.source == floored_package and layer_of(e.target, floors) is not None]
    problems: list[str] = []
    for name in modules:
        if name.split(".")[0] == floored_package and name not in exempt and layer_of(name, floors) is None:
            problems.append(f"{modules[name].path.relative_to(root)}: module {name} has no floor")
    for edge in edges:
        top_src, top_dst = edge.source.split(".")[0], edge.target.split(".")[0]
        if top_dst in set(forbidden_top_level.get(top_src, ())):
            problems.append(
                f"{edge.where(root)}: {edge.source} imports {edge.target} ({top_src} never imports {top_dst})"
            )
            continue
        if top_src != floored_package or top_dst != floored_package or edge.source in exempt:
            continue
        src_layer, dst_layer = layer_of(edge.source, floors), layer_of(edge.target, floors)
        if src_layer is None:
            continue  # reported above as "has no floor"
        if dst_layer is None:
            if edge.target == floored_package:
                # the root package is exempt as an importer; importing it costs what its __init__ imports
                pulled = [e for e in root_imports if floors[layer_of(e.target, floors)] > floors[src_layer]]
                if pulled:
                    problems.append(
                        f"{edge.where(root)}: {edge.source} (floor {floors[src_layer]}, {src_layer}) imports the "
                        f"package root {edge.target}, whose __init__ imports {pulled[0].target} "
                        f"(floor {floors[layer_of(pulled[0].target, floors)]}): upward import"
                    )
            elif edge.target not in modules:
                problems.append(f"{edge.where(root)}: {edge.source} imports {edge.target}, which does not exist")
            continue
        if floors[dst_layer] > floors[src_layer]:
            problems.append(
                f"{edge.where(root)}: {edge.source} (floor {floors[src_layer]}, {src_layer}) imports "
                f"{edge.target} (floor {floors[dst_layer]}, {dst_layer}): upward import"
            )
        elif (src_layer, dst_layer) in forbidden_same_floor:
            problems.append(
                f"{edge.where(root)}: {edge.source} imports {edge.target}: {src_layer} never imports {dst_layer}"
            )
    return problems


def import_cycles(edges: Iterable[Edge], modules: Mapping[str, Module]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the first-party import graph, each as one cycle."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for edge in edges:
        if edge.target in modules and edge.source in modules:
            graph[edge.source].add(edge.target)

    # Tarjan, iterative
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    # one concrete cycle per component, for the message: shortest path from its first member back to itself
    cycles = []
    for component in sorted(components):
        members = set(component)
        first = component[0]
        previous: dict[str, str] = {}
        frontier = [first]
        found = None
        while frontier and found is None:
            nxt = []
            for node in frontier:
                for child in sorted(graph[node] & members):
                    if child == first:
                        found = node
                        break
                    if child not in previous:
                        previous[child] = node
                        nxt.append(child)
                if found is not None:
                    break
            frontier = nxt
        path = [first]
        node = found
        while node is not None and node != first:
            path.append(node)
            node = previous[node]
        cycle = [first, *reversed(path[1:]), first]
        extra = sorted(members - set(cycle))
        cycles.append(cycle + ([f"(same component: {', '.join(extra)})"] if extra else []))
    return cycles


def describe_cycle(cycle: list[str], edges: Iterable[Edge], root: Path) -> str:
    where = {(e.source, e.target): e.where(root) for e in edges}
    hops = [f"{a} -> {b} ({where[(a, b)]})" for a, b in itertools.pairwise(cycle) if (a, b) in where]
    tail = [c for c in cycle if c.startswith("(same component")]
    return "import cycle: " + "; ".join(hops) + (f" {tail[0]}" if tail else "")


# ---------------------------------------------------------------------------------------------- the real code base


