"""Atomic file writes: a hidden temp name in the same folder, fsync, then ``os.replace``.

Temp names start with ``.`` and do not end in ``.parquet`` (``.<name>.tmp-<uuid>``), so pyarrow dataset
discovery (ignores ``.``/``_`` prefixes) and DuckDB ``**/*.parquet`` globs never see a partial file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temp_name(final: Path) -> Path:
    """The hidden temp path next to ``final`` used while writing it."""
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / filesystem
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file for writing; on success it replaces ``path`` atomically, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
