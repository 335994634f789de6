"""The keyword defaults are the public contract, so every registered method and metric documents each of its
keyword parameters in its own docstring, and the code cites papers and repositories, never notes outside the
repository."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import xcore.explain as E
import xcore.metrics as M

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = [("method", n, E.METHODS.get(n).fn) for n in E.available()] + \
             [("metric", n, M.METRICS.get(n).fn) for n in M.available()]


def _keywords(fn: object) -> list[str]:
    return [k for k, p in inspect.signature(fn).parameters.items()  # type: ignore[arg-type]
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


@pytest.mark.parametrize(("kind", "name", "fn"), REGISTERED, ids=[f"{k}-{n}" for k, n, _ in REGISTERED])
def test_every_keyword_parameter_is_documented(kind: str, name: str, fn: object) -> None:
    doc = inspect.getdoc(fn) or ""
    missing = [k for k in _keywords(fn) if not re.search(rf"``{re.escape(k)}``", doc)]
    assert not missing, f"{kind} {name!r}: the docstring does not document {missing}"


def test_the_walk_sees_every_registered_parameter() -> None:
    """Guards the test above: it must see the wrapped functions' real signatures, e.g. swag's SLIC weights."""
    params = {n: set(_keywords(fn)) for _, n, fn in REGISTERED}
    assert {"superpixels", "w_c", "w_g", "compactness"} <= params["swag"]
    assert {"steps", "substrate", "insertion_substrate"} <= params["deletion_insertion"]
    assert "boxes" in params["weak_localisation"]


def test_no_citation_of_notes_outside_the_repository() -> None:
    """A note outside the repository (its section sign or a seed file hash) means nothing to a maintainer:
    cite the paper or the repository."""
    pattern = re.compile(r"(methods|metrics|formats|pipeline)\.md|[0-9]{3}_[0-9a-f]{16}\.txt")
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
             for package in ("explain", "metrics", "core") for path in sorted((ROOT / "xcore" / package).rglob("*.py"))
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)
