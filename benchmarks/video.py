"""Video throughput: clips/s of Grad-CAM, SWAG-V and deep Taylor (LRP), each + deletion / insertion, on r3d_18 at
16×112×112, batched; peers side by side; decode throughput of decord vs PyAV on the default videos.

    .venv/bin/python benchmarks/video.py [--batch 2] [--threads N] [--clock wall|cpu] [--methods gradcam swag_v lrp]
        [--no-metric] [--no-decode] [--device cpu|cuda]

- Model: torchvision ``r3d_18`` (``weights=None``, seeded, eval; BN statistics randomised so maps are not
  degenerate), CAM layer ``layer4`` (T'×H'×W' = 2×7×7). Clips: the centre 16 frames of the default videos
  (``.xcore/data/ucf``, generated like ``xai demo`` when missing) through the Kinetics preset, ``--batch`` at a time.
- Each method runs on the same batch with the classes predicted on the clean batch as explicit targets. Peers on the
  same batch: pytorch-grad-cam 1.5.7 ``GradCAM`` (its 3-D path; ratio = ours / peer, goal ≤ 1.0×) and zennit 0.5.1
  for ``lrp`` (ZBox first layer, AlphaBeta α=1 β=0 without bias, SequentialMergeBatchNorm; goal ≤ 1.2×); SWAG-V has
  no peer and is reported against our Grad-CAM.
- Deletion / insertion: 28 steps over the 200,704 voxels (7,168 per step), insertion from zeros, i.e. 58 forwards
  per clip — usually the dominant cost.
- Decode: every default video's centre clip of 16 frames through ``read_clip(backend="decord")`` (a helper process
  with a time limit) and ``backend="pyav"``; clips/s and frames/s, best of ``--repeats``.
Timing: first call is a warm-up; best of ``--repeats`` calls. ``--clock cpu`` measures process CPU time (use with
``--threads 1`` on a busy machine).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from torch import Tensor, nn

import xcore.explain as E
from xcore.data import UCF101Reader
from xcore.data.clip_sampling import centre_indices
from xcore.data.video_decode import frame_count, read_clip
from xcore.data.video_transforms import video_preset
from xcore.metrics.deletion_insertion import deletion_insertion
from xcore.models import build_model

CLOCK: list[Callable[[], float]] = [time.perf_counter]


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = CLOCK[0]()
        fn()
        best = min(best, CLOCK[0]() - t0)
    return best


def video_root() -> Path:
    from xcore.data import default_video_root, generate_videos

    return generate_videos(default_video_root())


def r3d(num_classes: int, device: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("r3d_18", num_classes)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval().to(device)


def clips(root: Path, n: int) -> tuple[Tensor, int]:
    reader = UCF101Reader(root, "test", transform=video_preset("kinetics"))
    return torch.stack([reader.load(i).x for i in range(min(n, len(reader)))]), len(reader.classes)


def gradcam_peer(model: nn.Module, x: Tensor, t: Tensor) -> Callable[[], Any]:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = pgc.GradCAM(model=model, target_layers=[model.layer4])
    targets = [ClassifierOutputTarget(int(c)) for c in t]
    return lambda: cam(input_tensor=x.clone(), targets=targets)


def lrp_peer(model: nn.Module, x: Tensor, t: Tensor) -> Callable[[], Any]:
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import SpecialFirstLayerMapComposite
    from zennit.rules import AlphaBeta, Norm, ZBox
    from zennit.types import AvgPool, Convolution, Linear

    from xcore.explain.lrp import input_bounds

    low, high = input_bounds(model, x, None, None)
    rule = AlphaBeta(alpha=1, beta=0, zero_params="bias")
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(Convolution, rule), (Linear, rule), (AvgPool, Norm())],
        first_map=[(Convolution, ZBox(low=low, high=high))], canonizers=[SequentialMergeBatchNorm()])
    with torch.no_grad():
        onehot = torch.zeros_like(model(x)).scatter_(1, t[:, None], 1.0)

    def fn() -> Tensor:
        with Gradient(model=model, composite=composite) as attributor:
            _, rel = attributor(x.clone().requires_grad_(True), onehot)
        return rel.sum(1)

    return fn


PEERS = {"gradcam": ("pytorch-grad-cam GradCAM", gradcam_peer), "lrp": ("zennit", lrp_peer)}


def bench_methods(args: argparse.Namespace) -> None:
    x, n_classes = clips(video_root(), args.batch)
    model = r3d(n_classes, args.device)
    x = x.to(args.device)
    with torch.no_grad():
        t = model(x).argmax(1)
    print(f"r3d_18 (random weights), batch {x.shape[0]} × {tuple(x.shape[1:])}, threads {torch.get_num_threads()}, "
          f"clock {args.clock}, device {args.device}")
    print(f"{'method':<10} {'explain s/clip':>15} {'+del/ins s/clip':>16} {'clips/s':>8}  peer")
    times: dict[str, float] = {}
    for name in args.methods:
        if name not in E.available():
            print(f"{name:<10} not registered; skipped")
            continue
        maps: list[Tensor] = []
        sec = best_of(lambda n=name, out=maps: out.append(E.run(n, model, x, t)), args.repeats) / x.shape[0]
        times[name] = sec
        metric = 0.0
        if args.metric:
            m = maps[-1]
            metric = best_of(lambda m=m: deletion_insertion(model, x, m, t), 1) / x.shape[0]
        peer = ""
        if name in PEERS:
            label, make = PEERS[name]
            try:
                p_sec = best_of(make(model, x, t), args.repeats) / x.shape[0]
                peer = f"{label}: {p_sec:.3f} s/clip, ours/peer {sec / p_sec:.2f}×"
            except Exception as err:  # a peer that cannot run this model is reported, not fatal
                peer = f"{label}: failed ({type(err).__name__}: {str(err)[:80]})"
        elif "gradcam" in times and name != "gradcam":
            peer = f"vs our Grad-CAM {sec / times['gradcam']:.1f}×"
        total = sec + metric
        print(f"{name:<10} {sec:>15.3f} {total if args.metric else float('nan'):>16.3f} {1 / total:>8.3f}  {peer}",
              flush=True)


def bench_decode(args: argparse.Namespace) -> None:
    root = video_root()
    reader = UCF101Reader(root, "test")
    paths = [reader.path(i) for i in range(len(reader))]
    jobs = [(p, centre_indices(frame_count(p), 16)) for p in paths]
    print(f"decode: {len(jobs)} videos, centre 16-frame clip each")
    for backend in ("decord", "pyav"):
        try:
            sec = best_of(lambda b=backend: [read_clip(p, idx, backend=b) for p, idx in jobs], args.repeats)
        except Exception as err:
            print(f"  {backend:<7} unavailable: {type(err).__name__}: {err}")
            continue
        print(f"  {backend:<7} {len(jobs) / sec:8.1f} clips/s {16 * len(jobs) / sec:9.1f} frames/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--methods", nargs="+", default=["gradcam", "swag_v", "lrp"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-metric", dest="metric", action="store_false")
    ap.add_argument("--no-decode", dest="decode", action="store_false")
    ap.add_argument("--no-methods", dest="run_methods", action="store_false")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    if args.decode:
        bench_decode(args)
    if args.run_methods:
        bench_methods(args)


if __name__ == "__main__":
    main()
