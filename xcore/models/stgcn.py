"""ST-GCN for skeleton sequences, with the module layout of yysijie/st-gcn ``net/st_gcn.py``.

Follows the reference code (``net/st_gcn.py``, ``net/utils/tgcn.py``; input as docs/formats/ntu.md §6):
input (N, C, T, V, M); data BN over (N·M, V·C, T) with channel ``v·C + c``; ten st_gcn blocks (spatial kernel
K = 3, temporal kernel 9, strides 2 at blocks 5 and 8); learnable edge importance per block; persons folded into
the batch, pooled over (T', V), averaged over M **including all-zero padded persons**; a 1×1 Conv2d classifier.
``extract_feature`` gives the exact CAM decomposition used by STG-CAM (Das, Ortega, *Gradient-weighted Class
Activation Mapping for Spatio Temporal Graph Convolutional Network*, §2.2). Parameter and buffer names equal the
reference's, so its state dicts load.

Deviation without effect on values or keys: ReLU and Dropout are not in-place (the reference's are), so
module backward hooks used by explainers work; the "no residual" / "identity residual" lambdas become
``None`` / ``nn.Identity`` (no parameters either way).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from xcore.models.graph import Graph

#: (out channels, temporal stride) of the ten reference blocks (yysijie/st-gcn ``net/st_gcn.py`` ``Model``); block 1
#: takes the input channels.
STGCN_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (64, 1), (64, 1), (64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1),
)
#: 1-based blocks removed by the 7-block variant (Das & Ortega, STG-Grad-CAM paper §3.2: "We removed the 3rd, 6th
#: and 9th layer").
SEVEN_BLOCK_REMOVED = (3, 6, 9)


class ConvTemporalGraphical(nn.Module):
    """Graph convolution (yysijie/st-gcn ``net/utils/tgcn.py`` ``ConvTemporalGraphical``).

    A 1×1 Conv2d maps ``C_in`` to ``K·C_out``; the result (N, K, C_out, T, V) is contracted with ``A`` (K, V, W)
    over k and v: ``out[n, c, t, w] = Σ_k Σ_v x[n, k, c, t, v] · A[k, v, w]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=1)

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        x = self.conv(x)
        n, kc, t, v = x.size(0), x.size(1), x.size(2), x.size(3)
        x = x.view(n, self.kernel_size, kc // self.kernel_size, t, v)
        return torch.einsum("nkctv,kvw->nctw", x, adjacency).contiguous()


class STGCNBlock(nn.Module):
    """One st_gcn block: gcn -> BN -> ReLU -> temporal Conv2d (k×1, stride (s, 1)) -> BN -> Dropout, plus a residual.

    Residual (as yysijie/st-gcn ``net/st_gcn.py`` ``st_gcn``): none when ``residual=False``; identity when
    ``in == out`` and ``stride == 1``; else a 1×1 Conv2d with stride (s, 1) followed by BN. Output
    ``ReLU(tcn(gcn(x)) + residual(x))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: int = 1,
                 dropout: float = 0.0, residual: bool = True) -> None:
        super().__init__()
        temporal, spatial = kernel_size
        if temporal % 2 != 1:
            raise ValueError(f"the temporal kernel must be odd, got {temporal}")
        self.gcn = ConvTemporalGraphical(in_channels, out_channels, spatial)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, (temporal, 1), (stride, 1), ((temporal - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout),
        )
        self.residual: nn.Module | None
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:
        y = self.tcn(self.gcn(x, adjacency))
        if self.residual is not None:
            y = y + self.residual(x)
        return self.relu(y)


def block_plan(blocks: int = 10, width: float = 1.0) -> list[tuple[int, int]]:
    """(out channels, stride) per block: the reference ten, or seven without blocks 3, 6, 9; widths scaled."""
    if blocks == 10:
        plan: Sequence[tuple[int, int]] = STGCN_BLOCKS
    elif blocks == 7:
        plan = [b for i, b in enumerate(STGCN_BLOCKS, start=1) if i not in SEVEN_BLOCK_REMOVED]
    else:
        raise ValueError(f"blocks must be 10 (reference) or 7 (blocks 3, 6, 9 removed), got {blocks}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return [(max(1, round(c * width)), s) for c, s in plan]


class STGCN(nn.Module):
    """ST-GCN (yysijie ``net/st_gcn.py`` ``Model``) on input (N, C, T, V, M); ``forward`` returns (N, classes).

    ``graph`` is a layout name (``"ntu-rgb+d"``) or a :class:`~xcore.models.graph.Graph`. ``num_person`` is the
    M of the data layout (metadata; like the reference, ``forward`` accepts any M). The CAM layer is the last
    block, whose output is person-folded: (N·M, C, T', V).
    """

    xcore_cam_layer = "st_gcn_networks.9"

    def __init__(self, num_classes: int, *, in_channels: int = 3, graph: str | Graph = "ntu-rgb+d", blocks: int = 10,
                 width: float = 1.0, temporal_kernel: int = 9, edge_importance: bool = True, dropout: float = 0.5,
                 num_person: int = 2) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or num_person < 1:
            raise ValueError("num_classes, in_channels and num_person must be positive")
        self.graph = Graph.layout(graph) if isinstance(graph, str) else graph
        self.register_buffer("A", torch.tensor(self.graph.A, dtype=torch.float32))
        spatial, num_nodes = self.A.size(0), self.A.size(1)
        self.data_bn = nn.BatchNorm1d(in_channels * num_nodes)
        layers: list[STGCNBlock] = []
        cin = in_channels
        for i, (cout, stride) in enumerate(block_plan(blocks, width)):
            first = i == 0  # block 1: no residual, no dropout (the reference's kwargs0)
            layers.append(STGCNBlock(cin, cout, (temporal_kernel, spatial), stride,
                                     dropout=0.0 if first else dropout, residual=not first))
            cin = cout
        self.st_gcn_networks = nn.ModuleList(layers)
        self.edge_importance = (nn.ParameterList(nn.Parameter(torch.ones_like(self.A)) for _ in layers)
                                if edge_importance else None)
        self.fcn = nn.Conv2d(cin, num_classes, kernel_size=1)
        self.num_classes, self.in_channels, self.num_person = num_classes, in_channels, num_person
        self.xcore_cam_layer = f"st_gcn_networks.{len(layers) - 1}"
        self.register_load_state_dict_pre_hook(_own_graph_if_missing)

    def _backbone(self, x: Tensor) -> Tensor:
        """(N, C, T, V, M) -> last-block features (N·M, C', T', V)."""
        N, C, T, V, M = x.size(0), x.size(1), x.size(2), x.size(3), x.size(4)
        x = x.permute(0, 4, 3, 1, 2).contiguous().view(N * M, V * C, T)
        x = self.data_bn(x)
        x = x.view(N, M, V, C, T).permute(0, 1, 3, 4, 2).contiguous().view(N * M, C, T, V)
        for i, block in enumerate(self.st_gcn_networks):
            A = self.A if self.edge_importance is None else self.A * self.edge_importance[i]
            x = block(x, A)
        return x

    def forward(self, x: Tensor) -> Tensor:
        N, M = x.size(0), x.size(4)
        pooled = self._backbone(x).mean(dim=(2, 3))  # GAP over (T', V)
        pooled = pooled.view(N, M, -1, 1, 1).mean(dim=1)  # mean over persons, padded ones included
        return self.fcn(pooled).view(N, -1)

    def extract_feature(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(output (N, classes, T', V, M), feature (N, C', T', V, M)): the classifier applied before pooling.

        Pooling and the 1×1 classifier are linear, so ``output.mean((2, 3, 4))`` equals ``forward(x)``.
        """
        N, M = x.size(0), x.size(4)
        x = self._backbone(x)
        c, t, v = x.size(1), x.size(2), x.size(3)
        feature = x.view(N, M, c, t, v).permute(0, 2, 3, 4, 1)
        output = self.fcn(x).view(N, M, -1, t, v).permute(0, 2, 3, 4, 1)
        return output, feature


def _own_graph_if_missing(module: STGCN, state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    """Load-state-dict pre-hook: a dict without the ``A`` buffer keeps the model's own graph; one with an ``A``
    different from the model's is refused (a different edge list or partition is a different model: docs/formats/ntu.md
    §5).
    """
    key = prefix + "A"
    if key not in state_dict:
        state_dict[key] = module.A.detach().clone()
        return
    theirs = state_dict[key]
    if theirs.shape != module.A.shape or not torch.allclose(theirs.to(module.A), module.A, atol=1e-6):
        raise ValueError(f"state dict {key!r} is not this model's graph; build the model with the graph it was "
                         "trained with (edge list, centre, partition)")
