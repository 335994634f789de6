"""The degraded data of one ROAR / KAR / ROAD unit, built on the fly: never a copy of the dataset.

A unit reads the original sample through the dataset's reader and its map — the stored explanation, decoded from
the explain run's committed ``explanations`` files (float16, :func:`xcore.io.parquet.decode_heatmap`), or the
ground-truth oracle computed from the sample's mask — and degrades it in ``__getitem__``
(:func:`xcore.metrics.roar.degrade`), so a ``DataLoader`` with workers streams it and peak memory does not grow
with the dataset: the stored maps a process keeps are bounded by ``cache_bytes`` (default :data:`CACHE_BYTES`).

Samples are addressed by the training loop's key ``(epoch, index)`` (:mod:`xcore.models.train_loop`). Every
random draw of a sample (i.i.d. selection, imputation noise, augmentation) comes from a generator seeded by
``(unit seed, epoch, index)``, so the degraded input does not depend on the worker or rank that loads it. A sample
that cannot be read or has no map is returned with label ``-1`` (ignored by the loss and the accuracy) and kept
in :attr:`DegradedDataset.failures` of the loading process.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import Tensor

from xcore.data.base import Dataset
from xcore.io.commits import records
from xcore.io.parquet import decode_heatmap
from xcore.metrics.roar import degrade, iid_selection, oracle_map
from xcore.models.train import augment
from xcore.models.train_loop import IGNORE

CACHE_BYTES = 1 << 30  # float16 map bytes a MapStore keeps per process: a whole split of small data, not ImageNet


def unit_seed(*parts: Any) -> int:
    """A stable 31-bit seed from plain values (independent of Python's hash randomisation)."""
    blob = "|".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") % (2**31 - 1)


class MapStore:
    """Random access to one method's stored maps in an explain run: index -> float32 map (H, W).

    Only committed shards of ``run_key`` are read. A shard's rows (float16 bytes) are read when first needed and
    kept while their bytes fit in ``cache_bytes``, least recently used first out: random access over a split
    larger than the cache rereads shard files (slower, never more memory).
    """

    def __init__(self, run_dir: Path | str, run_key: str, method: str, part: str = "map",
                 cache_bytes: int = CACHE_BYTES) -> None:
        root = Path(run_dir)
        self.method, self.part = method, part
        prefix = f"explanations/method={method}/"
        spans: list[tuple[int, int, Path]] = []
        for _name, rec in records(root):
            if not rec or rec.get("run_key") != run_key:
                continue
            for f in rec.get("files", []):
                if str(f.get("path", "")).startswith(prefix):
                    spans.append((int(rec["start"]), int(rec["stop"]), root / f["path"]))
        spans.sort()
        self._starts = [s for s, _, _ in spans]
        self._spans = spans
        self._cache: OrderedDict[Path, tuple[dict[int, dict[str, Any]], int]] = OrderedDict()
        self.cache_bytes = cache_bytes

    def __len__(self) -> int:
        return sum(stop - start for start, stop, _ in self._spans)

    def _rows(self, path: Path) -> dict[int, dict[str, Any]]:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path][0]
        cols = ["index", "part", "heatmap", "scale", "shape", "dtype"]
        table = pq.read_table(path, columns=cols).to_pylist()
        rows = {int(r["index"]): r for r in table if r["part"] == self.part}
        self._cache[path] = rows, sum(len(r["heatmap"]) for r in rows.values())
        while len(self._cache) > 1 and sum(size for _, size in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        return rows

    def get(self, index: int) -> np.ndarray:
        """The stored map of sample ``index``; ``KeyError`` when the explain run has none (a failed sample)."""
        k = bisect.bisect_right(self._starts, index) - 1
        if k < 0 or not self._spans[k][0] <= index < self._spans[k][1]:
            raise KeyError(f"no committed {self.method} explanation shard holds sample {index}")
        row = self._rows(self._spans[k][2]).get(index)
        if row is None:
            raise KeyError(f"no {self.method} map for sample {index} (its explanation failed)")
        return decode_heatmap(row)


@dataclass(frozen=True)
class Degradation:
    """What one unit does to every sample: ``mode`` roar / kar / lerf at ``fraction`` with ``ranking`` and
    ``imputation``; ``noise`` per channel in normalised units; ``iid``: i.i.d. selection instead of a map."""

    fraction: float
    mode: str
    ranking: str
    imputation: str
    noise: tuple[float, ...]
    iid: bool = False

    def apply(self, x: Tensor, m: Tensor | None, gen: torch.Generator) -> Tensor:
        """Degrade one normalised sample ``x`` (C, H, W) by its map ``m`` (H, W); LeRF removes the bottom
        ``fraction`` (ROAR on the reversed order: the negated map; the reference-code saliency squares the map, so
        there ``max|m| - |m|``, whose square falls as ``|m|`` grows)."""
        mode = "kar" if self.mode == "kar" else "roar"
        noise = list(self.noise) if self.imputation == "noisy_linear" else 0.0
        if self.iid:
            shape = (1, *x.shape) if self.ranking == "value" else (1, *x.shape[1:])
            sel = iid_selection(shape, self.fraction, gen)
            return degrade(x[None], None, self.fraction, mode=mode, ranking=self.ranking,
                           imputation=self.imputation, noise=noise, generator=gen, selected=sel)[0]
        assert m is not None
        if self.mode == "lerf":
            m = m.abs().amax() - m.abs() if self.ranking == "value" else -m
        return degrade(x[None], m[None], self.fraction, mode=mode, ranking=self.ranking,
                       imputation=self.imputation, noise=noise, generator=gen)[0]


class DegradedDataset(torch.utils.data.Dataset):
    """One split degraded for one unit; ``dataset[(epoch, index)] -> (x, label)`` (module docstring).

    ``maps``: a :class:`MapStore`, ``"oracle"`` (the signed distance to the sample's ground-truth ``mask``,
    :func:`xcore.metrics.roar.oracle_map`) or ``None`` (i.i.d. selection). ``shift > 0`` (training): per-sample
    flips, 90° rotations and a reflect-padded shift after the degradation, as in the clean model's recipe.
    """

    def __init__(self, reader: Dataset, maps: MapStore | str | None, degradation: Degradation, *, seed: int,
                 shift: int = 0, indices: Sequence[int] | None = None) -> None:
        self.reader = reader
        self.maps = maps
        self.degradation = degradation
        self.seed = seed
        self.shift = shift
        self.indices = list(range(len(reader))) if indices is None else list(indices)
        self.failures: list[tuple[int, str, BaseException]] = []
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        epoch, pos = key
        index = self.indices[pos]
        gen = torch.Generator().manual_seed(unit_seed(self.seed, epoch, index))
        try:
            sample = self.reader.load(index)
            x = sample.x.float()
            self._shape = tuple(x.shape)
            m = self._map(index, sample.meta)
            out = self.degradation.apply(x, m, gen)
            if not bool(torch.isfinite(out).all()):
                raise FloatingPointError("degraded input is not finite")
            if self.shift > 0:
                out = augment(out[None], gen, self.shift)[0]
            return out.contiguous(), int(sample.label)
        except Exception as err:  # one bad sample never stops a unit: ignored, and recorded here
            self.failures.append((index, str(self.reader.sample_id(index)), err))
            return torch.zeros(self._shape or self._probe_shape()), IGNORE

    def _map(self, index: int, meta: dict[str, Any]) -> Tensor | None:
        if self.maps is None:
            return None
        if self.maps == "oracle":
            mask = meta.get("mask")
            if mask is None:
                raise ValueError("no ground-truth mask for the oracle")
            return oracle_map(np.asarray(mask, dtype=bool))
        assert isinstance(self.maps, MapStore)
        return torch.from_numpy(self.maps.get(index))

    def _probe_shape(self) -> tuple[int, ...]:
        for i in self.indices[:8]:
            try:
                self._shape = tuple(self.reader.load(i).x.shape)
                return self._shape
            except Exception:
                continue
        raise RuntimeError("no readable sample to take the input shape from")
