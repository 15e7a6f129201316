"""Architecture templates of the rules advisor, and what it reads from a model's source.

A template is a residual CNN in the style every practitioner reaches for first: a 3x3 stem,
stages of residual blocks (two 3x3 convolutions, BatchNorm, ReLU, a 1x1 projection shortcut
when the shape changes), stride-2 downsampling between stages, global average pooling and one
linear classifier, with Kaiming initialisation. ``build_model`` plans its strides and kernel
sizes from the input shape it is given at run time, so the module works for any (C, H, W) and
any number of classes; the rendered widths keep the original model's ballpark.

The generated source imports only ``torch``, ``torch.nn`` and ``torch.nn.functional`` and
touches no dunder but ``__init__``, so it passes the sandbox's static check.
"""

from __future__ import annotations

import ast
import math
import statistics
from dataclasses import dataclass, field

#: first line of every generated module; lets the advisor recognise its own templates
TEMPLATE_MARKER = "# gradpilot-template:"

_SATURATING = {"sigmoid", "tanh", "Sigmoid", "Tanh", "hardsigmoid", "Hardsigmoid", "softsign"}
_RELU_FAMILY = {
    "relu",
    "ReLU",
    "leaky_relu",
    "LeakyReLU",
    "gelu",
    "GELU",
    "silu",
    "SiLU",
    "elu",
    "ELU",
    "relu6",
    "ReLU6",
    "mish",
    "Mish",
    "prelu",
    "PReLU",
    "selu",
    "SELU",
}
_NORMS = {
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm2d",
    "batch_norm",
    "layer_norm",
    "group_norm",
}
_POOLS = {
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
}


@dataclass
class SourceFacts:
    """What a model's source says about its architecture, read statically (nothing runs)."""

    parsed: bool = False
    template: str | None = None  # the template name when the rules advisor wrote it
    conv_widths: list[int] = field(default_factory=list)  # out_channels of each conv, in order
    conv_kernels: list[int] = field(default_factory=list)
    linear_dims: list[tuple[int | None, int | None]] = field(default_factory=list)
    activations: set[str] = field(default_factory=set)
    has_norm: bool = False
    has_pooling: bool = False
    has_dropout: bool = False
    residual_hint: bool = False  # an addition of a block's input (x + ...) in a forward

    @property
    def saturating(self) -> bool:
        """Sigmoid/tanh as hidden activations (they vanish gradients in deep stacks)."""
        return bool(self.activations & _SATURATING) and not (self.activations & _RELU_FAMILY)

    @property
    def depth(self) -> int:
        return len(self.conv_widths) + len(self.linear_dims)

    def bottleneck(self, num_classes: int) -> int | None:
        """The narrowest hidden layer when it is too narrow to carry the classes, else None.

        Hidden linear layers narrower than the number of classes, or convolutions with fewer
        than 4 channels (the last convolution of an all-convolutional net, which may
        legitimately have ``num_classes`` channels, is not hidden).
        """
        narrow: list[int] = [out for _, out in self.linear_dims[:-1] if out and out < num_classes]
        convs = self.conv_widths if self.linear_dims else self.conv_widths[:-1]
        narrow += [w for w in convs if 0 < w < 4]
        return min(narrow) if narrow else None


def int_value(node: ast.AST | None, env: dict[str, int] | None = None) -> int | None:
    """The value of a small integer expression (literals, named constants, + - * //)."""
    if node is None:
        return None
    try:
        value = _eval(node, env or {})
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _eval(node: ast.AST, env: dict[str, int]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, ast.Tuple) and node.elts:
        return _eval(node.elts[0], env)  # kernel_size=(3, 3)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, env)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.FloorDiv):
            return a // b
    raise ValueError("not a constant integer expression")


def constants(tree: ast.Module) -> dict[str, int]:
    """Module- and class-level ``NAME = <integer expression>`` assignments."""
    env: dict[str, int] = {}
    bodies = [tree.body] + [n.body for n in tree.body if isinstance(n, ast.ClassDef)]
    for body in bodies:
        for stmt in body:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                value = int_value(stmt.value, env)
                if value is not None:
                    env[stmt.targets[0].id] = value
    return env


def call_name(node: ast.Call) -> str:
    """``nn.Conv2d(...)`` -> ``Conv2d``; ``F.relu(...)`` -> ``relu``."""
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def call_arg(node: ast.Call, position: int, keyword: str) -> ast.expr | None:
    """An argument given by position or by keyword."""
    for kw in node.keywords:
        if kw.arg == keyword:
            return kw.value
    return node.args[position] if len(node.args) > position else None


def inspect_source(source: str) -> SourceFacts:
    """Read conv widths, linear sizes, activations and normalisation from a model's source."""
    facts = SourceFacts()
    first_line = source.lstrip().splitlines()[0] if source.strip() else ""
    if first_line.startswith(TEMPLATE_MARKER):
        facts.template = first_line[len(TEMPLATE_MARKER) :].strip().split()[0] or "resnet"
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return facts
    facts.parsed = True
    env = constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = call_name(node)
            if name in ("Conv1d", "Conv2d", "Conv3d"):
                facts.conv_widths.append(int_value(call_arg(node, 1, "out_channels"), env) or 0)
                facts.conv_kernels.append(int_value(call_arg(node, 2, "kernel_size"), env) or 0)
            elif name == "Linear":
                facts.linear_dims.append(
                    (
                        int_value(call_arg(node, 0, "in_features"), env),
                        int_value(call_arg(node, 1, "out_features"), env),
                    )
                )
            elif name in _SATURATING or name in _RELU_FAMILY:
                facts.activations.add(name)
            elif name in _NORMS:
                facts.has_norm = True
            elif name in _POOLS:
                facts.has_pooling = True
            elif name in ("Dropout", "dropout", "Dropout2d"):
                facts.has_dropout = True
        elif isinstance(node, ast.Attribute) and node.attr in _SATURATING | _RELU_FAMILY:
            # An activation passed as a function, e.g. nn.Sequential(..., torch.sigmoid).
            facts.activations.add(node.attr)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if names & {"x", "identity", "residual", "shortcut", "skip", "inp"}:
                facts.residual_hint = True
    facts.conv_widths = [w for w in facts.conv_widths if w > 0] or []
    return facts


