"""Video classifiers; every model takes clips ``(B, C, T, H, W)`` and sets ``xcore_cam_layer``.

- :class:`C3D`: jfzhang95/pytorch-video-recognition ``network/C3D_model.py`` with the same layer names, so its
  state dicts load unchanged; CAM layer ``conv5b`` -> (B, 512, 2, 7, 7) at 16×112×112.
- :class:`CNNLSTM`: per-frame ResNet -> LSTM -> last hidden state or softmax temporal attention (Gupta, Ahmed, *ADL
  2020 Project-III report*, §2.2); CAM layer ``cnn.layer4`` whose output is **(B·T, C, h, w)**: frames are folded
  into the batch.
- :class:`Small3DCNN`: 4 Conv3d blocks -> GAP -> one linear layer, so Grad-CAM = ReLU(CAM)/Z exactly (the Saliency
  Tubes identity; Hartley, thesis §4.5.2: "Grad-CAM and saliency tubes perform identically").
- torchvision ``r3d_18``, ``mc3_18``, ``r2plus1d_18`` (weights=None), CAM layer ``layer4`` (pytorch/vision
  ``torchvision/models/video/resnet.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision.models as tvm
import torchvision.models.video as tvv
from torch import Tensor, nn


def _check_clip(x: Tensor, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name} takes clips (B, C, T, H, W); got shape {tuple(x.shape)}")


class C3D(nn.Module):
    """C3D as in jfzhang95/pytorch-video-recognition ``network/C3D_model.py``.

    All convs 3×3×3, padding 1, each followed by ReLU; pool1 (1,2,2), pool2..pool5 (2,2,2), pool5 padded (0,1,1);
    flatten 8192 = 512×1×4×4 -> fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> fc8. Input (B, 3, 16, 112, 112)
    only. Parameter names equal the reference's (``conv1.weight`` ... ``fc8.bias``), so ``c3d-pretrained.pth``-style
    state dicts load strictly. The reference expects BGR frames minus the mean (90, 98, 102), no std.

    ``xcore_cam_layer = "conv5b"`` (the spec's Grad-CAM target): its output is the conv's, before the ReLU,
    shape (B, 512, 2, 7, 7).
    """

    xcore_cam_layer = "conv5b"

    def __init__(self, num_classes: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be positive")
        self.conv1 = nn.Conv3d(3, 64, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.conv2 = nn.Conv3d(64, 128, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool2 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2))
        self.conv3a = nn.Conv3d(128, 256, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.conv3b = nn.Conv3d(256, 256, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool3 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2))
        self.conv4a = nn.Conv3d(256, 512, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.conv4b = nn.Conv3d(512, 512, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool4 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2))
        self.conv5a = nn.Conv3d(512, 512, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.conv5b = nn.Conv3d(512, 512, kernel_size=(3, 3, 3), padding=(1, 1, 1))
        self.pool5 = nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 1))
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.dropout = nn.Dropout(p=dropout)
        self.relu = nn.ReLU()
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        _check_clip(x, "C3D")
        relu = self.relu
        x = self.pool1(relu(self.conv1(x)))
        x = self.pool2(relu(self.conv2(x)))
        x = self.pool3(relu(self.conv3b(relu(self.conv3a(x)))))
        x = self.pool4(relu(self.conv4b(relu(self.conv4a(x)))))
        x = self.pool5(relu(self.conv5b(relu(self.conv5a(x)))))
        x = x.flatten(1)
        if x.shape[1] != 8192:
            raise ValueError(f"C3D needs 3×16×112×112 clips (8192 features after pool5); got {x.shape[1]}")
        x = self.dropout(relu(self.fc6(x)))
        x = self.dropout(relu(self.fc7(x)))
        return self.fc8(x)


class CNNLSTM(nn.Module):
    """Per-frame 2-D CNN -> LSTM over time -> classifier (Gupta & Ahmed, ADL 2020 Project-III report, §2.2).

    - ``cnn``: torchvision ``backbone`` (weights=None) with ``fc`` replaced by identity, applied to all frames at
      once with the frames folded into the batch: (B, C, T, H, W) -> (B·T, C, H, W) -> (B·T, D) -> (B, T, D).
      Frames are processed independently (BatchNorm in eval mode).
    - ``lstm``: one-layer ``nn.LSTM(D, hidden, batch_first=True)``, outputs ``h_t`` (B, T, hidden).
    - ``attention=False``: ``fc(h_T)`` (last step). ``attention=True``: ``a = softmax_t(attn(h_t))`` with ``attn``
      a ``Linear(hidden, 1)`` score, context ``Σ_t a_t h_t``, then ``fc(context)``. The weights of the last forward
      are kept (detached) in ``last_attention`` (B, T): the frame relevance (soft temporal attention, after Sharma,
      Kiros, Salakhutdinov, *Action Recognition using Visual Attention*, arXiv 1511.04119); ``None`` without
      attention.

    ``xcore_cam_layer = "cnn.layer4"``: its output is **(B·T, C, h, w)** (frame-major within each clip: row
    ``b·T + t``), i.e. one 2-D Grad-CAM per frame; reshape to (B, T, h, w) afterwards.

    cuDNN's RNN backward refuses eval mode (pytorch/captum issues #564, #1159): explanation methods run the model under
    :func:`xcore.core.context.model_state`, which disables cuDNN around RNN forwards on CUDA (the model is never
    switched to ``train()``); code that backpropagates through it in eval mode outside xcore must do the same.
    """

    xcore_cam_layer = "cnn.layer4"

    def __init__(self, num_classes: int, *, hidden: int = 512, attention: bool = False,
                 backbone: str = "resnet18") -> None:
        super().__init__()
        if num_classes < 1 or hidden < 1:
            raise ValueError("num_classes and hidden must be positive")
        if not backbone.startswith("resnet") or not hasattr(tvm, backbone):
            raise ValueError(f"backbone must be a torchvision ResNet (e.g. 'resnet18'); got {backbone!r}")
        cnn = getattr(tvm, backbone)(weights=None)
        features = cnn.fc.in_features
        cnn.fc = nn.Identity()
        self.cnn = cnn
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.attn: nn.Linear | None = nn.Linear(hidden, 1) if attention else None
        self.fc = nn.Linear(hidden, num_classes)
        self.attention = attention
        self.num_classes = num_classes
        self.last_attention: Tensor | None = None

    def frame_features(self, x: Tensor) -> Tensor:
        """Per-frame CNN features (B, T, D) of clips (B, C, T, H, W)."""
        _check_clip(x, "CNNLSTM")
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        return self.cnn(frames).reshape(b, t, -1)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.frame_features(x)
        out, _ = self.lstm(feats)
        if self.attn is None:
            self.last_attention = None
            return self.fc(out[:, -1])
        weights = torch.softmax(self.attn(out).squeeze(-1), dim=1)  # (B, T)
        self.last_attention = weights.detach()
        context = (weights.unsqueeze(-1) * out).sum(dim=1)
        return self.fc(context)


def _block3d(cin: int, cout: int, pool: tuple[int, int, int] | None, stride: tuple[int, int, int] = (1, 1, 1)
             ) -> nn.Sequential:
    """[MaxPool3d] -> Conv3d 3×3×3 -> BatchNorm3d -> ReLU."""
    layers: list[nn.Module] = [nn.MaxPool3d(pool)] if pool else []
    layers += [nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU()]
    return nn.Sequential(*layers)


class Small3DCNN(nn.Module):
    """A small CAM-friendly 3-D CNN: 4 Conv3d blocks -> global average pool -> one linear layer.

    Block 1 is a (1,2,2)-strided conv; blocks 2-4 start with max-pools (1,2,2), (2,2,2), (2,2,2); widths
    ``width``, 2·, 4·, 8·``width``. A 3×16×112×112 clip gives (B, 8·width, 4, 7, 7) at ``features.3``.
    ``xcore_cam_layer = "features.3"`` ends in a ReLU and feeds GAP + one linear layer, so Grad-CAM there equals
    ReLU(Σ_k w_ck A_k)/Z with Z = T'·H'·W' (the Saliency Tubes identity: Stergiou et al., *Saliency Tubes: Visual
    Explanations for Spatio-Temporal Convolutions*, ICIP 2019, weight the activations by the FC weights ``w_ck``).
    """

    xcore_cam_layer = "features.3"

    def __init__(self, num_classes: int, *, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or in_channels < 1:
            raise ValueError("num_classes, width and in_channels must be positive")
        self.features = nn.Sequential(
            _block3d(in_channels, width, None, stride=(1, 2, 2)),
            _block3d(width, 2 * width, (1, 2, 2)),
            _block3d(2 * width, 4 * width, (2, 2, 2)),
            _block3d(4 * width, 8 * width, (2, 2, 2)),
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Linear(8 * width, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        _check_clip(x, "Small3DCNN")
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _bounded(model: nn.Module, preset: str) -> nn.Module:
    """Record the architecture's preset (``xcore_preset``, e.g. for SWAG-V's colour features) and its input range
    (``xcore_input_bounds``, LRP's z^β bounds)."""
    from xcore.data.video_transforms import video_preset

    model.xcore_input_bounds = video_preset(preset).input_bounds()
    model.xcore_preset = preset
    return model


def build_c3d(num_classes: int, **kw: Any) -> nn.Module:
    """:class:`C3D` (``dropout``), CAM layer ``conv5b``; input bounds of the ``c3d`` preset."""
    return _bounded(C3D(num_classes, **kw), "c3d")


def build_cnn_lstm(num_classes: int, **kw: Any) -> nn.Module:
    """:class:`CNNLSTM` (``hidden``, ``backbone``; last hidden state), CAM layer ``cnn.layer4`` (B·T, C, h, w)."""
    return _bounded(CNNLSTM(num_classes, **kw), "kinetics")


def build_cnn_lstm_attention(num_classes: int, **kw: Any) -> nn.Module:
    """:class:`CNNLSTM` with softmax temporal attention (``last_attention`` (B, T)), CAM layer ``cnn.layer4``."""
    return _bounded(CNNLSTM(num_classes, **{**kw, "attention": True}), "kinetics")


def build_small3d(num_classes: int, **kw: Any) -> nn.Module:
    """:class:`Small3DCNN` (``width``, ``in_channels``), CAM layer ``features.3``."""
    return _bounded(Small3DCNN(num_classes, **kw), "kinetics")


def _video_resnet(fn: Any, num_classes: int, **kw: Any) -> nn.Module:
    model = fn(weights=None, num_classes=num_classes, **kw)
    model.xcore_cam_layer = "layer4"
    return _bounded(model, "kinetics")


def build_r3d_18(num_classes: int, **kw: Any) -> nn.Module:
    """torchvision ``r3d_18`` (weights=None), CAM layer ``layer4`` -> (B, 512, T/8, H/16, W/16)."""
    return _video_resnet(tvv.r3d_18, num_classes, **kw)


def build_mc3_18(num_classes: int, **kw: Any) -> nn.Module:
    """torchvision ``mc3_18`` (weights=None), CAM layer ``layer4`` -> (B, 512, T, H/16, W/16)."""
    return _video_resnet(tvv.mc3_18, num_classes, **kw)


def build_r2plus1d_18(num_classes: int, **kw: Any) -> nn.Module:
    """torchvision ``r2plus1d_18`` (weights=None), CAM layer ``layer4`` -> (B, 512, T/8, H/16, W/16)."""
    return _video_resnet(tvv.r2plus1d_18, num_classes, **kw)
