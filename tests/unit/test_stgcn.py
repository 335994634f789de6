"""ST-GCN graph and model (yysijie/st-gcn ``net/st_gcn.py``, ``net/utils/graph.py``; docs/formats/ntu.md §5–§6;
STG-CAM of Das & Ortega, §2.2): partition values, graph-conv arithmetic,
person averaging, block plans, the CAM decomposition, the reference state-dict layout and BN folding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from xcore.models.fold import folded
from xcore.models.graph import (
    NTU_BONES,
    NTU_CENTER,
    STGCN_EDGES,
    Graph,
    hop_distance,
    spatial_partition,
)
from xcore.models.stgcn import STGCN, ConvTemporalGraphical

# ---------------------------------------------------------------------------------------------- graph


def test_edge_lists_are_the_documented_24_edges() -> None:
    assert len(STGCN_EDGES) == len(NTU_BONES) == 24
    assert set(STGCN_EDGES) - set(NTU_BONES) == {(21, 22), (23, 24)}  # 1-based 22-23, 24-25
    assert set(NTU_BONES) - set(STGCN_EDGES) == {(21, 7), (23, 11)}  # 1-based 22-8, 24-12
    assert (1, 20) in STGCN_EDGES and (0, 1) in STGCN_EDGES  # 1-based 2-21 and 1-2
    assert NTU_CENTER == 20


def test_ntu_partition_matches_the_reference_counts() -> None:
    A = Graph.layout("ntu-rgb+d").A
    assert A.shape == (3, 25, 25)
    assert [int((a != 0).sum()) for a in A] == [25, 40, 8]
    np.testing.assert_allclose(A.sum(axis=0).sum(axis=0), np.ones(25), atol=1e-12)
    # the 8 "further" entries: centre -> its 4 neighbours, and those neighbours -> their outer neighbour
    further = {(int(j), int(i)) for j, i in zip(*np.nonzero(A[2]), strict=True)}
    assert further == {(20, 1), (20, 2), (20, 4), (20, 8), (1, 0), (2, 3), (4, 5), (8, 9)}
    # column-normalised: hand tip (21) has 2 entries in its column (itself, thumb) -> each 1/2
    assert A[0, 21, 21] == pytest.approx(0.5) and A[1, 22, 21] == pytest.approx(0.5)


def test_hop_distance_is_capped() -> None:
    hops = hop_distance(25, STGCN_EDGES)
    assert np.all(np.diag(hops) == 0)
    assert hops[0, 1] == hops[1, 0] == 1 and hops[20, 2] == 1
    assert math.isinf(hops[3, 19])  # head vs right foot
    assert math.isinf(hops[0, 20])  # base of spine is 2 hops from the centre: capped to inf
    assert hop_distance(25, STGCN_EDGES, max_hop=2)[0, 20] == 2
    assert set(np.unique(hops)) == {0.0, 1.0, np.inf}


@pytest.mark.parametrize(("edges", "center", "expected"), [
    # chain 0-1-2 centred on 1: column sums 2, 3, 2; d = (1, 0, 1)
    ([(0, 1), (1, 2)], 1, [
        [[1 / 2, 0, 0], [0, 1 / 3, 0], [0, 0, 1 / 2]],
        [[0, 1 / 3, 0], [0, 0, 0], [0, 1 / 3, 0]],
        [[0, 0, 0], [1 / 2, 0, 1 / 2], [0, 0, 0]],
    ]),
    # chain 0-1-2-3 centred on 0: d = (0, 1, inf, inf); 2<->3 compares inf with inf -> root
    ([(0, 1), (1, 2), (2, 3)], 0, [
        np.diag([1 / 2, 1 / 3, 1 / 3, 1 / 2]),
        [[0, 0, 0, 0], [1 / 2, 0, 0, 0], [0, 1 / 3, 0, 1 / 2], [0, 0, 1 / 3, 0]],
        [[0, 1 / 3, 0, 0], [0, 0, 1 / 3, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    ]),
])
def test_spatial_partition_on_chains(edges: list[tuple[int, int]], center: int, expected: list) -> None:
    n = len(edges) + 1
    np.testing.assert_allclose(spatial_partition(n, edges, center), np.asarray(expected, dtype=float), atol=1e-12)
    np.testing.assert_allclose(Graph(tuple(edges), n, center).A, np.asarray(expected, dtype=float), atol=1e-12)


def test_graph_rejects_bad_nodes() -> None:
    with pytest.raises(ValueError):
        Graph(((0, 3),), 3, 0)
    with pytest.raises(ValueError):
        Graph.layout("openpose")


def test_graph_conv_equals_an_explicit_loop() -> None:
    torch.manual_seed(0)
    A = torch.tensor(Graph(((0, 1), (1, 2)), 3, 1).A, dtype=torch.float32) * torch.rand(3, 3, 3)
    layer = ConvTemporalGraphical(2, 4, kernel_size=3)
    x = torch.randn(2, 2, 5, 3)
    out = layer(x, A)
    W, b = layer.conv.weight[:, :, 0, 0], layer.conv.bias
    expected = torch.zeros(2, 4, 5, 3)
    for n in range(2):
        for c in range(4):
            for t in range(5):
                for w in range(3):
                    for k in range(3):
                        for v in range(3):
                            y = (W[k * 4 + c] * x[n, :, t, v]).sum() + b[k * 4 + c]
                            expected[n, c, t, w] += y * A[k, v, w]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- model


def _model(seed: int = 0, **kw: object) -> STGCN:
    """An eval-mode ST-GCN with non-trivial BN statistics (so all-zero persons give non-zero features)."""
    torch.manual_seed(seed)
    model = STGCN(5, **{"width": 0.25, **kw}).eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.3, 0.3)
    if model.edge_importance is not None:
        for p in model.edge_importance:
            p.data.uniform_(0.5, 1.5)
    return model


def test_data_bn_channel_index_is_v_times_c_plus_c() -> None:
    model = _model()
    bn = model.data_bn
    bn.running_mean.copy_(torch.arange(75.0))
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.data.fill_(1.0)
    bn.bias.data.zero_()
    seen: list[torch.Tensor] = []
    model.st_gcn_networks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    model(torch.zeros(1, 3, 4, 25, 2))
    expected = -(torch.arange(25)[None, :] * 3 + torch.arange(3)[:, None]).float()  # (C, V)
    torch.testing.assert_close(seen[0], expected[None, :, None, :].expand(2, 3, 4, 25))


def test_mean_over_persons_includes_the_zero_person() -> None:
    model = _model()
    model.fcn.weight.data.mul_(20)  # make the zero person's (small) effect on the logits well above the tolerance
    x = torch.randn(3, 3, 20, 25, 2)
    x[..., 1] = 0
    with torch.no_grad():
        logits = model(x)
        per_person = [model(x[..., m : m + 1]) for m in range(2)]
    torch.testing.assert_close(logits, (per_person[0] + per_person[1]) / 2, atol=1e-5, rtol=1e-5)
    assert (logits - per_person[0]).abs().max() > 1e-3  # the zero person is not skipped


def _plan(model: STGCN) -> list[tuple[int, int, int, str]]:
    """(in, out, stride, residual kind) per block, read from the modules."""
    plan = []
    for block in model.st_gcn_networks:
        conv = block.tcn[2]
        kind = ("none" if block.residual is None else "identity" if isinstance(block.residual, nn.Identity)
                else "conv")
        plan.append((block.gcn.conv.in_channels, conv.out_channels, conv.stride[0], kind))
    return plan


def test_ten_and_seven_block_plans() -> None:
    ten = STGCN(60)
    assert _plan(ten) == [(3, 64, 1, "none"), (64, 64, 1, "identity"), (64, 64, 1, "identity"),
                          (64, 64, 1, "identity"), (64, 128, 2, "conv"), (128, 128, 1, "identity"),
                          (128, 128, 1, "identity"), (128, 256, 2, "conv"), (256, 256, 1, "identity"),
                          (256, 256, 1, "identity")]
    assert [b.tcn[4].p for b in ten.st_gcn_networks] == [0.0] + [0.5] * 9
    assert all(b.gcn.conv.out_channels == 3 * b.tcn[2].out_channels for b in ten.st_gcn_networks)
    assert ten.xcore_cam_layer == "st_gcn_networks.9" and ten.fcn.in_channels == 256
    seven = STGCN(60, blocks=7)
    assert _plan(seven) == [(3, 64, 1, "none"), (64, 64, 1, "identity"), (64, 64, 1, "identity"),
                            (64, 128, 2, "conv"), (128, 128, 1, "identity"), (128, 256, 2, "conv"),
                            (256, 256, 1, "identity")]
    assert seven.xcore_cam_layer == "st_gcn_networks.6"
    quarter = STGCN(60, width=0.25)
    assert [p[1] for p in _plan(quarter)] == [16, 16, 16, 16, 32, 32, 32, 64, 64, 64]
    with pytest.raises(ValueError):
        STGCN(60, blocks=8)


@pytest.mark.parametrize(("t", "t_out"), [(300, 75), (64, 16), (63, 16), (5, 2)])
def test_time_is_downsampled_to_ceil_t_over_4(t: int, t_out: int) -> None:
    with torch.no_grad():
        output, feature = _model().extract_feature(torch.randn(2, 3, t, 25, 2))
    assert output.shape == (2, 5, t_out, 25, 2) and feature.shape == (2, 64, t_out, 25, 2)
    assert t_out == math.ceil(t / 4)


def test_extract_feature_is_an_exact_cam_decomposition() -> None:
    model = _model()
    x = torch.randn(2, 3, 32, 25, 2)
    with torch.no_grad():
        logits = model(x)
        output, feature = model.extract_feature(x)
    torch.testing.assert_close(output.mean(dim=(2, 3, 4)), logits, atol=1e-5, rtol=1e-5)
    W, b = model.fcn.weight[:, :, 0, 0], model.fcn.bias
    torch.testing.assert_close(torch.einsum("kc,nctvm->nktvm", W, feature) + b[None, :, None, None, None], output,
                               atol=1e-5, rtol=1e-5)


def test_edge_importance_of_ones_is_the_plain_graph() -> None:
    plain = _model(edge_importance=False)
    weighted = STGCN(5, width=0.25).eval()
    weighted.load_state_dict(plain.state_dict(), strict=False)
    assert plain.edge_importance is None and not any("edge_importance" in k for k in plain.state_dict())
    x = torch.randn(2, 3, 12, 25, 2)
    with torch.no_grad():
        torch.testing.assert_close(weighted(x), plain(x))


def _reference_keys(blocks: int = 10) -> list[str]:
    """yysijie ``Model.state_dict()`` keys, written out from its ``net/st_gcn.py`` (not read off our model)."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    conv_block_residual = {5, 8}  # 1-based blocks with a 1×1 conv + BN residual
    keys = ["A", *(f"data_bn.{s}" for s in bn)]
    kept = [b for b in range(1, 11) if blocks == 10 or b not in (3, 6, 9)]
    for i, b in enumerate(kept):
        p = f"st_gcn_networks.{i}"
        keys += [f"{p}.gcn.conv.weight", f"{p}.gcn.conv.bias", *(f"{p}.tcn.0.{s}" for s in bn),
                 f"{p}.tcn.2.weight", f"{p}.tcn.2.bias", *(f"{p}.tcn.3.{s}" for s in bn)]
        if b in conv_block_residual:
            keys += [f"{p}.residual.0.weight", f"{p}.residual.0.bias", *(f"{p}.residual.1.{s}" for s in bn)]
    keys += [f"edge_importance.{i}" for i in range(len(kept))]
    return [*keys, "fcn.weight", "fcn.bias"]


