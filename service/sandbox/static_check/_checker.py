"""The syntax-tree walk that applies every rule of the static check to one model file.

Longer than our usual module on purpose: it is one ``ast.NodeVisitor`` whose visit methods
share the scope and ownership state of a single walk; splitting the visitor across modules
would scatter the rules a reviewer must read together. The tables (``_tables``), the code-
generation rules (``_codegen``) and ownership (``_ownership``) already live apart.
"""

from __future__ import annotations

import ast
import string

from service.sandbox._module_table import ALLOWED_MODULES, SUBMODULES
from service.sandbox.static_check._codegen import (
    RESTRICTED,
    TYPE_FORM,
    TYPE_WHY,
    decorator_problem,
    literal_call_problem,
    type_call_problem,
    type_position_ok,
)
from service.sandbox.static_check._ownership import (
    CLASS,
    FOREIGN,
    UNKNOWN,
    Ownership,
    Scope,
)
from service.sandbox.static_check._report import Violation
from service.sandbox.static_check._tables import (
    ALLOWED_DUNDER_ATTRIBUTES,
    ALLOWED_DUNDER_DEFINITIONS,
    ALLOWED_DUNDER_NAMES,
    ATTRIBUTE_BUILTINS,
    DENIED_BUILTINS,
    DENIED_MEMBERS,
    GLOBAL_DENIED_ATTRIBUTES,
    REFUSED_NODES,
    WHY_OS,
    is_dunder,
    outside,
    torch_pattern_refusal,
)

_WHY_NOT_OWN = (
    "a model may change only its own objects (self, its classes, objects it builds); changing "
    "a library's module, class or function would change the code the training loop runs"
)
_WHY_FORMAT = "str.format reads the attributes its template names; use an f-string"


def module_aliases(tree: ast.AST) -> dict[str, str]:
    """Every name that an import anywhere in the source binds to an allowed module.

    Collected before the check so that a use *above* the import (in a function body, say) is
    judged the same as one below it; a name once bound to a module stays one throughout.
    """
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ALLOWED_MODULES:
                    top = alias.name.split(".")[0]
                    aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                target = SUBMODULES.get(node.module, {}).get(alias.name)
                if target in ALLOWED_MODULES:
                    aliases[alias.asname or alias.name] = target
    return aliases


def member_aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound by ``from module import member`` to members that are not modules."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ALLOWED_MODULES:
            for alias in node.names:
                if alias.name not in SUBMODULES.get(node.module, {}):
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def format_string_problem(fmt: str, depth: int = 0) -> str | None:
    """Why a ``str.format`` template is unsafe, or None: fields may not reach attributes/items."""
    if depth > 2:
        return "its format fields are nested too deeply"
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return "it is not a valid format string"
    for _literal, field, spec, _conversion in parsed:
        if field is not None and ("." in field or "[" in field):
            return (
                f"the format field {{{field}}} reads an attribute or item by name; "
                "use an f-string instead"
            )
        if spec and "{" in spec:
            problem = format_string_problem(spec, depth + 1)
            if problem:
                return problem
    return None


