"""Skeleton graphs for ST-GCN: the 25-joint NTU RGB+D edge lists and the "spatial" partition.

Reproduces yysijie/st-gcn ``net/utils/graph.py`` (``Graph(layout='ntu-rgb+d', strategy='spatial')``): joint
order and edge lists of docs/formats/ntu.md §5, hop distances capped at ``max_hop`` (``get_hop_distance``),
column-normalised adjacency (``normalize_digraph``) and the root / close / further subsets of ``get_adjacency``
(the "spatial configuration" partitioning of Yan, Xiong, Lin, *Spatial Temporal Graph Convolutional Networks
for Skeleton-Based Action Recognition*, AAAI 2018). Joint indices here are **0-based**.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from xcore.data.ntu_joints import CENTER_JOINT, NTU_BONES, NUM_JOINTS, STGCN_EDGES

Edge = tuple[int, int]
__all__ = ["NTU_BONES", "NTU_CENTER", "NTU_NUM_JOINTS", "STGCN_EDGES", "Graph", "hop_distance", "normalize_columns",
           "spatial_partition"]

# The NTU layout's constants live with the data format (xcore.data.ntu_joints); re-exported for the model side.
NTU_NUM_JOINTS = NUM_JOINTS
NTU_CENTER = CENTER_JOINT


def hop_distance(num_nodes: int, edges: Sequence[Edge], max_hop: int = 1) -> np.ndarray:
    """(V, V) hop distances of an undirected graph, **capped**: pairs further than ``max_hop`` are ``inf``.

    As yysijie/st-gcn ``net/utils/graph.py`` ``get_hop_distance``: ``d`` is the smallest power ``d <= max_hop``
    of the adjacency (with self-links) that reaches the pair; 0 on the diagonal.
    """
    adjacency = np.eye(num_nodes)
    for i, j in edges:
        adjacency[i, j] = adjacency[j, i] = 1
    reach = np.stack([np.linalg.matrix_power(adjacency, d) for d in range(max_hop + 1)]) > 0
    hops = np.full((num_nodes, num_nodes), np.inf)
    for d in range(max_hop, -1, -1):
        hops[reach[d]] = d
    return hops


def normalize_columns(adjacency: np.ndarray) -> np.ndarray:
    """``A · diag(1 / column sums)`` (all-zero columns stay zero): yysijie ``normalize_digraph``."""
    sums = adjacency.sum(axis=0)
    inverse = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=float), where=sums > 0)
    return adjacency * inverse[None, :]


def spatial_partition(num_nodes: int, edges: Sequence[Edge], center: int, max_hop: int = 1) -> np.ndarray:
    """The "spatial" partition, shape ``(1 + 2·max_hop, V, V)`` — ``(3, V, V)`` for the default ``max_hop=1``.

    As yysijie/st-gcn ``Graph.get_adjacency`` (strategy "spatial"): entries with hop distance ``h <= max_hop`` of
    the column-normalised adjacency are split by comparing ``d_j = hop(j, center)`` with ``d_i = hop(i, center)``
    (capped, so unreachable is ``inf`` and ``inf == inf`` counts as equal): equal -> root, ``d_j > d_i`` -> close,
    ``d_j < d_i`` -> further.
    ``h = 0`` gives the root matrix; each ``h >= 1`` gives (root + close) and further. ``A[k, j, i]`` carries
    node ``j``'s message to node ``i``.
    """
    hops = hop_distance(num_nodes, edges, max_hop)
    normalized = normalize_columns((hops <= max_hop).astype(float))
    to_center = hops[:, center]
    d_j, d_i = to_center[:, None], to_center[None, :]
    subsets: list[np.ndarray] = []
    for h in range(max_hop + 1):
        at_hop = hops == h
        root = np.where(at_hop & (d_j == d_i), normalized, 0.0)
        close = np.where(at_hop & (d_j > d_i), normalized, 0.0)
        further = np.where(at_hop & (d_j < d_i), normalized, 0.0)
        subsets += [root] if h == 0 else [root + close, further]
    return np.stack(subsets)


@dataclass(frozen=True)
class Graph:
    """A skeleton graph (``edges`` 0-based, undirected, without self-links) and its spatial partition ``A``."""

    edges: tuple[Edge, ...]
    num_nodes: int
    center: int
    max_hop: int = 1
    A: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple((int(i), int(j)) for i, j in self.edges))
        if not 0 <= self.center < self.num_nodes or self.max_hop < 1:
            raise ValueError(f"center {self.center} must index one of {self.num_nodes} nodes and max_hop be >= 1")
        if any(not (0 <= i < self.num_nodes and 0 <= j < self.num_nodes) for i, j in self.edges):
            raise ValueError(f"an edge names a node outside 0..{self.num_nodes - 1}")
        object.__setattr__(self, "A", spatial_partition(self.num_nodes, self.edges, self.center, self.max_hop))

    @classmethod
    def layout(cls, name: str) -> Graph:
        """A named layout: ``"ntu-rgb+d"`` = yysijie ``Graph(layout='ntu-rgb+d', strategy='spatial')``."""
        if name != "ntu-rgb+d":
            raise ValueError(f"unknown graph layout {name!r}; known: 'ntu-rgb+d'")
        return cls(STGCN_EDGES, NTU_NUM_JOINTS, NTU_CENTER)
