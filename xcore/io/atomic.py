"""Atomic file writes: a hidden temp name in the same folder, fsync, then ``os.replace``.

Temp names start with ``.`` and do not end in ``.parquet`` (``.<name>.tmp-<uuid>``), so pyarrow dataset
discovery (ignores ``.``/``_`` prefixes) and DuckDB ``**/*.parquet`` globs never see a partial file.
:data:`TEMP_NAME` matches exactly these names (Parquet tables, commit records, manifests, ``run.json``), which is
what the stale-temp cleanup removes after a kill. :class:`HashingWriter` hashes the bytes as they are written, so
a commit record's checksum costs no second read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")


def temp_name(final: Path) -> Path:
    """The hidden temp path next to ``final`` used while writing it (matches :data:`TEMP_NAME`)."""
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of the bytes of ``path`` (streamed)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class HashingWriter(io.RawIOBase):
    """A write-only stream that forwards to ``raw`` and keeps the sha256 and length of every byte it passed."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self.raw = raw
        self.size = 0
        self._digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._digest.update(view)
        self.raw.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if not self.raw.closed:  # also called by IOBase.close() when this wrapper is collected
            self.raw.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def read_json(path: Path | str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or ``None`` when it is missing or unreadable."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


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


def materialise_dir(root: Path | str, params: dict[str, Any], write: Callable[[Path], None], *,
                    force: bool = False, what: str = "data", marker: str = ".complete",
                    replace_ours: bool = False) -> Path:
    """Make ``root`` hold what ``write(folder)`` writes, once per ``params``, atomically; return ``root``.

    A ``root/.complete`` marker equal to ``params`` means the folder is already there: nothing is done. A marker
    equal to ``params`` in every key but a different ``"format"`` (or none) is an older generator's output of the
    same data: it is regenerated and replaced, as with ``force``. A root holding anything else (other parameters,
    foreign files) raises :class:`UsageError` unless ``force``. ``write`` fills a hidden sibling folder, which gets
    the marker and is then renamed into place, so an interrupted run never looks complete (and an interrupted
    upgrade leaves the old format in place). ``marker`` names the marker file; ``replace_ours=True`` replaces a
    root whose marker holds any other parameters (our own data made another way) as ``force`` would.
    """
    from xcore.errors import UsageError

    root = Path(root)
    done = root / marker
    if not force and done.is_file():
        found = read_json(done)
        if found == params:
            return root
        if found is not None and replace_ours:
            force = True
        elif found is None or "format" not in params or {**found, "format": params["format"]} != params:
            raise UsageError(f"{root} holds synthetic {what} made with other parameters; pass force=True to "
                             "replace it")
        else:
            force = True  # same parameters, older format: regenerate
    if not force and root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} exists and is not complete synthetic {what}; pass force=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        (tmp / marker).write_text(json.dumps(params, sort_keys=True))
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
