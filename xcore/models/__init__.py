"""Models: the registry of architectures, checkpoints with metadata, and CPU training of the shapes model."""

from __future__ import annotations

from xcore.models.checkpoint import load_checkpoint, save_checkpoint, weights_digest
from xcore.models.smallcnn import SmallCNN
from xcore.models.train import train_model
from xcore.models.train_loop import GlobalBatchSampler, Recipe, evaluate_dataset, fit_dataset
from xcore.models.train_skeleton import train_skeleton
from xcore.models.train_video import train_video
from xcore.models.zoo import MODELS, build_model, load_weights

__all__ = [
    "MODELS",
    "GlobalBatchSampler",
    "Recipe",
    "SmallCNN",
    "build_model",
    "evaluate_dataset",
    "fit_dataset",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "train_model",
    "train_skeleton",
    "train_video",
    "weights_digest",
]
