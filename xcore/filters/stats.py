"""Per-(class, filter) distributions of filter scores, out of core with DuckDB (Hartley, *An Investigation into
Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University, 2021 — "thesis" — §6.2.3).

The thesis builds one distribution per (class c, filter n) pair from the Grad-AMap scores ``α_n`` (eq 6.6) of every
training image of class c, and uses its mean ``μ_cn`` and percentiles ``P_cn(0.1)``, ``P_cn(99.9)`` (§6.2.4). Here a
distribution is summarised by one row of :data:`STATS_SCHEMA`:

- ``count``, ``mean`` ``μ_cn = (1/|S_c|) Σ_{s∈S_c} α_n(s)``, ``lo`` = min, ``hi`` = max;
- ``p001`` / ``p999``: ``P_cn(low)`` / ``P_cn(high)`` by linear interpolation between order statistics (DuckDB
  ``quantile_cont`` = numpy's default ``method="linear"``: ``x_(⌊h⌋) + (h − ⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋))`` with
  ``h = (m − 1)·q``, 0-based, m values). The thesis does not name a rule; with ≈1,300 images per ImageNet class both
  percentiles fall between the two most extreme values, so the rule matters;
- ``hist``: ``bins`` equal-width bins over ``[lo, hi]`` with ``numpy.histogram`` semantics (edges
  ``lo + i·(hi − lo)/bins``, half-open bins, the last one closed). When ``lo == hi`` every value counts in bin 0
  (numpy would widen the range to ``lo ± 0.5`` and use the middle bin).

DuckDB gathers each pair's values into one sorted list and computes from it count, min, max, the percentiles
(``quantile_cont``) and the mean (its Kahan sum ``fsum`` in ascending order over the count); vectorised numpy bins
the same lists into the histograms (:func:`histograms`). So every output is a function of the multiset of values of
its pair: the table does not depend on file order, sharding, thread count or ``classes_per_query``.

Out of core: classes are processed ``classes_per_query`` at a time and each query's result streams in batches, so
memory holds one chunk of classes (measured: about 1.5 GB for 64 classes × 1,300 images × 512 filters, 0.7 GB
under ``memory_limit="1GB"``), never the whole data set; DuckDB spills to a temporary directory where it can. With
more than one chunk, one pass first copies each chunk's rows to its own Parquet files in that temporary directory
(``tempfile``, so ``TMPDIR``; about the size of ``column`` in the inputs), so that each chunk reads only its own
rows instead of every file.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from xcore.errors import UsageError
from xcore.io.query import sql_list

STATS_SCHEMA = pa.schema([
    pa.field("label", pa.int64(), nullable=False),
    pa.field("filter", pa.int32(), nullable=False),
    pa.field("count", pa.int64(), nullable=False),
    pa.field("mean", pa.float64(), nullable=False),
    pa.field("p001", pa.float64(), nullable=False),
    pa.field("p999", pa.float64(), nullable=False),
    pa.field("lo", pa.float64(), nullable=False),
    pa.field("hi", pa.float64(), nullable=False),
    pa.field("hist", pa.list_(pa.int64()), nullable=False),
])
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*[KMGT]i?B\s*$", re.IGNORECASE)


def _values_sql(source: str, column: str) -> str:
    """One row per (sample, filter) of the labels in ``[$lo, $hi]``: ``label``, 0-based ``filter``, DOUBLE ``v``.
    Rows with a NULL list (error rows) or NULL label are skipped; the two ``unnest`` calls are zipped."""
    return (f"SELECT label, unnest(range(len({column})))::INTEGER AS filter, unnest({column})::DOUBLE AS v "
            f"FROM {source} WHERE {column} IS NOT NULL AND label IS NOT NULL AND label BETWEEN $lo AND $hi")


def _summary_sql(values: str) -> str:
    """Per (label, filter): the values sorted ascending (the only buffer DuckDB holds), their count, min and max,
    the two percentiles (``quantile_cont`` over the list) and the mean (Kahan ``fsum`` of the sorted list / count)."""
    return (f"SELECT label, filter, len(sorted) AS count, list_aggregate(sorted, 'fsum') / len(sorted) AS mean, "
            f"list_aggregate(sorted, 'quantile_cont', [$ql, $qh]) AS q, sorted[1] AS lo, sorted[-1] AS hi, sorted "
            f"FROM (SELECT label, filter, list_sort(list(v)) AS sorted FROM ({values}) WHERE v IS NOT NULL "
            f"GROUP BY label, filter)")


def bin_index(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """numpy.histogram's bin of each value ``v`` (float64) in ``bins`` equal bins over its own ``[lo, hi]``
    (arrays of the same shape): ``i = ⌊(v − lo)/(hi − lo)·bins⌋`` capped at ``bins − 1``, then moved down by one
    where ``v`` < edge ``i`` and up by one where ``v`` ≥ edge ``i + 1`` (not in the last bin, which is closed), with
    edges ``i·(hi − lo)/bins + lo`` (``numpy.linspace``) and the last edge ``hi``. 0 where ``lo == hi`` (numpy
    would widen the range to ``lo ± 0.5`` and use the middle bin)."""
    span = hi - lo
    flat = span > 0
    step = span / bins
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.where(flat, (v - lo) / np.where(flat, span, 1.0) * bins, 0.0).astype(np.intp)
    idx[idx == bins] -= 1
    idx -= (v < idx * step + lo) & flat
    upper = np.where(idx + 1 == bins, hi, (idx + 1) * step + lo)
    idx += (v >= upper) & (idx != bins - 1) & flat
    return idx


def histograms(values: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int,
               block: int = 1 << 22) -> np.ndarray:
    """Histograms (G, bins) of G groups of float64 ``values`` laid end to end (``counts`` per group), group g over
    ``[lo_g, hi_g]`` with :func:`bin_index` (= ``numpy.histogram(v, bins, range=(lo_g, hi_g))`` when
    ``lo_g < hi_g``). Batched over runs of whole groups of about ``block`` values, to bound the temporaries."""
    g = len(counts)
    hist = np.zeros(g * bins, dtype=np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    start = 0
    while start < g:
        stop = max(int(np.searchsorted(ends, starts[start] + block, side="right")), start + 1)
        grp = np.repeat(np.arange(start, stop), counts[start:stop])
        idx = bin_index(values[starts[start]:ends[stop - 1]], lo[grp], hi[grp], bins)
        hist += np.bincount(grp * bins + idx, minlength=g * bins)
        start = stop
    return hist.reshape(g, bins)


def _check(files: Sequence[str | Path], column: str, bins: int, classes_per_query: int, low: float, high: float,
           memory_limit: str | None) -> list[Path]:
    paths = [Path(f) for f in files]
    if not paths:
        raise UsageError("filter_stats: no score files given")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"filter_stats: no such file: {missing[0]}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column):
        raise UsageError(f"filter_stats: column must be a plain column name, got {column!r}")
    if bins < 1 or classes_per_query < 1:
        raise UsageError(f"filter_stats: bins and classes_per_query must be >= 1, got {bins} and {classes_per_query}")
    if not 0.0 <= low <= high <= 100.0:
        raise UsageError(f"filter_stats: need 0 <= low <= high <= 100 (percent), got low={low}, high={high}")
    if memory_limit is not None and not _MEMORY.match(memory_limit):
        raise UsageError(f"filter_stats: memory_limit must look like '4GB' or '512MiB', got {memory_limit!r}")
    return paths


def _empty() -> pa.Table:
    return STATS_SCHEMA.empty_table()


def filter_stats(files: Sequence[str | Path], *, column: str = "scores", bins: int = 32,
                 classes_per_query: int = 64, low: float = 0.1, high: float = 99.9,
                 memory_limit: str | None = None) -> pa.Table:
    """Per-(class, filter) summaries (:data:`STATS_SCHEMA`, sorted by label then filter) of the list column
    ``column`` of the ``filter_scores`` Parquet ``files`` (thesis §6.2.3; the class is the row's ``label``).

    - ``column`` = ``"scores"``: the GT-class scores ``α_n``; ``"scores_pred"`` / ``"activation"`` also work.
    - ``bins`` = 32: equal-width histogram bins over ``[lo, hi]`` of each pair (numpy.histogram semantics; all values
      in bin 0 when ``lo == hi``).
    - ``classes_per_query`` = 64: classes per DuckDB query; peak memory grows with it, the result does not change.
    - ``low`` = 0.1, ``high`` = 99.9: the percentiles (in percent) stored as ``p001`` / ``p999`` (thesis §6.2.4);
      the values used are recorded in the schema metadata.
    - ``memory_limit`` = ``None``: DuckDB's ``memory_limit`` (e.g. ``"4GB"``); beyond it DuckDB spills to a
      temporary directory.

    Rows whose list is NULL (error rows) are skipped. Every row must hold the same number of filters; values are
    float32 in the files and are read as DOUBLE (exactly). Raises :class:`xcore.errors.UsageError` on bad input.
    """
    paths = _check(files, column, bins, classes_per_query, low, high, memory_limit)
    with tempfile.TemporaryDirectory(prefix="xcore-filter-stats-") as spill, duckdb.connect() as con:
        con.execute("SET temp_directory = '" + spill.replace("'", "''") + "'")
        con.execute("SET preserve_insertion_order = false")
        if memory_limit is not None:
            con.execute(f"SET memory_limit = '{memory_limit.strip()}'")
        try:
            parts = _reduce(con, f"read_parquet({sql_list(paths)}, union_by_name = true)", column, bins,
                            classes_per_query, low, high, Path(spill))
        except duckdb.OutOfMemoryException as err:
            raise UsageError(f"filter_stats: out of memory (memory_limit={memory_limit}) with {classes_per_query} "
                             "classes per query; lower classes_per_query or raise memory_limit") from err
    meta = {"column": column, "bins": str(bins), "low": repr(float(low)), "high": repr(float(high))}
    return (pa.concat_tables(parts) if parts else _empty()).replace_schema_metadata(meta)


def _reduce(con: duckdb.DuckDBPyConnection, source: str, column: str, bins: int, classes_per_query: int,
            low: float, high: float, spill: Path) -> list[pa.Table]:
    """Checks the columns and the filter count, finds the labels, and reduces chunk by chunk."""
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if "label" not in types or column not in types:
        raise UsageError(f"filter_stats: the files have no 'label' or {column!r} column")
    if not types[column].endswith("[]"):
        raise UsageError(f"filter_stats: column {column!r} is {types[column]}, not a list of scores")
    found = con.execute(f"SELECT label, min(len({column})), max(len({column})) FROM {source} WHERE {column} "
                        "IS NOT NULL AND label IS NOT NULL GROUP BY label ORDER BY label").fetchall()
    lengths = {n for _, a, b in found for n in (a, b)}
    if len(lengths) > 1:
        raise UsageError(f"filter_stats: rows hold different numbers of filters {sorted(lengths)}; mix of layers?")
    labels = [r[0] for r in found]
    chunks = [labels[i:i + classes_per_query] for i in range(0, len(labels), classes_per_query)]
    sources = [source] * len(chunks) if len(chunks) < 2 else _partition(con, source, column, chunks, lengths.pop(),
                                                                         spill)
    return [_chunk(con, src, column, chunk[0], chunk[-1], bins, low, high)
            for src, chunk in zip(sources, chunks, strict=True)]


def _partition(con: duckdb.DuckDBPyConnection, source: str, column: str, chunks: list[list[int]], k: int,
               spill: Path) -> list[str]:
    """One pass over ``source`` that writes each chunk's rows (``label``, ``column``) to its own Parquet folder under
    ``spill``; the per-chunk sources that read them. Without it every chunk would decode every file (16 full scans
    for 1,000 classes). Buffers are sized to about 16 MiB of rows per thread and per open file."""
    con.register("chunk_of", pa.table({"label": pa.array([c for chunk in chunks for c in chunk], pa.int64()),
                                       "chunk": pa.array([i for i, chunk in enumerate(chunks) for _ in chunk],
                                                         pa.int32())}))
    rows = max(1024, (16 << 20) // (4 * k + 32))
    con.execute(f"SET partitioned_write_flush_threshold = {rows}")
    parts = spill / "parts"
    quoted = str(parts).replace("'", "''")
    con.execute(f"COPY (SELECT c.chunk, s.label, s.{column} FROM {source} s JOIN chunk_of c ON s.label = c.label "
                f"WHERE s.{column} IS NOT NULL) TO '{quoted}' (FORMAT parquet, PARTITION_BY (chunk), "
                f"ROW_GROUP_SIZE {rows})")
    con.unregister("chunk_of")
    return [f"read_parquet('{quoted}/chunk={i}/*.parquet', hive_partitioning = false)" for i in range(len(chunks))]


def _chunk(con: duckdb.DuckDBPyConnection, source: str, column: str, lo_label: int, hi_label: int, bins: int,
           low: float, high: float) -> pa.Table:
    """The :data:`STATS_SCHEMA` rows of the labels in ``[lo_label, hi_label]``, sorted: one DuckDB query whose
    result streams in record batches, each binned (:func:`histograms`) and reduced to its summary row at once."""
    reader = con.sql(_summary_sql(_values_sql(source, column)),
                     params={"lo": lo_label, "hi": hi_label, "ql": low / 100.0, "qh": high / 100.0}
                     ).to_arrow_reader(1024)
    parts = [_rows(batch, bins) for batch in reader]
    table = pa.concat_tables(parts) if parts else STATS_SCHEMA.empty_table()
    return table.sort_by([("label", "ascending"), ("filter", "ascending")])


def _rows(batch: pa.RecordBatch, bins: int) -> pa.Table:
    """:data:`STATS_SCHEMA` rows of one result batch (its sorted value lists binned, then dropped)."""
    g = batch.num_rows
    lo = batch.column("lo").to_numpy()
    hi = batch.column("hi").to_numpy()
    counts = batch.column("count").to_numpy()
    hist = histograms(batch.column("sorted").flatten().to_numpy(), counts, lo, hi, bins)
    q = batch.column("q").flatten().to_numpy().reshape(g, 2).astype(np.float64)
    offsets = pa.array(np.arange(0, g * bins + 1, bins, dtype=np.int32))
    return pa.table([batch.column("label").cast(pa.int64()), batch.column("filter").cast(pa.int32()),
                     pa.array(counts, pa.int64()), batch.column("mean").cast(pa.float64()),
                     pa.array(q[:, 0]), pa.array(q[:, 1]), pa.array(lo), pa.array(hi),
                     pa.ListArray.from_arrays(offsets, pa.array(hist.ravel()))], schema=STATS_SCHEMA)
