"""ROAR / KAR / ROAD on the embedded shapes data: the full thesis protocol, units/hour with 1 and 2 CPU actors.

Runs the user's command, ``xai roar``, on the default shapes generator (``xcore.data.generate_images``: the same
scenes and masks, at ``--size`` px with ``--train-per-class`` train images) with a SmallCNN trained here:

  (1) scaling: a fixed subset of units (``--scaling-units``: Grad-CAM + oracle, ROAR at t = 10 / 50 %, repeats
      3) with ``--actors 1`` and with ``--actors 2`` (fresh run directories, the explain runs reused): units/hour
      from the flow's wall time, and their ratio (goal >= 1.7);
  (2) the full protocol (Hartley 2021, §3.5.2: t in {0, 10, 30, 50, 70, 90} %, 5 repeats) for ROAR and KAR with
      ``gradcam``, ``swag``, ``guided_backprop``, ``centre``, ``random`` and the ground-truth ``oracle``, retraining
      with a reduced recipe (``--epochs``, default 8), two actors;
  (3) ROAD: the same methods without retraining (noisy linear imputation, MoRF = roar and LeRF).

Prints the tables, the AUC orderings next to the thesis's Table 3.8 (ROAR AUC, ResNet-50 on CUB-200 / Stanford
Dogs: SWAG_{I+G} .172 < LIME .210 < Grad-CAM .219 < Guided BP .231 < Centre .284), and writes everything to
``<out>/benchmark.json``.

    .venv/bin/python benchmarks/roar.py [--out .xcore/bench/roar] [--epochs 8] [--size 64] [--skip-scaling]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
XAI = str(Path(sys.executable).with_name("xai"))
METHODS = ("gradcam", "swag", "guided_backprop", "centre", "random", "oracle")
THESIS_ROAR_AUC = {"swag": 0.172, "gradcam": 0.219, "guided_backprop": 0.231, "centre": 0.284}  # CUB-200


def inputs(out: Path, size: int, per_class: int) -> tuple[Path, Path]:
    """The shapes data at ``size`` px and a SmallCNN trained on it (20 epochs, one thread), made when missing."""
    from xcore.data import generate_images
    from xcore.models import train_model

    root = generate_images(out / f"shapes{size}", n_train_per_class=per_class, n_val=120, size=size)
    model = out / f"smallcnn{size}.pt"
    if not model.is_file():
        meta = train_model(root, model, epochs=20, num_threads=1)
        print(f"clean model: val accuracy {meta['val_accuracy']:.3f}", flush=True)
    return root, model


def roar(data: Path, model: Path, out: Path, run_id: str, methods: tuple[str, ...], extra: list[str]) -> dict:
    """One ``xai roar`` command; its run.json plus the command's wall time."""
    cmd = [XAI, "roar", "--dataset", str(data), "--model", str(model), "--out", str(out), "--run-id", run_id,
           "--shard-size", "128", "--batch-size", "40", *[a for m in methods for a in ("-m", m)], *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout[-6000:], flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"{run_id} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    info = json.loads((out / run_id / "run.json").read_text())
    return {**info["summary"], "wall_s": round(wall, 1), "flow_s": info["timings"]["wall_s"],
            "unit_compute_s": info["timings"]["unit_compute_s"]}


def scaling(data: Path, model: Path, out: Path, epochs: int) -> dict[str, Any]:
    subset = ["--mode", "roar", "-t", "0.1", "-t", "0.5", "--repeats", "3", "--epochs", str(epochs)]
    res = {}
    for actors in (1, 2):
        r = roar(data, model, out, f"scaling-{actors}", ("gradcam", "oracle"), [*subset, "--actors", str(actors)])
        res[actors] = {"units": r["units_computed"], "flow_s": r["flow_s"],
                       "units_per_hour": round(3600 * r["units_computed"] / r["flow_s"], 1)}
    res["ratio"] = round(res[2]["units_per_hour"] / res[1]["units_per_hour"], 3)
    print(f"scaling: 1 actor {res[1]['units_per_hour']} units/h, 2 actors {res[2]['units_per_hour']} units/h, "
          f"ratio {res['ratio']}", flush=True)
    return res


def ordering(auc: list[dict[str, Any]], mode: str) -> list[tuple[str, float]]:
    rows = [(a["method"], a["auc"]) for a in auc if a["mode"] == mode and a["auc"] is not None]
    return sorted(rows, key=lambda r: r[1], reverse=mode != "roar")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / ".xcore" / "bench" / "roar")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train-per-class", type=int, default=150)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-scaling", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data, model = inputs(args.out, args.size, args.train_per_class)
    result: dict[str, Any] = {"size": args.size, "train_per_class": args.train_per_class, "epochs": args.epochs}
    if not args.skip_scaling:
        result["scaling"] = scaling(data, model, args.out, args.epochs)
    result["retrain"] = roar(data, model, args.out, "protocol", METHODS,
                             ["--epochs", str(args.epochs), "--repeats", str(args.repeats), "--actors", "2"])
    result["road"] = roar(data, model, args.out, "road", METHODS, ["--no-retrain", "--actors", "2"])
    for name in ("retrain", "road"):
        for mode in sorted({a["mode"] for a in result[name]["auc"]}):
            order = ordering(result[name]["auc"], mode)
            sep = " < " if mode == "roar" else " > "
            print(f"{name} {mode} AUC ordering (best first): " + sep.join(f"{m} {v:.3f}" for m, v in order))
    print("thesis Table 3.8 ROAR AUC (CUB-200, best first): "
          + " < ".join(f"{m} {v:.3f}" for m, v in sorted(THESIS_ROAR_AUC.items(), key=lambda r: r[1])))
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out / 'benchmark.json'}")


if __name__ == "__main__":
    main()
