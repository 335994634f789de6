"""Queries across the runs under one root (xcore.io.catalog, ``xai query ROOT``): five committed runs written by the
test with ``RunLayout.write_shard`` (no training, no engine) and realistic ``run.json`` files. A cross-run query
equals each run's own ``method_summary`` and numpy's means of the values written; stray, uncommitted and foreign
files, folders that are not runs and a second copy of a run key are not counted; the ``runs`` table is exact."""

from __future__ import annotations

import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from flows.cli_query import query
from xcore.core.shards import Shard
from xcore.errors import UsageError
from xcore.io.catalog import RUNS, connect_root, run_dirs, runs_table
from xcore.io.parquet import write_atomic
from xcore.io.query import connect, method_summary, sql_list
from xcore.io.runs import RunLayout, write_json_atomic

KEYS = {"A": "a1a1a1a1a1a1a1a1", "B": "b2b2b2b2b2b2b2b2", "C": "c3c3c3c3c3c3c3c3", "D": "d4d4d4d4d4d4d4d4",
        "E": "e5e5e5e5e5e5e5e5"}
JAN1 = 1767225600.0  # 2026-01-01T00:00:00Z
ERRORS = pa.schema([("sample_id", pa.string()), ("index", pa.int64()), ("stage", pa.string()),
                    ("method", pa.string()), ("error_type", pa.string()), ("message", pa.string()),
                    ("run_key", pa.string())])
CROSS = ("SELECT r.finished, m.method, avg(m.deletion_auc) FROM metrics m JOIN runs r USING (run_key) "
         "GROUP BY 1, 2 ORDER BY 1, 2")


def _rows(key: str, method: str, shard: Shard, rng: np.random.Generator, wide: bool) -> list[dict[str, Any]]:
    """Metrics rows as the explain worker writes them; every 5th sample (index % 5 == 3) failed. ``wide``: the
    faithfulness columns and no insertion AUC (another schema)."""
    out = []
    for i in range(shard.start, shard.stop):
        ok = i % 5 != 3
        row: dict[str, Any] = {"sample_id": f"s{i}", "index": i, "method": method,
                               "deletion_auc": float(rng.random()) if ok else None}
        if wide:
            row |= {"confidence": 0.9 if ok else None, "masked_confidence": 0.5 if ok else None}
        else:
            row["insertion_auc"] = float(rng.random()) if ok else None
        out.append({**row, "status": "ok" if ok else "error", "run_key": key})
    return out


def _commit(run: Path, key: str, shard: Shard, methods: list[str], rng: np.random.Generator,
            wide: bool = False) -> dict[str, list[dict[str, Any]]]:
    """One committed shard of ``metrics`` (one file per method) and ``errors``; returns the rows per method."""
    layout, data = RunLayout(run), {m: _rows(key, m, shard, rng, wide) for m in methods}
    files = {layout.table_path("metrics", shard, m): pa.Table.from_pylist(rows) for m, rows in data.items()}
    errors = [{"sample_id": r["sample_id"], "index": r["index"], "stage": "explain", "method": m,
               "error_type": "ValueError", "message": "x", "run_key": key}
              for m, rows in data.items() for r in rows if r["status"] == "error"]
    files[layout.table_path("errors", shard)] = pa.Table.from_pylist(errors, schema=ERRORS)
    layout.write_shard(shard, key, files, {"ok": sum(r["status"] == "ok" for rows in data.values() for r in rows)})
    return data


def _run_json(run: Path, key: str, methods: list[str], summary: dict[str, Any], finished: float, wall: float,
              split: str = "val", digest: str | None = None) -> None:
    """A ``run.json`` as the explain job writes it (config, resolved, versions, timings, summary, finished_at)."""
    resolved: dict[str, Any] = {"methods": {m: {} for m in methods}, "metrics": {"deletion_insertion": {"steps": 8}},
                                "model": {"arch": "smallcnn", "num_classes": 6}, "modality": "image"}
    if digest:
        resolved["model_digest"] = digest
    write_json_atomic(run / "run.json", {
        "run_key": key, "run_id": run.name, "kind": "explain", "git_sha": None, "resolved": resolved,
        "config": {"dataset": "/data/shapes", "dataset_kind": "imagenet", "split": split, "model": "/models/cnn.pt",
                   "methods": {m: {} for m in methods}, "metrics": {"deletion_insertion": {"steps": 8}},
                   "out": str(run.parent), "run_id": None, "seed": 0, "shard_size": 4, "target": "pred"},
        "versions": {"xcore": "0.1.0", "duckdb": "2.0.1"}, "finished_at": finished,
        "timings": {"wall_s": wall, "shard_compute_s": 1.0, "samples_per_s": 2.0},
        "summary": {"run_key": key, "run_dir": str(run), "samples": 8, "ok_rows": 0, "error_rows": 0, "errors": 0,
                    "methods": [], **summary}})


