"""The floor below ``explain/`` and ``metrics/``: one small module per concept, imported by both.

- :mod:`~xcore.core.targets`: what an explanation is of (:class:`~xcore.core.targets.Target`);
- :mod:`~xcore.core.context`: running a model for explanation and restoring it (``model_state``, ``capture``);
- :mod:`~xcore.core.layers`: layers by dotted path, the default CAM layer;
- :mod:`~xcore.core.maps`: channel reduction, map grids, resizing;
- :mod:`~xcore.core.presets`: input normalisation presets (ImageNet, Kinetics, C3D);
- :mod:`~xcore.core.batching`: forward-batch budgets and the one out-of-memory policy;
- :mod:`~xcore.core.shards`: the unit a job is planned and committed in.
"""
