"""Errors that end a command at once (exit code 2) versus per-sample failures recorded as rows."""

from __future__ import annotations


class UsageError(ValueError):
    """A wrong path, unknown method, unknown layer or unreadable checkpoint.

    The CLI prints ``str(err)`` as one line and exits with code 2, before Ray or Prefect start.
    """


class UnknownNameError(UsageError, KeyError):
    """A name that is not in a registry (method, metric, model, dataset)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(UsageError, AttributeError):
    """A module path that does not name a submodule of the model."""


class SampleError(RuntimeError):
    """A failure tied to one sample (bad file, NaN output); becomes a row in the run's ``errors`` table."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