def _stats(run: Path, key: str, rows: list[dict[str, Any]]) -> None:
    """A reduced table, ``analysis/filter_stats.parquet`` (its run key in the footer only)."""
    write_atomic(pa.Table.from_pylist(rows), run / "analysis" / "filter_stats.parquet", run_key=key, shard_id=-1)


Rows = dict[str, dict[str, list[dict[str, Any]]]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Rows]:
    """The root and the metrics rows written per run (A, B, C, E; D committed nothing), method by method."""
    base, rng = tmp_path_factory.mktemp("root") / "runs", np.random.default_rng(0)
    run = {"A": base / "nightly-1", "B": base / "nightly-2", "C": base / "weekly" / "w-1", "D": base / "failed",
           "E": base / "in-progress"}
    data: Rows = {}
    a = run["A"]
    data["A"] = _commit(a, KEYS["A"], Shard(0, 0, 4), ["gradcam", "random"], rng)
    for m, rows in _commit(a, KEYS["A"], Shard(1, 4, 8), ["gradcam", "random"], rng).items():
        data["A"][m] += rows
    _commit(a, "f0f0f0f0f0f0f0f0", Shard(9, 36, 40), ["gradcam"], rng)  # a record of another run key
    write_atomic(pa.Table.from_pylist(_rows(KEYS["A"], "gradcam", Shard(2, 8, 12), rng, False)),  # never committed
                 a / "metrics" / "method=gradcam" / "shard-000002.parquet", run_key=KEYS["A"], shard_id=2)
    shutil.copy(a / "metrics" / "method=gradcam" / "shard-000000.parquet",
                a / "metrics" / "method=gradcam" / "shard-000000.backup.parquet")
    _run_json(a, KEYS["A"], ["gradcam", "random"], {"shards": 2, "shards_complete": 2, "shards_failed": []},
              JAN1 + 7200, 90.5, digest="0123456789abcdef")
    _stats(a, KEYS["A"], [{"label": 0, "filter": 1, "mean": 0.25}, {"label": 1, "filter": 1, "mean": 0.5}])
    data["B"] = _commit(run["B"], KEYS["B"], Shard(0, 0, 4), ["centre", "gradcam"], rng, wide=True)
    _run_json(run["B"], KEYS["B"], ["centre", "gradcam"], {"shards": 2, "shards_complete": 1, "shards_failed": [1]},
              JAN1 + 86400 + 7200, 60.0)
    data["C"] = _commit(run["C"], KEYS["C"], Shard(0, 0, 4), ["gradcam"], rng)
    _run_json(run["C"], KEYS["C"], ["gradcam"], {"shards": 1, "shards_complete": 1, "shards_failed": []},
              JAN1 + 3 * 86400, 30.25, split="train")
    _stats(run["C"], KEYS["C"], [{"label": 2, "filter": 0, "mean": 1.5, "p999": 3.0}])
    _run_json(run["D"], KEYS["D"], ["gradcam"], {"shards": 2, "shards_complete": 0, "shards_failed": [0, 1]},
              JAN1 + 4 * 86400, 5.0)
    _stats(run["D"], KEYS["D"], [{"label": 9, "filter": 9, "mean": 9.0}])  # stale: D committed nothing
    data["E"] = _commit(run["E"], KEYS["E"], Shard(0, 0, 4), ["gradient"], rng)
    write_json_atomic(run["E"] / "_manifests" / "plan.json", {"run_key": KEYS["E"], "kind": "explain", "total": 2,
                                                              "todo": [0, 1], "complete": []})
    for folder in (base / "data" / "val", base / "weekly" / "notes", base / ".tmp-abc"):  # not runs
        folder.mkdir(parents=True)
        shutil.copy(a / "metrics" / "method=random" / "shard-000001.parquet", folder / "x.parquet")
    (base / "README.txt").write_text("nightly runs\n")
    return base, data


def _ok_means(rows: list[dict[str, Any]], column: str) -> float:
    return float(np.mean([r[column] for r in rows if r["status"] == "ok"]))


