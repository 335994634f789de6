"""ROAD's noisy linear imputation (Rong, Leemann, Borisov, Kasneci, Kasneci, *A Consistent and Efficient
Evaluation Strategy for Attribution Methods*, ICML 2022 — "ROAD"; tleemann/road_evaluation
``road/imputations.py``, ``NoisyLinearImputer``).

A removed pixel ``i`` takes the weighted mean of its in-image 8-neighbours ``j``:

    Σ_j w_ij (x_j − x_i) = 0,   w = 1/6 for the 4-neighbours (0, ±1), (±1, 0), 1/12 for the diagonals

(:data:`neighbour_weights`). Removed neighbours are unknowns too, so the equations of all N removed pixels form
one sparse N×N system per channel (:func:`linear_system`), solved with SciPy's sparse LU; the solution plus
``noise · N(0, 1)`` fills the removed values (:func:`noisy_linear`). The noise hides the mask's shape from a model
that never saw it during training (ROAD: the imputation itself should not leak the removal order).

Properties the tests pin down: inside the image the weights are point-symmetric, so a linear ramp
``a·r + b·c + d`` satisfies every equation and holes away from the border are refilled exactly. At the border
only in-image neighbours count (the reference's ``sum_neighbors`` minus the weights of neighbours that fall
outside), so there a ramp is reproduced only when it is constant across that border (e.g. ``b·c + d`` along the
top row); a removed corner pixel is the weighted mean of its three in-image neighbours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from scipy.sparse import csc_matrix

#: ROAD's neighbour weights by (row, column) offset: 1/6 for the 4-neighbours, 1/12 for the diagonals (sum 1).
neighbour_weights: Mapping[tuple[int, int], float] = MappingProxyType({
    (0, 1): 1 / 6, (0, -1): 1 / 6, (1, 0): 1 / 6, (-1, 0): 1 / 6,
    (1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12,
})

Noise = float | Sequence[float] | Tensor


def _image(x: Tensor | np.ndarray) -> np.ndarray:
    """``x`` (C, H, W) as a float64 NumPy array (a copy for a tensor)."""
    arr = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"expected an image (C, H, W), got shape {tuple(arr.shape)}")
    return arr


def _mask(removed: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(removed, Tensor):
        removed = removed.detach().cpu().numpy()
    return np.asarray(removed).astype(bool, copy=False)


def linear_system(x: Tensor | np.ndarray, removed: Tensor | np.ndarray) -> tuple[csc_matrix, np.ndarray]:
    """ROAD's sparse system for the pixels ``removed`` (H, W) bool of the image ``x`` (C, H, W).

    One equation per removed pixel, numbered by flat (row-major) index ``0..N−1``:
    ``Σ_j w_ij (x_j − x_i) = 0`` over the in-image 8-neighbours ``j`` of ``i``, i.e.
    ``A[i, i] = −Σ_j w_ij``, ``A[i, j] = w_ij`` for a removed neighbour ``j`` and ``b[i] = −Σ_{kept j} w_ij x_j``
    (tleemann/road_evaluation ``road/imputations.py``, ``NoisyLinearImputer.setup_sparse_system``).
    Returns ``A`` (N, N) in CSC format and ``b`` (N, C), one right-hand side per channel. The values of ``x`` at
    removed pixels are never read.
    """
    from scipy.sparse import csc_matrix

    img = _image(x)
    mask = _mask(removed)
    C, H, W = img.shape
    if mask.shape != (H, W):
        raise ValueError(f"removed mask {mask.shape} does not match the image's (H, W) = {(H, W)}")
    flat_removed = mask.ravel()
    idx = np.flatnonzero(flat_removed)
    N = idx.size
    unknown_of = np.full(H * W, -1, dtype=np.int64)
    unknown_of[idx] = np.arange(N)
    rows, cols = np.divmod(idx, W)
    values = img.reshape(C, H * W)
    diagonal = np.zeros(N)
    b = np.zeros((N, C))
    entries_i: list[np.ndarray] = []
    entries_j: list[np.ndarray] = []
    entries_w: list[np.ndarray] = []
    for (dr, dc), w in neighbour_weights.items():
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
        eq = np.flatnonzero(inside)  # equations whose neighbour at this offset lies in the image (each at most once)
        neighbour = r[inside] * W + c[inside]
        diagonal[eq] -= w
        is_unknown = flat_removed[neighbour]
        entries_i.append(eq[is_unknown])
        entries_j.append(unknown_of[neighbour[is_unknown]])
        entries_w.append(np.full(int(is_unknown.sum()), w))
        known = ~is_unknown
        b[eq[known]] -= w * values[:, neighbour[known]].T
    entries_i.append(np.arange(N))
    entries_j.append(np.arange(N))
    entries_w.append(diagonal)
    A = csc_matrix((np.concatenate(entries_w), (np.concatenate(entries_i), np.concatenate(entries_j))), shape=(N, N))
    return A, b


def _noise_per_channel(noise: Noise, channels: int) -> np.ndarray:
    sigma = torch.as_tensor(noise, dtype=torch.float64).reshape(-1).numpy()
    if sigma.size == 1:
        sigma = np.full(channels, float(sigma[0]))
    if sigma.size != channels:
        raise ValueError(f"noise has {sigma.size} values for {channels} channels; give one float or one per channel")
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError(f"noise must be finite and >= 0, got {sigma.tolist()}")
    return sigma


def noisy_linear(x: Tensor | np.ndarray, removed: Tensor | np.ndarray, *, noise: Noise = 0.01,
                 generator: torch.Generator | None = None) -> Tensor:
    """ROAD's noisy linear imputation of ``x`` (C, H, W) at ``removed``: a new tensor, ``x`` untouched.

    - ``removed``: bool (H, W) — every channel of a removed pixel is imputed, one factorisation of
      :func:`linear_system` for all channels — or (C, H, W), each channel with its own mask (channels sharing a
      mask share one factorisation).
    - ``noise`` = 0.01 (ROAD's default on [0, 1] images): the standard deviation of the Gaussian added to every
      imputed value; one float or one value per channel (e.g. ``0.01 / std_c`` for an input normalised by
      ``std_c``, which is ROAD's 0.01 in [0, 1] units). 0 gives the plain linear solution and draws nothing.
    - ``generator``: the CPU ``torch.Generator`` of the noise (``None``: torch's global generator). When some noise
      is > 0 and something is removed, one standard normal (C, H, W) array is drawn and used at the removed
      values, so a value's noise does not depend on the mask of the other channels.

    Edge cases: nothing removed returns a copy of ``x``; a channel with every pixel removed has no known value
    (the system is singular) and is filled with 0 (the mean of a normalised input) plus the noise. The result has
    ``x``'s dtype and device; the solve runs on the CPU in float64 (``scipy.sparse.linalg.factorized``).
    """
    from scipy.sparse.linalg import factorized

    source = torch.as_tensor(x)
    img = _image(source)
    C, H, W = img.shape
    mask = _mask(removed)
    if mask.shape == (H, W):
        mask = np.broadcast_to(mask, (C, H, W))
    elif mask.shape != (C, H, W):
        raise ValueError(f"removed mask {mask.shape} must be (H, W) = {(H, W)} or (C, H, W) = {(C, H, W)}")
    sigma = _noise_per_channel(noise, C)
    if not mask.any():
        return source.clone()
    groups: dict[bytes, list[int]] = {}
    for ch in range(C):
        groups.setdefault(mask[ch].tobytes(), []).append(ch)
    out = img.copy()
    for channels in groups.values():
        m = mask[channels[0]]
        if not m.any():
            continue
        if m.all():
            solution = np.zeros((int(m.sum()), len(channels)))
        else:
            A, b = linear_system(img[channels], m)
            solve = factorized(A)
            solution = np.stack([solve(b[:, k]) for k in range(len(channels))], axis=1)
        for k, ch in enumerate(channels):
            out[ch][m] = solution[:, k]
    if np.any(sigma > 0):
        z = torch.randn((C, H, W), generator=generator, dtype=torch.float64).numpy()
        out = np.where(mask, out + sigma[:, None, None] * z, out)
    return torch.from_numpy(out).to(dtype=source.dtype, device=source.device)
