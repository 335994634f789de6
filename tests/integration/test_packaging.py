"""The installed package imports with nothing but its declared dependencies.

An import of an undeclared distribution (``sklearn`` without ``scikit-learn`` in ``[project].dependencies``) works
in the development venv, where everything is installed, and fails in the Docker image, which runs ``pip install .``.
This test reproduces that install without network and without installing anything twice:

1. copy what the Dockerfile copies (``pyproject.toml``, ``README.md``, ``xcore/``, ``tasks/``, ``flows/``) to a
   temporary directory and build a wheel from it (``pip wheel --no-deps --no-build-isolation``, with the project
   venv's setuptools), so the working tree gets no ``build/`` or ``*.egg-info``;
2. create a fresh venv (``python -m venv --without-pip``, no system site-packages) and install the wheel into it
   with the project venv's pip (``pip --python <fresh> install --no-deps --no-index``): no editable finder and no
   source tree on ``sys.path``;
3. compute the closure of the wheel's ``Requires-Dist`` (markers evaluated, extras such as ``ray[default]``
   followed) through the ``Requires-Dist`` of the distributions installed in the project venv, and mirror exactly
   those distributions' installed files (their ``RECORD``, ``*.dist-info`` included) into a directory of symlinks:
   a top-level entry owned only by distributions of the closure is linked whole, one shared with distributions
   outside it (a namespace package such as ``google/``) is recreated as a directory and linked entry by entry;
4. put that directory on the fresh venv's path with a ``.pth`` file (``site.addsitedir``, so its own ``.pth`` files
   work as in a real install) and, in a subprocess of the fresh venv run with ``-I`` (no ``PYTHONPATH``, no user
   site, no current directory), import every module of ``xcore``, ``tasks`` and ``flows`` found by
   the installed copy's files (like ``pkgutil.walk_packages``, but
   without importing a package to list it, so a broken package cannot hide its submodules).

Any module whose import raises (``ModuleNotFoundError`` for an undeclared distribution) fails the test, with the
missing module and the distribution that would provide it in the message.

That check cannot see a direct import satisfied only through another dependency (``yaml`` and ``pydantic`` arrive
with ``prefect``), so a second, static test requires every third-party top-level name imported anywhere in
``xcore``, ``tasks`` and ``flows`` (``ast``; imports inside functions too) to come from a distribution named in
``[project].dependencies`` itself.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "xcore"
COPIED = ("pyproject.toml", "README.md", "xcore", "tasks", "flows")  # as in infra/docker/Dockerfile
PACKAGES = ("xcore", "tasks", "flows")


def test_every_third_party_import_is_a_direct_dependency():
    with open(ROOT / "pyproject.toml", "rb") as f:
        declared = {canonicalize_name(Requirement(r).name) for r in tomllib.load(f)["project"]["dependencies"]}
    providers = md.packages_distributions()
    imported: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                        imported.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert {"torch", "numpy"} <= imported.keys()  # the scan found the code
    problems = []
    for top, places in sorted(imported.items()):
        dists = {canonicalize_name(d) for d in providers.get(top, [])}
        if not dists:
            problems.append(f"{top} (no installed distribution provides it) imported at {', '.join(places)}")
        elif not dists & declared:
            problems.append(f"{top} from {', '.join(sorted(dists))} is not in [project].dependencies, imported at "
                            f"{', '.join(places)}")
    assert not problems, "undeclared runtime imports:\n" + "\n".join(problems)


@pytest.mark.slow
def _installed() -> dict[str, md.Distribution]:
    """Distributions visible to this interpreter by canonical name, first on sys.path wins (as for imports)."""
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist)
    return found


def _closure(requires: Iterable[str], installed: dict[str, md.Distribution]) -> tuple[set[str], set[str]]:
    """Canonical names of the distributions ``requires`` needs, transitively; and those not installed here."""
    base_env = default_environment()
    needed: set[str] = set()
    missing: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [("", line) for line in requires]  # (extra that pulled it in, requirement)
    while todo:
        extra, line = todo.pop()
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**base_env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in ("", *sorted(canonicalize_name(e) for e in req.extras)):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            dist = installed.get(name)
            if dist is None:
                missing.add(name)
                continue
            needed.add(name)
            todo.extend((wanted, sub) for sub in dist.requires or ())
    return needed, missing - needed


def _relative_files(dist: md.Distribution, site_dirs: list[Path]) -> tuple[Path, list[tuple[str, ...]]] | None:
    """The site directory holding ``dist`` and its installed files relative to it (scripts in bin/ left out)."""
    base = Path(dist.locate_file("")).resolve()
    if base not in site_dirs or dist.files is None:
        return None
    parts = []
    for file in dist.files:
        rel = Path(file).parts
        if rel and ".." not in rel and rel[0] != "__pycache__":
            parts.append(rel)
    return base, parts


def _mirror(needed: set[str], installed: dict[str, md.Distribution], target: Path) -> list[str]:
    """Symlink the installed files of exactly the ``needed`` distributions into ``target``; returns problems."""
    site_dirs = sorted({Path(p).resolve() for p in sys.path if p and Path(p).is_dir()})
    owners: dict[tuple[str, ...], set[str]] = {}  # path prefix -> every installed distribution with files under it
    located: dict[str, tuple[Path, list[tuple[str, ...]]]] = {}
    problems: list[str] = []
    for name, dist in installed.items():
        found = _relative_files(dist, site_dirs)
        if found is None:
            if name in needed:
                problems.append(f"{name}: no RECORD of installed files under a site directory")
            continue
        located[name] = found
        for rel in found[1]:
            for depth in range(1, len(rel) + 1):
                owners.setdefault(rel[:depth], set()).add(name)

    done: set[tuple[str, ...]] = set()
    for name in sorted(needed & located.keys()):
        base, files = located[name]
        for rel in files:
            for depth in range(1, len(rel) + 1):
                prefix = rel[:depth]
                if prefix in done:
                    break
                whole = depth == len(rel) or owners[prefix] <= needed
                if not whole:
                    continue  # shared with an undeclared distribution: go one level deeper
                link = target.joinpath(*prefix)
                source = base.joinpath(*prefix)
                if source.exists() or source.is_symlink():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    if not link.exists():
                        link.symlink_to(source, target_is_directory=source.is_dir())
                done.add(prefix)
                break
    return problems


IMPORT_ALL = r"""
import importlib.util, json, pathlib, sys, traceback
failures = {}
checked = []
for top in sys.argv[1:]:
    # the installed files, not pkgutil.walk_packages: that one imports each package to list it, and a package
    # that fails to import would hide its submodules
    base = pathlib.Path(importlib.util.find_spec(top).origin).parent
    names = sorted(
        ".".join(path.relative_to(base.parent).with_suffix("").parts[: -1 if path.name == "__init__.py" else None])
        for path in base.rglob("*.py")
    )
    for name in names:
        try:
            importlib.import_module(name)
            checked.append(name)
        except BaseException as exc:  # noqa: BLE001 - report everything a user would hit
            failures[name] = {"type": type(exc).__name__, "missing": getattr(exc, "name", None),
                              "error": str(exc), "trace": traceback.format_exc(limit=-3)}
