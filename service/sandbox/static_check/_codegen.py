"""Callables that generate code or classes from data, and the one form each may be used in.

The principle: a standard-library callable that builds a class, writes source text and ``exec``s
it, or evaluates strings may run only on what the model *wrote*, never on data the model
*computed*. ``dataclasses.dataclass`` turns a class's annotation names into the text of an
``__init__`` and executes it, so it may only decorate a class statement (whose annotation names
are identifiers by the grammar); ``collections.namedtuple`` and ``make_dataclass`` do the same
with their field names, so those must be literals; three-argument ``type()`` builds a class from
a namespace dict (``__annotations__`` included), so ``type`` takes one argument only, and the
class it returns may only be compared or named, never called, patched or passed on. Anything on
this list used in any other way (stored in a variable, passed to ``functools.partial`` or
``map``, called on a value) is refused, so no alias can reach the code generator.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class Restricted:
    """A code-generating callable: the form it may be used in, and why only that one."""

    form: str
    why: str
    #: "class decorator", "def decorator", "literal call", "literal call or base", "refused"
    use: str


_LITERAL_NAMES = "called directly with a literal name and literal field names"
_BUILDS_CODE = "it writes source code from its arguments and executes it"

RESTRICTED: dict[str, Restricted] = {
    "dataclasses.dataclass": Restricted(
        "only as a decorator on a class statement (@dataclass or @dataclass(frozen=True, …))",
        "on any other class it executes code generated from that class's annotation names "
        "and rewrites the class's methods",
        "class decorator",
    ),
    "functools.total_ordering": Restricted(
        "only as a decorator on a class statement",
        "it adds methods to whatever class it is given",
        "class decorator",
    ),
    "functools.wraps": Restricted(
        "only as a decorator on a def, with the wrapped function as its one argument",
        "it copies attributes named by strings onto whatever object it is given",
        "def decorator",
    ),
    "functools.update_wrapper": Restricted(
        "nowhere: use @functools.wraps(f) on a def instead",
        "it copies attributes named by strings onto whatever object it is given",
        "refused",
    ),
    "dataclasses.make_dataclass": Restricted(_LITERAL_NAMES, _BUILDS_CODE, "literal call"),
    "collections.namedtuple": Restricted(_LITERAL_NAMES, _BUILDS_CODE, "literal call"),
    "typing.NamedTuple": Restricted(
        f"as a base class, or {_LITERAL_NAMES}",
        "it builds a class (through collections.namedtuple) from its arguments",
        "literal call or base",
    ),
    "typing.TypedDict": Restricted(
        f"as a base class, or {_LITERAL_NAMES}",
        "it builds a class from its arguments",
        "literal call or base",
    ),
    **{
        f"typing.{name}": Restricted(
            "only called directly with a literal name",
            "names passed as data are how code is generated from data",
            "literal call",
        )
        for name in ("NewType", "TypeVar", "ParamSpec", "TypeVarTuple")
    },
}

TYPE_FORM = (
    "type(x) with one argument, only to compare (type(x) is T), to name (type(x).__name__) "
    "or to pass to isinstance()/issubclass()"
)
TYPE_WHY = (
    "three-argument type() builds a class from data (name, bases and namespace, "
    "__annotations__ included), and the class type(x) returns could be called to do so or "
    "patched"
)
#: keyword arguments of ``make_dataclass`` that take literal flags; the others (``namespace``,
#: ``bases``, ``module``) inject attributes, bases or a module into the generated class
_DATACLASS_FLAGS = frozenset(
    {
        "init",
        "repr",
        "eq",
        "order",
        "unsafe_hash",
        "frozen",
        "match_args",
        "kw_only",
        "slots",
        "weakref_slot",
    }
)


def _is_str(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _literal_names(node: ast.expr) -> bool:
    """A field-name list written out: ``'a b'``, ``['a', 'b']`` or ``('a', 'b')``."""
    if _is_str(node):
        return True
    return isinstance(node, (ast.List, ast.Tuple)) and all(_is_str(e) for e in node.elts)


def _literal_pairs(node: ast.expr, *, name_only_ok: bool) -> bool:
    """Fields as ``[('a', int), …]`` (``'a'`` alone too where ``name_only_ok``)."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return False
    for element in node.elts:
        if name_only_ok and _is_str(element):
            continue
        if not (
            isinstance(element, ast.Tuple) and element.elts and _is_str(element.elts[0])
        ) or any(isinstance(e, ast.Starred) for e in element.elts):
            return False
    return True