def test_cross_run_query_equals_each_runs_method_summary_and_numpy(root: tuple[Path, Rows]) -> None:
    base, data = root
    con = connect_root(base)
    got = {(f, m): v for f, m, v in con.execute(CROSS).fetchall()}
    finished = dict(con.execute("SELECT run_key, finished FROM runs").fetchall())
    expect = {}
    for name, run in (("A", "nightly-1"), ("B", "nightly-2"), ("C", "weekly/w-1"), ("E", "in-progress")):
        for s in method_summary(base / run):
            expect[(finished[KEYS[name]], s["method"])] = s["deletion_auc"]
            assert s["deletion_auc"] == pytest.approx(_ok_means(data[name][s["method"]], "deletion_auc"), rel=1e-12)
    assert got.keys() == expect.keys() and len(got) == 2 + 2 + 1 + 1
    for k, v in expect.items():
        assert got[k] == pytest.approx(v, rel=1e-12)
    # counts per run and method: only the committed rows of each run's own key
    counts = dict(((k, m), n) for k, m, n in con.execute(
        "SELECT run_key, method, count(*) FILTER (WHERE status = 'ok') FROM metrics GROUP BY 1, 2").fetchall())
    assert counts == {(KEYS[n], m): sum(r["status"] == "ok" for r in rows)
                      for n, by in data.items() for m, rows in by.items()}
    assert counts[(KEYS["A"], "gradcam")] == 7  # samples 0..7 less sample 3, not the backup copy nor shard 2
    errors = dict(con.execute("SELECT run_key, count(*) FROM errors GROUP BY 1").fetchall())
    assert errors == {KEYS["A"]: 2, KEYS["B"]: 2, KEYS["C"]: 1, KEYS["E"]: 1}  # not run f0f0...'s
    con.close()


def test_runs_table_is_exact(root: tuple[Path, Rows]) -> None:
    base, _ = root
    common = {"kind": "explain", "dataset": "/data/shapes", "dataset_kind": "imagenet", "model": "/models/cnn.pt",
              "metrics": ["deletion_insertion"], "xcore_version": "0.1.0", "model_digest": None, "split": "val"}
    expect = [
        {**common, "run_key": KEYS["D"], "run_id": "failed", "dir": str(base / "failed"), "methods": ["gradcam"],
         "started": datetime(2026, 1, 4, 23, 59, 55), "finished": datetime(2026, 1, 5), "status": "failed",
         "shards_committed": 0},
        {**common, "run_key": KEYS["E"], "run_id": "in-progress", "dir": str(base / "in-progress"), "kind": "explain",
         "dataset": None, "dataset_kind": None, "model": None, "split": None, "methods": [], "metrics": [],
         "xcore_version": None, "started": None, "finished": None, "status": "unfinished", "shards_committed": 1},
        {**common, "run_key": KEYS["A"], "run_id": "nightly-1", "dir": str(base / "nightly-1"),
         "methods": ["gradcam", "random"], "model_digest": "0123456789abcdef",
         "started": datetime(2026, 1, 1, 1, 58, 29, 500000), "finished": datetime(2026, 1, 1, 2), "status": "complete",
         "shards_committed": 2},
        {**common, "run_key": KEYS["B"], "run_id": "nightly-2", "dir": str(base / "nightly-2"),
         "methods": ["centre", "gradcam"], "started": datetime(2026, 1, 2, 1, 59), "finished": datetime(2026, 1, 2, 2),
         "status": "partial", "shards_committed": 1},
        {**common, "run_key": KEYS["C"], "run_id": "w-1", "dir": str(base / "weekly" / "w-1"), "methods": ["gradcam"],
         "split": "train", "started": datetime(2026, 1, 3, 23, 59, 29, 750000), "finished": datetime(2026, 1, 4),
         "status": "complete", "shards_committed": 1}]
    assert run_dirs(base) == [base / d for d in ("failed", "in-progress", "nightly-1", "nightly-2", "weekly/w-1")]
    assert runs_table(base) == expect
    con = connect_root(base)
    assert con.execute("DESCRIBE runs").fetchall() == [(c, t, "YES", None, None, None) for c, t in RUNS]
    cols = [c for c, _ in RUNS]
    got = con.execute("SELECT * FROM runs ORDER BY dir").fetchall()
    assert [dict(zip(cols, r, strict=True)) for r in got] == expect
    con.close()


def test_schemas_that_differ_union_by_name(root: tuple[Path, Rows]) -> None:
    base, data = root
    con = connect_root(base)
    got = con.execute("SELECT run_key, count(insertion_auc), count(confidence), avg(masked_confidence) FROM metrics "
                      "GROUP BY 1 ORDER BY 1").fetchall()
    assert got == [(KEYS["A"], 14, 0, None), (KEYS["B"], 0, 6, 0.5), (KEYS["C"], 3, 0, None), (KEYS["E"], 3, 0, None)]
    (a_ins,) = con.execute("SELECT avg(insertion_auc) FROM metrics WHERE run_key = ? AND method = 'random'",
                           [KEYS["A"]]).fetchone()  # type: ignore[misc]
    assert a_ins == pytest.approx(_ok_means(data["A"]["random"], "insertion_auc"), rel=1e-12)
    # the reduced tables of the runs with committed shards, with their run_key added (D's stale file is not read)
    stats = con.execute("SELECT run_key, label, mean, p999 FROM filter_stats ORDER BY 1, 2").fetchall()
    assert stats == [(KEYS["A"], 0, 0.25, None), (KEYS["A"], 1, 0.5, None), (KEYS["C"], 2, 1.5, 3.0)]
    con.close()


