"""The rules advisor's source repair: the classic shape errors of model code, fixed in place.

A Linear layer's ``in_features``, a convolution's ``in_channels`` or a BatchNorm's
``num_features`` that does not match the tensor it receives is rewritten to the size the error
message names, when exactly one call in the source can be the culprit; anything else is left to
a redesign.
"""

from __future__ import annotations

import ast
import re

from service.advisors._protocol import CodeRepair
from service.advisors.templates import call_arg, call_name, constants, int_value

_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
_CHANNELS = re.compile(
    r"weight of size \[(\d+), (\d+)((?:, \d+)*)\], expected input\[[^\]]*\] to have (\d+) "
    r"channels, but got (\d+) channels"
)
_BATCHNORM = re.compile(r"running_mean should contain (\d+) elements not (\d+)")


def _offsets(source: str) -> list[int]:
    """Character offset of the start of each line (1-based line -> offsets[line - 1])."""
    starts, total = [], 0
    for line in source.splitlines(keepends=True):
        starts.append(total)
        total += len(line)
    return starts


def _span(source: str, node: ast.expr) -> tuple[int, int]:
    """Character offsets of a node (ast columns are UTF-8 byte offsets)."""
    lines = source.splitlines(keepends=True)
    starts = _offsets(source)

    def char(line: int, col: int) -> int:
        text = lines[line - 1].encode("utf-8")[:col].decode("utf-8", errors="ignore")
        return starts[line - 1] + len(text)

    end_line = node.end_lineno or node.lineno
    end_col = node.end_col_offset if node.end_col_offset is not None else node.col_offset
    return char(node.lineno, node.col_offset), char(end_line, end_col)


def _replace(source: str, node: ast.expr, text: str) -> str:
    start, end = _span(source, node)
    return source[:start] + text + source[end:]


def _calls(tree: ast.AST, names: tuple[str, ...]) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and call_name(n) in names]


def _fix_argument(
    source: str,
    names: tuple[str, ...],
    match: dict[tuple[int, str], int],
    target: tuple[int, str],
    new: int,
) -> tuple[str, int] | None:
    """Rewrite one argument of the single call that matches; None unless exactly one does.

    ``match`` maps (position, keyword) to the value the argument must have (a non-constant
    argument matches any value except for ``target``, which must be a known constant).
    """
    tree = ast.parse(source)
    env = constants(tree)
    found = []
    for call in _calls(tree, names):
        ok = True
        for (pos, kw), expected in match.items():
            value = int_value(call_arg(call, pos, kw), env)
            if (pos, kw) == target:
                ok = ok and value == expected
            elif value is not None and value != expected:
                ok = False
        if ok:
            found.append(call)
    if len(found) != 1:
        return None
    arg = call_arg(found[0], *target)
    assert arg is not None
    old = ast.get_source_segment(source, arg) or "?"
    fixed = _replace(source, arg, str(new))
    return _annotate(fixed, arg.lineno, f"gradpilot repair: was {old}"), found[0].lineno


def _annotate(source: str, line: int, comment: str) -> str:
    """Append ``# comment`` to a line when that is safe; the source unchanged otherwise."""
    lines = source.splitlines(keepends=True)
    text = lines[line - 1]
    body = text.rstrip("\r\n")
    if "#" in body or body.rstrip().endswith("\\") or len(body) + len(comment) + 4 > 100:
        return source
    lines[line - 1] = f"{body}  # {comment}" + text[len(body) :]
    candidate = "".join(lines)
    try:
        ast.parse(candidate)
    except SyntaxError:
        return source
    return candidate


def repair_source(source: str, error: str) -> CodeRepair | None:
    """Fix the classic shape errors of model code deterministically; None when unsure."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    m = _MATMUL.search(error)
    if m:
        features, expected, out = int(m.group(2)), int(m.group(3)), int(m.group(4))
        fixed = _fix_argument(
            source,
            ("Linear",),
            {(0, "in_features"): expected, (1, "out_features"): out},
            (0, "in_features"),
            features,
        )
        if fixed:
            return CodeRepair(
                source=fixed[0],
                explanation=(
                    f"The Linear layer on line {fixed[1]} expected {expected} input features but "
                    f"the flattened tensor before it has {features}; its in_features is now "
                    f"{features}."
                ),
            )
    m = _CHANNELS.search(error)
    if m:
        out, expected, rest, got = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(5))
        names = {0: ("Conv1d",), 1: ("Conv1d",), 2: ("Conv2d",), 3: ("Conv3d",)}
        dims = len([p for p in rest.split(",") if p.strip()])
        fixed = _fix_argument(
            source,
            names.get(dims, ("Conv2d",)),
            {(0, "in_channels"): expected, (1, "out_channels"): out},
            (0, "in_channels"),
            got,
        )
        if fixed:
            return CodeRepair(
                source=fixed[0],
                explanation=(
                    f"The convolution on line {fixed[1]} expected {expected} input channels but "
                    f"receives {got}; its in_channels is now {got}."
                ),
            )
    m = _BATCHNORM.search(error)
    if m:
        got, expected = int(m.group(1)), int(m.group(2))
        fixed = _fix_argument(
            source,
            ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"),
            {(0, "num_features"): expected},
            (0, "num_features"),
            got,
        )
        if fixed:
            return CodeRepair(
                source=fixed[0],
                explanation=(
                    f"The BatchNorm on line {fixed[1]} normalised {expected} channels but "
                    f"receives {got}; its num_features is now {got}."
                ),
            )
    return None
