"""The ``xai`` command line: usage errors before Ray / Prefect, and a run over a dataset with a corrupt image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app, parse_params
from xcore.errors import UsageError

USAGE_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from flows.cli import app
data, model, out, nomask = sys.argv[1:5]
base = ["run", "--dataset", data, "--model", model, "--out", out, "--executor", "ray"]
cases = {
    "method": base + ["--method", "nosuch"],
    "layer": base + ["--method", "gradcam", "--param", "gradcam.layer=nolayer"],
    "dataset": ["run", "--dataset", data + "-missing", "--model", model, "--out", out, "--method", "gradient"],
    "checkpoint": ["run", "--dataset", data, "--model", model + ".missing", "--out", out, "--method", "gradient"],
    "modality": ["train", "--modality", "audio", "--out", out + "/m.pt"],
    "analyse": ["analyse", out + "/no-such-run"],
    "target": base + ["--method", "gradient", "--target", "bogus"],
    "reader": base + ["--method", "gradient", "--reader", "clips=localisation"],
    "metric_param": base + ["--method", "gradient", "-p", "deletion_insertion.nosuch=1"],
    "param_type": base + ["--method", "gradient", "-p", "deletion_insertion.steps=abc"],
    "numeric_layer": base + ["--method", "gradcam", "-p", "gradcam.layer=7"],
    "out_file": base[:6] + [model] + base[7:] + ["--method", "gradient"],
    "out_under_file": base[:6] + [model + "/runs"] + base[7:] + ["--method", "gradient"],
    "checkpoint_dir": ["run", "--dataset", data, "--model", data, "--out", out, "--method", "gradient"],
    "roar_method": ["roar", "--dataset", data, "--model", model, "--out", out, "-m", "nosuchmethod"],
    "roar_fraction": ["roar", "--dataset", data, "--model", model, "--out", out, "-m", "oracle", "-t", "1.5"],
    "roar_oracle": ["roar", "--dataset", nomask, "--model", model, "--out", out, "-m", "oracle"],
    "filters_scorer": ["filters", "--dataset", data, "--model", model, "--out", out, "-s", "nosuchscorer"],
    "filters_layer": ["filters", "--dataset", data, "--model", model, "--out", out, "--layer", "features.99"],
    "filters_param": ["filters", "--dataset", data, "--model", model, "--out", out, "-s", "l1", "-p", "l1.k=2"],
}
res = {k: CliRunner().invoke(app, v) for k, v in cases.items()}
print(json.dumps({"results": {k: [r.exit_code, r.stderr, r.stdout] for k, r in res.items()},
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "prefect"))}))
"""


def test_usage_errors_exit_2_before_ray_or_prefect(tiny_data, tiny_model, tmp_path):
    env = {**os.environ, "RAY_ENABLE_AUTO_CONNECT": "0"}
    nomask = tmp_path / "nomask"
    shutil.copytree(tiny_data, nomask, ignore=shutil.ignore_patterns("*_masks"))
    proc = subprocess.run([sys.executable, "-c", USAGE_SCRIPT, str(tiny_data), str(tiny_model),
                           str(tmp_path / "runs"), str(nomask)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    expected = {"method": "nosuch", "layer": "nolayer", "dataset": "-missing", "checkpoint": ".missing",
                "modality": "audio", "analyse": "no-such-run", "target": "bogus", "reader": "clips",
                "metric_param": "nosuch", "param_type": "steps='abc' does not fit its type: expected int",
                "numeric_layer": "unknown layer '7'", "out_file": "is a file", "out_under_file": "cannot be created",
                "checkpoint_dir": "is a directory", "roar_method": "nosuchmethod",
                "roar_fraction": "fractions must be distinct values in [0, 1]",
                "roar_oracle": "the oracle needs ground-truth masks", "filters_scorer": "nosuchscorer",
                "filters_layer": "features.99", "filters_param": "'k'"}
    for case, needle in expected.items():
        code, stderr, stdout = report["results"][case]
        lines = stderr.strip().splitlines()
        assert code == 2, (case, stderr, stdout)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (case, stderr)
    assert not (tmp_path / "runs").exists()


def test_parse_params():
    got = parse_params(["gradcam", "random"], ["gradcam.layer=features.3", "random.seed=7"])
    assert got == {"gradcam": {"layer": "features.3"}, "random": {"seed": 7}}
    both = parse_params(["gradcam", "weak_localisation"], ["weak_localisation.volume=false"])
    assert both == {"gradcam": {}, "weak_localisation": {"volume": False}}
    for bad in ("gradcam=1", "gradcam.layer", "gradient.x=1"):
        with pytest.raises(UsageError):
            parse_params(["gradcam"], [bad])


@pytest.mark.slow
def test_corrupt_image_gives_one_error_row_and_exit_0(tiny_data, tiny_model, tmp_path, prefect_harness):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "val").glob("*.JPEG"))[3]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated JPEG
    out = tmp_path / "runs"
    args = ["run", "--dataset", str(data), "--model", str(tiny_model), "--out", str(out), "--method", "gradient",
            "--method", "centre", "--shard-size", "4", "--batch-size", "4", "--executor", "local",
            "--run-id", "corrupt"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert "errors: 1" in res.stdout
    run = out / "corrupt"
    q = CliRunner().invoke(app, ["query", str(run), "SELECT stage, method, sample_id FROM errors"])
    assert q.exit_code == 0 and "load" in q.stdout and victim.stem in q.stdout
    from xcore.io.query import connect

    con = connect(run)
    errors = con.execute("SELECT sample_id, stage, method FROM errors").fetchall()
    assert errors == [(victim.stem, "load", None)]
    counts = con.execute("SELECT status, count(*) FROM metrics GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [("error", 2), ("ok", 18)]
    assert con.execute("SELECT count(*) FROM explanations").fetchall() == [(18,)]
    assert con.execute("SELECT count(DISTINCT sample_id) FROM metrics").fetchall() == [(10,)]
    summary = CliRunner().invoke(app, ["summary", str(run)])
    assert summary.exit_code == 0 and "gradient" in summary.stdout and "centre" in summary.stdout
    info = json.loads((run / "run.json").read_text())
    assert info["summary"]["errors"] == 1 and info["run_id"] == "corrupt"
    # the same command again: every shard is complete, nothing is recomputed
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0
    assert json.loads((run / "run.json").read_text())["summary"]["shards_computed"] == 0
    assert Path(run / "_manifests" / "failed.json").is_file()
