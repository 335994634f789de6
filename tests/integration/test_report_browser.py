"""``xai report`` end to end: real runs made through ``xai run`` in process (an image run on the tiny shapes, a video
run on tiny synthetic UCF-101 clips, a faithfulness-only run whose dataset is then moved), their reports written by
:func:`xcore.report.write_report` / the ``report`` command, and the pages opened in a real headless Chromium
(Playwright): no console error, every image decodes, the image counts, the summary cells and an overlay's pixels are
what the run's committed tables say, and a full-page screenshot is kept under the run."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_report import report
from xcore.io.atomic import TEMP_NAME
from xcore.io.parquet import decode_heatmap
from xcore.io.query import connect, method_summary
from xcore.report import write_report
from xcore.report.figures import mean_curves

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
IMAGE_METHODS = ["centre", "gradcam", "gradient"]  # grid columns, sorted by name
SAMPLES = 6


def xai(args: list[str]) -> Any:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return res


@pytest.fixture(scope="module")
def image_run(tiny_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-image") / "runs"
    xai(["run", "--dataset", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--run-id", "img",
         "-m", "gradient", "-m", "gradcam", "-p", "gradcam.layer=features", "-m", "centre",
         "--metric", "deletion_insertion", "--executor", "local", "--shard-size", "4", "--batch-size", "4"])
    return out / "img"


@pytest.fixture(scope="module")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic UCF-101 test clips (20-24 frames, 16 per clip), an untrained small3d with a random head."""
    from xcore.data import UCF101Reader, generate_videos
    from xcore.models import build_model, save_checkpoint

    tmp = tmp_path_factory.mktemp("report-video")
    root = generate_videos(tmp / "ucf", train_groups=1, test_groups=1, clips=1, frames=(20, 24))
    reader = UCF101Reader(root, "test")
    torch.manual_seed(0)
    model = build_model("small3d", 6, width=4)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
    ckpt = save_checkpoint(tmp / "small3d.pt", model.eval(), {
        "arch": "small3d", "num_classes": 6, "classes": reader.classes, "arch_kwargs": {"width": 4},
        "dataset_kind": "ucf101", "preset": "kinetics", "clip_len": 16, "input_size": [3, 16, 112, 112]})
    xai(["run", "--dataset", str(root), "--model", str(ckpt), "--out", str(tmp / "runs"), "--run-id", "vid",
         "--split", "test", "-m", "gradcam", "-m", "centre", "--metric", "deletion_insertion",
         "-p", "deletion_insertion.steps=8", "--executor", "local", "--shard-size", "3", "--batch-size", "3"])
    return tmp / "runs" / "vid"


