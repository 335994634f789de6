"""Atomic Parquet files with run metadata in the footer, and the compact heatmap encoding.

A table is written whole to a hidden temp file in the target directory (``.shard-000123.parquet.tmp-<uuid>``:
the leading dot hides it from ``pyarrow.dataset`` discovery, the ``.tmp-*`` ending from DuckDB's
``**/*.parquet`` globs), fsynced, and renamed onto its final name with ``os.replace``. A reader therefore sees
either the previous file or the complete new one, never a partial file. The bytes are hashed (sha256) as they
are written; :func:`write_atomic` returns the digest for the shard's commit record.

Heatmaps are stored as float16 bytes of ``map / scale`` with ``scale = max |map|`` (float64) per row, so tiny
raw gradients (1e-9) keep float16's relative precision instead of flushing to zero.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import xcore
from xcore.io.atomic import TEMP_NAME, HashingWriter, atomic_open

SCHEMA_VERSION = 1
COMPRESSION = "zstd"
HEATMAP_DTYPE = "float16"

HEATMAP_FIELDS = [
    pa.field("heatmap", pa.binary()),
    pa.field("scale", pa.float64()),
    pa.field("shape", pa.list_(pa.int32())),
    pa.field("dtype", pa.string()),
]


class Written(NamedTuple):
    """What :func:`write_atomic` wrote: the final path, its rows, and the sha256 and size (bytes) of the file."""

    path: Path
    rows: int
    sha256: str
    size: int


def write_atomic(table: pa.Table, path: Path | str, *, run_key: str, shard_id: int,
                 extra: Mapping[str, str] | None = None, row_group_size: int | None = None) -> Written:
    """Write ``table`` to ``path`` atomically with footer metadata; return the path, rows and checksum.

    The footer holds ``run_key``, ``shard_id``, ``rows``, ``schema_version``, ``xcore_version`` (and
    ``extra``). The sha256 is of the bytes written, hashed on the way to disk. On any exception the temp file
    is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(table.schema.metadata or {})
    footer = {"run_key": run_key, "shard_id": str(int(shard_id)), "rows": str(table.num_rows),
              "schema_version": str(SCHEMA_VERSION), "xcore_version": xcore.__version__, **(extra or {})}
    meta.update({k.encode(): str(v).encode() for k, v in footer.items()})
    table = table.replace_schema_metadata(meta)
    with atomic_open(path, "wb") as fh:
        out = HashingWriter(fh)
        pq.write_table(table, out, compression=COMPRESSION, row_group_size=row_group_size)
    return Written(path, table.num_rows, out.hexdigest(), out.size)


def read_footer(path: Path | str) -> dict[str, Any]:
    """Footer key/values of a Parquet file plus ``num_rows`` (from the metadata alone, no data read)."""
    md = pq.read_metadata(path)
    out: dict[str, Any] = {k.decode(): v.decode() for k, v in (md.metadata or {}).items()
                           if k != b"ARROW:schema"}
    out["num_rows"] = md.num_rows
    return out


def clean_stale_temps(directory: Path | str) -> list[Path]:
    """Delete temp files left by interrupted writes under ``directory``: every file named like an atomic write's
    temp (:data:`xcore.io.atomic.TEMP_NAME`: Parquet tables, commit records, manifests, ``run.json``)."""
    removed: list[Path] = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if TEMP_NAME.match(name):
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def encode_heatmap(m: Any) -> dict[str, Any]:
    """A map (tensor or array, any shape) -> ``{heatmap, scale, shape, dtype}`` column values.

    ``heatmap`` is the float16 bytes of ``m / scale`` (C order), ``scale = max |m|`` (0 for an all-zero map).
    """
    arr = m.detach().cpu().double().numpy() if hasattr(m, "detach") else np.asarray(m, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("cannot encode a heatmap with NaN or inf")
    scale = float(np.abs(arr).max()) if arr.size else 0.0
    unit = arr / scale if scale > 0 else arr
    data = np.ascontiguousarray(unit.astype(np.float16)).tobytes()
    return {"heatmap": data, "scale": scale, "shape": [int(s) for s in arr.shape], "dtype": HEATMAP_DTYPE}


def decode_heatmap(row: Mapping[str, Any]) -> np.ndarray:
    """The float32 map of one row written by :func:`encode_heatmap` (inverse up to float16 precision)."""
    if row["dtype"] != HEATMAP_DTYPE:
        raise ValueError(f"unsupported heatmap dtype {row['dtype']!r}")
    unit = np.frombuffer(row["heatmap"], dtype=np.float16).astype(np.float64)
    scale = float(row["scale"] or 0.0)
    out = unit * scale if scale > 0 else unit
    return out.astype(np.float32).reshape([int(s) for s in row["shape"]])
