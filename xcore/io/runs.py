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

A shard is complete iff its commit record exists with the expected run key and range, and every file it lists
exists with footer ``run_key`` / ``shard_id`` matching and ``num_rows`` equal to the recorded count. Any
mismatch, missing or unreadable file means "recompute and replace atomically".
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
from xcore.io.atomic import atomic_open
from xcore.io.parquet import SCHEMA_VERSION, read_footer, write_atomic

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


def read_json(path: Path | str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or ``None`` when it is missing or unreadable."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


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

    def table_path(self, table: str, shard: Shard, method: str | None = None) -> Path:
        part = self.root / table / f"method={method}" if method is not None else self.root / table
        return part / f"{shard.name}.parquet"

    def commit_records(self) -> list[dict[str, Any]]:
        """Every readable commit record, by shard id."""
        folder = self.root / "_shards"
        records = [read_json(p) for p in sorted(folder.glob("shard-*.json"))] if folder.is_dir() else []
        return sorted((r for r in records if r), key=lambda r: r.get("shard_id", -1))

    def write_shard(self, shard: Shard, key: str, tables: Mapping[Path, pa.Table],
                    summary: Mapping[str, Any]) -> dict[str, Any]:
        """Write every table of ``shard`` atomically, then its commit record (manifest-then-commit).

        The old commit record is removed first, so a crash part-way leaves the shard incomplete.
        """
        with contextlib.suppress(FileNotFoundError):
            self.commit_path(shard).unlink()
        files = []
        for path, table in tables.items():
            write_atomic(table, path, run_key=key, shard_id=shard.shard_id)
            files.append({"path": path.relative_to(self.root).as_posix(), "rows": table.num_rows})
        record = {"run_key": key, "shard_id": shard.shard_id, "start": shard.start, "stop": shard.stop,
                  "files": files, "summary": dict(summary), "committed_at": time.time()}
        write_json_atomic(self.commit_path(shard), record)
        return record

    def is_complete(self, shard: Shard, key: str) -> bool:
        """The completeness rule (module docstring); never raises."""
        rec = read_json(self.commit_path(shard))
        if not rec or rec.get("run_key") != key or rec.get("shard_id") != shard.shard_id:
            return False
        if (rec.get("start"), rec.get("stop")) != (shard.start, shard.stop) or not rec.get("files"):
            return False
        for f in rec["files"]:
            try:
                footer = read_footer(self.root / f["path"])
            except Exception:  # missing or corrupt file: not complete
                return False
            if (footer.get("run_key") != key or footer.get("shard_id") != str(shard.shard_id)
                    or footer["num_rows"] != f.get("rows")):
                return False
        return True
