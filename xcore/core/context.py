"""Context managers that run a model for explanation and restore it afterwards (also on error).

- :func:`model_state`: eval mode, frozen parameters, RNN forwards without cuDNN on CUDA;
- :func:`capture`: record one layer's forward output through a temporary hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from xcore.core.layers import get_layer


@contextlib.contextmanager
def rnn_without_cudnn(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.RNNBase`` submodule of ``model`` runs its CUDA forward with cuDNN disabled; the
    flag is restored after each call and on exit, hooks removed. cuDNN's RNN backward refuses eval mode ("cudnn RNN
    backward can only be called in training mode", pytorch/captum issues #564 and #1159, where the maintainers
    suggest disabling cuDNN rather than switching to ``train()``); the autograd node of an RNN is chosen at its
    forward, and the non-cuDNN one is built from ordinary ops whose backward never calls cuDNN (convs keep it)."""
    prev = torch.backends.cudnn.enabled
    saved: list[bool] = []

    def pre(_m: nn.Module, args: Any) -> None:
        saved.append(torch.backends.cudnn.enabled)
        if any(isinstance(a, Tensor) and a.is_cuda for a in args):
            torch.backends.cudnn.enabled = False

    def post(_m: nn.Module, _args: Any, _out: Any) -> None:
        torch.backends.cudnn.enabled = saved.pop()

    handles = []
    for m in model.modules():
        if isinstance(m, nn.RNNBase):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        torch.backends.cudnn.enabled = prev


@contextlib.contextmanager
def model_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and freeze parameters for the block; restore both on exit, also on error.
    RNN forwards on CUDA run without cuDNN inside the block (:func:`rnn_without_cudnn`), so gradients flow through
    an LSTM in eval mode.
    """
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in grads:
        p.requires_grad_(False)
    try:
        with rnn_without_cudnn(model):
            yield model
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, req in grads.items():
            p.requires_grad_(req)


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def capture(model: nn.Module, path: str) -> Iterator[dict[str, Tensor]]:
    """Record the forward output of ``model.<path>`` as ``store["act"]``; the hook is removed on exit."""
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        store["act"] = out[0] if isinstance(out, tuple) else out

    handle = get_layer(model, path).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
