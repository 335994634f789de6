"""The on-disk layout of a run, its key, the per-shard commit record and the completeness rule.

```
<out>/<run_id>/
  run.json                                   config, versions, git sha, timings, summary
  explanations/method=<m>/shard-000000.parquet
  metrics/method=<m>/shard-000000.parquet
  errors/shard-000000.parquet
  _shards/shard-000000.json                  commit record, written last
  _manifests/plan.json, failed.json          driver bookkeeping
```

A shard is complete iff its commit record (format 2, :mod:`xcore.io.commits`) exists with the expected run key
and range, and every file it lists exists with the recorded size and sha256 and with footer ``run_key`` /
``shard_id`` matching and ``num_rows`` equal to the recorded count. Any mismatch, missing or unreadable file,
or a record without checksums (older xcore) means "recompute and replace atomically".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xcore
from xcore.io.atomic import atomic_open, read_json
from xcore.io.commits import COMMIT_FORMAT, committed_files, file_entry, record_problem, records
from xcore.io.parquet import SCHEMA_VERSION, write_atomic

if TYPE_CHECKING:  # runtime import would cycle through xcore.pipeline's job registration
    import pyarrow as pa

    from xcore.core.shards import Shard

PACKAGES = ("xcore", "torch", "torchvision", "numpy", "pyarrow", "duckdb", "ray", "prefect")


def run_key(parts: Mapping[str, Any], length: int = 16) -> str:
    """Short stable hash of everything that changes results (schema and xcore versions are added here)."""
    payload = {**parts, "schema_version": SCHEMA_VERSION, "xcore_version": xcore.__version__}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def write_json_atomic(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON via a hidden temp file, fsync and ``os.replace``."""
    path = Path(path)
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    return path


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape results (read from metadata, nothing imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = xcore.__version__ if name == "xcore" else None
    return out


def git_sha(where: Path | str | None = None) -> str | None:
    """The commit of the source tree holding xcore (``None`` outside a git checkout)."""
    cwd = Path(where) if where else Path(xcore.__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (res.stdout.strip() or None) if res.returncode == 0 else None


class RunLayout:
    """Paths of one run directory; every writer and reader goes through these names."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def manifests(self) -> Path:
        return self.root / "_manifests"

    def commit_path(self, shard: Shard) -> Path:
        return self.root / "_shards" / f"{shard.name}.json"

    def table_path(self, table: str, shard: Shard, method: str | None = None, partition: str = "method") -> Path:
        """``<table>/<partition>=<method>/<shard>.parquet`` (hive layout), or ``<table>/<shard>.parquet``."""
        part = self.root / table / f"{partition}={method}" if method is not None else self.root / table
        return part / f"{shard.name}.parquet"

    def commit_records(self) -> list[dict[str, Any]]:
        """Every readable commit record, by shard id."""
        return sorted((r for _name, r in records(self.root) if r), key=lambda r: r.get("shard_id", -1))

    def committed_files(self, key: str) -> dict[str, list[Path]]:
        """Table -> the files listed by the commit records of run ``key`` (what readers read, never a glob)."""
        return committed_files(self.root, key)

    def write_shard(self, shard: Shard, key: str, tables: Mapping[Path, pa.Table],
                    summary: Mapping[str, Any]) -> dict[str, Any]:
        """Write every table of ``shard`` atomically, then its commit record (manifest-then-commit) listing each
        file's rows, sha256 and size as written.

        The old commit record is removed first, so a crash part-way leaves the shard incomplete.
        """
        with contextlib.suppress(FileNotFoundError):
            self.commit_path(shard).unlink()
        files = [file_entry(self.root, write_atomic(table, path, run_key=key, shard_id=shard.shard_id))
                 for path, table in tables.items()]
        record = {"format": COMMIT_FORMAT, "run_key": key, "shard_id": shard.shard_id, "start": shard.start,
                  "stop": shard.stop, "files": files, "summary": dict(summary), "committed_at": time.time()}
        write_json_atomic(self.commit_path(shard), record)
        return record

    def shard_problem(self, shard: Shard, key: str) -> str | None:
        """Why ``shard`` is not complete for run ``key`` (``None``: complete); hashes every listed file."""
        return record_problem(self.root, read_json(self.commit_path(shard)), key, shard.shard_id,
                              (shard.start, shard.stop))

    def is_complete(self, shard: Shard, key: str) -> bool:
        """The completeness rule (module docstring); never raises."""
        return self.shard_problem(shard, key) is None
