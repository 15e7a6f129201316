"""Model sources that follow the contract and use ordinary PyTorch idioms: the static check
must accept every one (false positives would send good models to the repair path)."""

from __future__ import annotations

BUILD_MODEL = """
import torch
from torch import nn


def build_model(input_shape, num_classes):
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )
"""

IDIOMS = '''
"""A model that uses many idioms at once."""
from __future__ import annotations

import collections
import collections.abc
import dataclasses
import functools
import itertools
import math
import typing
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init
from torch import Tensor
from torch.nn import functional, init as nninit


@dataclass
class Config:
    widths: list[int] = field(default_factory=lambda: [16, 32])
    dropout: float = 0.1
    activation: str = "relu"


class Block(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        same = cin == cout and stride == 1
        self.skip = nn.Identity() if same else nn.Conv2d(cin, cout, 1, stride)
        self._scale = 1.0 / math.sqrt(2.0)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)) + self.skip(x)) * self._scale

    def extra_repr(self) -> str:
        return "scale={:.3f}".format(self._scale) + " %s" % type(self).__name__


class Net(nn.Module):
    def __init__(self, num_classes: int = 10, config: Optional[Config] = None) -> None:
        nn.Module.__init__(self)
        config = config or Config()
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        cin = 3
        for index, width in enumerate(config.widths):
            layers[f"block{index}"] = Block(cin, width, stride=2)
            cin = width
        self.features = nn.Sequential(layers)
        self.heads = nn.ModuleDict({"main": nn.Linear(cin, num_classes)})
        self.blocks = nn.ModuleList([nn.Identity() for _ in range(2)])
        self.dropout = nn.Dropout(config.dropout)
        self.act = functools.partial(F.leaky_relu, negative_slope=0.1)
        self.register_buffer("running", torch.zeros(1))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init.kaiming_normal_(m.weight, nonlinearity="relu")
                if getattr(m, "bias", None) is not None:
                    nninit.zeros_(m.bias)
            elif hasattr(m, "weight") and isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)

    @property
    def width(self) -> int:
        return self.heads["main"].in_features

    @staticmethod
    def pool(x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().to(torch.float32).type(torch.float32)
        x = self.features(x)
        for block in self.blocks:
            x = block(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([a, b], dim=1)
        x = self.pool(x).view(x.size(0), -1)
        x = self.dropout(self.act(x))
        assert x.shape[1] == self.width, f"unexpected width {x.shape[1]}"
        with torch.no_grad():
            self.running.add_(x.detach().mean().cpu())
        return self.heads["main"](x)

    def loss_function(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, label_smoothing=0.05)


def build_model(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    if not isinstance(input_shape, collections.abc.Sequence):
        raise TypeError("input_shape must be a sequence")
    pairs = list(itertools.pairwise([1, 2, 3]))
    counts = collections.Counter(p[0] for p in pairs)
    _ = (typing.cast(int, 1), dataclasses.fields(Config), counts, torch.linalg.norm(torch.ones(2)))
    print("building", repr(Net), torch.pi, math.pi, functional.relu)
    return Net(num_classes=num_classes)


if __name__ == "__main__":
    model = build_model((3, 32, 32), 10)
    print(model(torch.randn(2, 3, 32, 32)).shape)
'''

BLOG_STYLE = """
import torch
import torch.nn as nn


class CNN(nn.Module):
    def __init__(self):
        super(CNN, self).__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.fc = nn.Linear(16 * 32 * 32, 10)

    def forward(self, x):
        x = torch.sigmoid(self.conv1(x))
        x = torch.flatten(x, 1)
        return self.fc(x)
"""

GOOD_SOURCES = {"build_model": BUILD_MODEL, "idioms": IDIOMS, "blog_style": BLOG_STYLE}
