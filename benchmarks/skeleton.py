"""Skeleton throughput: STG-Grad-CAM + deletion / insertion on the default ST-GCN, in process vs through the flow.

    .venv/bin/python benchmarks/skeleton.py [--batch 16] [--executors local ray] [--no-quality]

Uses the embedded default (`.xcore/data/ntu`, `.xcore/models/stgcn.pt`; made here the same way as `xai demo`
when missing). In process = the library calls on batches of `--batch` samples already in memory; through the
flow = `explain-dataset` with the same method, metric and batch size, reading the `.skeleton` files, writing
Parquet, with Prefect's temporary server and (for `ray`) one CPU actor. Samples/s, best of `--repeat`.
With quality on it also prints, for xsub and xview models, the skeleton report: accuracy, top-5 hit rate of ψ
against the ground-truth joints, accuracy under important / unimportant masking, β_faithful and contrastivity.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import xcore.explain as E
from xcore.data import NTUReader, default_skeleton_root, generate_skeletons
from xcore.metrics.deletion_insertion import deletion_insertion
from xcore.models import load_checkpoint, train_skeleton

MODELS = {"xsub": Path(".xcore/models/stgcn.pt"), "xview": Path(".xcore/models/stgcn_xview.pt")}


def model_for(benchmark: str, root: Path) -> Path:
    path = MODELS[benchmark]
    if not path.is_file():
        print(f"training the {benchmark} model -> {path}", flush=True)
        train_skeleton(root, path, benchmark=benchmark)
    return path


def in_process(ckpt: Path, root: Path, batch: int, repeat: int) -> float:
    model, meta = load_checkpoint(ckpt)
    reader = NTUReader(root, f"{meta['benchmark']}/val", max_frames=meta["max_frames"])
    x = torch.stack([reader.load(i).x for i in range(len(reader))])
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for lo in range(0, len(x), batch):
            xb = x[lo : lo + batch]
            maps = E.run("stg_gradcam", model, xb)
            deletion_insertion(model, xb, maps)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def through_flow(ckpt: Path, root: Path, batch: int, executor: str, repeat: int) -> float:
    from flows.explain import explain_dataset

    best = float("inf")
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="xcore-bench-"))
        try:
            t = time.perf_counter()
            summary = explain_dataset(str(root), str(ckpt), {"stg_gradcam": {}}, {"deletion_insertion": {}},
                                      shard_size=64, out=str(out), batch_size=batch, executor=executor)
            best = min(best, time.perf_counter() - t)
            n = summary["samples"]
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return n / best


def quality(ckpt: Path, root: Path) -> dict:
    """The skeleton report of a full run (stg_gradcam, node masking) on the model's val split."""
    from flows.explain import explain_dataset

    out = Path(tempfile.mkdtemp(prefix="xcore-quality-"))
    try:
        summary = explain_dataset(str(root), str(ckpt), {"stg_gradcam": {}}, {"node_masking": {}},
                                  out=str(out), executor="local")
        report = json.loads((Path(summary["run_dir"]) / "analysis" / "skeleton_stg_gradcam.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--executors", nargs="*", default=["local", "ray"])
    ap.add_argument("--no-quality", action="store_true")
    args = ap.parse_args()
    root = generate_skeletons(default_skeleton_root())
    ckpt = model_for("xsub", root)
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, {ckpt}")
    base = in_process(ckpt, root, args.batch, args.repeat)
    print(f"{'in process':24s} {base:8.1f} samples/s  1.00")
    for ex in args.executors:
        rate = through_flow(ckpt, root, args.batch, ex, args.repeat)
        print(f"{'flow, ' + ex + ' executor':24s} {rate:8.1f} samples/s  {rate / base:.2f}", flush=True)
    if args.no_quality:
        return
    for bench in ("xsub", "xview"):
        rep = quality(model_for(bench, root), root)
        f = rep["faithfulness"]
        print(f"{bench}: accuracy {f['accuracy']:.3f}, top-5 hit rate {rep['top5_hit_rate']['mean']:.3f} "
              f"{rep['top5_hit_rate']['per_class']}, masked {f['fractions']}: important "
              f"{[round(a, 3) for a in f['accuracy_important']]}, unimportant "
              f"{[round(a, 3) for a in f['accuracy_unimportant']]}, β_faithful {f['beta_important']:.3f} "
              f"(unimportant {f['beta_unimportant']:.3f}), contrastivity {rep['contrastivity']:.3f}", flush=True)


if __name__ == "__main__":
    main()
