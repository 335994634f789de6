"""Deletion / insertion throughput: xcore's engine vs the loop structures it replaces, at identical AUCs.

Compared, on the same model, images and maps (28 steps, zero substrate, softmax of the predicted class):
  (a) one forward per step per image — the structure of the RISE reference code (eclique/RISE evaluation.py);
  (b) a per-image loop that batches one image's 29 deletion and 29 insertion inputs into one forward;
  (c) Quantus ``PixelFlipping`` (deletion only) when quantus is installed (`pip install -e .[bench]`).
Prints samples/s and the engine's speed-up as ratios, after checking that every variant's curves agree.

    .venv/bin/python benchmarks/deletion_insertion.py [--n 32] [--size 112] [--device cpu] [--arch smallcnn]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from xcore.metrics.deletion_insertion import auc, deletion_insertion, ranks, step_counts
from xcore.models import build_model


def _inputs(x: Tensor, rank: Tensor, k: int, delete: bool) -> Tensor:
    mask = (rank < k).reshape(1, 1, *x.shape[2:])
    return torch.where(mask, torch.zeros_like(x), x) if delete else torch.where(mask, x, torch.zeros_like(x))


@torch.no_grad()
def per_image(model: nn.Module, x: Tensor, maps: Tensor, curves: Callable[..., Tensor], steps: int = 28) -> Tensor:
    """Loop over images: rank, class, then ``curves(xb, rank, c, counts)`` gives its (2, steps+1) scores.
    Returns the AUCs (2, B)."""
    P = maps[0].numel()
    counts = step_counts(P, steps)
    out = torch.empty(2, x.shape[0], steps + 1, dtype=torch.float64)
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        rank = ranks(maps[b : b + 1].reshape(1, -1)).reshape(maps.shape[1:])
        out[:, b] = curves(xb, rank, model(xb).argmax(1), counts.tolist()).double().cpu()
    return auc(out, counts.double() / P)


def per_step_loop(model: nn.Module, x: Tensor, maps: Tensor) -> Tensor:
    """(a) RISE reference structure: one forward of one perturbed image per step."""

    def curves(xb: Tensor, rank: Tensor, c: Tensor, counts: list[int]) -> Tensor:
        return torch.tensor([[model(_inputs(xb, rank, k, delete)).softmax(1)[0, c].item() for k in counts]
                             for delete in (True, False)])

    return per_image(model, x, maps, curves)


def per_image_batched(model: nn.Module, x: Tensor, maps: Tensor) -> Tensor:
    """(b) per-image loop, one forward over that image's 2 × (steps + 1) inputs."""

    def curves(xb: Tensor, rank: Tensor, c: Tensor, counts: list[int]) -> Tensor:
        batch = torch.cat([_inputs(xb, rank, k, d) for d in (True, False) for k in counts])
        return model(batch).softmax(1)[:, c].reshape(2, len(counts))

    return per_image(model, x, maps, curves)


def quantus_deletion(model: nn.Module, x: Tensor, maps: Tensor, steps: int = 28) -> np.ndarray | None:
    """(c) Quantus PixelFlipping curves (B, steps), zero baseline, whole pixels per step; None if absent."""
    try:
        import quantus
    except ImportError:
        return None
    class WholePixels(quantus.PixelFlipping):
        """Quantus counts features per channel plane in its check but flattens C×H×W when it perturbs;
        skip the check so that one step is exactly ``step`` whole pixels, as in the engine."""

        def custom_preprocess(self, **kwargs: object) -> None:
            return None

    C, P = x.shape[1], maps[0].numel()
    metric = WholePixels(features_in_step=C * step_counts(P, steps)[1].item(), perturb_baseline=0.0,
                                   normalise=False, abs=False, disable_warnings=True)
    y = model(x).argmax(1).numpy()
    a = np.ascontiguousarray(maps[:, None].expand_as(x).numpy())  # whole pixels: every channel ranked alike
    return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, softmax=True, device="cpu",
                             batch_size=x.shape[0]))


REPEAT = 3


def timed(fn: Callable[[], object], warmup: Callable[[], object] | None = None) -> tuple[float, object]:
    """Best of ``REPEAT`` timed calls of ``fn`` after one untimed ``warmup`` call (oneDNN / cuDNN set-up);
    the best, because other load on a shared 2-core machine only ever adds time."""
    if warmup is not None:
        warmup()
    best, out = float("inf"), None
    for _ in range(REPEAT):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="images")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--arch", default="smallcnn")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-loop", action="store_true", help="skip (a), the slowest variant")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per variant (the best counts)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = args.repeat
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(args.arch, num_classes=6).eval().to(device)
    x = torch.randn(args.n, 3, args.size, args.size, device=device)
    maps = torch.rand(args.n, args.size, args.size, device=device)  # tie-free, so every variant orders alike
    print(f"device={device} arch={args.arch} images={args.n} size={args.size} threads={torch.get_num_threads()}")

    x2, m2 = x[:2], maps[:2]
    t_engine, res = timed(lambda: deletion_insertion(model, x, maps), lambda: deletion_insertion(model, x2, m2))
    engine = torch.stack([res["deletion_auc"], res["insertion_auc"]])
    rows = [("xcore engine", t_engine, 0.0)]
    if not args.skip_loop:
        t_a, a = timed(lambda: per_step_loop(model, x, maps), lambda: per_step_loop(model, x2, m2))
        rows.append(("(a) one forward per step", t_a, float((a - engine).abs().max())))
    t_b, b = timed(lambda: per_image_batched(model, x, maps), lambda: per_image_batched(model, x2, m2))
    rows.append(("(b) per-image batched steps", t_b, float((b - engine).abs().max())))
    if device.type == "cpu":
        t_c, q = timed(lambda: quantus_deletion(model, x.cpu(), maps.cpu()),
                       lambda: quantus_deletion(model, x2.cpu(), m2.cpu()))
        if q is not None:
            diff = float(np.abs(q - res["deletion_curve"][:, 1:].numpy()).max())
            rows.append(("(c) quantus PixelFlipping (deletion only)", t_c * 2, diff))
    print(f"{'variant':45s} {'samples/s':>10s} {'engine x':>9s} {'max |ΔAUC|':>11s}")
    for name, t, diff in rows:
        print(f"{name:45s} {args.n / t:10.2f} {t / t_engine:9.2f} {diff:11.2e}")
    print("(c) is timed on deletion only and doubled to compare with deletion + insertion.")


if __name__ == "__main__":
    main()
