"""Every registered method on the ground-truth demo data: mean deletion / insertion AUC and time per image.

    .venv/bin/python benchmarks/demo_methods.py [--n 30] [--methods gradcam swag ...]

Uses the demo's data and model (`make demo` writes them; missing ones are made here the same way). Orderings to
compare with (Hartley, *An Investigation into Explanations for Convolutional Neural Networks*, PhD thesis, Cardiff
University, 2021, Tables 3.7 and 5.2): deletion SWAG_G < SWAG_I < Grad-CAM, Jitter-CAM < Grad-CAM.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import xcore.explain as E
from xcore.data import ImageTransform, default_data_root, generate_images
from xcore.datasets import open_dataset
from xcore.metrics.deletion_insertion import deletion_insertion
from xcore.models import load_checkpoint, train_model

MODEL = Path(".xcore/models/smallcnn.pt")
VARIANTS: dict[str, tuple[str, dict]] = {
    "swag_I": ("swag", {"superpixels": "image"}),
    "swag_G": ("swag", {"superpixels": "gradient"}),
    "swag_I+G": ("swag", {"superpixels": "both"}),
    "lrp_a2b1": ("lrp", {"alpha": 2.0, "beta": 1.0, "bias": True}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="val images (every k-th of the 180)")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args()
    root = generate_images(default_data_root())
    if not MODEL.exists():
        train_model(root, MODEL)
    model, meta = load_checkpoint(MODEL)
    ds = open_dataset("imagenet", root, "val", transform=ImageTransform(meta["input_size"], mean=meta["mean"],
                                                                       std=meta["std"]))
    idx = list(range(0, len(ds), max(1, len(ds) // args.n)))[: args.n]
    x = torch.stack([ds.load(i).x for i in idx])
    names = args.methods or [m for m in E.available() if m != "swag"] + list(VARIANTS)
    acc, threads = meta["val_accuracy"], torch.get_num_threads()
    print(f"{len(idx)} images, {meta['arch']} (val accuracy {acc:.3f}), {threads} threads")
    print(f"{'method':20s} {'deletion':>9s} {'insertion':>9s} {'ms/image':>9s}")
    for name in names:
        method, params = VARIANTS.get(name, (name, {}))
        dele, ins, secs = [], [], 0.0
        for lo in range(0, len(idx), args.batch):
            xb = x[lo : lo + args.batch]
            t = time.perf_counter()
            maps = E.run(method, model, xb, **params)
            secs += time.perf_counter() - t
            r = deletion_insertion(model, xb, maps)
            dele.append(r["deletion_auc"])
            ins.append(r["insertion_auc"])
        d, i = torch.cat(dele).mean().item(), torch.cat(ins).mean().item()
        print(f"{name:20s} {d:9.3f} {i:9.3f} {1000 * secs / len(idx):9.1f}", flush=True)


if __name__ == "__main__":
    main()
