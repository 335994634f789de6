"""One training on several devices with Ray Train: :func:`xcore.models.train_loop.fit_dataset` in every worker of a
``ray.train.torch.TorchTrainer`` (data-parallel DDP; gloo on CPUs, NCCL on GPUs).

How to run one ROAR / KAR unit's retraining (Hooker et al. 2019, *A Benchmark for Interpretability Methods in Deep
Neural Networks*: retrain from scratch on the degraded training set) on several devices:

1. Write a ``build()`` (a module-level function, or a ``functools.partial`` of one, in a module the workers can
   import; else ``ray.cloudpickle.register_pickle_by_value(module)``) that returns ``(model, dataset)``: the
   freshly initialised architecture (e.g. ``build_model(meta["arch"], meta["num_classes"],
   **meta["arch_kwargs"])``) and the keyed degraded training set (keys ``(epoch, index)``, augmentation seeded
   by ``(seed, epoch, index)``, see :mod:`xcore.models.train_loop`). Every worker calls it
   under :func:`xcore.models.train.reproducible` with the same ``seed``, so the initialisation is the same on
   every rank (DDP also broadcasts rank 0's parameters). Point it at files every node can read.
2. Take the original model's recipe, ``Recipe.from_meta(meta["train"])``: the batch size is the GLOBAL batch, so
   the schedule and learning rate need no change with the number of workers.
3. Start or join Ray (``tasks.runtime.init_ray``: ``RAY_ADDRESS`` set joins that cluster, else a private local
   instance) and call ``fit_with_ray_train(build, recipe, seed=seed, num_workers=N, use_gpu=True,
   storage_path=...)``: N workers, one GPU each (``use_gpu=False``: one CPU each), results and the checkpoint under
   ``storage_path`` (a directory every node can write, or a ``s3://`` / ``gs://`` URI, on a multi-node cluster).
4. Load the returned ``state_dict`` into a fresh model and count test accuracy with
   :func:`xcore.models.train_loop.evaluate_dataset`.

Each worker trains on its contiguous slice of every global batch, and the per-rank loss makes DDP's average
gradient the gradient of the mean loss over the global batch: the weights equal a one-process
:func:`~xcore.models.train_loop.fit_dataset` with the same seed up to float summation order (tested on CPUs).
BatchNorm statistics are per rank on CPUs (keep BatchNorm out of a CPU multi-worker run, or accept the
difference); on GPUs the worker converts BatchNorm to ``SyncBatchNorm`` (statistics over the global batch) and
asks for deterministic algorithms with ``warn_only`` (some CUDA kernels have none), so GPU runs are repeatable
only where the kernels are.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from xcore.errors import UsageError
from xcore.models.train import reproducible
from xcore.models.train_loop import Recipe, fit_dataset

log = logging.getLogger("xcore.ray_train")
Build = Callable[[], tuple[nn.Module, Dataset]]
WEIGHTS = "model.pt"


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: build, train its share, and (rank 0) report the weights as a checkpoint."""
    import ray.train
    import ray.train.torch

    build: Build = config["build"]
    recipe: Recipe = config["recipe"]
    seed: int = config["seed"]
    device = ray.train.torch.get_device()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if device.type == "cuda":  # deterministic cuBLAS (reproducible() turns deterministic algorithms on)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with reproducible(seed):
        if device.type == "cuda":  # some CUDA kernels (e.g. adaptive pooling's backward) have no deterministic form
            torch.use_deterministic_algorithms(True, warn_only=True)
        model, dataset = build()
        if device.type == "cuda" and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        summary = fit_dataset(model, dataset, recipe, seed=seed, device=str(device),
                              progress=lambda p: log.info("epoch %d/%d loss %.4f", p["epoch"], p["epochs"], p["loss"]))
    metrics = {k: float(v) for k, v in summary.items()}
    if rank != 0:
        ray.train.report(metrics)  # every rank reports (a barrier); only rank 0 carries the weights
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(tmp) / WEIGHTS)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def fit_with_ray_train(build: Build, recipe: Recipe, *, seed: int, num_workers: int, use_gpu: bool = False,
                       storage_path: str) -> dict[str, Tensor]:
    """Train ``build()``'s model on ``build()``'s dataset with ``recipe`` on ``num_workers`` Ray Train workers;
    return the trained ``state_dict`` (CPU tensors).

    ``build`` runs inside each worker under ``reproducible(seed)``; ``seed`` also fixes the batch order.
    ``use_gpu``: one GPU per worker (else one CPU). ``storage_path``: where Ray Train keeps the run and its
    checkpoint (a local path is made absolute). Ray must be initialised by the caller
    (:func:`tasks.runtime.init_ray`); otherwise :func:`~tasks.runtime.init_ray` starts or joins it here. A worker's
    failure raises Ray Train's error (no retries).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if num_workers < 1:
        raise UsageError(f"num_workers must be at least 1, not {num_workers}")
    if not ray.is_initialized():
        from tasks.runtime import init_ray

        init_ray()
    storage = storage_path if "://" in storage_path else str(Path(storage_path).resolve())
    trainer = TorchTrainer(_train_worker, train_loop_config={"build": build, "recipe": recipe, "seed": seed},
                           scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
                           run_config=RunConfig(storage_path=storage))
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint (storage {storage})")
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / WEIGHTS, map_location="cpu", weights_only=True)
