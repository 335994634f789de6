"""``xai`` in this process through Typer's runner, for the integration tests that drive whole jobs."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from flows.cli import app


def invoke(args: list[str]) -> Any:
    """Run ``xai ARGS``; assert it exits 0 (printing its stdout and stderr if not) and return the result."""
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return res
