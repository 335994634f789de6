"""The video kinds ``ucf101``, ``hmdb51`` and ``kinetics400``: clip readers, 3-D CNN / CNN-LSTM models, the video
report (deletion / insertion, localisation error, mass in boxes, freeze frames).

Reader options come from the checkpoint: its preprocessing preset (``kinetics``, ``c3d``, ``small``) and clip
length. The embedded default is the synthetic UCF-101-style set (:func:`xcore.data.generate_videos`) with
``small3d`` trained in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xcore.analysis.blocks import Block, fmt, table
from xcore.analysis.video import write_video_report
from xcore.data import HMDB51Reader, KineticsReader, UCF101Reader, default_video_root, generate_videos
from xcore.data.video_transforms import video_preset
from xcore.datasets.base import DatasetKind, Demo, register
from xcore.models import train_video


def clip_options(meta: dict[str, Any]) -> dict[str, Any]:
    return {"transform": video_preset(meta.get("preset") or "kinetics"), "clip_len": int(meta.get("clip_len") or 16)}


def generate() -> Path:
    return generate_videos(default_video_root())


def report(run_dir: str, config: dict[str, Any], methods: list[str] | None = None) -> list[Block]:
    """Write ``<run>/analysis/video.json``; its method table, discriminative parts and freeze frames as blocks."""
    rep = write_video_report(run_dir)
    cols = {"method": "method", "clips": "clips", "deletion_auc": "deletion", "insertion_auc": "insertion",
            "loc_val_error": "loc err % val", "loc_mean_error": "mean", "loc_energy_error": "energy"}
    blocks: list[Block] = [table("video report (localisation: best α per family)",
                                 [{c: r.get(k) for k, c in cols.items()} for r in rep.get("methods", [])])]
    for method, parts in rep.get("mass_in_boxes", {}).items():
        if len(parts) > 1:
            shares = ", ".join(f"{p} {fmt(v['mass_in_boxes'])}" for p, v in parts.items())
            blocks.append(f"{method}: positive mass inside the boxes: {shares} "
                          f"(chance {fmt(next(iter(parts.values()))['chance'])})")
    for method, fr in rep.get("freeze_frames", {}).items():
        blocks.append(f"{method}: freeze-frame clips predicted as the label {fmt(fr.get('freeze_accuracy'))}, "
                      f"as the clip's prediction {fmt(fr.get('freeze_agreement'))}")
    blocks.append(f"report: {Path(run_dir) / 'analysis' / 'video.json'}")
    return blocks


UCF101 = register(DatasetKind(
    "ucf101", UCF101Reader, "video", options=clip_options, train=train_video, generate=generate,
    demo=Demo(".xcore/models/small3d.pt",
              ("gradcam", "gradcam_pp", "saliency_tubes", "swag_v", "discriminative", "guided_backprop", "centre",
               "random"), ("deletion_insertion", "weak_localisation"), split="test"),
    quick=Demo(".xcore/models/quick/small3d.pt",
               ("gradcam", "saliency_tubes", "swag_v", "discriminative", "guided_backprop", "centre", "random"),
               ("deletion_insertion", "weak_localisation"), split="test", samples=16,  # 0.905 on test
               train={"epochs": 25, "arch_kwargs": {"width": 8}, "val_every": 5}, min_accuracy=0.85, train_seconds=240),
    report=report))
HMDB51 = register(DatasetKind("hmdb51", HMDB51Reader, "video", options=clip_options, report=report))
KINETICS400 = register(DatasetKind("kinetics400", KineticsReader, "video", options=clip_options, report=report))
