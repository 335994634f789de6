"""A small CAM-friendly CNN: conv blocks -> global average pooling -> one linear layer.

Because ``features`` ends in a ReLU and feeds GAP + a single linear layer, Grad-CAM on ``features`` equals
CAM divided by the number of spatial positions, exactly.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv_block(cin: int, cout: int, convs: int) -> list[nn.Module]:
    """``convs`` × (3×3 conv, BatchNorm, ReLU)."""
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU()]
    return layers


class SmallCNN(nn.Module):
    """A stride-2 stem then ``blocks - 1`` blocks of ``convs_per_block`` convs, 2×2 max-pool between them.

    Widths are ``width`` for the stem and the first block, then doubling. With 112×112 inputs and the
    defaults, ``features`` outputs ``4·width`` channels at 14×14 with a ~65 px receptive field (whole shapes).
    """

    xcore_cam_layer = "features"

    def __init__(self, num_classes: int, width: int = 16, blocks: int = 4, in_channels: int = 3,
                 convs_per_block: int = 2) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or blocks < 1 or convs_per_block < 1:
            raise ValueError("num_classes, width, blocks and convs_per_block must be positive")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for b in range(1, blocks):
            if b > 1:
                layers.append(nn.MaxPool2d(2))
            cout = width * 2 ** (b - 1)
            layers += conv_block(cin, cout, convs_per_block)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