def open_in_chromium(html: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``html`` in headless Chromium (fresh profile): console errors, page errors, every image's state and
    source, the summary table's cells; a full-page screenshot to ``screenshot``."""
    assert CHROMIUM.is_file(), (f"{CHROMIUM} is missing: the report test needs the system Chromium (the test command "
                                "installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xcore-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_ARGS)
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(html.resolve().as_uri(), wait_until="load")
            got = page.evaluate("""() => ({
                images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,
                    height: i.naturalHeight, alt: i.alt, src: i.src, grid: !!i.closest('table.grid'),
                    curves: !!i.closest('#curves')})),
                header: Array.from(document.querySelectorAll('table.grid thead th')).map(t => t.textContent),
                summary: Array.from(document.querySelectorAll('table.summary'))[0] ?
                    Array.from(document.querySelectorAll('table.summary')[0].querySelectorAll('tbody tr')).map(
                        r => Object.fromEntries(Array.from(r.cells).map(c => [c.dataset.col, c.textContent]))) : []
            })""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            ctx.close()
    return {**got, "errors": errors}


def decode(src: str) -> Any:
    from PIL import Image

    head, _, data = src.partition(",")
    assert head in ("data:image/png;base64", "data:image/gif;base64"), head
    return Image.open(io.BytesIO(base64.b64decode(data)))


def check_page(got: dict[str, Any], run: Path, screenshot: Path) -> None:
    assert got["errors"] == []
    assert got["images"] and all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in got["images"])
    want = {m["method"]: (f"{m['deletion_auc']:.4f}", f"{m['insertion_auc']:.4f}") for m in method_summary(run)}
    assert {r["method"]: (r["deletion_auc"], r["insertion_auc"]) for r in got["summary"]} == want
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000


def test_image_report_in_chromium(image_run: Path) -> None:
    path = write_report(image_run)
    assert path == image_run / "report.html"
    assert not [p.name for p in image_run.iterdir() if TEMP_NAME.match(p.name)]
    got = open_in_chromium(path, image_run / "report.png")
    check_page(got, image_run, image_run / "report.png")
    grid = [i for i in got["images"] if i["grid"]]
    assert got["header"] == ["sample", "input", *IMAGE_METHODS]
    assert len(grid) == SAMPLES * (len(IMAGE_METHODS) + 1)
    assert sum(i["curves"] for i in got["images"]) == 1
    assert len(got["images"]) == len(grid) + 1  # an image run writes no analysis figures

    # the gradcam cell of sample 0: the stored map, min-max normalised, under the reopened image (0.5 / 0.5 jet)
    import matplotlib
    from PIL import Image

    from xcore.data import ImageNetReader
    from xcore.datasets.imagenet import transform_of
    from xcore.viz import denormalise_image

    info = json.loads((image_run / "run.json").read_text())
    transform = transform_of(info["resolved"]["model"])
    sample = ImageNetReader(info["config"]["dataset"], split="val", transform=transform).load(0)
    con = connect(image_run)
    cols = "heatmap, scale, shape, dtype"
    row = dict(zip(cols.split(", "), con.execute(f"SELECT {cols} FROM explanations WHERE method = 'gradcam' AND "
                                                   "index = 0").fetchone(), strict=True))
    heat = decode_heatmap(row)  # float32, as the report normalises it
    unit = (heat - heat.min()) / (heat.max() - heat.min())
    blend = 0.5 * denormalise_image(sample.x, transform.mean, transform.std) + \
        0.5 * matplotlib.colormaps["jet"](unit)[..., :3].astype(np.float32)
    expected = np.asarray(Image.fromarray((np.clip(blend, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(
        (128, 128), Image.Resampling.BILINEAR), dtype=np.int16)
    cell = next(i for i in grid if i["alt"] == f"{sample.sample_id} gradcam")
    shown = np.asarray(decode(cell["src"]).convert("RGB"), dtype=np.int16)
    assert np.abs(shown - expected).max() <= 1

    # the curves drawn are the tables' curves: their trapezoid areas over k_i / P are the summary's mean AUCs
    curves = mean_curves(con)
    lists = con.execute("SELECT method, deletion_curve FROM metrics WHERE status = 'ok'").fetchall()
    con.close()
    for m in method_summary(image_run):
        c = curves[m["method"]]
        mine = np.array([v for method, v in lists if method == m["method"]], dtype=np.float64)
        np.testing.assert_allclose(c["deletion"], mine.mean(axis=0), rtol=1e-12)
        assert c["fractions"][0] == 0 and c["fractions"][-1] == 1 and len(c["fractions"]) == 29
        np.testing.assert_allclose(np.trapezoid(c["deletion"], c["fractions"]), m["deletion_auc"], rtol=1e-6)
        np.testing.assert_allclose(np.trapezoid(c["insertion"], c["fractions"]), m["insertion_auc"], rtol=1e-6)


def test_video_report_in_chromium(video_run: Path) -> None:
    path = write_report(video_run)
    got = open_in_chromium(path, video_run / "report.png")
    check_page(got, video_run, video_run / "report.png")
    grid = [i for i in got["images"] if i["grid"]]
    assert got["header"] == ["sample", "input", "centre", "gradcam"]
    assert len(grid) == SAMPLES * 3 and len(got["images"]) == len(grid) + 1
    for cell in grid:  # a 16-frame clip per (sample, column): 120 ms a frame (PIL merges repeated frames)
        clip = decode(cell["src"])
        assert clip.format == "GIF" and clip.size == (96, 96) and 2 <= clip.n_frames <= 16
        shown = 0
        for f in range(clip.n_frames):
            clip.seek(f)
            shown += clip.info["duration"]
        assert shown == 16 * 120


def test_report_is_self_contained(image_run: Path) -> None:
    html = write_report(image_run, samples=2).read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", html, re.IGNORECASE)
    srcs = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", html)
    assert len(srcs) == 2 * (len(IMAGE_METHODS) + 1) + 1 and all(s.startswith("data:image/") for s in srcs)


def test_report_command_degrades_and_rejects_a_non_run(tiny_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    """A run without curves has no curves section; its dataset moved away gives one line instead of the grid; a
    path that is not a run exits 2 with one line."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "runs"
    xai(["run", "--dataset", str(data), "--model", str(tiny_model), "--out", str(out), "--run-id", "faith",
         "-m", "centre", "--metric", "faithfulness", "--executor", "local", "--shard-size", "5", "--batch-size", "5"])
    data.rename(tmp_path / "moved")
    cli = typer.Typer()
    cli.callback()(lambda: None)
    cli.command()(report)
    res = CliRunner().invoke(cli, ["report", str(out / "faith"), "--samples", "3"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert res.stdout.strip() == str(out / "faith" / "report.html")
    html = (out / "faith" / "report.html").read_text(encoding="utf-8")
    assert 'id="curves"' not in html and "<img" not in html and 'class="grid"' not in html
    notes = re.findall(r'<p class="note">([^<]*)</p>', html)
    assert notes == [f"no overlays: the run&#x27;s dataset could not be reopened (dataset root {data} does not "
                     "exist)"]
    assert 'data-col="AD"' in html and 'data-col="IIC"' in html

    (tmp_path / "empty").mkdir()
    bad = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert bad.exit_code == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [f"error: {tmp_path / 'empty'} is not a run directory (no run.json, _shards "
                                       "or _manifests/plan.json)"]