def _spell(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Checker(ast.NodeVisitor):
    """Collects ``Violation``s for one parsed model file (``visit`` the module)."""

    def __init__(self, tree: ast.Module) -> None:
        self.violations: list[Violation] = []
        #: names bound by imports to modules -> the module's canonical name
        self.module_aliases = module_aliases(tree)
        #: names bound by ``from … import`` to module members -> "module.member"
        self.member_aliases = member_aliases(tree)
        self.own = Ownership(tree)
        self.parents: dict[int, ast.AST] = {}
        self.annotations: set[int] = set()
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[id(child)] = node
            for annotation in _annotations_of(node):
                self.annotations.update(id(n) for n in ast.walk(annotation))
        #: ids of nodes that a surrounding construct has already vetted
        self.vetted: set[int] = set()
        if not self.own.complete:
            self.add(1, "this source", "its names are too intricately aliased to check")

    def add(self, line: int, what: str, why: str) -> None:
        self.violations.append(Violation(line, what, why))

    def _scope(self, node: ast.AST) -> Scope:
        return self.own.scope_of.get(id(node), self.own.module)

    def _kind(self, node: ast.expr) -> int:
        return self.own.kind(node, self._scope(node))

    def canonical(self, node: ast.expr) -> str | None:
        """``dataclasses.dataclass`` for ``dc.dataclass``, ``dataclass``, ``F.dataclasses…``."""
        if isinstance(node, ast.Name):
            if node.id in self.member_aliases:
                return self.member_aliases[node.id]
            if node.id == "type" and self.own.resolve(self._scope(node), "type") is None:
                return "builtins.type"
            return None
        links: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            links.append(current.attr)
            current = current.value
        if not (isinstance(current, ast.Name) and current.id in self.module_aliases):
            return None
        module: str | None = self.module_aliases[current.id]
        for link in reversed(links[1:]):
            module = SUBMODULES.get(module or "", {}).get(link)
            if module not in ALLOWED_MODULES:
                return None
        if links[0] in SUBMODULES.get(module or "", {}):
            return None
        return f"{module}.{links[0]}"

    # -- imports ---------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.add(node.lineno, f"`import {alias.name}`", outside(alias.name))
                continue
            self._check_binding(node.lineno, alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self.add(node.lineno, "a relative import", "model code is a single module")
            return
        if module == "__future__":
            return
        if module not in ALLOWED_MODULES:
            self.add(node.lineno, f"`from {module} import …`", outside(module))
            return
        for alias in node.names:
            name = alias.name
            bound = alias.asname or name
            spelled = f"`from {module} import {name}`"
            if name == "*":
                self.add(node.lineno, spelled, "star imports hide what is used; name each item")
                continue
            if name.startswith("_"):
                self.add(node.lineno, spelled, "it is a private member of a module")
                continue
            target = SUBMODULES.get(module, {}).get(name)
            self._check_binding(node.lineno, bound)
            if target is not None:
                if target not in ALLOWED_MODULES:
                    self.add(node.lineno, spelled, self._module_refusal(target))
                continue
            why = DENIED_MEMBERS.get(module, {}).get(name) or GLOBAL_DENIED_ATTRIBUTES.get(name)
            if why is None and module == "torch":
                why = torch_pattern_refusal(name)
            if why:
                self.add(node.lineno, spelled, why)

    def _check_binding(self, line: int, name: str) -> None:
        if is_dunder(name):
            self.add(line, f"importing as `{name}`", "dunder names are not allowed")

    @staticmethod
    def _module_refusal(module: str) -> str:
        if module in ("os", "sys", "builtins", "ctypes", "importlib", "inspect", "platform"):
            return f"it reaches the module {module!r}; {WHY_OS}"
        return outside(module)

    # -- names -----------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if id(node) in self.vetted:
            return
        self._check_name(node, as_value=True)
        if isinstance(node.ctx, ast.Load):
            self._check_restricted_use(node)

    def _check_name(self, node: ast.Name, *, as_value: bool) -> None:
        name = node.id
        loading = isinstance(node.ctx, ast.Load)
        if is_dunder(name):
            allowed = (loading and name in ALLOWED_DUNDER_NAMES) or (
                not loading and name == "__all__"
            )
            if not allowed:
                self.add(node.lineno, f"the name `{name}`", "dunder names are not allowed")
            return
        if not loading:
            return
        if as_value and name in self.module_aliases:
            self.add(
                node.lineno,
                f"using the module `{name}` as a value",
                "modules may only be used through their attributes (e.g. torch.relu(x)); "
                "storing or passing a module is not allowed",
            )
        elif name in DENIED_BUILTINS:
            self.add(node.lineno, f"`{name}`", DENIED_BUILTINS[name])
        elif name in ATTRIBUTE_BUILTINS:
            self.add(
                node.lineno,
                f"`{name}` used this way",
                f"call {name}(obj, 'name', …) directly with a literal attribute name",
            )

    def _check_restricted_use(self, node: ast.expr) -> bool:
        """Refuse a code-generating callable outside the one form it is allowed in."""
        if id(node) in self.vetted:
            return False
        canonical = self.canonical(node)
        if canonical == "builtins.type":
            parent = self.parents.get(id(node))
            if id(node) in self.annotations or type_position_ok(node, parent):
                return False
            self.add(node.lineno, f"`{_spell(node)}` used as a value", f"{TYPE_FORM}: {TYPE_WHY}")
            return True
        rule = RESTRICTED.get(canonical or "")
        if rule is None:
            return False
        self.add(node.lineno, f"`{_spell(node)}` used this way", f"{rule.form}: {rule.why}")
        return True

    # -- attribute chains ------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._check_write(node.value, node.lineno, node)
        else:
            self._check_unbound_method(node)
        chain: list[ast.Attribute] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            chain.append(current)
            current = current.value
        chain.reverse()
        root = current

        module: str | None = None
        private_ok = False
        spelled = ""
        if isinstance(root, ast.Name):
            spelled = root.id
            if root.id in self.module_aliases and isinstance(root.ctx, ast.Load):
                module = self.module_aliases[root.id]
            else:
                self._check_name(root, as_value=False)
                self._check_restricted_use(root)
                private_ok = root.id in ("self", "cls")
        else:
            if self._is_super_of_self(root):
                private_ok = True
                spelled = "super()"
            self.visit(root)

        for index, link in enumerate(chain):
            name = link.attr
            spelled = f"{spelled}.{name}" if spelled else f"….{name}"
            what = f"`{spelled}`"
            if module is not None:
                if name.startswith("_"):
                    self.add(link.lineno, what, "it is a private or dunder member of a module")
                    return
                target = SUBMODULES.get(module, {}).get(name)
                if target is not None:
                    if target not in ALLOWED_MODULES:
                        self.add(link.lineno, what, self._module_refusal(target))
                        return
                    module = target
                    continue
                why = DENIED_MEMBERS.get(module, {}).get(name)
                if why is None and module == "torch":
                    why = torch_pattern_refusal(name)
                why = why or GLOBAL_DENIED_ATTRIBUTES.get(name)
                if why:
                    self.add(link.lineno, what, why)
                    return
                if self._check_restricted_use(link):
                    return
                module = None  # the chain has left the modules: an ordinary object follows
                continue
            if is_dunder(name):
                if name not in ALLOWED_DUNDER_ATTRIBUTES:
                    self.add(link.lineno, what, "dunder attributes are not allowed")
                    return
            elif name.startswith("_"):
                if not (index == 0 and private_ok):
                    self.add(
                        link.lineno,
                        what,
                        "private attributes are only allowed directly on self, cls or super()",
                    )
                    return
            elif name in GLOBAL_DENIED_ATTRIBUTES:
                self.add(link.lineno, what, GLOBAL_DENIED_ATTRIBUTES[name])
                return
            elif name == "format" and id(link) not in self.vetted:
                self.add(
                    link.lineno,
                    what,
                    "str.format is only allowed as a direct call on a string literal; "
                    "use an f-string",
                )
                return
        if module is not None:
            self.add(
                node.lineno,
                f"using the module `{spelled}` as a value",
                "modules may only be used through their attributes (e.g. torch.relu(x)); "
                "storing or passing a module is not allowed",
            )

    def _is_super_of_self(self, node: ast.expr) -> bool:
        """``super()`` or ``super(Cls, self)``: the object is still ``self``."""
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            return False
        if node.func.id != "super" or node.keywords:
            return False
        if not node.args:
            return True
        second = node.args[1] if len(node.args) == 2 else None
        scope = self._scope(node)
        return isinstance(second, ast.Name) and self.own.self_scope(scope, second.id) is not None

    def _is_module_value(self, node: ast.expr) -> bool:
        """``torch`` or ``torch.nn``: an expression whose value is a module object."""
        links: list[str] = []
        while isinstance(node, ast.Attribute):
            links.append(node.attr)
            node = node.value
        if not (isinstance(node, ast.Name) and node.id in self.module_aliases):
            return False
        module: str | None = self.module_aliases[node.id]
        for link in reversed(links):
            module = SUBMODULES.get(module or "", {}).get(link)
        return module is not None

    def _is_module_chain(self, node: ast.expr) -> bool:
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.module_aliases

    # -- writes: only to the model's own objects -------------------------------------------

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._check_write(node.value, node.lineno, node)
        self.generic_visit(node)

    def _check_write(self, obj: ast.expr, line: int, target: ast.AST) -> None:
        """Refuse a write (assignment, ``del``, ``setattr``) into an object not the model's."""
        if isinstance(target, ast.Call):
            what = f"`{_spell(target)}`"
        else:
            parent = self.parents.get(id(target))
            verb = "deleting" if isinstance(parent, ast.Delete) else "assigning to"
            what = f"{verb} `{_spell(target)}`"
        root = obj
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        if self._is_module_chain(obj):
            owner = _spell(obj)
            self.add(line, what, f"`{owner}` belongs to a library module; {_WHY_NOT_OWN}")
            return
        if not isinstance(root, ast.Name):
            self.add(
                line,
                what,
                "attributes and items may only be changed through a name (self.x, cfg.x, "
                f"layers[i]): the check cannot tell whose object `{_spell(root, 30)}` is",
            )
            return
        flags = self._kind(obj)
        if flags & FOREIGN:
            self.add(
                line,
                what,
                f"`{_spell(obj)}` may be a library object (it is, or comes from, an import, a "
                f"builtin or type(…)); {_WHY_NOT_OWN}",
            )
        elif flags & UNKNOWN:
            self.add(
                line,
                what,
                f"`{_spell(obj)}` comes from a parameter, so the check cannot tell whose object "
                "it is; change attributes only on self or on objects this code builds",
            )

    def _check_unbound_method(self, node: ast.Attribute) -> None:
        """``Cls.method(not_self)`` runs the model's method with a foreign object as self."""
        if node.attr not in self.own.instance_methods:
            self._check_library_method(node)
            return
        flags = self._kind(node.value)
        parent = self.parents.get(id(node))
        call = parent if isinstance(parent, ast.Call) and parent.func is node else None
        first = call.args[0] if call is not None and call.args else None
        if first is not None and self._is_module_value(first):
            return  # a module passed as a value is refused on its own
        if flags & CLASS:
            if first is not None and not isinstance(first, ast.Starred) and not self._kind(first):
                return
            self.add(
                node.lineno,
                f"`{_spell(node)}` used other than as `{_spell(node)}(self, …)`",
                "a method reached through its class runs with its first argument as self: "
                "pass self (or an instance this code built), or call it on an instance",
            )
        elif flags & (FOREIGN | UNKNOWN) and first is not None and self._kind(first) & FOREIGN:
            self.add(
                node.lineno,
                f"`{_spell(call or node)}`",
                f"if `{_spell(node.value)}` is one of the model's classes, `{node.attr}` would "
                "run with a library object as self; " + _WHY_NOT_OWN,
            )

    def _check_library_method(self, node: ast.Attribute) -> None:
        """``nn.Module.train(torch.Tensor)`` runs a library method on a library class."""
        parent = self.parents.get(id(node))
        if not (isinstance(parent, ast.Call) and parent.func is node and parent.args):
            return
        owner = node.value
        if not (
            isinstance(owner, ast.Attribute)
            and owner.attr[:1].isupper()  # a class, by the naming every library follows
            and self._is_module_chain(owner)
        ):
            return
        first = parent.args[0]
        if not isinstance(first, ast.Constant) and self._kind(first) & FOREIGN:
            self.add(
                node.lineno,
                f"`{_spell(parent)}`",
                f"it runs `{_spell(node)}` with a library object as self; " + _WHY_NOT_OWN,
            )

    # -- calls -----------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        for keyword in node.keywords:
            if keyword.arg and is_dunder(keyword.arg):
                self.add(
                    node.lineno,
                    f"the keyword argument `{keyword.arg}=`",
                    "dunder names are not allowed (they reach the interpreter's own attributes)",
                )
        canonical = self.canonical(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
        if canonical == "builtins.type":
            self.vetted.add(id(func))
            problem = type_call_problem(node, self.parents.get(id(node)))
            if problem:
                self.add(node.lineno, f"`{_spell(node)}`", f"{problem}; use {TYPE_FORM}")
        elif canonical in RESTRICTED and id(node) not in self.vetted:
            rule = RESTRICTED[canonical]
            self.vetted.add(id(func))
            if rule.use in ("literal call", "literal call or base"):
                problem = literal_call_problem(canonical, node)
                if problem:
                    self.add(node.lineno, f"`{_spell(node)}`", f"{problem}; {rule.why}")
            else:
                self.add(
                    node.lineno, f"`{_spell(node)}`", f"it may be used {rule.form}: {rule.why}"
                )
        elif isinstance(func, ast.Name) and func.id in ATTRIBUTE_BUILTINS:
            self._check_attribute_builtin(node, func.id)
        elif isinstance(func, ast.Attribute) and func.attr == "format":
            if isinstance(func.value, ast.Constant) and isinstance(func.value.value, str):
                problem = format_string_problem(func.value.value)
                if problem:
                    self.add(node.lineno, "this str.format call", problem)
                self.vetted.add(id(func))
        elif (
            isinstance(func, ast.Attribute) and func.attr == "type" and (node.args or node.keywords)
        ):
            values = [*node.args, *(k.value for k in node.keywords)]
            if not all(self._is_module_chain(v) for v in values):
                self.add(
                    node.lineno,
                    "`.type(…)` with an argument other than a torch dtype or tensor type",
                    "a string argument imports a dotted name; use .to(dtype) instead",
                )
        self.generic_visit(node)

    def _check_attribute_builtin(self, node: ast.Call, builtin: str) -> None:
        assert isinstance(node.func, ast.Name)
        self.vetted.add(id(node.func))
        what = f"`{builtin}(…)`"
        if len(node.args) < 2 or node.keywords:
            self.add(node.lineno, what, "it needs an object and a literal attribute name")
            return
        target, name_node = node.args[0], node.args[1]
        if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str)):
            self.add(
                node.lineno,
                f"{what} with a computed attribute name",
                "use a literal name, or nn.ModuleList / nn.ModuleDict for numbered layers",
            )
            return
        name = name_node.value
        spelled = f"{builtin}(…, {name!r})"
        on_self = isinstance(target, ast.Name) and target.id in ("self", "cls")
        if is_dunder(name) or (name.startswith("_") and not on_self):
            self.add(node.lineno, spelled, "it reaches a dunder or private attribute")
        elif name in GLOBAL_DENIED_ATTRIBUTES:
            self.add(node.lineno, spelled, GLOBAL_DENIED_ATTRIBUTES[name])
        elif not name.isidentifier():
            self.add(node.lineno, spelled, "the name is not an identifier")
        elif name in ("format", "format_map"):
            self.add(node.lineno, spelled, _WHY_FORMAT)
        elif builtin in ("setattr", "delattr"):
            self._check_write(target, node.lineno, node)
        elif name in self.own.instance_methods and self._kind(target) & CLASS:
            self.add(
                node.lineno,
                spelled,
                "a method taken from its class runs with its first argument as self; "
                "call it on an instance",
            )

    # -- definitions and other statements ------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if is_dunder(node.name) and node.name not in ALLOWED_DUNDER_DEFINITIONS:
            self.add(
                node.lineno,
                f"defining `{node.name}`",
                "only these special methods may be defined: "
                + ", ".join(sorted(ALLOWED_DUNDER_DEFINITIONS)),
            )
        self._vet_decorators(node.decorator_list, on_class=False)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if is_dunder(node.name):
            self.add(node.lineno, f"the class name `{node.name}`", "dunder names are not allowed")
        for keyword in node.keywords:
            if keyword.arg == "metaclass":
                self.add(node.lineno, "a metaclass", "metaclasses change how classes are built")
            elif keyword.arg is None or not isinstance(keyword.value, ast.Constant):
                self.add(
                    node.lineno,
                    "a computed class keyword",
                    "class keywords go to the base classes' __init_subclass__; "
                    "only literals (e.g. total=False) may be passed",
                )
        for base in node.bases:
            if self.canonical(base) in ("typing.NamedTuple", "typing.TypedDict"):
                self.vetted.add(id(base))
        self._vet_decorators(node.decorator_list, on_class=True)
        self.generic_visit(node)

    def _vet_decorators(self, decorators: list[ast.expr], *, on_class: bool) -> None:
        for decorator in decorators:
            func = decorator.func if isinstance(decorator, ast.Call) else decorator
            canonical = (
                self.canonical(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
            )
            rule = RESTRICTED.get(canonical or "")
            if rule is None:
                continue
            self.vetted.update((id(decorator), id(func)))
            problem = decorator_problem(rule, decorator, on_class=on_class)
            if problem:
                self.add(
                    decorator.lineno,
                    f"the decorator `@{_spell(decorator)}`",
                    f"{problem}: {rule.why}",
                )

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name and is_dunder(node.name):
            self.add(node.lineno, f"the name `{node.name}`", "dunder names are not allowed")
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        if is_dunder(node.arg):
            self.add(node.lineno, f"the parameter `{node.arg}`", "dunder names are not allowed")
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        refusal = REFUSED_NODES.get(type(node))
        if refusal:
            self.add(getattr(node, "lineno", 1), *refusal)
            return
        super().generic_visit(node)


def _annotations_of(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.arg) and node.annotation is not None:
        return [node.annotation]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
        return [node.returns]
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    return []
