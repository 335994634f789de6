"""Jitter-CAM and SWAG orderings over training seeds, on the demo's 14×14-CAM model and a stride-32 (7×7-CAM) one.

    .venv/bin/python benchmarks/coarse_cam.py [--seeds 0 1 2] [--models fine coarse] [--n 180] [--threads 1]

Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff University,
2021 ("thesis"): Jitter-CAM (§5.4) enlarges a *coarse* CAM — 7×7 for ResNet-50 at 224² — and beats Grad-CAM on
deletion (Table 5.2: .118 vs .142) and the pointing game (Table 5.4: 64.08 vs 53.47); SWAG's deletion ordering is
SWAG_G < SWAG_I+G < SWAG_I < Grad-CAM (Table 3.7). Models, each trained in-process per seed (cached under
``.xcore/models/bench/``) on the default synthetic shapes:

- ``fine``: the demo's SmallCNN (112², stride 8: a 14×14 CAM; seed 0 is the demo model itself);
- ``coarse``: SmallCNN with 6 blocks, width 8, at 224² (stride 32: a 7×7 CAM, ResNet-50's grid).

Per model and seed: deletion / insertion AUC (the thesis's variant, 28 steps) on ``--n`` val images, explained for
the predicted class, and the pointing game (TorchRay conventions) on the synthetic COCO-format set, explained for
each class present. Printed: mean ± std over seeds per method, and per seed whether each ordering holds.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import xcore.explain as E
import xcore.metrics as M
from xcore.data import ImageTransform, default_data_root, generate_images
from xcore.datasets import open_dataset
from xcore.models import load_checkpoint, train_model

BENCH = Path(".xcore/models/bench")
MODELS: dict[str, dict[str, Any]] = {
    "fine": {"arch_kwargs": {}, "input_size": None},
    "coarse": {"arch_kwargs": {"blocks": 6, "width": 8}, "input_size": 224},
}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gradcam": ("gradcam", {}), "jitter_cam": ("jitter_cam", {}), "swag_I": ("swag", {"superpixels": "image"}),
    "swag_I+G": ("swag", {"superpixels": "both"}), "swag_G": ("swag", {"superpixels": "gradient"}),
    "random": ("random", {}),
}
ORDERINGS = {"Jitter-CAM < Grad-CAM (deletion, Table 5.2)": ["jitter_cam", "gradcam"],
             "SWAG_G < SWAG_I+G < SWAG_I < Grad-CAM (deletion, Table 3.7)": ["swag_G", "swag_I+G", "swag_I",
                                                                             "gradcam"]}
THESIS = {"gradcam": ".142 / .576 / 53.47", "jitter_cam": ".118 / .551 / 64.08", "swag_I": ".119 / – / –",
          "swag_I+G": ".109 / – / –", "swag_G": ".095 / – / –", "random": ".303 / .413 / 12.33"}
"""ResNet-50 deletion / insertion (Tables 3.7, 5.2) and COCO pointing game (Table 5.4)."""


def checkpoint(name: str, seed: int) -> Path:
    """The model ``name`` trained with ``seed`` (trained now if not cached; seed 0 of ``fine`` is the demo's)."""
    demo = Path(".xcore/models/smallcnn.pt")
    if name == "fine" and seed == 0 and demo.is_file():
        return demo
    path = BENCH / f"{name}-s{seed}.pt"
    if not path.is_file():
        t0 = time.perf_counter()
        meta = train_model(default_data_root(), path, seed=seed, **MODELS[name])
        print(f"  trained {name} seed {seed}: val accuracy {meta['val_accuracy']:.3f} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return path


def scores(model: torch.nn.Module, meta: dict[str, Any], n: int, batch: int) -> dict[str, dict[str, float]]:
    """Per method: mean deletion AUC, insertion AUC (val) and pointing-game % (mean over classes, COCO set)."""
    tf = ImageTransform(meta["input_size"], mean=meta["mean"], std=meta["std"])
    val = open_dataset("imagenet", generate_images(default_data_root()), "val", transform=tf)
    xs = torch.stack([val.load(i).x for i in range(min(n, len(val)))])
    out: dict[str, dict[str, float]] = {m: {"deletion": 0.0, "insertion": 0.0} for m in METHODS}
    for i in range(0, len(xs), batch):
        x = xs[i:i + batch]
        with torch.no_grad():
            pred = model(x).argmax(1)
        for label, (method, params) in METHODS.items():
            maps = E.run(method, model, x, pred, **params)
            res = M.run("deletion_insertion", model, x, maps, pred)
            out[label]["deletion"] += float(res["deletion_auc"].sum()) / len(xs)
            out[label]["insertion"] += float(res["insertion_auc"].sum()) / len(xs)
    for label, acc in pointing(model, meta, batch).items():
        out[label]["pointing"] = acc
    return out


def pointing(model: torch.nn.Module, meta: dict[str, Any], batch: int) -> dict[str, float]:
    """Pointing-game accuracy % (mean over classes) per method on the synthetic COCO-format set (if available)."""
    try:
        from xcore.data.synthetic_coco import default_coco_root, generate_coco
        from xcore.metrics.pointing import default_smooth, pointing_accuracy
    except ImportError:
        return {}
    ds = open_dataset("coco", generate_coco(default_coco_root()), "val", size=meta["input_size"],
                      mean=meta["mean"], std=meta["std"])
    samples = [ds.load(i) for i in range(len(ds))]
    hits: dict[str, list[float]] = {m: [] for m in METHODS}
    for i in range(0, len(samples), batch):
        part = samples[i:i + batch]
        x, t = torch.stack([s.x for s in part]), torch.tensor([s.label for s in part])
        for label, (method, params) in METHODS.items():
            maps = E.run(method, model, x, t, **params)
            res = M.run("pointing_game", model, x, maps, t, masks=[s.meta["masks"] for s in part],
                        smooth=default_smooth(method))
            hits[label] += res["pointing_hit"].tolist()
    labels = [s.label for s in samples]
    return {m: pointing_accuracy(h, labels, num_classes=len(ds.classes))["mean_class"] for m, h in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--n", type=int, default=180, help="val images for deletion / insertion")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models:
        per_seed: list[dict[str, dict[str, float]]] = []
        for seed in args.seeds:
            model, meta = load_checkpoint(checkpoint(name, seed))
            per_seed.append(scores(model.eval(), meta, args.n, args.batch))
            d = {m: v["deletion"] for m, v in per_seed[-1].items()}
            holds = {k: all(d[a] < d[b] for a, b in itertools.pairwise(o)) for k, o in ORDERINGS.items()}
            print(f"{name} seed {seed} (val accuracy {meta['val_accuracy']:.3f}): "
                  + "; ".join(f"{k}: {'holds' if v else 'does not hold'}" for k, v in holds.items()), flush=True)
            print("  " + ", ".join(f"{m} " + "/".join(f"{v:.3f}" for v in r.values())
                                   for m, r in per_seed[-1].items()) + "  (deletion/insertion/pointing %)",
                  flush=True)
        grid = "7×7" if name == "coarse" else "14×14"
        print(f"\n== {name} ({grid} CAM), {len(args.seeds)} seeds: mean ± std ==")
        print(f"{'method':12s} {'deletion':>15s} {'insertion':>15s} {'pointing %':>15s}   thesis del / ins / point")
        for m in METHODS:
            cells = []
            for key in ("deletion", "insertion", "pointing"):
                vals = [s[m][key] for s in per_seed if key in s[m]]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):7.3f} ± {sd:5.3f}" if vals else "—".rjust(15))
            print(f"{m:12s} {cells[0]:>15s} {cells[1]:>15s} {cells[2]:>15s}   {THESIS[m]}")
        print()


if __name__ == "__main__":
    main()
