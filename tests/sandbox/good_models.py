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

#: torchvision's ResNet written out in full, in its own style: typed block classes, a
#: ``norm_layer`` class passed around as a value and kept on ``self``, ``block.expansion``,
#: ``_make_layer`` appending to a list, zero-init of the last BatchNorm in each block.
RESNET = '''
from typing import Any, Callable, List, Optional, Type, Union

import torch
import torch.nn as nn
from torch import Tensor


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3x3 convolution with padding"""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
        groups=groups, bias=False, dilation=dilation,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        layers: List[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: Optional[List[bool]] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer

        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation should be None "
                f"or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(
            block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0]
        )
        self.layer3 = self._make_layer(
            block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1]
        )
        self.layer4 = self._make_layer(
            block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2]
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(
        self,
        block: Type[Union[BasicBlock, Bottleneck]],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )

        layers = []
        layers.append(
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width,
                previous_dilation, norm_layer,
            )
        )
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                )
            )

        return nn.Sequential(*layers)

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc(x)

        return x

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


def _resnet(block: Type[Union[BasicBlock, Bottleneck]], layers: List[int], **kwargs: Any) -> ResNet:
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs: Any) -> ResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


def build_model(input_shape, num_classes):
    model = resnet18(num_classes=num_classes, norm_layer=nn.BatchNorm2d, zero_init_residual=True)
    model.fc = nn.Linear(512, num_classes)
    for p in model.conv1.parameters():
        p.requires_grad = False
    return model
'''

#: Writes and class builders that stay allowed: they touch only the model's own objects and
#: build classes only from what the model wrote.
OWN_OBJECTS = """
import collections
import dataclasses
import functools
import math
import typing
from collections import namedtuple
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Shape = namedtuple("Shape", ["channels", "height", "width"])
Pair = collections.namedtuple("Pair", "left right", defaults=(0,))
Extra = dataclasses.make_dataclass("Extra", ["note", ("depth", int, dataclasses.field(default=2))])
T = typing.TypeVar("T")
Width = typing.NewType("Width", int)
Options = typing.TypedDict("Options", {"depth": int}, total=False)
Point = typing.NamedTuple("Point", [("x", int), ("y", int)])


class Stats(NamedTuple):
    mean: float = 0.0
    std: float = 1.0


@dataclass
class Config:
    width: int = 16
    depth: int = 2
    widths: list = field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Frozen:
    scale: float = 1.0


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


conv3 = functools.partial(nn.Conv2d, kernel_size=3, padding=1, bias=False)


class Tied(nn.Module):
    count = 0

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__()
        self.stem = conv3(3, cfg.width)
        self.blocks = nn.ModuleList([conv3(cfg.width, cfg.width) for _ in range(cfg.depth)])
        self.norms = nn.ModuleDict({str(i): nn.BatchNorm2d(cfg.width) for i in range(cfg.depth)})
        self.embed = nn.Linear(cfg.width, cfg.width)
        self.head = nn.Linear(cfg.width, cfg.width)
        self.head.weight = self.embed.weight
        self.out = nn.Linear(cfg.width, num_classes)
        setattr(self, "scale", 1.0 / math.sqrt(cfg.width))
        self.act = F.relu
        self.kind = type(self).__name__
        Tied.count += 1
        type(self).__qualname__
        del self.kind

    @classmethod
    def bump(cls) -> None:
        cls.count += 1

    @logged
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(x) is not torch.Tensor and not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(x).__name__} is not a tensor")
        x = self.act(self.stem(x))
        for index, block in enumerate(self.blocks):
            x = self.norms[str(index)](block(x)) + x
        x = x.mean(dim=(2, 3))
        return self.out(self.head(self.embed(x)) * self.scale)


def build_model(input_shape, num_classes):
    shape = Shape(*input_shape)
    cfg = Config(width=8)
    cfg.width = 3 * 4
    cfg.widths.append(cfg.width)
    settings = {"depth": 2}
    settings["depth"] = 3
    cfg.depth = settings["depth"]
    model = Tied(cfg, num_classes)
    Tied.bump()
    model.out = nn.Linear(cfg.width, num_classes)
    for name, p in model.named_parameters():
        if name.startswith("stem"):
            p.requires_grad = False
    layers = [nn.Identity() for _ in range(shape.channels)]
    layers[0] = nn.ReLU()
    return model
"""

GOOD_SOURCES = {
    "build_model": BUILD_MODEL,
    "idioms": IDIOMS,
    "blog_style": BLOG_STYLE,
    "resnet": RESNET,
    "own_objects": OWN_OBJECTS,
}
