"""Time per image of every registered explanation method next to its peer implementation, as ours / peer ratios.

    .venv/bin/python benchmarks/explainers.py [--models demo resnet50] [--methods gradcam lrp swag_I ...] [--quick]
        [--batch 2] [--repeats 3] [--budget 1] [--slow 5] [--threads N] [--clock wall|cpu] [--efficiency]

``--efficiency`` prints the thesis's efficiency table instead (Tables 3.11 / 4.4 / 5.5: mean seconds per
explanation, at batch 1 and at ``--batch``, beside the thesis's seconds on one Titan X), ours only, with the device
named; the time runs from the device-resident input to the full-resolution map, warm-up excluded.

e.g. ``--models demo`` (about 2 min on 2 CPU cores) and ``--models resnet50 --quick`` (about 10 min); a full
ResNet-50 run is hours on a CPU (Score-CAM / Ablation-CAM: 2 × 2,048 forwards each for ours and for the peer).

Models: ``demo`` (the demo's SmallCNN at its input size; data and model are made like ``make demo`` if missing)
and ``resnet50`` (torchvision, random weights, eval, 224×224, demo images resized). Every method runs on the same
batch (``--batch`` images) with the same threads, the classes predicted on the clean batch as explicit targets
(found once, untimed), and parameters frozen; gradient peers get an input with ``requires_grad``. Peers get our
published defaults (``METHODS.get(name).defaults``) translated to their arguments, with the same model inputs per
pass (``batch_size`` = 32):

- pytorch-grad-cam 1.5.7: GradCAM, GradCAMPlusPlus, XGradCAM, ScoreCAM (ours with ``variant="pytorch_grad_cam"``,
  its algorithm), AblationCAM; layer ``model.xcore_cam_layer`` (demo) / ``layer4[-1]`` (ResNet-50). Goal ≤ 1.0×.
- Captum 0.9.0: Saliency (``gradient``), InputXGradient, GuidedBackprop, IntegratedGradients (riemann_trapezoid,
  ``n_steps`` = our ``steps``), NoiseTunnel smoothgrad (σ = our ``sigma``·(max − min), batch mean), Occlusion
  (our window / stride / softmax). Their maps are reduced with ``max_c |·|`` like ours.
- lime 0.2.0.1 ``LimeImageExplainer`` (same ``num_samples``, quickshift on the de-normalised image, mean hiding);
  saliency 0.2.1 ``XRAI`` (same steps, pixel-space model). Their (H, W, C) NumPy batches are made NCHW-contiguous
  before the model (a bare ``permute`` would hand it channels-last tensors, 15-30 % faster convs on this CPU).
- zennit 0.5.1 for ``lrp``: ZBox first layer, AlphaBeta α=1 β=0 without bias elsewhere, Norm on average pools,
  SequentialMergeBatchNorm (demo) / ResNetCanonizer; ``Gradient`` with a one-hot output gradient. Goal ≤ 1.2×.
- SWAG (``swag_I`` / ``swag_G`` / ``swag_I+G``) is compared with our own Grad-CAM time; goal ≤ 3×.

Timing: ``time.perf_counter`` around one call. The first call of ours and of the peer is a warm-up (never timed);
if either took more than ``--slow`` s, one more call each is the measurement (the expensive methods), otherwise ours
and the peer are called alternately (at least ``--repeats`` rounds, until ``--budget`` s) and the best call of each
is kept. Ratio = ours / peer seconds: < 1 means ours is faster. The machine's load average is printed: other processes
on a small CPU distort wall times (and a single-call measurement most); ``--clock cpu --threads 1`` (process CPU
time, one thread) is the robust choice on a busy machine.
``--quick`` lowers the sample counts of the expensive methods for ours and the peer alike (IG / XRAI steps,
SmoothGrad samples, occlusion windows, RISE masks, LIME samples, Jitter-CAM d) and, on ResNet-50, moves Score-CAM
and Ablation-CAM (K·B full forwards, K = 2,048 at layer4) to ``layer1.0.conv1`` (K = 64), so the ratios stay fair.
Methods that are not registered (e.g. ``lrp`` before it lands) are skipped with a note; skeleton methods
(``stg_*``) are left out unless named.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of pytorch-grad-cam's Score-/Ablation-CAM and lime

import torch
from explainer_peers import CAM_PEERS, GRADIENT_FREE_CAMS, Bench, peer_for
from torch import Tensor, nn

import xcore.explain as E
from xcore.data import ImageTransform, default_data_root, generate_images
from xcore.datasets import open_dataset
from xcore.explain.base import METHODS
from xcore.models import load_checkpoint, train_model

MODEL = Path(".xcore/models/smallcnn.pt")
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "swag_I": ("swag", {"superpixels": "image"}),
    "swag_G": ("swag", {"superpixels": "gradient"}),
    "swag_I+G": ("swag", {"superpixels": "both"}),
}
FIXED: dict[str, dict[str, Any]] = {"scorecam": {"variant": "pytorch_grad_cam"}}  # the peer's algorithm
GOALS: dict[str, float] = {**dict.fromkeys(CAM_PEERS, 1.0), "lrp": 1.2, **dict.fromkeys(VARIANTS, 3.0)}
NOT_IMAGE = ("stg_",)  # skeleton-model methods (B, C, T, V, M): not run on images by default


def quick_overrides(name: str, b: Bench) -> dict[str, Any]:
    """``--quick``: fewer samples for the expensive methods (applied to ours and the peer alike)."""
    side = int(b.x.shape[-1]) // 4
    q: dict[str, dict[str, Any]] = {"integrated_gradients": {"steps": 10}, "smoothgrad": {"samples": 5},
                                    "occlusion": {"window": side, "stride": side}, "rise": {"n_masks": 32},
                                    "lime": {"n_samples": 50}, "xrai": {"steps": 8}, "jitter_cam": {"d": 1}}
    if name in GRADIENT_FREE_CAMS and b.quick_gf_layer:
        return {"layer": b.quick_gf_layer}
    return q.get(name, {})


CLOCK: list[Callable[[], float]] = [time.perf_counter]  # --clock cpu: time.process_time


def timed(fn: Callable[[], Any]) -> float:
    t0 = CLOCK[0]()
    fn()
    return CLOCK[0]() - t0


def best_times(fns: list[Callable[[], Any]], args: argparse.Namespace, first: list[float] | None = None) -> list[float]:
    """Seconds per call of each of ``fns`` (ours, peer) after one warm-up call each (``first``: their times, if made
    already). If any warm-up took over ``--slow`` s, one more call each is the measurement; otherwise the best of
    alternating calls, at least ``--repeats`` rounds and until ``--budget`` s are spent (at most 100). Warm-ups never
    count: the first call at a new batch shape pays one-time kernel / allocator set-up that a second caller reuses."""
    first = first or [timed(fn) for fn in fns]
    if max(first) > args.slow:
        return [timed(fn) for fn in fns]
    best, spent, rounds = [float("inf")] * len(fns), 0.0, 0
    while rounds < args.repeats or (spent < args.budget and rounds < 100):
        for i, fn in enumerate(fns):
            t = timed(fn)
            best[i], spent = min(best[i], t), spent + t
        rounds += 1
    return best


def ours_call(label: str, b: Bench, quick: bool) -> tuple[Callable[[], Tensor], dict[str, Any]]:
    """Our method ``label`` (a registry name or a SWAG variant) as a call, and the overrides it runs with."""
    method, over = VARIANTS.get(label, (label, {}))
    over = {**over, **FIXED.get(method, {})}
    if METHODS.get(method).uses_layer:
        over["layer"] = b.cam_layer
    if quick:
        over.update(quick_overrides(method, b))
    return (lambda: E.run(method, b.model, b.x, b.t, **over)), over


def demo_bench(n: int) -> Bench:
    from zennit.canonizers import SequentialMergeBatchNorm

    root = generate_images(default_data_root())
    if not MODEL.exists():
        train_model(root, MODEL)
    model, meta = load_checkpoint(MODEL)
    tf = ImageTransform(meta["input_size"], mean=meta["mean"], std=meta["std"])
    return make_bench("demo", model, demo_images(n, tf), model.xcore_cam_layer, None,
                      lambda: [SequentialMergeBatchNorm()], tuple(meta["mean"]), tuple(meta["std"]))


def resnet_bench(n: int) -> Bench:
    import torchvision
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    return make_bench("resnet50", model, demo_images(n, ImageTransform(224)), "layer4.2", "layer1.0.conv1",
                      lambda: [ResNetCanonizer()])


def demo_images(n: int, tf: ImageTransform) -> Tensor:
    ds = open_dataset("imagenet", generate_images(default_data_root()), "val", transform=tf)
    step = max(1, len(ds) // n)
    return torch.stack([ds.load(i).x for i in range(0, step * n, step)])


def make_bench(name: str, model: nn.Module, x: Tensor, cam_layer: str, quick_gf: str | None,
               canonizers: Callable[[], list[Any]], mean: tuple[float, ...] = (0.485, 0.456, 0.406),
               std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> Bench:
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)  # as run() does: no parameter gradients for anybody
    with torch.no_grad():
        t = model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    model(xg).gather(1, t[:, None]).sum().backward()  # warm the allocator and kernels once
    return Bench(name, model, x, t, cam_layer, quick_gf, canonizers, mean, std)


def fmt(v: float | None, spec: str = "9.1f") -> str:
    return "—".rjust(int(spec.split(".")[0])) if v is None else format(v, spec)


def run_model(b: Bench, labels: list[str], args: argparse.Namespace) -> None:
    n = b.x.shape[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n== {b.name}: {n}×{tuple(b.x.shape[1:])}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"load {load:.2f}{', --quick' if args.quick else ''} ==", flush=True)
    print(f"{'method':44s} {'ours ms/img':>11s}  {'peer':28s} {'peer ms/img':>11s} {'ratio':>7s} {'goal':>6s}")
    notes: list[str] = []
    for label in labels:
        method = VARIANTS.get(label, (label, {}))[0]
        if method not in E.available():
            notes.append(f"{label}: not registered in xcore.explain (skipped)")
            continue
        ours_fn, over = ours_call(label, b, args.quick)
        try:  # warm-ups; report a failure and go on: one broken method must not hide the rest
            first = [timed(ours_fn)]
        except Exception as err:
            notes.append(f"{label}: ours failed: {type(err).__name__}: {err}")
            continue
        peer = None if label in VARIANTS else peer_for(method, METHODS.get(method).params(over), b)
        if peer is None and label not in VARIANTS:
            notes.append(f"{label}: no peer implementation installed")
        if peer is not None:
            try:
                first.append(timed(peer[1]))
            except Exception as err:
                notes.append(f"{label}: peer {peer[0]} failed: {type(err).__name__}: {err}")
                peer = None
        times = best_times([ours_fn] + ([peer[1]] if peer else []), args, first[: 2 if peer else 1])
        ours = b.ours_s[label] = times[0]
        peer_name, peer_s = (peer[0], times[1]) if peer else ("—", None)
        if label in VARIANTS:
            if "gradcam" not in b.ours_s:
                b.ours_s["gradcam"] = best_times([ours_call("gradcam", b, args.quick)[0]], args)[0]
            peer_name, peer_s = "ours gradcam", b.ours_s["gradcam"]
        shown = [f"{k}={v}" for k, v in over.items() if k != "superpixels" and (k, v) != ("layer", b.cam_layer)]
        tag = " ".join([label, *shown])
        ratio = None if peer_s is None else ours / peer_s
        goal = f"≤{GOALS[label]:.1f}×" if label in GOALS else "—"
        peer_ms = None if peer_s is None else 1000 * peer_s / n
        print(f"{tag:44s} {1000 * ours / n:11.1f}  {peer_name:28s} {fmt(peer_ms, '11.1f')} {fmt(ratio, '7.2f')}"
              f" {goal:>6s}", flush=True)
    if args.quick and b.quick_gf_layer:
        notes.append(f"--quick: scorecam / ablationcam at layer {b.quick_gf_layer} (ours and peer)")
    for note in notes:
        print(f"  note: {note}")


def device_name() -> str:
    """The CPU model and thread count (or the GPU's name) the timings were taken on."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "CPU") if Path("/proc/cpuinfo").is_file() else "CPU"
    return f"{model}, {torch.get_num_threads()} threads"


def efficiency_table(b: Bench, labels: list[str], args: argparse.Namespace) -> None:
    """Seconds per explanation of ours at batch 1 and at ``--batch`` beside the thesis's (Tables 3.11 / 4.4 / 5.5)."""
    from xcore.analysis.evaluation import THESIS_SECONDS

    n = b.x.shape[0]
    print(f"\n== efficiency, {b.name} {tuple(b.x.shape[1:])}: seconds per explanation on {device_name()}"
          f"{', --quick' if args.quick else ''} ==")
    print(f"{'method':22s} {'batch 1':>9s} {f'batch {n}':>9s}  thesis (Titan X)")
    for label in labels:
        method = VARIANTS.get(label, (label, {}))[0]
        if method not in E.available():
            continue
        full, _ = ours_call(label, b, args.quick)
        single, _ = ours_call(label, dataclasses.replace(b, x=b.x[:1], t=b.t[:1], ours_s={}), args.quick)
        try:
            s1, sn = best_times([single], args)[0], best_times([full], args)[0] / n
        except Exception as err:  # e.g. a clip-only method on images
            print(f"{label:22s} {'—':>9s} {'—':>9s}  ({type(err).__name__}: {str(err)[:60]})")
            continue
        thesis = THESIS_SECONDS.get(label, {})
        print(f"{label:22s} {s1:9.4f} {sn:9.4f}  {', '.join(f'{k} {v:.2f}' for k, v in thesis.items()) or '—'}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo", "resnet50"], choices=["demo", "resnet50"])
    ap.add_argument("--methods", nargs="*", default=None, help="registry names and/or swag_I swag_G swag_I+G")
    ap.add_argument("--batch", type=int, default=2, help="images per call (the same for ours and peers)")
    ap.add_argument("--repeats", type=int, default=3, help="least timed calls after the warm-up (best is kept)")
    ap.add_argument("--budget", type=float, default=1.0, help="keep repeating fast methods until this many s")
    ap.add_argument("--slow", type=float, default=5.0, help="a warm-up longer than this many s is the measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time (all threads; robust on a busy machine "
                         "with --threads 1)")
    ap.add_argument("--quick", action="store_true", help="fewer samples for expensive methods, ours and peers alike")
    ap.add_argument("--efficiency", action="store_true", help="the thesis's seconds-per-explanation table (ours)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")  # requires_grad set, ReLU hooks
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    labels = args.methods or [m for m in E.available() if m != "swag" and not m.startswith(NOT_IMAGE)] + list(VARIANTS)
    if "lrp" not in labels and not args.methods:
        labels.append("lrp")  # listed (and skipped with a note) until it is registered
    for name in args.models:
        bench = demo_bench(args.batch) if name == "demo" else resnet_bench(args.batch)
        (efficiency_table if args.efficiency else run_model)(bench, labels, args)


if __name__ == "__main__":
    main()
