"""Run storage: atomic Parquet shards, the run layout and completeness rule, and DuckDB queries."""

from __future__ import annotations

from xcore.io.parquet import (
    SCHEMA_VERSION,
    clean_stale_temps,
    decode_heatmap,
    encode_heatmap,
    read_footer,
    write_atomic,
)
from xcore.io.runs import RunLayout, package_versions, read_json, run_key, write_json_atomic

__all__ = [
    "SCHEMA_VERSION",
    "RunLayout",
    "clean_stale_temps",
    "decode_heatmap",
    "encode_heatmap",
    "package_versions",
    "read_footer",
    "read_json",
    "run_key",
    "write_atomic",
    "write_json_atomic",
]