def _constant_keywords(call: ast.Call, allowed: frozenset[str] | None = None) -> bool:
    return all(
        k.arg is not None
        and (allowed is None or k.arg in allowed)
        and isinstance(k.value, ast.Constant)
        for k in call.keywords
    )


def literal_call_problem(canonical: str, call: ast.Call) -> str | None:
    """Why this direct call of a literal-only callable is refused, or None when it is fine."""
    args = call.args
    if any(isinstance(a, ast.Starred) for a in args) or any(k.arg is None for k in call.keywords):
        return "its arguments are unpacked from data (*args / **kwargs)"
    if not args or not _is_str(args[0]):
        return "its name is not a string literal"
    fields = args[1] if len(args) > 1 else None
    if canonical == "collections.namedtuple":
        if fields is None or len(args) > 2 or not _literal_names(fields):
            return "its field names are not written out as string literals"
        if any(k.arg in ("module",) for k in call.keywords):
            return "module= sets where the generated class claims to live"
        return None
    if canonical == "dataclasses.make_dataclass":
        if fields is None or len(args) > 2 or not _literal_pairs(fields, name_only_ok=True):
            return "its fields are not written out as ('name', type) with literal names"
        if not _constant_keywords(call, _DATACLASS_FLAGS):
            return (
                "only literal flags (frozen=True, …) may be passed, not namespace, bases or module"
            )
        return None
    if canonical == "typing.NamedTuple":
        if len(args) > 2 or (fields is not None and not _literal_pairs(fields, name_only_ok=False)):
            return "its fields are not written out as ('name', type) with literal names"
        return None
    if canonical == "typing.TypedDict":
        if len(args) > 2 or not _constant_keywords(call, frozenset({"total"})):
            return "only a literal name, a dict literal of fields and total= may be passed"
        if fields is not None and not (
            isinstance(fields, ast.Dict) and all(_is_str(k) for k in fields.keys)
        ):
            return "its fields are not a dict literal with string-literal keys"
        return None
    return None  # NewType, TypeVar, ParamSpec, TypeVarTuple: a literal name is all they need


def decorator_problem(rule: Restricted, decorator: ast.expr, *, on_class: bool) -> str | None:
    """Why this decorator use of a restricted callable is refused, or None when it is fine."""
    if rule.use == "class decorator":
        if not on_class:
            return "it may only decorate a class statement"
        if isinstance(decorator, ast.Call) and (
            decorator.args or not _constant_keywords(decorator)
        ):
            return "only literal flags may be passed to it (e.g. frozen=True)"
        return None
    if rule.use == "def decorator":
        if on_class:
            return "it may only decorate a def"
        if not (
            isinstance(decorator, ast.Call)
            and len(decorator.args) == 1
            and not isinstance(decorator.args[0], ast.Starred)
            and not decorator.keywords
        ):
            return "it takes the wrapped function as its one argument, and nothing else"
        return None
    return f"it may be used {rule.form}"  # never reached for the two decorator kinds


def type_call_problem(call: ast.Call, parent: ast.AST | None) -> str | None:
    """Why this call of the builtin ``type`` is refused, or None when it is fine."""
    if len(call.args) != 1 or call.keywords or isinstance(call.args[0], ast.Starred):
        return "type() with more than one argument builds a class from data"
    if type_position_ok(call, parent):
        return None
    return "the class type(x) returns may not be called, stored, patched or passed on"


def type_position_ok(node: ast.expr, parent: ast.AST | None) -> bool:
    """``type`` (or ``type(x)``) where it is compared, named or given to isinstance()."""
    if isinstance(parent, ast.Attribute) and parent.value is node:
        # other dunders (``type(x).__mro__``) are refused on their own, with their own reason
        named = parent.attr in ("__name__", "__qualname__")
        refused_dunder = parent.attr.startswith("__") and parent.attr not in ("__init__", "__doc__")
        return isinstance(node, ast.Call) and (named or refused_dunder)
    if isinstance(parent, (ast.Compare, ast.FormattedValue)):
        return True
    if isinstance(parent, ast.Call) and parent.func is not node:
        func = parent.func
        return isinstance(func, ast.Name) and func.id in ("isinstance", "issubclass")
    if isinstance(parent, ast.Tuple):
        return False  # isinstance(x, (type, int)) is rare; a tuple could be stored anywhere
    return False
