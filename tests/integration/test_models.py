"""SmallCNN's CAM property, the model zoo, checkpoints (weights_only, atomic, one-line errors) and training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xcore.data import generate_images
from xcore.errors import UsageError
from xcore.models import (
    MODELS,
    SmallCNN,
    build_model,
    load_checkpoint,
    save_checkpoint,
    train_model,
    weights_digest,
)
from xcore.models.zoo import load_weights


def _model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(5)
    model.eval()
    for m in model.modules():  # non-trivial BN statistics so eval-mode round trips are meaningful
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def test_smallcnn_features_feed_gap_and_linear() -> None:
    model = _model()
    x = torch.randn(3, 3, 112, 112)
    feats = model.features(x)
    assert feats.shape == (3, 64, 14, 14)
    assert (feats >= 0).all() and (feats > 0).any()
    torch.testing.assert_close(model.classifier(feats.mean((2, 3))), model(x))
    assert model.get_submodule(SmallCNN.xcore_cam_layer) is model.features


def test_smallcnn_gradcam_equals_cam_over_z() -> None:
    model = _model()
    feats = model.features(torch.randn(1, 3, 112, 112)).detach().requires_grad_(True)
    logits = model.classifier(model.pool(feats).flatten(1))
    logits[0, 2].backward()
    z = feats.shape[2] * feats.shape[3]
    expected = model.classifier.weight[2].detach().view(-1, 1, 1).expand_as(feats[0]) / z
    torch.testing.assert_close(feats.grad[0], expected)


def test_zoo_builds_every_arch_with_a_real_cam_layer() -> None:
    assert MODELS.names() == sorted(["smallcnn", "vgg16", "resnet18", "resnet50", "densenet121", "inception_v3",
                                     "stgcn", "stgcn7", "c3d", "cnn_lstm", "cnn_lstm_attention", "small3d",
                                     "r3d_18", "mc3_18", "r2plus1d_18"])
    assert build_model("small3d", 5).xcore_cam_layer == "features.3"
    assert build_model("r3d_18", 5).xcore_cam_layer == "layer4"
    expected = {"smallcnn": "features", "vgg16": "features.29", "resnet18": "layer4", "resnet50": "layer4",
                "densenet121": "features", "inception_v3": "Mixed_7c", "stgcn": "st_gcn_networks.9",
                "stgcn7": "st_gcn_networks.6"}
    for arch, layer in expected.items():
        model = build_model(arch, 7)
        assert model.xcore_cam_layer == layer
        model.get_submodule(layer)
        last = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]  # ST-GCN: a 1×1 conv head
        assert last.out_channels == 7 if isinstance(last, nn.Conv2d) else last.out_features == 7, arch
    assert isinstance(build_model("vgg16", 3).get_submodule("features.29"), nn.ReLU)
    assert not hasattr(build_model("inception_v3", 3), "AuxLogits") or build_model("inception_v3", 3).AuxLogits is None
    with torch.no_grad():
        assert build_model("resnet18", 4).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(UsageError, match="unknown model"):
        build_model("alexnet", 3)


def _save(tmp_path: Path, model: nn.Module) -> Path:
    meta = {"arch": "smallcnn", "num_classes": 5, "classes": [f"n0{i}" for i in range(5)], "input_size": 112,
            "mean": [0.5] * 3, "std": [0.2] * 3, "val_accuracy": 0.5}
    return save_checkpoint(tmp_path / "ckpt" / "model.pt", model, meta)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = _model(1)
    path = _save(tmp_path, model)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.pt"]  # no temp files left
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["torch"] == torch.__version__ and meta["arch_kwargs"] == {} and meta["class_names"] is None
    assert "created" in meta and meta["val_accuracy"] == 0.5
    loaded, meta2 = load_checkpoint(path)
    assert not loaded.training and meta2 == meta
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())
    digest = weights_digest(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16] and len(digest) == 16
    _save(tmp_path, _model(2))
    assert weights_digest(path) != digest


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("kind", ["missing", "corrupt", "pickle", "not_state_dict", "mismatch", "no_json"])
def test_checkpoint_errors_are_one_line_usage_errors(tmp_path: Path, kind: str) -> None:
    path = _save(tmp_path, _model())
    if kind == "missing":
        path = tmp_path / "nope.pt"
    elif kind == "corrupt":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "pickle":  # weights_only=True refuses arbitrary objects
        torch.save({"features.0.weight": _Evil()}, path)
    elif kind == "not_state_dict":
        torch.save([1, 2, 3], path)
    elif kind == "mismatch":
        save_checkpoint(path, SmallCNN(5, width=8), {"arch": "smallcnn", "num_classes": 5})
        meta = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**meta, "arch_kwargs": {}}))
    else:
        path.with_suffix(".json").unlink()
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and path.stem in str(info.value)


def test_load_weights_strips_wrappers(tmp_path: Path) -> None:
    model = _model(3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "w.pt")
    fresh = load_weights(SmallCNN(5), tmp_path / "w.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_train_one_short_epoch(tmp_path: Path) -> None:
    root = generate_images(tmp_path / "shapes", n_train_per_class=4, n_val=6, size=48, seed=1)
    seen: list[dict] = []
    threads = torch.get_num_threads()
    meta = train_model(root, tmp_path / "m.pt", epochs=1, batch_size=8, num_threads=1, progress=seen.append)
    assert torch.get_num_threads() == threads
    assert [d["epoch"] for d in seen] == [1] and 0.0 <= meta["val_accuracy"] <= 1.0
    assert meta["input_size"] == 48 and meta["num_classes"] == 6 and meta["classes"][0] == "n09000000"
    assert meta["class_names"][0].startswith("disc")
    model, saved = load_checkpoint(tmp_path / "m.pt")
    assert saved["val_accuracy"] == meta["val_accuracy"] and isinstance(model, SmallCNN)


def _trained_state(root: Path, out: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    train_model(root, out, epochs=1, batch_size=8, seed=seed, arch_kwargs={"width": 4, "blocks": 2})
    return torch.load(out, weights_only=True)


def test_training_is_bit_reproducible_whatever_the_callers_threads_and_rng(tmp_path: Path) -> None:
    """The trainer fixes its own thread count and deterministic algorithms and seeds the initialisation, so the
    caller's ``torch.set_num_threads`` and earlier draws from the global RNG change no bit of the weights; its
    settings and RNG states are the caller's again afterwards."""
    root = generate_images(tmp_path / "shapes", n_train_per_class=4, n_val=6, size=48, seed=1)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    states, restored = [], []
    try:
        for outer in (1, 2):
            torch.set_num_threads(outer)
            torch.rand(outer)  # the process drew something else from the global RNG before each training
            rng, np_rng = torch.get_rng_state(), np.random.get_state()[1].copy()
            states.append(_trained_state(root, tmp_path / f"m{outer}.pt"))
            restored.append((torch.get_num_threads() == outer, torch.are_deterministic_algorithms_enabled() == det,
                             torch.equal(torch.get_rng_state(), rng), np.array_equal(np.random.get_state()[1], np_rng)))
    finally:
        torch.set_num_threads(threads)
    first, second = states
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
    assert restored == [(True, True, True, True)] * 2  # threads, algorithms, torch RNG, NumPy RNG
    other = _trained_state(root, tmp_path / "seed1.pt", seed=1)  # the seed does decide the weights
    assert not torch.equal(other["classifier.weight"], first["classifier.weight"])