@pytest.mark.parametrize("blocks", [10, 7])
def test_state_dict_has_the_reference_layout(blocks: int) -> None:
    state = STGCN(60, blocks=blocks).state_dict()
    assert list(state) == _reference_keys(blocks)
    assert state["A"].shape == (3, 25, 25) and state["edge_importance.0"].shape == (3, 25, 25)
    assert state["data_bn.weight"].shape == (75,) and state["st_gcn_networks.0.gcn.conv.weight"].shape == (192, 3, 1, 1)
    assert state["fcn.weight"].shape == (60, 256, 1, 1)


@pytest.mark.parametrize("with_a", [True, False])
def test_reference_state_dict_loads_with_or_without_a(with_a: bool) -> None:
    reference = _model(seed=1)
    state = {k: v.clone() for k, v in reference.state_dict().items() if with_a or k != "A"}
    model = _model(seed=2)
    model.load_state_dict(state)  # strict
    x = torch.randn(2, 3, 16, 25, 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    torch.testing.assert_close(model.A, torch.tensor(Graph.layout("ntu-rgb+d").A, dtype=torch.float32))


def test_state_dict_with_another_graph_is_refused() -> None:
    state = _model().state_dict()
    state["A"] = torch.tensor(Graph(NTU_BONES, 25, NTU_CENTER).A, dtype=torch.float32)
    with pytest.raises(ValueError, match="graph"):
        _model().load_state_dict(state)


def test_fx_trace_and_bn_folding() -> None:
    model = _model()
    x = torch.randn(2, 3, 16, 25, 2)
    traced = torch.fx.symbolic_trace(model)
    fused = folded(model)
    bns = [m for m in fused.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 11  # data_bn and each block's tcn.0 follow a reshape/einsum, not a conv; the rest fold
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
