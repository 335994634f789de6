"""Throughput of the explain flow on the Ray actor pool: 1 vs 2 CPU actors, and the orchestration overhead.

Runs the user's command, ``xai run``, on the embedded default image data (the shapes set, trained SmallCNN; both
made here when missing, as ``xai demo`` makes them) with Grad-CAM + gradient and deletion / insertion:

  (a) ``--executor local``: the same work in process (one process, torch's default threads);
  (b) ``--executor ray --actors 1``: one 1-CPU actor with one thread;
  (c) ``--executor ray --actors 2``: two 1-CPU actors, one thread each;
  (d) ``xai run`` with its defaults (``--executor ray``: one 1-CPU actor per core of the local instance).

Prints, per variant, the command's wall time, the flow's samples/s (``run.json`` timings: job creation to
reduce, actor start-up included) and the effective ms/sample (sum of shard compute time / samples / workers),
then the ratios: (c)/(b) samples/s (goal >= 1.7) and (d) wall vs (a) wall (goal <= +10 % on a run >= 2 min).

    .venv/bin/python benchmarks/scaling.py [--split train] [--shard-size 64] [--variants local,ray1,ray2,default]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
XAI = str(Path(sys.executable).with_name("xai"))
VARIANTS = {"local": ["--executor", "local"], "ray1": ["--executor", "ray", "--actors", "1"],
            "ray2": ["--executor", "ray", "--actors", "2"], "default": []}


def demo_inputs() -> tuple[Path, Path]:
    """The default image data and demo model (generated / trained here when missing, like ``xai demo``)."""
    from xcore.datasets import modalities

    kind = modalities()["image"]
    root, model = kind.generate(), ROOT / kind.demo.model
    if not model.is_file():
        print(f"training the demo model -> {model}", flush=True)
        kind.train(root, model)
    return root, model


def run(name: str, data: Path, model: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [XAI, "run", "--dataset", str(data), "--model", str(model), "--split", args.split,
           "--shard-size", str(args.shard_size), "--out", str(out), "--run-id", name,
           *[a for m in args.methods.split(",") for a in ("--method", m)], "--metric", "deletion_insertion",
           *VARIANTS[name]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    info = json.loads((out / name / "run.json").read_text())
    shards = [json.loads(p.read_text()).get("summary", {})
              for p in sorted((out / name / "_shards").glob("shard-*.json"))]
    executor = info.get("executor", {})
    workers = max(1, len(executor.get("actors", [])))
    samples = info["summary"]["samples"]
    busy = sum(s.get("seconds", 0.0) for s in shards)
    return {"name": name, "wall_s": wall, "flow_s": info["timings"]["wall_s"],
            "samples_per_s": samples / info["timings"]["wall_s"], "samples": samples,
            "ms_per_sample": 1000 * busy / samples / workers if busy else float("nan"), "actors": workers,
            "threads": [a.get("threads") for a in executor.get("actors", [])],
            "input_wait_share": executor.get("input_wait_share")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train", help="train (2,100 images) or val (180)")
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--methods", default="gradcam,gradient")
    ap.add_argument("--variants", default="local,ray1,ray2,default")
    args = ap.parse_args()
    data, model = demo_inputs()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="xcore-scaling-") as tmp:
        for name in args.variants.split(","):
            rows[name] = r = run(name, data, model, Path(tmp), args)
            print(f"{name:8s} {r['samples']} samples, {r['actors']} worker(s) threads {r['threads']}: command "
                  f"{r['wall_s']:.1f} s, flow {r['flow_s']:.1f} s, {r['samples_per_s']:.1f} samples/s, "
                  f"{r['ms_per_sample']:.1f} ms/sample effective, input wait {r['input_wait_share']}", flush=True)
    print(f"\ncpu cores: {os.cpu_count()}")
    if {"ray1", "ray2"} <= rows.keys():
        ratio = rows["ray2"]["samples_per_s"] / rows["ray1"]["samples_per_s"]
        print(f"2 actors / 1 actor samples/s: {ratio:.2f}x (goal >= 1.7x)")
    if {"local", "default"} <= rows.keys():
        over = rows["default"]["wall_s"] / rows["local"]["wall_s"] - 1
        print(f"default xai run vs in process (command wall): {100 * over:+.1f} % (goal <= +10 %; "
              f"in-process run {rows['local']['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
