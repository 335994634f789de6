"""Shared fixtures: a tiny synthetic dataset and model, one Ray instance and one Prefect harness per session.

Ray and Prefect are imported inside their fixtures only, so test modules that never request them keep the
process free of both (several tests check that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data in the real ImageNet layout: 6 classes, 6 train images each, 10 val images, 32 px."""
    from xcore.data import generate_images

    return generate_images(tmp_path_factory.mktemp("data") / "shapes", n_train_per_class=6, n_val=10, size=32)


@pytest.fixture(scope="session")
def tiny_model(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block, width-4 SmallCNN trained for one epoch (seconds on a CPU)."""
    from xcore.models import train_model

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    train_model(tiny_data, path, epochs=1, arch_kwargs={"width": 4, "blocks": 2}, num_threads=1)
    return path


@pytest.fixture(scope="session")
def demo_shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo's data and model, made exactly as ``xai demo`` makes them (the defaults: the weights are the
    demo's bit for bit). Made once per test run: under pytest-xdist the workers share one copy (a file lock in
    the run's common temp folder), so the ground-truth and filter tests train it once (~3 min on one thread)."""
    from filelock import FileLock

    from xcore.data import generate_images
    from xcore.models import train_model

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "demo-shapes"
    folder.mkdir(exist_ok=True)
    with FileLock(str(folder / ".lock")):
        root = generate_images(folder / "shapes")
        ckpt = folder / "model" / "smallcnn.pt"
        if not ckpt.is_file():
            ckpt.parent.mkdir(exist_ok=True)
            train_model(root, ckpt)
    return root, ckpt


@pytest.fixture
def explain_cfg(tiny_data: Path, tiny_model: Path, tmp_path: Path) -> dict[str, Any]:
    """An explain-job config over the tiny data: 3 shards (4, 4, 2 samples)."""
    return {"dataset": str(tiny_data), "model": str(tiny_model), "out": str(tmp_path / "runs"),
            "methods": {"gradient": {}, "gradcam": {"layer": "features"}, "random": {}},
            "metrics": {"deletion_insertion": {"steps": 8}}, "shard_size": 4, "batch_size": 3}


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """One local Ray instance for the whole session (2 CPUs, no GPU)."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=256 * 1024**2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server and database for the session (only where a flow really runs)."""
    from flows import prefect_env

    prefect_env.configure(home=tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


# The integration tests run on three pytest-xdist workers (``make test``: ``-n 3 --dist loadfile
# --no-loadscope-reorder``): one unit of work per module, except the engine modules (tests marked ``engine``),
# which are one unit together, so they run one after another (they start Ray nodes and Prefect servers and mostly
# wait on them). Units are handed out in the order below, the longest first, so no worker starts a long module at
# the end; the modules that reuse the demo model follow the one that trains it (``demo_shapes``), so no worker
# sits on its lock. The rest keep collection order.
FIRST = ("engine", "test_video_ground_truth", "test_ground_truth", "test_skeleton_ground_truth", "test_roar",
         "test_ray_train", "test_filters", "test_evaluation", "test_bam")
ENGINE_MODULES = frozenset(p.name for p in (Path(__file__).parent / "integration").glob("test_*.py")
                           if "pytest.mark.engine" in p.read_text(encoding="utf-8"))


def _unit(path: str) -> str:
    """The unit of work of a test in file ``path``: ``engine`` or the module's name."""
    name = Path(path).name
    return "engine" if name in ENGINE_MODULES else Path(name).stem


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the engine modules as one unit (pytest-xdist's ``loadgroup`` cannot group under
    pytest 9.2, whose node ids no longer take its ``@group`` suffix)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "engine" if Path(path).name in ENGINE_MODULES else path

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the units of work on pytest-xdist's workers (the controller hands them out in collection order under
    ``--no-loadscope-reorder``); skip ``gpu`` tests where torch sees no CUDA device (each repeats a CPU-tested
    computation)."""
    if hasattr(config, "workerinput"):
        rank = {name: i for i, name in enumerate(FIRST)}
        items.sort(key=lambda item: rank.get(_unit(str(item.path)), len(FIRST)))  # stable: collection order otherwise
    _skip_gpu(items)


def _skip_gpu(items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (benchmarks/gpu_check.sh runs these where a GPU is lent)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
