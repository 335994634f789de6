"""Out-of-core reduction of filter scores to per-(class, filter) distributions (thesis §6.2.3): wall clock and peak
RSS of :func:`xcore.filters.stats.filter_stats` on seeded synthetic ``filter_scores`` files.

Writes ``--rows`` rows (default 1,000,000; ImageNet/VGG16 is 1.28 M × 512 filters) over ``--files`` Parquet shards
with the ``filter_scores`` schema (``scores``, ``scores_pred``, ``activation`` as float32 lists of ``--filters``
values; 0.1 % error rows with NULL lists), in row batches so the writer never holds the data set, then times
``filter_stats`` and writes ``<out>/result.json`` next to ``<out>/filter_scores/``. Existing data with the same
parameters is reused. At the default size the files take about 6.5 GB.

    .venv/bin/python benchmarks/filters_reduce.py [--rows 1000000] [--filters 512] [--classes 1000]
        [--out .xcore/bench/filters_reduce] [--classes-per-query 64] [--memory-limit 4GB]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xcore.filters.stats import filter_stats  # noqa: E402

LIST = pa.list_(pa.float32())
SCHEMA = pa.schema([("sample_id", pa.string()), ("index", pa.int64()), ("label", pa.int64()), ("pred", pa.int64()),
                    ("label_logit", pa.float64()), ("pred_logit", pa.float64()), ("label_prob", pa.float64()),
                    ("pred_prob", pa.float64()), ("scores", LIST), ("scores_pred", LIST), ("activation", LIST),
                    ("scorer", pa.string()), ("layer", pa.string()), ("tap", pa.string()), ("run_key", pa.string())])


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch(rng: np.random.Generator, start: int, n: int, filters: int, classes: int) -> pa.RecordBatch:
    """``n`` synthetic rows from index ``start``: class-dependent skewed scores, 0.1 % error rows (NULL lists)."""
    labels = rng.integers(0, classes, size=n)
    centre = (labels % 17).astype(np.float32)[:, None] * 0.01
    scores = (rng.gamma(2.0, 0.01, size=(n, filters)).astype(np.float32) - 0.015 + centre).ravel()
    error = rng.random(n) < 0.001
    offsets = pa.array(np.arange(0, n * filters + 1, filters, dtype=np.int32))

    def lists(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(values), mask=pa.array(error))

    logits = rng.normal(10.0, 2.0, size=n)
    index = np.arange(start, start + n)
    constant = {"scorer": "synthetic", "layer": "features.29", "tap": "output", "run_key": "bench"}
    columns: dict[str, Any] = {
        "sample_id": pa.array([f"s{i}" for i in index]), "index": index, "label": labels, "pred": labels,
        "label_logit": logits, "pred_logit": logits, "label_prob": np.full(n, 0.5), "pred_prob": np.full(n, 0.5),
        "scores": lists(scores), "scores_pred": lists(scores), "activation": lists(np.abs(scores)),
        **{k: pa.array([v] * n) for k, v in constant.items()},
    }
    return pa.record_batch([pa.array(columns[f.name], f.type) for f in SCHEMA], schema=SCHEMA)


def write(directory: Path, rows: int, filters: int, classes: int, files: int, batch_rows: int, seed: int) -> list[Path]:
    """The shards under ``directory`` (reused when ``params.json`` matches), written batch by batch."""
    params = {"rows": rows, "filters": filters, "classes": classes, "files": files, "seed": seed}
    marker = directory / "params.json"
    paths = [directory / f"shard-{i:06d}.parquet" for i in range(files)]
    if marker.is_file() and json.loads(marker.read_text()) == params and all(p.is_file() for p in paths):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for path, a, b in zip(paths, bounds[:-1], bounds[1:], strict=True):
        with pq.ParquetWriter(path, SCHEMA) as writer:
            for s in range(a, b, batch_rows):
                writer.write_batch(batch(rng, s, min(batch_rows, b - s), filters, classes))
    marker.write_text(json.dumps(params))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--filters", type=int, default=512)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--batch-rows", type=int, default=5_000)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--classes-per-query", type=int, default=64)
    ap.add_argument("--memory-limit", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(".xcore/bench/filters_reduce"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    paths = write(args.out / "filter_scores" / "scorer=synthetic", args.rows, args.filters, args.classes, args.files,
                  args.batch_rows, args.seed)
    write_s = time.perf_counter() - t0
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    table = filter_stats(paths, bins=args.bins, classes_per_query=args.classes_per_query,
                         memory_limit=args.memory_limit)
    seconds = time.perf_counter() - t0
    result = {"rows": args.rows, "filters": args.filters, "classes": args.classes, "files": len(paths),
              "bins": args.bins, "classes_per_query": args.classes_per_query, "memory_limit": args.memory_limit,
              "stats_rows": table.num_rows, "seconds": round(seconds, 3), "write_seconds": round(write_s, 3),
              "values_per_second": round(args.rows * args.filters / seconds),
              "peak_rss_mib_before": round(rss_before, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
              "data_bytes": sum(p.stat().st_size for p in paths)}
    for k in ("rows", "filters", "files", "stats_rows", "seconds", "peak_rss_mib_before", "peak_rss_mib"):
        print(f"{k:>20}: {result[k]}")
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
