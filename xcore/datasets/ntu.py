"""The ``ntu`` kind: NTU RGB+D / NTU RGB+D 120 ``.skeleton`` folders, ST-GCN models, the skeleton report.

A bare split (``val``) means the checkpoint's benchmark (``xsub/val`` for a model trained on xsub); the reader
pads or crops to the checkpoint's ``max_frames``. After a flow, each STG method's joint importance, node-masking
faithfulness and contrastivity are written under ``<run>/analysis`` (Das & Ortega, eqs 6–7).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xcore.analysis.blocks import Block, fmt
from xcore.analysis.skeleton_report import write_report
from xcore.data import NTUReader, default_skeleton_root, generate_skeletons
from xcore.datasets.base import DatasetKind, Demo, register
from xcore.models import train_skeleton
from xcore.models.train_skeleton import SKELETON_DEFAULTS

REPORTED = ("stg_gradcam", "stg_cam", "stg_gradient")  # methods with a joint-importance report


def skeleton_options(meta: dict[str, Any]) -> dict[str, Any]:
    return {"max_frames": int(meta.get("max_frames") or 300)}


def skeleton_split(split: str, meta: dict[str, Any]) -> str:
    """``val`` -> ``<checkpoint's benchmark>/val``; ``all`` and ``<benchmark>/<part>`` unchanged."""
    if "/" in split or split == "all":
        return split
    return f"{meta.get('benchmark') or 'xsub'}/{split}"


def train(root: Path | str, out: Path | str, *, width: float | None = None, **kw: Any) -> dict[str, Any]:
    """:func:`~xcore.models.train_skeleton` with the reduced-width ST-GCN; ``width`` scales its channels."""
    arch_kwargs = {**SKELETON_DEFAULTS, **({} if width is None else {"width": width})}
    return train_skeleton(root, out, arch_kwargs=kw.pop("arch_kwargs", arch_kwargs), **kw)


def generate() -> Path:
    return generate_skeletons(default_skeleton_root())


def report(run_dir: str, config: dict[str, Any], methods: list[str] | None = None) -> list[Block]:
    """The skeleton report of every reported STG method of the run (or of ``methods``)."""
    blocks: list[Block] = []
    for method in methods or [m for m in config.get("methods", {}) if m in REPORTED]:
        rep = write_report(run_dir, method)
        faith = rep.get("faithfulness") or {}
        hits = rep.get("top5_hit_rate") or {}
        blocks.append(f"{method}: contrastivity {fmt(rep.get('contrastivity'))}, β_faithful important "
                      f"{fmt(faith.get('beta_important'))} / unimportant {fmt(faith.get('beta_unimportant'))}, "
                      f"top-5 ground-truth hit rate {fmt(hits.get('mean'))}")
        if faith:
            blocks.append(f"accuracy {fmt(faith['accuracy'])}; masked at {faith['fractions']}: important "
                          f"{[round(a, 3) for a in faith['accuracy_important']]}, unimportant "
                          f"{[round(a, 3) for a in faith['accuracy_unimportant']]}")
        blocks.append(f"report: {Path(run_dir) / 'analysis' / f'skeleton_{method}.json'}")
    return blocks


NTU = register(DatasetKind(
    "ntu", NTUReader, "skeleton", options=skeleton_options, split=skeleton_split, train=train, generate=generate,
    demo=Demo(".xcore/models/stgcn.pt", ("stg_gradcam", "stg_gradient", "random"),  # stg_cam = scaled stg_gradcam
              ("deletion_insertion", "node_masking")),
    quick=Demo(".xcore/models/quick/stgcn.pt", ("stg_gradcam", "stg_gradient", "random"),
               ("deletion_insertion", "node_masking"), samples=20, train={"epochs": 8}, min_accuracy=0.8,
               train_seconds=90),
    report=report))
