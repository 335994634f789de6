"""Throughput of the ``filter_scores`` job against a plain PyTorch loop (Hartley 2021, §6.2.3: Grad-AMap scores of
every training image), side by side on the same samples, threads and device.

- **xcore**: the job's worker over every shard of the split (one forward + one backward per batch for all
  gradient scorers, the predicted-class pass for misclassified samples, one Parquet file per scorer and shard,
  committed) and the reduce to ``filter_stats``; the samples/s is end to end, Parquet included.
- **plain loop**: the same reader and batches, a forward hook on the layer, one ``autograd.grad`` of the
  ground-truth logits, ``(grad · act).mean(positions)`` kept in memory — what a researcher writes by hand.

Two models: the demo's SmallCNN on the shapes train split (112 px) and a seeded (untrained) torchvision ResNet-18
at 224 px on the shapes generator's val split drawn at 224 px. Goal: xcore ≥ 0.8× the loop, like for like (the
job without its predicted-class pass, which the loop does not do); the job's default is timed too. The DuckDB
reduce at 10⁶ rows × 512 filters is ``benchmarks/filters_reduce.py``.

    .venv/bin/python benchmarks/filters.py [--out .xcore/bench/filters] [--samples 512] [--batch 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def inputs(out: Path, samples: int) -> dict[str, tuple[Path, Path, str]]:
    """The demo data and model (made when missing) and a seeded ResNet-18 checkpoint over shapes at 224 px."""
    from xcore.data import generate_images
    from xcore.models import build_model, save_checkpoint, train_model

    demo_root = generate_images(ROOT / ".xcore" / "data" / "shapes")
    demo_model = ROOT / ".xcore" / "models" / "smallcnn.pt"
    if not demo_model.is_file():
        train_model(demo_root, demo_model)
    big = generate_images(out / "shapes224", n_train_per_class=1, n_val=samples, size=224, planted_per_class=0)
    ckpt = out / "resnet18.pt"
    if not ckpt.is_file():
        torch.manual_seed(0)
        model = build_model("resnet18", 6)
        save_checkpoint(ckpt, model, {"arch": "resnet18", "num_classes": 6, "input_size": 224,
                                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                      "dataset_kind": "imagenet"})
    return {"smallcnn-112": (demo_root, demo_model, "train"), "resnet18-224": (big, ckpt, "val")}


def run_job(root: Path, model: Path, split: str, out: Path, n: int, batch: int, pred: bool) -> tuple[float, int]:
    """The filter_scores job's worker over the first ``n`` samples of ``split`` (shards of 256) plus its reduce;
    (seconds, samples). ``pred``: also score the predicted class of misclassified samples (the job's default)."""
    from xcore.pipeline import open_job

    shutil.rmtree(out, ignore_errors=True)
    job = open_job("filter_scores", {"dataset": str(root), "model": str(model), "out": str(out), "split": split,
                                     "methods": {"gradamap": {}}, "reference_split": "", "ranking_step": 0,
                                     "suppression": False, "pred_scores": pred, "shard_size": 256,
                                     "batch_size": batch, "device": "cpu"})
    worker = job.worker("cpu")
    shards = [s for s in job.shards() if s.start < n]
    t0 = time.perf_counter()
    summaries = [worker.process(s) for s in shards]
    job.reduce(summaries, [])
    return time.perf_counter() - t0, sum(s["samples"] for s in summaries)


def run_loop(root: Path, model_path: Path, split: str, n: int, batch: int) -> tuple[float, int]:
    """The hand-written loop (module docstring) over the same samples; (seconds, samples)."""
    from xcore.core.layers import default_layer, get_layer
    from xcore.datasets import DATASETS
    from xcore.models import load_checkpoint

    model, meta = load_checkpoint(model_path, "cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    kind = DATASETS.get("imagenet")
    ds = kind.open(str(root), split, **kind.options(meta))
    store: dict[str, torch.Tensor] = {}
    handle = get_layer(model, default_layer(model)).register_forward_hook(lambda _m, _i, o: store.update(a=o))
    kept = []
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        idx = range(start, min(start + batch, n))
        x = torch.stack([ds.load(i).x for i in idx]).requires_grad_(True)
        y = torch.tensor([ds.label(i) for i in idx])
        out = model(x)
        (g,) = torch.autograd.grad(out.gather(1, y[:, None]).sum(), store["a"])
        kept.append((g * store["a"]).mean(dim=(2, 3)).detach())
    handle.remove()
    return time.perf_counter() - t0, sum(len(k) for k in kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".xcore" / "bench" / "filters")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for each side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"threads": args.threads, "batch": args.batch, "models": {}}
    for name, (root, model, split) in inputs(args.out, args.samples).items():
        runs = args.out / "runs" / name
        same = min(run_job(root, model, split, runs, args.samples, args.batch, False) for _ in range(args.repeats))
        full = min(run_job(root, model, split, runs, args.samples, args.batch, True) for _ in range(args.repeats))
        loop = min(run_loop(root, model, split, args.samples, args.batch) for _ in range(args.repeats))
        rate = {k: v[1] / v[0] for k, v in (("xcore", same), ("xcore_pred", full), ("loop", loop))}
        results["models"][name] = {"samples": same[1], "split": split, "xcore_s": round(same[0], 3),
                                   "xcore_with_pred_s": round(full[0], 3), "loop_s": round(loop[0], 3),
                                   **{f"{k}_samples_per_s": round(v, 2) for k, v in rate.items()},
                                   "ratio": round(rate["xcore"] / rate["loop"], 3),
                                   "ratio_with_pred": round(rate["xcore_pred"] / rate["loop"], 3)}
        print(f"{name}: xcore {rate['xcore']:.1f} samples/s (with the predicted-class pass {rate['xcore_pred']:.1f}),"
              f" plain loop {rate['loop']:.1f} samples/s, ratio {rate['xcore'] / rate['loop']:.2f} (goal >= 0.8)",
              flush=True)
    (args.out / "benchmark.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
