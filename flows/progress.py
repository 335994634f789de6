"""Rich output for the CLI: a shard progress bar fed by the driver loop, result tables and report blocks."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tasks.driver import progress_listener
from xcore.analysis.blocks import Block, cell


class ShardProgress:
    """``with ShardProgress(console):`` shows shards (or ROAR units) done / total, samples/s (units/h) and the ETA of
    every dispatch, one bar per dispatch."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = self.progress.add_task("shards", total=None, rate="starting")
        self.samples = 0
        self.started: float | None = None
        self.total: int | None = None
        self._listen = progress_listener(self.update)

    def update(self, summary: dict[str, Any], done: int, total: int) -> None:
        """One finished shard (or ROAR unit); a new dispatch of a chained run (``done`` back at 1) starts a new
        bar, labelled units when its summaries name one."""
        if self.started is None or (done == 1 and self.total is not None):  # clock from the first shard's start
            if self.total is not None:
                self.task = self.progress.add_task("shards", total=None, rate="starting")
            self.started = time.perf_counter() - float(summary.get("seconds", 0.0))
            self.samples = 0
        self.total = total
        self.samples += int(summary.get("samples", 0))
        elapsed = max(1e-9, time.perf_counter() - self.started)
        unit = "unit" in summary
        rate = f"{3600 * done / elapsed:.1f} units/h" if unit else f"{self.samples / elapsed:.1f} samples/s"
        self.progress.update(self.task, total=total, completed=done, rate=rate,
                             description="units" if unit else "shards")

    def __enter__(self) -> ShardProgress:
        self.progress.start()
        self._listen.__enter__()
        return self

    def __exit__(self, typ: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._listen.__exit__(typ, err, tb)
        self.progress.stop()


def print_rows(console: Console, title: str, rows: list[dict[str, Any]]) -> None:
    """Print ``rows`` (dicts with the same keys) as a table; ``(no rows)`` when empty."""
    if not rows:
        console.print(f"{title}: (no rows)")
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col), justify="right" if isinstance(rows[0][col], int | float) else "left")
    for row in rows:
        table.add_row(*(cell(v) for v in row.values()))
    console.print(table)


def print_blocks(console: Console, blocks: list[Block]) -> None:
    """Print report blocks (:mod:`xcore.analysis.blocks`): lines as they are, tables with :func:`print_rows`."""
    for b in blocks:
        if isinstance(b, str):
            console.print(b)
        else:
            print_rows(console, str(b.get("title", "")), list(b.get("rows") or []))
