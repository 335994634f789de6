"""Queries across real runs (issue 16, part 3): two ``xai run`` invocations with other methods and seeds under one
``--out`` root, then ``xai query ROOT`` (:func:`flows.cli_query.query`) and :func:`xcore.io.catalog.connect_root`:
the cross-run numbers equal each run's own ``method_summary`` and the ``runs`` table describes both runs."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_query import query
from xcore.io.catalog import connect_root, runs_table
from xcore.io.query import method_summary
from xcore.models import weights_digest

pytestmark = pytest.mark.slow

CROSS = ("SELECT r.run_id, r.finished, m.method, avg(m.deletion_auc), avg(m.insertion_auc), "
         "count(*) FILTER (WHERE m.status = 'ok') FROM metrics m JOIN runs r USING (run_key) GROUP BY 1, 2, 3 "
         "ORDER BY 2, 3")


def test_query_over_a_root_of_two_runs_equals_the_per_run_summaries(tiny_data: Path, tiny_model: Path,
                                                                     tmp_path: Path, prefect_harness: None) -> None:
    out = tmp_path / "runs"
    base = ["run", "--dataset", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--shard-size", "4",
            "--batch-size", "4", "--executor", "local", "-p", "deletion_insertion.steps=8"]
    for extra in (["-m", "gradient", "-m", "random", "--run-id", "nightly-1"],
                  ["-m", "gradient", "-m", "random", "-m", "centre", "--seed", "1", "--run-id", "nightly-2"]):
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 0, (res.stdout, res.stderr)
    (out / "notes").mkdir()  # not a run

    runs = runs_table(out)
    assert [r["run_id"] for r in runs] == ["nightly-1", "nightly-2"]
    assert runs[0]["run_key"] != runs[1]["run_key"]  # the seed is part of the run key
    assert [r["methods"] for r in runs] == [["gradient", "random"], ["centre", "gradient", "random"]]
    for r in runs:
        assert (r["status"], r["shards_committed"], r["kind"], r["split"], r["metrics"]) == (
            "complete", 3, "explain", "val", ["deletion_insertion"])
        assert (r["dataset"], r["model"], r["dir"]) == (str(tiny_data), str(tiny_model), str(out / r["run_id"]))
        assert isinstance(r["started"], datetime) and r["started"] <= r["finished"]
        assert r["model_digest"] == weights_digest(tiny_model)  # recorded by the job in run.json
    assert runs[0]["finished"] < runs[1]["finished"]

    con = connect_root(out)
    got = con.execute(CROSS).fetchall()
    con.close()
    expect = [(r["run_id"], r["finished"], s["method"], s["deletion_auc"], s["insertion_auc"], s["ok"])
              for r in runs for s in method_summary(out / r["run_id"])]
    assert len(got) == len(expect) == 5
    for g, e in zip(got, expect, strict=True):
        assert g[:3] == e[:3] and g[5] == e[5] == 10
        assert g[3:5] == (pytest.approx(e[3], rel=1e-12), pytest.approx(e[4], rel=1e-12))

    cli = typer.Typer(add_completion=False)
    cli.command()(query)
    cli.command("noop")(lambda: None)
    res = CliRunner().invoke(cli, ["query", str(out), "SELECT count(*) AS n FROM metrics JOIN runs USING (run_key)"])
    assert res.exit_code == 0 and re.search(r"│\s+50\s+│", res.stdout), res.output  # (2 + 3 methods) x 10 samples
    res = CliRunner().invoke(cli, ["query", str(out / "nightly-1"), "SELECT count(*) AS n FROM metrics"])
    assert res.exit_code == 0 and re.search(r"│\s+20\s+│", res.stdout), res.output
