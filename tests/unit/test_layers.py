"""Layering of the code base, checked statically (``ast`` only: nothing is imported or executed).

Floors of ``xcore``, lowest first. A module may import its own floor and lower floors, never a higher one; the
pairs in ``FORBIDDEN_SAME_FLOOR`` are forbidden although they share a floor:

    0  xcore.errors, xcore.registry
    1  xcore.core, xcore.io
    2  xcore.data
    3  xcore.models
    4  xcore.explain, xcore.metrics      (siblings: neither imports the other)
    5  xcore.analysis, xcore.viz
    6  xcore.datasets, xcore.pipeline    (pipeline may import datasets, not the other way round)
    7  xcore.report                      (an HTML page of a run: reopens its job to draw overlays)

``xcore/__init__.py`` is exempt as an importer. ``xcore`` never imports ``ray``, ``prefect``, ``tasks`` or ``flows``;
``tasks`` may import ``xcore`` but never ``flows``; ``flows`` may import both.

Every import counts, also those inside functions (a lazy import is still a dependency), for the floor rules and for
the cycle check, which covers the import graph of ``xcore``, ``tasks`` and ``flows`` together. An edge goes to the
module named by the import (``from a.b import c`` goes to ``a.b.c`` when that is a module, else to ``a.b``); the
implicit execution of parent packages' ``__init__`` is not an edge, so a package re-exporting its own submodules is
not reported as a cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from import_graph import (
    EXEMPT_IMPORTERS,
    FLOORS,
    FORBIDDEN_SAME_FLOOR,
    FORBIDDEN_TOP_LEVEL,
    ROOT,
    TOP_PACKAGES,
    Edge,
    Module,
    describe_cycle,
    find_imports,
    find_modules,
    floor_violations,
    import_cycles,
    layer_of,
)


@pytest.fixture(scope="module")
def code_base() -> tuple[dict[str, Module], list[Edge]]:
    modules = find_modules(ROOT, TOP_PACKAGES)
    return modules, find_imports(modules)


def test_the_scan_sees_the_code_base(code_base):
    """Guards against a checker that passes because it found nothing to check."""
    modules, edges = code_base
    for package in TOP_PACKAGES:
        assert package in modules, f"{package}/__init__.py not found under {ROOT}"
    for layer in ("xcore.errors", "xcore.core", "xcore.io", "xcore.data", "xcore.models", "xcore.explain",
                  "xcore.metrics", "xcore.analysis", "xcore.pipeline"):
        assert any(layer_of(m, FLOORS) == layer for m in modules), f"no module found for floor package {layer}"
    assert len(modules) > 50
    assert sum(e.target.startswith("xcore.") for e in edges) > 50


def test_no_import_goes_up_a_floor(code_base):
    modules, edges = code_base
    problems = floor_violations(
        edges, modules, FLOORS, FORBIDDEN_SAME_FLOOR, FORBIDDEN_TOP_LEVEL, EXEMPT_IMPORTERS, "xcore", ROOT
    )
    assert not problems, f"{len(problems)} layering violation(s):\n" + "\n".join(problems)


def test_no_import_cycle(code_base):
    modules, edges = code_base
    cycles = import_cycles(edges, modules)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(describe_cycle(c, edges, ROOT) for c in cycles)


# ------------------------------------------------------------------------------------------ self-test of the checker


def _write(root: Path, files: Mapping[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_reports_upward_imports_siblings_forbidden_packages_and_cycles(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.high import b\n",  # exempt importer
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "from . import ok\n\ndef f():\n    from ..high import b  # upward, lazy\n    return b\n",
            "pkg/low/ok.py": "import os\n",
            "pkg/low/root_user.py": "import pkg  # pkg/__init__ imports pkg.high\n",
            "pkg/high/__init__.py": "",
            "pkg/high/b.py": "from pkg.low import ok\nfrom pkg.high import c\n",
            "pkg/high/c.py": "import ray\n\ndef g():\n    from . import b  # closes the cycle b -> c -> b\n",
            "pkg/side/__init__.py": "",
            "pkg/side/s.py": "from pkg.high.c import g\n",
            "pkg/stray.py": "",
            "app/__init__.py": "",
            "app/run.py": "import pkg.low.a\nfrom ui import page\n",
            "ui/__init__.py": "",
            "ui/page.py": "from app.run import x\n",
        },
    )
    floors = {"pkg.low": 0, "pkg.high": 1, "pkg.side": 1}
    modules = find_modules(tmp_path, ("pkg", "app", "ui"))
    edges = find_imports(modules)
    assert Edge("pkg.low.a", "pkg.high.b", 4, tmp_path / "pkg/low/a.py") in edges

    problems = floor_violations(
        edges,
        modules,
        floors,
        {("pkg.side", "pkg.high")},
        {"pkg": {"ray"}, "app": {"ui"}},
        {"pkg"},
        "pkg",
        tmp_path,
    )
    text = "\n".join(problems)
    assert "pkg/low/a.py:4: pkg.low.a (floor 0, pkg.low) imports pkg.high.b (floor 1, pkg.high): upward import" in text
    assert "pkg/high/c.py:1: pkg.high.c imports ray (pkg never imports ray)" in text
    assert "pkg.side.s imports pkg.high.c: pkg.side never imports pkg.high" in text
    assert "module pkg.stray has no floor" in text
    assert "app/run.py:2: app.run imports ui.page (app never imports ui)" in text
    assert "pkg/low/root_user.py:1: pkg.low.root_user (floor 0, pkg.low) imports the package root pkg, whose " \
        "__init__ imports pkg.high.b (floor 1): upward import" in text
    assert len(problems) == 6, text  # the exempt root package, the downward and same-floor imports pass

    cycles = import_cycles(edges, modules)
    assert ["pkg.high.b", "pkg.high.c", "pkg.high.b"] in cycles
    assert ["app.run", "ui.page", "app.run"] in cycles
    assert len(cycles) == 2, cycles
    message = describe_cycle(["pkg.high.b", "pkg.high.c", "pkg.high.b"], edges, tmp_path)
    assert message == (
        "import cycle: pkg.high.b -> pkg.high.c (pkg/high/b.py:2); pkg.high.c -> pkg.high.b (pkg/high/c.py:4)"
    )
