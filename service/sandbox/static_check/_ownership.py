"""Whose object is it? Scopes and an ownership analysis of a model file.

The write rule lets model code change attributes and items only of objects it owns: ``self``,
its own classes, instances and containers it built. Everything reachable from an import
(``torch.Tensor``, ``nn.Module``, ``F`` itself, ``from torch import Tensor``, a builtin) belongs
to the library, and a write to it would patch code that the training loop runs.

The analysis is deliberately coarse and errs towards "foreign": it follows names through
assignments, loops, ``with``, containers, calls and returns without regard to order, and a
binding gets every kind that any of its sources may have. Names are resolved by Python's scope
rules (function scopes, class bodies, ``global``/``nonlocal``), so a parameter called ``model``
in one function does not make the local ``model`` of another one suspect.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

#: may be a library object: an import, a builtin, or something reached from one
FOREIGN = 1
#: a container of the model's that may hold foreign (or unknown) objects
HOLDS = 2
#: a parameter: whatever a caller passes
UNKNOWN = 4
#: one of the model's own classes (or an alias of one, or a classmethod's ``cls``)
CLASS = 8

_MUTATORS = frozenset(
    {"append", "extend", "insert", "add", "update", "setdefault", "appendleft", "extendleft"}
)
#: Rounds of propagation before the analysis gives up (and the check refuses the file).
MAX_ROUNDS = 40


@dataclass(eq=False)
class Scope:
    """A module, function, lambda or class body, with the names bound in it."""

    node: ast.AST
    parent: Scope | None
    is_class: bool = False
    bound: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    #: a method's first parameter: ``self`` (an instance) or a classmethod's ``cls``
    self_name: str | None = None
    function_name: str | None = None


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names = set()
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Name):
            names.add(decorator.id)
        elif isinstance(decorator, ast.Attribute):
            names.add(decorator.attr)
    return names


class Ownership:
    """The kinds (``FOREIGN``, ``HOLDS``, ``UNKNOWN``, ``CLASS``) of a file's names."""

    def __init__(self, tree: ast.Module) -> None:
        self.module = Scope(tree, None)
        self.scope_of: dict[int, Scope] = {}
        #: (scope id, name) -> kind flags
        self.facts: dict[tuple[int, str], int] = {}
        #: attribute name -> kind flags of everything ever stored under that name
        self.attr_facts: dict[str, int] = {}
        #: names of functions (and lambdas bound to names) that may return foreign objects
        self.returns_foreign: set[str] = set()
        #: names of functions that may return (something reached from) one of their arguments
        self.returns_arguments: set[str] = set()
        #: names of every function the file defines
        self.functions: set[str] = set()
        #: methods of the model's classes that take an instance as their first argument
        self.instance_methods: set[str] = set()
        self.complete = True
        self._sites: list[tuple[Scope, ast.expr, str, ast.AST | int | None]] = []
        self._returns: list[tuple[Scope, str, ast.expr]] = []
        self._scan(tree, self.module)
        self._propagate()

    # -- scopes ----------------------------------------------------------------------------

    def resolve(self, scope: Scope, name: str) -> Scope | None:
        """The scope whose binding ``name`` refers to from ``scope``; None for builtins."""
        current: Scope | None = scope
        while current is not None:
            if name in current.globals:
                return self.module if name in self.module.bound else None
            if name in current.bound and name not in current.nonlocals:
                return current
            current = current.parent
            while current is not None and current.is_class:
                current = current.parent  # class bodies are invisible to nested functions
        return None

    def self_scope(self, scope: Scope, name: str) -> Scope | None:
        """The method whose first parameter ``name`` is, seen from ``scope``; else None."""
        bound_in = self.resolve(scope, name)
        if bound_in is not None and bound_in.self_name == name:
            return bound_in
        return None

    # -- the scan: scopes, bindings and the sites that feed them ---------------------------

    def _scan(self, node: ast.AST, scope: Scope) -> None:
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    def _visit(self, node: ast.AST, scope: Scope) -> None:
        self.scope_of[id(node)] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._scan_function(node, scope)
        elif isinstance(node, ast.Lambda):
            inner = Scope(node, scope)
            self._scan_arguments(node.args, scope, inner, method=None)
            self._visit(node.body, inner)
        elif isinstance(node, ast.ClassDef):
            self._bind_fixed(scope, node.name, CLASS)
            for part in [*node.decorator_list, *node.bases, *node.keywords]:
                self._visit(part, scope)
            body = Scope(node, scope, is_class=True)
            for statement in node.body:
                self._visit(statement, body)
        else:
            self._record(node, scope)
            self._scan(node, scope)

    def _scan_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, scope: Scope) -> None:
        self._bind_fixed(scope, node.name, 0)
        self.functions.add(node.name)
        for part in [*node.decorator_list, *([node.returns] if node.returns else [])]:
            self._visit(part, scope)
        decorators = _decorator_names(node)
        method: str | None = None
        if scope.is_class and "staticmethod" not in decorators:
            method = "class" if "classmethod" in decorators else "instance"
            if method == "instance":
                self.instance_methods.add(node.name)
        inner = Scope(node, scope, function_name=node.name)
        self._scan_arguments(node.args, scope, inner, method=method)
        for statement in node.body:
            self._visit(statement, inner)

    def _scan_arguments(
        self, args: ast.arguments, outer: Scope, inner: Scope, *, method: str | None
    ) -> None:
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self._visit(default, outer)
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        defaults += list(args.defaults)
        pairs: list[tuple[ast.arg, ast.expr | None]] = [
            *zip(positional, defaults, strict=True),
            *zip(args.kwonlyargs, args.kw_defaults, strict=True),
        ]
        pairs += [(a, None) for a in (args.vararg, args.kwarg) if a is not None]
        for index, (arg, default_value) in enumerate(pairs):
            self.scope_of[id(arg)] = inner
            if arg.annotation is not None:
                self._visit(arg.annotation, outer)
            inner.bound.add(arg.arg)
            if index == 0 and method is not None and arg in positional:
                inner.self_name = arg.arg
                self._bind_fixed(inner, arg.arg, CLASS if method == "class" else 0)
                continue
            inner.params.add(arg.arg)
            self._sites.append((inner, ast.Name(arg.arg, ast.Store()), "param", default_value))

    def _record(self, node: ast.AST, scope: Scope) -> None:
        """Note which names ``node`` binds in ``scope`` and what it binds them to."""
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._site(scope, target, "value", node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            if node.value is not None:
                self._site(scope, node.target, "value", node.value)
            elif isinstance(node.target, ast.Name):
                scope.bound.add(node.target.id)
        elif isinstance(node, ast.NamedExpr):
            self._site(scope, node.target, "value", node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            self._site(scope, node.target, "element", node.iter)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._site(scope, node.optional_vars, "value", node.context_expr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                self._bind_fixed(scope, name, FOREIGN)
        elif isinstance(node, ast.Global):
            scope.globals.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            scope.nonlocals.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            self._bind_fixed(scope, node.name, FOREIGN)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    scope.bound.add(target.id)
        elif isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None:
            if scope.function_name is not None:
                self._returns.append((scope, scope.function_name, node.value))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _MUTATORS
        ):
            # ``xs.append(torch.Tensor)`` makes ``xs`` a container of foreign objects
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self._sites.append((scope, node.func.value, "holds", arg))
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            scope.bound.add(node.id)

    def _site(self, scope: Scope, target: ast.expr, mode: str, source: ast.expr) -> None:
        # the names it binds are collected where their Store-context nodes are visited
        self._sites.append((scope, target, mode, source))

    def _bind_fixed(self, scope: Scope, name: str, flags: int) -> None:
        scope.bound.add(name)
        self._sites.append((scope, ast.Name(name, ast.Store()), "fixed", flags))

    # -- propagation -----------------------------------------------------------------------

    def _propagate(self) -> None:
        for _ in range(MAX_ROUNDS):
            before = self._state()
            for scope, target, mode, source in self._sites:
                self._apply(scope, target, mode, source)
            for scope, function, value in self._returns:
                flags = self.kind(value, scope)
                if flags & (FOREIGN | HOLDS):
                    self.returns_foreign.add(function)
                if flags & UNKNOWN:
                    self.returns_arguments.add(function)
            if before == self._state():
                return
        self.complete = False

    def _state(self) -> tuple[object, ...]:
        return (
            dict(self.facts),
            dict(self.attr_facts),
            set(self.returns_foreign),
            set(self.returns_arguments),
        )

    def _apply(self, scope: Scope, target: ast.expr, mode: str, source: object) -> None:
        if mode == "fixed":
            assert isinstance(source, int)
            self._bind(scope, target, source)
        elif mode == "param":
            default = (
                self.kind(source, scope.parent or scope) if isinstance(source, ast.expr) else 0
            )
            self._bind(scope, target, UNKNOWN | (FOREIGN if default & (FOREIGN | HOLDS) else 0))
        elif mode == "holds":
            assert isinstance(source, ast.expr)
            if self.kind(source, scope):
                self._mark_container(scope, target)
        else:
            assert isinstance(source, ast.expr)
            if mode == "value" and isinstance(source, ast.Lambda):
                inner = self.scope_of.get(id(source.body), scope)
                if self.kind(source.body, inner) & (FOREIGN | HOLDS):
                    self._returns_foreign_target(target)
            flags = self.kind(source, scope)
            if mode == "element":
                flags = _element_kind(flags)
            elif (
                isinstance(target, (ast.Tuple, ast.List))
                and isinstance(source, (ast.Tuple, ast.List))
                and len(target.elts) == len(source.elts)
                and not any(isinstance(e, ast.Starred) for e in [*target.elts, *source.elts])
            ):
                for sub_target, sub_source in zip(target.elts, source.elts, strict=True):
                    self._apply(scope, sub_target, "value", sub_source)
                return
            self._bind(scope, target, flags)

    def _returns_foreign_target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.returns_foreign.add(target.id)
        elif isinstance(target, ast.Attribute):
            self.returns_foreign.add(target.attr)

    def _bind(self, scope: Scope, target: ast.expr, flags: int) -> None:
        if isinstance(target, ast.Name):
            owner = self.resolve(scope, target.id) or scope
            key = (id(owner), target.id)
            self.facts[key] = self.facts.get(key, 0) | flags
            if owner.is_class and flags:
                # a class attribute is also reached as ``self.name`` and ``Cls.name``
                self.attr_facts[target.id] = self.attr_facts.get(target.id, 0) | flags
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self._bind(scope, element, _element_kind(flags))
        elif isinstance(target, ast.Starred):
            self._bind(scope, target.value, HOLDS if flags else 0)
        elif isinstance(target, ast.Attribute) and flags:
            self.attr_facts[target.attr] = self.attr_facts.get(target.attr, 0) | flags
        elif isinstance(target, ast.Subscript) and flags:
            self._mark_container(scope, target.value)

    def _mark_container(self, scope: Scope, container: ast.expr) -> None:
        if isinstance(container, ast.Name):
            self._bind(scope, container, HOLDS)
        elif isinstance(container, ast.Attribute):
            self.attr_facts[container.attr] = self.attr_facts.get(container.attr, 0) | HOLDS

    # -- the kind of an expression ---------------------------------------------------------

    def kind(self, node: ast.expr, scope: Scope) -> int:
        """The kinds the value of ``node`` may have (0: the model's own object)."""
        if isinstance(node, ast.Name):
            owner = self.resolve(scope, node.id)
            if owner is None:
                return FOREIGN  # a builtin, or a name the file never binds
            return self.facts.get((id(owner), node.id), 0)
        if isinstance(node, ast.Attribute):
            base = self.kind(node.value, scope)
            return self.attr_facts.get(node.attr, 0) | (base & (FOREIGN | UNKNOWN))
        if isinstance(node, ast.Subscript):
            base = self.kind(node.value, scope)
            return (FOREIGN if base & (FOREIGN | HOLDS) else 0) | (base & UNKNOWN)
        if isinstance(node, ast.Call):
            return self._call_kind(node, scope)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return HOLDS if any(self.kind(e, scope) for e in node.elts) else 0
        if isinstance(node, ast.Dict):
            parts = [*(k for k in node.keys if k is not None), *node.values]
            return HOLDS if any(self.kind(p, scope) for p in parts) else 0
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return HOLDS if self.kind(node.elt, scope) else 0
        if isinstance(node, ast.DictComp):
            return HOLDS if self.kind(node.key, scope) | self.kind(node.value, scope) else 0
        if isinstance(node, ast.IfExp):
            return self.kind(node.body, scope) | self.kind(node.orelse, scope)
        if isinstance(node, ast.BoolOp):
            flags = 0
            for value in node.values:
                flags |= self.kind(value, scope)
            return flags
        if isinstance(node, (ast.NamedExpr, ast.Starred)):
            return self.kind(node.value, scope)
        return 0

    def _call_kind(self, node: ast.Call, scope: Scope) -> int:
        func = node.func
        if isinstance(func, ast.Lambda):
            return self.kind(func.body, self.scope_of.get(id(func.body), scope))
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in self.returns_foreign or (isinstance(func, ast.Name) and name == "type"):
            return FOREIGN
        if isinstance(func, ast.Name) and name == "getattr" and node.args:
            literal = node.args[1] if len(node.args) > 1 else None
            attr = literal.value if isinstance(literal, ast.Constant) else None
            base = self.kind(node.args[0], scope) & (FOREIGN | UNKNOWN)
            return base | (self.attr_facts.get(attr, 0) if isinstance(attr, str) else FOREIGN)
        if isinstance(func, ast.Attribute) and self.kind(func.value, scope) & HOLDS:
            return FOREIGN  # ``d.get(k)``, ``xs.pop()`` return what the container holds
        callee = self.kind(func, scope)
        if callee & CLASS and not callee & (FOREIGN | UNKNOWN):
            return 0  # one of the model's classes builds a new instance of itself
        own_function = name in self.functions and not callee & (FOREIGN | UNKNOWN)
        if own_function and name not in self.returns_arguments:
            return 0  # the model's function returns nothing it was given (see returns above)
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if self.kind(arg, scope) & (FOREIGN | HOLDS):
                return FOREIGN  # ``identity(torch.Tensor)``, ``next(iter([nn.Module]))``
        return 0


def _element_kind(flags: int) -> int:
    """The kind of what iterating over (or unpacking) a value of kind ``flags`` yields."""
    return (FOREIGN if flags & (FOREIGN | HOLDS) else 0) | (flags & UNKNOWN)
