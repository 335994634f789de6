"""Dataset kinds (:mod:`xcore.datasets.base`): one module per kind registers its :class:`DatasetKind`.

Importing this package imports every module in it, so a new kind is one new module here; a kind defined
elsewhere (a plug-in, a test) registers with :func:`register` from its own module.
"""

from __future__ import annotations

import importlib
import pkgutil

from xcore.datasets.base import DATASETS, DatasetKind, Demo, modalities, open_dataset, register

__all__ = ["DATASETS", "DatasetKind", "Demo", "modalities", "open_dataset", "register"]

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")
