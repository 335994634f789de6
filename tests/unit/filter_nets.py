"""The small network the filter-ranking and suppression tests hand-build: conv → ReLU → conv (the ablated /
filtered layer) → ReLU → GAP → linear."""

from __future__ import annotations

from torch import Tensor, nn


class TwoConvNet(nn.Module):
    """conv(3 → ``hidden``) → ReLU → conv(``hidden`` → ``n_filters``) → ReLU → GAP → linear(→ ``classes``)."""

    def __init__(self, hidden: int, n_filters: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, n_filters, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(n_filters, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flat(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))
