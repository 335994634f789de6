"""The CUDA paths, against the same computation on the CPU (each also tested on the CPU elsewhere): deletion /
insertion, Grad-CAM, per-frame Grad-CAM through a CNN-LSTM (cuDNN's RNN off for the backward), and one actor per
GPU with its device taken from Ray's assignment. Skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them."""

from __future__ import annotations

import pytest
import torch

import xcore.explain
import xcore.metrics
from xcore.models.video_nets import CNNLSTM

pytestmark = pytest.mark.gpu


def _both(fn):
    """``fn(device)`` on the CPU and on CUDA, in float32 with TF32 off (so only summation order differs)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return fn("cpu"), fn("cuda")


def test_deletion_insertion_and_gradcam_on_cuda_equal_cpu(tiny_data, tiny_model, tmp_path):
    from xcore.models import load_checkpoint
    from xcore.pipeline import open_job

    ds = open_job("explain", {"dataset": str(tiny_data), "model": str(tiny_model), "out": str(tmp_path),
                              "methods": {"gradcam": {}}, "metrics": {}}).open_dataset()
    x = torch.stack([ds.load(i).x for i in range(6)])

    def run(device: str) -> dict[str, torch.Tensor]:
        model, _ = load_checkpoint(str(tiny_model), device)
        xd = x.to(device)
        target = model(xd).argmax(1)
        maps = xcore.explain.run("gradcam", model, xd, target, layer="features")
        scores = xcore.metrics.run("deletion_insertion", model, xd, maps.cpu(), target, steps=8)
        return {"map": maps.detach().cpu(), **{k: v.cpu() for k, v in scores.items() if k.endswith("auc")}}

    cpu, cuda = _both(run)
    assert torch.allclose(cuda["map"], cpu["map"], rtol=1e-4, atol=1e-5 * cpu["map"].abs().max().item())
    for key in ("deletion_auc", "insertion_auc"):  # a near tie may reorder one pixel: one step of 8 at most
        assert torch.allclose(cuda[key].double(), cpu[key].double(), atol=1.5 / 8)


def test_lstm_gradcam_on_cuda_equals_cpu():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 64, 64)

    def run(device: str) -> torch.Tensor:
        torch.manual_seed(0)
        model = CNNLSTM(4, hidden=8, attention=True).eval().to(device)
        return xcore.explain.run("lstm_gradcam", model, x.to(device), torch.tensor([1, 2], device=device)).cpu()

    cpu, cuda = _both(run)
    assert cuda.shape == cpu.shape and torch.allclose(cuda, cpu, rtol=1e-3, atol=1e-4 * cpu.abs().max().item())


@pytest.mark.slow
def test_one_actor_per_gpu_runs_on_its_assigned_device(explain_cfg):
    import ray

    from tasks.actor_pool import RayExecutor
    from xcore.pipeline import open_job

    ray.init(address="local", num_cpus=2, num_gpus=torch.cuda.device_count(), include_dashboard=False)
    try:
        job = open_job("explain", explain_cfg)
        pool = RayExecutor("explain", job.config)
        try:
            while not pool.ready_slots():
                pass
            record = pool.describe()
        finally:
            pool.close()
    finally:
        ray.shutdown()
    assert pool.size == torch.cuda.device_count() and pool.options["num_gpus"] == 1.0
    assert [a["device"] for a in record["actors"]][:1] == ["cuda"] and record["actors"][0]["gpu_ids"]
    assert record["actors"][0]["warning"] is None