files = {top: sys.modules[top].__file__ for top in sys.argv[1:] if top in sys.modules}
print(json.dumps({"checked": checked, "failures": failures, "files": files}))
"""


def test_installed_wheel_imports_with_only_declared_dependencies(tmp_path):
    # 1. wheel from a copy of what the Docker image copies
    source = tmp_path / "src"
    source.mkdir()
    for entry in COPIED:
        path = ROOT / entry
        if path.is_dir():
            shutil.copytree(path, source / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / entry)
    wheels = tmp_path / "wheels"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(wheels), str(source)],
        check=True, env=env, cwd=tmp_path, timeout=180,
    )  # fmt: skip
    (wheel,) = wheels.glob(f"{PROJECT}-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires, "the wheel declares no dependencies at all"

    # 2. fresh venv, wheel installed without dependencies
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, env=env, cwd=tmp_path, timeout=180,
    )  # fmt: skip

    # 3. exactly the declared distributions (transitively) of the project venv, as symlinks
    installed = _installed()
    needed, missing = _closure(requires, installed)
    needed.discard(canonicalize_name(PROJECT))
    deps = tmp_path / "declared"
    deps.mkdir()
    problems = _mirror(needed, installed, deps)
    assert not problems, problems
    purelib = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "_declared_dependencies.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")

    # 4. import everything in the fresh venv
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    run_env.update(
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(tmp_path / "mpl"),
        PREFECT_HOME=str(tmp_path / "prefect"),
        RAY_USAGE_STATS_ENABLED="0",
        DO_NOT_TRACK="1",
    )
    result = subprocess.run(
        [str(python), "-I", "-c", IMPORT_ALL, *PACKAGES],
        capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"import run crashed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])

    for top, file in report["files"].items():
        assert Path(file).resolve().is_relative_to(Path(purelib).resolve()), f"{top} imported from {file}"
    assert len(report["checked"]) + len(report["failures"]) > 50, report["checked"]

    if report["failures"]:
        providers = md.packages_distributions()
        lines = []
        for name, failure in sorted(report["failures"].items()):
            hint = ""
            if failure["type"] == "ModuleNotFoundError" and failure["missing"]:
                top = failure["missing"].split(".")[0]
                hint = f" -> not declared: {', '.join(providers.get(top, ['?']))} (provides {top})"
            lines.append(f"{name}: {failure['type']}: {failure['error']}{hint}")
        detail = "\n\n".join(f"--- {n}\n{f['trace']}" for n, f in sorted(report["failures"].items())[:3])
        pytest.fail(
            f"{len(lines)} module(s) fail to import with only the declared dependencies "
            f"({len(needed)} distributions; required but not installed here: {sorted(missing) or 'none'}):\n"
            + "\n".join(lines)
            + f"\n\n{detail}"
        )

