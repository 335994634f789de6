"""Element-wise activation functions in every form a model may call them, for methods that change their backward
by intercepting calls with a ``TorchFunctionMode`` (guided backprop's ReLUs, LRP's pass-through rule).

A module's forward calls the functional form (``nn.ReLU`` → ``F.relu``, ``nn.ReLU6`` → ``F.hardtanh``, ``nn.Tanh``
→ ``torch.tanh``, …), so intercepting the functions covers modules, ``F.*``, ``torch.*``, ``Tensor.*`` and their
in-place variants alike. :data:`ACTIVATIONS` covers every element-wise module that zennit lists as an activation
(``zennit.types.Activation`` in zennit 0.5.1, chr5tphr/zennit ``src/zennit/types.py``), i.e. all but
``nn.MultiheadAttention``, which is not element-wise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: ReLU in every callable form (``F.relu_`` is ``torch.relu_``).
RELUS: frozenset[object] = frozenset({torch.relu, torch.relu_, F.relu, Tensor.relu, Tensor.relu_})

#: Every element-wise activation function: the ReLUs and the functions behind the other activation modules.
ACTIVATIONS: frozenset[object] = RELUS | frozenset({
    F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, torch.selu, torch.selu_,
    F.celu, torch.celu, torch.celu_, F.gelu, F.silu, F.softplus, F.hardswish, F.hardsigmoid, F.logsigmoid,
    F.softsign, F.tanhshrink, F.hardshrink, Tensor.hardshrink, F.softshrink, F.threshold, torch.threshold,
    torch.threshold_, F.prelu, F.rrelu, torch.rrelu, torch.rrelu_,
    torch.sigmoid, torch.sigmoid_, Tensor.sigmoid, Tensor.sigmoid_, torch.tanh, torch.tanh_, Tensor.tanh,
    Tensor.tanh_,
})
