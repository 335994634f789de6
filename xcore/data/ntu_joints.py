"""The 25-joint Kinect v2 skeleton of NTU RGB+D: joint order and the two edge lists (docs/formats/ntu.md §5).

Joint indices are **0-based** (the dataset's documentation counts from 1). :data:`STGCN_EDGES` is the graph of
the ST-GCN reference (yysijie/st-gcn ``net/utils/graph.py``, layout ``ntu-rgb+d``) and is for the ST-GCN model
only; :data:`NTU_BONES` are the official bones (shahroudy/NTURGB-D ``Matlab/show_skeleton_on_RGB_frames.m``),
for drawing, bone features and everything else. The two differ only at the hands.
"""

from __future__ import annotations

NUM_JOINTS = 25
CENTER_JOINT = 20
"""0-based index of "spine at shoulders" (1-based joint 21), the ST-GCN graph center."""
JOINT_NAMES: tuple[str, ...] = (
    "base of spine", "middle of spine", "neck", "head",
    "left shoulder", "left elbow", "left wrist", "left hand",
    "right shoulder", "right elbow", "right wrist", "right hand",
    "left hip", "left knee", "left ankle", "left foot",
    "right hip", "right knee", "right ankle", "right foot",
    "spine at shoulders", "tip of left hand", "left thumb", "tip of right hand", "right thumb",
)
"""Kinect v2 joint order, 0-based (Shahroudy et al., NTU RGB+D, CVPR 2016, Fig. 1)."""

_SHARED_EDGES_1B = ((1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
                    (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19))
STGCN_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a - 1, b - 1) for a, b in (*_SHARED_EDGES_1B, (22, 23), (23, 8), (24, 25), (25, 12)))
"""ST-GCN reference graph (yysijie/st-gcn layout ``ntu-rgb+d``), 0-based: use it for the ST-GCN model only."""
NTU_BONES: tuple[tuple[int, int], ...] = tuple(
    (a - 1, b - 1) for a, b in (*_SHARED_EDGES_1B, (22, 8), (23, 8), (24, 12), (25, 12)))
"""Official NTU bones (``show_skeleton_on_RGB_frames.m``), 0-based: drawing, bone features, everything else."""
