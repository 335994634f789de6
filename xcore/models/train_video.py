"""CPU training of a video classifier (the small 3-D CNN by default) on a UCF-101-style folder (the synthetic set).

Every train and test video is decoded once through :class:`~xcore.data.video_readers.UCF101Reader` with the
checkpoint's preset: the test videos' centre clip of ``clip_len`` frames (what the explain pipeline feeds the
model), the train videos' centre ``clip_len + jitter`` frames, from which every batch takes a random
``clip_len``-frame window (temporal jittering) and a random small shift. The shared
:func:`xcore.models.train.fit` loop trains. After training, the test clips are also scored as *freeze-frame*
clips (each clip's middle frame repeated ``clip_len`` times, :func:`freeze_frames`): on data whose classes only
motion decides this accuracy is near chance, ``1 / n_classes``. Unreadable videos are skipped and counted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from xcore.data.video_readers import UCF101Reader
from xcore.data.video_transforms import video_preset
from xcore.errors import UsageError
from xcore.models.checkpoint import save_checkpoint
from xcore.models.train import Progress, evaluate, fit, load_samples, reproducible
from xcore.models.zoo import build_model

# On the default synthetic set: 96.4 / 97.6 / 99.6 % test accuracy (seeds 0 / 1 / 2), freeze-frame accuracy
# 0.16-0.19 (chance 1/6); training takes ~6 min on one thread of an idle 2-core machine (~3 min with
# num_threads=2); tests/integration/test_video_ground_truth.py checks it.
VIDEO_DEFAULTS: dict[str, Any] = {"width": 16}
DEFAULT_PRESET = "small"


def freeze_frames(x: Tensor) -> Tensor:
    """Clips (…, C, T, H, W) -> the same clips with every frame replaced by frame ``T // 2``: no motion left."""
    t = x.shape[-3]
    return x[..., t // 2:t // 2 + 1, :, :].expand_as(x).contiguous()


def jitter(x: Tensor, gen: torch.Generator, clip_len: int, shift: int, colours: bool = False) -> Tensor:
    """Per sample a random ``clip_len``-frame window of (N, C, T, H, W) ``x`` and, with ``colours``, a random
    channel order; then one random spatial shift of at most ``shift`` pixels (reflect-padded) for the batch.
    Labels do not change: motion direction is kept, and colour never decides the synthetic classes."""
    n, c, t, h, w = x.shape
    starts = torch.randint(0, t - clip_len + 1, (n,), generator=gen)
    x = torch.stack([x[i, :, int(s):int(s) + clip_len] for i, s in enumerate(starts)]).float()
    if colours:
        perm = torch.stack([torch.randperm(c, generator=gen) for _ in range(n)])
        x = x[torch.arange(n)[:, None], perm]
    if shift > 0:
        dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
        x = F.pad(x.reshape(n, c * clip_len, h, w), (shift, shift, shift, shift), mode="reflect")
        x = x[..., shift + dy:shift + dy + h, shift + dx:shift + dx + w].reshape(n, c, clip_len, h, w)
    return x


def train_video(data_root: Path | str, out_path: Path | str, *, arch: str = "small3d", epochs: int = 60,
                seed: int = 0, arch_kwargs: dict[str, Any] | None = None, preset: str = DEFAULT_PRESET,
                clip_len: int = 16, num_threads: int | None = None, progress: Progress | None = None,
                batch_size: int = 16, lr: float = 3e-3, weight_decay: float = 1e-4, temporal_jitter: int = 8,
                shift: int = 4, colours: bool = True, val_every: int = 1) -> dict[str, Any]:
    """Train ``arch`` on ``data_root``'s UCF-101 trainlist01, evaluate on testlist01, save to ``out_path``.

    ``preset`` names the preprocessing (:func:`~xcore.data.video_decode.video_preset`: "small" = 56 px crops,
    "kinetics" = 112 px); ``arch_kwargs`` default to :data:`VIDEO_DEFAULTS` for ``small3d``. ``temporal_jitter``
    extra frames are decoded around each train clip for random windows; ``colours`` permutes the channels at
    random (for data whose colours do not decide the class, as the synthetic set's). Returns the checkpoint
    metadata with ``val_accuracy`` (test centre clips) and ``freeze_frame_accuracy``; ``val_every`` > 1 skips
    the test evaluation between those epochs (the weights are the same).
    """
    started = time.perf_counter()
    with reproducible(seed, num_threads):
        try:
            transform = video_preset(preset)
        except ValueError as err:
            raise UsageError(str(err)) from None
        train = UCF101Reader(data_root, "train", transform=transform, clip_len=clip_len + temporal_jitter)
        test = UCF101Reader(data_root, "test", transform=transform, clip_len=clip_len)
        x_train, y_train, skip_train = load_samples(train, torch.float16)
        x_test, y_test, skip_test = load_samples(test, torch.float16)
        loaded = time.perf_counter() - started
        kwargs = dict((VIDEO_DEFAULTS if arch == "small3d" else {}) if arch_kwargs is None else arch_kwargs)
        model = build_model(arch, len(train.classes), **kwargs)

        def prepare_eval(xb: Tensor) -> Tensor:
            return xb.float()

        val_acc = fit(model, (x_train, y_train), (x_test, y_test),
                      prepare=lambda xb, gen: jitter(xb, gen, clip_len, shift, colours), prepare_eval=prepare_eval,
                      epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                      progress=progress, val_every=val_every)
        freeze_acc = evaluate(model, freeze_frames(x_test), y_test, prepare_eval)
        meta: dict[str, Any] = {
            "arch": arch, "num_classes": len(train.classes), "classes": list(train.classes),
            "class_names": list(train.classes), "input_size": [3, clip_len, transform.size, transform.size],
            "modality": "video", "dataset_kind": "ucf101", "preset": preset, "clip_len": clip_len,
            "mean": list(transform.mean), "std": list(transform.std), "val_accuracy": val_acc,
            "freeze_frame_accuracy": freeze_acc, "chance": 1.0 / len(train.classes), "arch_kwargs": kwargs,
            "train": {"data_root": str(data_root), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                      "weight_decay": weight_decay, "seed": seed, "temporal_jitter": temporal_jitter,
                      "shift": shift, "colours": colours, "n_train": len(x_train), "n_val": len(x_test),
                      "skipped": skip_train + skip_test, "decode_seconds": round(loaded, 1),
                      "seconds": round(time.perf_counter() - started, 1)},
        }
        save_checkpoint(out_path, model.eval(), meta)
        return meta