def test_torchvision_weight_files_load_without_a_sidecar(tmp_path: Path) -> None:
    """torchvision's file names identify arch and preprocessing; its legacy key names are fixed on load."""
    from xcore.models import build_model, load_checkpoint

    torch.manual_seed(0)
    net = build_model("densenet121", 1000)
    # torchvision's published DenseNet file uses pre-0.3 names: "norm.1" for "norm1", "conv.2" for "conv2"
    legacy = {k.replace("norm1", "norm.1").replace("conv2", "conv.2"): v for k, v in net.state_dict().items()
              if not k.endswith("num_batches_tracked")}  # and it predates num_batches_tracked
    assert any(".norm.1." in k for k in legacy)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(legacy, path)
    model, meta = load_checkpoint(path)
    assert meta["arch"] == "densenet121" and meta["input_size"] == 224 and meta["resize"] == 256
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), atol=1e-5)
    inc = build_model("inception_v3", 1000)
    state = {**inc.state_dict(), "AuxLogits.fc.weight": torch.zeros(1000, 768)}
    torch.save(state, tmp_path / "inception_v3_google-0cc3c7bd.pth")
    model, meta = load_checkpoint(tmp_path / "inception_v3_google-0cc3c7bd.pth")
    assert meta["input_size"] == 299 and torch.equal(model.fc.weight, inc.fc.weight)
    with pytest.raises(UsageError, match=r"metadata .* does not exist"):
        torch.save(state, tmp_path / "mystery.pth")
        load_checkpoint(tmp_path / "mystery.pth")
