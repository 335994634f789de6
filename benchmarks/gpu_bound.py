"""Deletion / insertion throughput against the forward-only bound of the same model and batch (GPU or CPU).

Deletion + insertion with ``steps`` steps needs ``2 * (steps + 1)`` forwards per sample. The bound is the
samples/s the model's plain forward reaches at the same batch size, divided by that count: what the metric could
reach if masking, ranking and bookkeeping cost nothing (the metric folds BatchNorm into the convolutions
and feeds channels-last inputs, so a ratio above 1 is possible). Prints one table row per model: the bound, the measured
samples/s of ``xcore.metrics`` deletion / insertion, and their ratio (1.0 = at the bound).

    .venv/bin/python benchmarks/gpu_bound.py [--device cuda] [--models resnet50,r3d_18,smallcnn] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch

import xcore.metrics
from xcore.models.zoo import build_model

SHAPES = {"smallcnn": (3, 112, 112), "resnet18": (3, 224, 224), "resnet50": (3, 224, 224),
          "r3d_18": (3, 16, 112, 112), "small3d": (3, 16, 56, 56)}


def best_time(fn, device: str, repeat: int = 3) -> float:
    """Best of ``repeat`` calls after one warm-up (cuDNN autotuning, oneDNN set-up), synchronised on CUDA."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def row(arch: str, device: str, batch: int, steps: int) -> dict[str, float | str]:
    torch.manual_seed(0)
    model = build_model(arch, 10).eval().to(device)
    x = torch.randn(batch, *SHAPES[arch], device=device)
    maps = torch.randn(batch, *SHAPES[arch][1:], device=device)
    target = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.no_grad():
        fwd = best_time(lambda: model(x), device)
    metric = best_time(lambda: xcore.metrics.run("deletion_insertion", model, x, maps, target, steps=steps,
                                                 batch_size=batch), device, repeat=2)
    bound = batch / fwd / (2 * (steps + 1))
    got = batch / metric
    return {"model": arch, "batch": batch, "forward_sps": batch / fwd, "bound_sps": bound, "metric_sps": got,
            "ratio": got / bound}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="smallcnn,resnet50,r3d_18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=28)
    args = ap.parse_args()
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"| model | batch | forward samples/s | bound samples/s | deletion+insertion samples/s | of bound |"
          f"  ({name}, steps {args.steps})\n|---|---|---|---|---|---|")
    for arch in args.models.split(","):
        r = row(arch, args.device, args.batch, args.steps)
        print(f"| {r['model']} | {r['batch']} | {r['forward_sps']:.0f} | {r['bound_sps']:.1f} | "
              f"{r['metric_sps']:.1f} | {r['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