@dataclass(frozen=True)
class TemplateSpec:
    """The knobs of the residual CNN template."""

    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = 1
    dropout: float = 0.0
    name: str = "resnet"

    def describe(self) -> str:
        return (
            f"residual CNN, {len(self.widths)} stages of widths {'-'.join(map(str, self.widths))}"
            f", {self.blocks_per_stage} block(s) per stage"
            + (f", dropout {self.dropout}" if self.dropout else "")
        )


def _pow2(x: float) -> int:
    return int(2 ** round(math.log2(max(1.0, x))))


def plan_template(
    input_shape: tuple[int, int, int],
    num_classes: int,
    facts: SourceFacts | None = None,
    *,
    variant: str = "standard",
) -> TemplateSpec:
    """Choose widths and depth: the original's ballpark, within what trains fast.

    ``variant``: ``standard``; ``compact`` (narrower and shallower, for a template that was
    too slow or too large); ``deeper`` (two blocks per stage, for a template that underfit);
    ``regularized`` (dropout, for one that overfit).
    """
    facts = facts or SourceFacts()
    _, height, width = input_shape
    # Width of the first stage: the original's typical conv width, kept between 32 and 64
    # (narrower starves BatchNorm statistics of channels, wider is slow on a CPU).
    base = _pow2(statistics.median(facts.conv_widths)) if facts.conv_widths else 32
    base = min(max(base, 32), 64)
    if num_classes > 20:
        base = max(base, 64)
    stages = 3 if min(height, width) >= 8 else 2 if min(height, width) >= 4 else 1
    blocks = 2 if facts.depth > 12 else 1
    dropout = 0.2 if facts.has_dropout else 0.0
    if variant == "compact":
        base, stages, blocks = max(16, base // 2), max(1, stages - 1), 1
    elif variant == "deeper":
        blocks = 2
    elif variant == "regularized":
        dropout = 0.3
    widths = tuple(base * 2**i for i in range(stages))
    return TemplateSpec(widths=widths, blocks_per_stage=blocks, dropout=dropout, name="resnet")


_RESNET = '''{marker} {name} widths={widths} blocks={blocks} dropout={dropout}
"""{title}

Written by gradpilot's rules advisor.
{why}

Design: a 3x3 stem with BatchNorm and ReLU; {n_stages} stage(s) of residual blocks (two 3x3
convolutions with BatchNorm and ReLU, a 1x1 projection shortcut when the shape changes), each
stage after the first halving the spatial size while it stays at least 4 pixels; global
average pooling; one linear classifier. Kaiming initialisation for the convolutions; the
shortcuts carry the gradient to the first layer whatever the depth.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = {widths}
BLOCKS_PER_STAGE = {blocks}
DROPOUT = {dropout}


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut, then ReLU."""

    def __init__(self, in_channels, out_channels, stride, kernel):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, padding=pad, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, in_channels, num_classes, widths, strides, kernel, stem_pool):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        # Large inputs are pooled once after the stem: the blocks then run on a quarter of
        # the pixels, which keeps a CPU epoch short at little cost in accuracy.
        self.stem_pool = nn.MaxPool2d(2) if stem_pool else nn.Identity()
        blocks = []
        previous = widths[0]
        for width, stride in zip(widths, strides):
            for index in range(BLOCKS_PER_STAGE):
                blocks.append(ResidualBlock(previous, width, stride if index == 0 else 1, kernel))
                previous = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DROPOUT)
        self.fc = nn.Linear(previous, num_classes)
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.stem_pool(self.stem(x))
        x = self.blocks(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


def build_model(input_shape, num_classes):
    """Plan strides and kernel size from the input shape, then build the network."""
    channels, height, width = input_shape
    side = min(height, width)
    kernel = 3 if side >= 3 else 1
    stem_pool = side >= 24
    if stem_pool:
        side = side // 2
    strides = []
    for index in range(len(WIDTHS)):
        stride = 2 if index > 0 and side >= 8 else 1
        side = (side + stride - 1) // stride
        strides.append(stride)
    return Net(channels, num_classes, WIDTHS, strides, kernel, stem_pool)
'''


def render(spec: TemplateSpec, *, title: str = "Residual CNN", why: str = "") -> str:
    """The model module's source for ``spec``."""
    why = " ".join(why.split()) or "It replaces an architecture whose gradients did not flow."
    # Wrap the rationale so that the generated module stays within 100 columns.
    lines, line = [], ""
    for word in why.split():
        if len(line) + len(word) + 1 > 92:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return _RESNET.format(
        marker=TEMPLATE_MARKER,
        name=spec.name,
        title=title,
        why="\n".join(lines),
        n_stages=len(spec.widths),
        widths=repr(tuple(spec.widths)),
        blocks=spec.blocks_per_stage,
        dropout=spec.dropout,
    )