def test_a_run_key_in_two_folders_is_read_once(root: tuple[Path, Rows], tmp_path: Path) -> None:
    base, _ = root
    shutil.copytree(base / "nightly-1", tmp_path / "nightly-1")
    copy = tmp_path / "nightly-1-copy"  # the same run key under another --run-id, one shard only
    shutil.copytree(base / "nightly-1", copy)
    (copy / "_shards" / "shard-000001.json").unlink()
    assert [r["dir"] for r in runs_table(tmp_path)] == [str(tmp_path / "nightly-1")]
    con = connect_root(tmp_path)
    assert con.execute("SELECT count(*) FROM metrics").fetchone() == (2 * 8,)
    assert con.execute("SELECT count(*) FROM filter_stats").fetchone() == (2,)
    con.close()


def test_connect_of_one_run_is_unchanged(root: tuple[Path, Rows]) -> None:
    """``connect`` builds the very views it built before the shared ``read_committed`` helper (the old SQL)."""
    base, _ = root
    run = base / "nightly-1"
    files = RunLayout(run).committed_files(KEYS["A"])
    old = duckdb.connect()
    for table in ("errors", "explanations", "metrics"):
        if table not in files:
            old.execute(f"CREATE VIEW {table} AS SELECT NULL::VARCHAR AS sample_id, NULL::VARCHAR AS method, "
                        "NULL::VARCHAR AS status, NULL::DOUBLE AS deletion_auc, "
                        "NULL::DOUBLE AS insertion_auc WHERE false")
            continue
        keys = sorted({p.parent.name.partition("=")[0] for p in files[table] if "=" in p.parent.name})
        hive = (", hive_types = {" + ", ".join(f"'{k}': 'VARCHAR'" for k in keys) + "}") if keys else ""
        old.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({sql_list(files[table])}, "
                    f"hive_partitioning = true, union_by_name = true{hive})")
    stats = sql_list([run / "analysis" / "filter_stats.parquet"])
    old.execute(f"CREATE VIEW filter_stats AS SELECT * FROM read_parquet({stats})")
    new = connect(run)
    sql = "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY 1"
    assert new.execute(sql).fetchall() == old.execute(sql).fetchall()
    assert new.execute("SELECT count(*) FROM metrics").fetchone() == (16,)
    new.close()
    old.close()


def test_empty_root_and_bad_roots(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    con = connect_root(tmp_path)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert con.execute(CROSS).fetchall() == []  # the empty views still carry run_key
    con.close()
    with pytest.raises(UsageError, match="not a folder of runs"):
        connect_root(tmp_path / "missing")
    (tmp_path / "data" / "two").mkdir()  # commit records of two run keys and no run.json: which run is it?
    for key in ("k1", "k2"):
        RunLayout(tmp_path / "data" / "two").write_shard(Shard(int(key[1]), 0, 1), key, {}, {})
    with pytest.raises(UsageError, match="several runs"):
        runs_table(tmp_path)


def _cli(args: list[str]) -> Any:
    app = typer.Typer(add_completion=False)
    app.command()(query)
    app.command("noop")(lambda: None)  # two commands keep ``query`` a subcommand
    return CliRunner().invoke(app, ["query", *args])


def test_cli_query_on_a_root_a_run_and_neither(root: tuple[Path, Rows], tmp_path: Path) -> None:
    base, _ = root
    res = _cli([str(base), "SELECT count(*) AS n FROM metrics m JOIN runs r USING (run_key) WHERE r.status <> 'x'"])
    assert res.exit_code == 0 and re.search(r"│\s+32\s+│", res.output)  # 16 + 8 + 4 + 4 committed rows
    res = _cli([str(base / "nightly-1"), "SELECT count(*) AS n FROM metrics"])
    assert res.exit_code == 0 and re.search(r"│\s+16\s+│", res.output)
    res = _cli([str(base / "data"), "SELECT 1"])
    assert res.exit_code == 2 and "neither a run directory" in res.output
    res = _cli([str(base), "SELEC 1"])
    assert res.exit_code == 2
    bad = tmp_path / "runs"  # a committed file DuckDB cannot read: exit 1
    shutil.copytree(base / "nightly-2", bad / "nightly-2")
    target = next((bad / "nightly-2" / "metrics" / "method=centre").glob("shard-*.parquet"))
    target.write_bytes(target.read_bytes()[:40])
    res = _cli([str(bad), "SELECT count(*) FROM metrics"])
    assert res.exit_code == 1 and "xai verify" in res.output
