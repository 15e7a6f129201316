"""The static check every model source passes before anything runs it.

An allow-list over the syntax tree, not a deny-list of known tricks. Model code may import only
``torch``, ``torch.nn``, ``torch.nn.functional``, ``torch.nn.init`` (and the pure-math
``torch.linalg``, ``torch.fft``, ``torch.special``), ``math``, ``typing``, ``collections``,
``functools``, ``itertools`` and ``dataclasses``; the rules below keep it inside them:

* **Modules are only used through their attributes.** ``torch.relu(x)`` is fine; ``m = torch``,
  ``f(torch)`` or ``[nn]`` are refused, so no module object ever reaches a variable. Attribute
  chains that start at a module are resolved statically (``_module_table``): a chain may only
  enter allowed modules, so ``torch.hub``, ``F.torch.os``, ``typing.sys`` or
  ``dataclasses.builtins`` are refused however they are spelled or aliased.
* **No dunder attributes or names** except ``__init__``, ``__name__``, ``__qualname__`` and
  ``__doc__``: this closes ``().__class__.__base__.__subclasses__()``, ``f.__globals__``,
  ``math.__loader__``, ``e.__traceback__`` and the like. No frame, code or traceback
  introspection (``gi_frame``, ``f_globals``, ``tb_frame`` …).
* **No private attributes** (``_name``) except directly on ``self``/``cls``/``super()``.
* **No builtins that run or load code or reach the interpreter**: ``open``, ``exec``, ``eval``,
  ``compile``, ``__import__``, ``globals``, ``locals``, ``vars``, ``breakpoint``, ``input``;
  ``getattr``/``setattr``/``delattr``/``hasattr`` only with a literal, public attribute name.
* **No loading, saving, compiling, processes, devices or distribution**: ``torch.load``,
  ``torch.save``, ``torch.from_file``, ``torch.compile``, ``torch.jit``, ``torch.hub``,
  ``torch.utils``, ``torch.ops``, ``torch.library``, ``torch._C`` … and any attribute named like a
  standard-library module that reaches the operating system (``os``, ``sys``, ``subprocess`` …).
* **No string-driven attribute access**: ``str.format`` only on a literal whose fields do not
  reach attributes or items (``'{0.__globals__}'.format(f)`` is refused); ``typing``'s
  ``get_type_hints``/``ForwardRef`` and ``functools.singledispatch`` (which evaluate annotation
  strings) are refused; ``tensor.type('a.dotted.name')`` (which imports the name) is refused.

The check is defence in depth; the sandbox's process boundary (``runner``) is the real one.
"""

from __future__ import annotations

import ast
import string
import sys
from dataclasses import dataclass

from service.errors import SandboxRejected
from service.sandbox._module_table import ALLOWED_MODULES, SUBMODULES

#: Larger sources are refused before parsing (parsing is the only cost we pay for any input).
MAX_SOURCE_BYTES = 256 * 1024

ALLOWED_SUMMARY = (
    "Model code may import only torch, torch.nn, torch.nn.functional, torch.nn.init "
    "(also torch.linalg, torch.fft, torch.special), math, typing, collections, functools, "
    "itertools and dataclasses, and use them through their public attributes "
    "(e.g. nn.Conv2d, F.relu, torch.flatten)."
)

_ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__", "__qualname__", "__doc__"})
_ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__"})
_ALLOWED_DUNDER_DEFINITIONS = frozenset(
    {
        "__init__",
        "__post_init__",
        "__call__",
        "__repr__",
        "__str__",
        "__len__",
        "__getitem__",
        "__iter__",
        "__next__",
        "__contains__",
        "__eq__",
        "__hash__",
        "__bool__",
        "__enter__",
        "__exit__",
    }
)

_WHY_CODE = "model code may not run, load or compile other code"
_WHY_FILES = "model code may not read or write files or data outside the model"
_WHY_OS = "model code may not reach the operating system, the interpreter or other modules"
_WHY_INTROSPECTION = "frame, code and traceback introspection can escape the sandbox"
_WHY_DEVICE = "device placement, processes and distribution are the worker's job, not the model's"
_WHY_EVAL_STRINGS = "it evaluates strings as code"

#: Builtins refused wherever they appear.
_DENIED_BUILTINS: dict[str, str] = {
    "open": _WHY_FILES,
    "exec": _WHY_CODE,
    "eval": _WHY_CODE,
    "compile": _WHY_CODE,
    "globals": _WHY_OS,
    "locals": _WHY_OS,
    "vars": _WHY_OS,
    "breakpoint": _WHY_OS,
    "input": _WHY_OS,
    "help": _WHY_OS,
    "exit": _WHY_OS,
    "quit": _WHY_OS,
}

#: Builtins that take an attribute name as a string: only direct calls with a literal name.
_ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})

#: Standard-library module names that are harmless and double as ordinary attribute names
#: (``x.chunk(2)``, ``t.select(0, 1)``, ``d.copy()``, ``torch.trace(m)``); every other
#: standard-library module name is refused as an attribute anywhere.
_HARMLESS_STDLIB_NAMES = frozenset(
    {
        "abc",
        "array",
        "bisect",
        "calendar",
        "chunk",
        "cmath",
        "collections",
        "colorsys",
        "copy",
        "dataclasses",
        "datetime",
        "decimal",
        "enum",
        "errno",
        "fractions",
        "functools",
        "graphlib",
        "heapq",
        "itertools",
        "keyword",
        "math",
        "numbers",
        "queue",
        "random",
        "reprlib",
        "select",
        "stat",
        "statistics",
        "struct",
        "textwrap",
        "time",
        "token",
        "trace",
        "typing",
    }
)


def _global_denied_attributes() -> dict[str, str]:
    denied: dict[str, str] = {}
    for name in sys.stdlib_module_names:
        if not name.startswith("_") and name not in _HARMLESS_STDLIB_NAMES:
            denied[name] = f"it names the standard-library module {name!r}; {_WHY_OS}"
    for name in ("np", "numpy", "typing_extensions", "stdlib_re", "torch", "sympy", "triton"):
        denied[name] = f"it names the module {name!r}; {_WHY_OS}"
    for name in ("hub", "jit", "ops", "library", "package", "serialization", "fx", "onnx"):
        denied[name] = f"torch.{name} loads, saves or compiles code; {_WHY_CODE}"
    for name in ("utils", "compiler", "export", "profiler", "testing", "backends"):
        denied[name] = f"torch.{name} is outside the allowed modules; {_WHY_CODE}"
    for name in ("multiprocessing", "distributed", "cuda", "mps", "xpu", "mtia", "accelerator"):
        denied[name] = _WHY_DEVICE
    for name in (
        "open",
        "load",
        "loads",
        "save",
        "from_file",
        "fromfile",
        "tofile",
        "dump",
        "storage",
        "untyped_storage",
        "share_memory_",
        "get_file_path",
    ):
        denied[name] = _WHY_FILES
    for name in (
        "exec",
        "eval",
        "compile",
        "load_library",
        "load_inline",
        "import_module",
        "import_ir_module",
        "import_ir_module_from_buffer",
        "set_default_tensor_type",
        "system",
        "popen",
        "spawn",
        "fork",
        "forkpty",
        "kill",
        "getenv",
        "putenv",
        "environ",
        "rmtree",
        "unlink",
        "chmod",
        "chown",
        "chdir",
    ):
        denied[name] = _WHY_CODE if name not in ("getenv", "putenv", "environ") else _WHY_OS
    for name in ("get_type_hints", "ForwardRef", "singledispatch", "singledispatchmethod"):
        denied[name] = _WHY_EVAL_STRINGS
    for name in ("Formatter", "attrgetter", "methodcaller", "format_map"):
        denied[name] = "it reads attributes named by strings"
    for name in (
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_back",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        "co_code",
        "co_consts",
        "co_names",
        "func_globals",
        "func_code",
        "func_closure",
        "im_func",
        "im_self",
        "cell_contents",
    ):
        denied[name] = _WHY_INTROSPECTION
    return denied


_GLOBAL_DENIED_ATTRIBUTES: dict[str, str] = _global_denied_attributes()

#: Public, non-module members of allowed modules that are refused.
_DENIED_MEMBERS: dict[str, dict[str, str]] = {
    "torch": {
        **{
            name: _WHY_FILES
            for name in (
                "load",
                "save",
                "from_file",
                "get_file_path",
                "PyTorchFileReader",
                "PyTorchFileWriter",
                "DeserializationStorageContext",
                "SerializationStorageContext",
                "ScriptModuleSerializer",
                "StorageBase",
            )
        },
        **{
            name: _WHY_CODE
            for name in (
                "compile",
                "import_ir_module",
                "import_ir_module_from_buffer",
                "parse_ir",
                "parse_schema",
                "parse_type_comment",
                "merge_type_from_type_comment",
                "unify_type_list",
                "set_default_tensor_type",
                "CompilationUnit",
                "Code",
                "ConcreteModuleType",
                "ConcreteModuleTypeBuilder",
                "ExecutionPlan",
                "FileCheck",
                "IODescriptor",
                "Graph",
                "GraphExecutorState",
                "LiteScriptModule",
                "StaticModule",
                "ThroughputBenchmark",
                "BenchmarkConfig",
                "BenchmarkExecutionStats",
                "AliasDb",
                "Capsule",
                "LockingLogger",
                "NoopLogger",
                "LoggerBase",
            )
        },
        **{
            name: _WHY_DEVICE
            for name in ("fork", "wait", "Future", "prepare_multiprocessing_environment")
        },
    },
    "typing": {"get_type_hints": _WHY_EVAL_STRINGS, "ForwardRef": _WHY_EVAL_STRINGS},
    "functools": {
        "singledispatch": _WHY_EVAL_STRINGS,
        "singledispatchmethod": _WHY_EVAL_STRINGS,
    },
}

_REFUSED_NODES: dict[type[ast.AST], tuple[str, str]] = {
    ast.Match: ("a `match` statement", "class patterns read attributes by name"),
    ast.AsyncFunctionDef: ("`async def`", "models are synchronous"),
    ast.AsyncFor: ("`async for`", "models are synchronous"),
    ast.AsyncWith: ("`async with`", "models are synchronous"),
    ast.Await: ("`await`", "models are synchronous"),
}


@dataclass(frozen=True)
class Violation:
    """One thing the static check refused: where, what, and why."""

    line: int
    what: str
    why: str

    def __str__(self) -> str:
        if not self.what:
            return f"line {self.line}: {self.why}"
        return f"line {self.line}: {self.what} is not allowed: {self.why}"


class StaticCheckRejected(SandboxRejected):
    """The model source failed the static check; ``violations`` lists every finding."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  {v}" for v in violations)
        super().__init__(
            f"the model code failed the static check ({len(violations)} finding"
            f"{'s' if len(violations) != 1 else ''}):\n{lines}\n{ALLOWED_SUMMARY}"
        )


def check_source(source: str) -> None:
    """Refuse model source that steps outside the allow-list.

    Raises ``StaticCheckRejected`` (a ``SandboxRejected``) listing every finding with its line
    number, what was refused and why; returns ``None`` when the source is acceptable.
    """
    violations = find_violations(source)
    if violations:
        raise StaticCheckRejected(violations)


def find_violations(source: str) -> list[Violation]:
    """Every finding of the static check, in source order (empty when the source is fine)."""
    if len(source.encode("utf-8", errors="replace")) > MAX_SOURCE_BYTES:
        return [Violation(1, "a model file this large", f"the limit is {MAX_SOURCE_BYTES} bytes")]
    try:
        tree = ast.parse(source, filename="<model>")
    except SyntaxError as e:
        return [Violation(e.lineno or 1, "", f"the file does not parse: {e.msg}")]
    except (RecursionError, MemoryError, ValueError) as e:
        return [Violation(1, "this source", f"it cannot be parsed safely ({type(e).__name__})")]
    checker = _Checker(_module_aliases(tree))
    try:
        checker.visit(tree)
    except RecursionError:
        checker.add(1, "this source", "it is nested too deeply to check")
    return sorted(set(checker.violations), key=lambda v: (v.line, v.what))


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _format_string_problem(fmt: str, depth: int = 0) -> str | None:
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
            problem = _format_string_problem(spec, depth + 1)
            if problem:
                return problem
    return None


def _module_aliases(tree: ast.AST) -> dict[str, str]:
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


class _Checker(ast.NodeVisitor):
    def __init__(self, module_aliases: dict[str, str]) -> None:
        self.violations: list[Violation] = []
        #: names bound by imports to modules -> the module's canonical name
        self.module_aliases = module_aliases
        #: ids of nodes that a surrounding construct has already vetted
        self.vetted: set[int] = set()

    def add(self, line: int, what: str, why: str) -> None:
        self.violations.append(Violation(line, what, why))

    # -- imports ---------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self.add(node.lineno, f"`import {alias.name}`", _outside(alias.name))
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
            self.add(node.lineno, f"`from {module} import …`", _outside(module))
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
            why = _DENIED_MEMBERS.get(module, {}).get(name) or _GLOBAL_DENIED_ATTRIBUTES.get(name)
            if why is None and module == "torch":
                why = _torch_pattern_refusal(name)
            if why:
                self.add(node.lineno, spelled, why)

    def _check_binding(self, line: int, name: str) -> None:
        if _is_dunder(name):
            self.add(line, f"importing as `{name}`", "dunder names are not allowed")

    @staticmethod
    def _module_refusal(module: str) -> str:
        if module in ("os", "sys", "builtins", "ctypes", "importlib", "inspect", "platform"):
            return f"it reaches the module {module!r}; {_WHY_OS}"
        return _outside(module)

    # -- names -----------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if id(node) in self.vetted:
            return
        self._check_name(node, as_value=True)

    def _check_name(self, node: ast.Name, *, as_value: bool) -> None:
        name = node.id
        loading = isinstance(node.ctx, ast.Load)
        if _is_dunder(name):
            allowed = (loading and name in _ALLOWED_DUNDER_NAMES) or (
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
        elif name in _DENIED_BUILTINS:
            self.add(node.lineno, f"`{name}`", _DENIED_BUILTINS[name])
        elif name in _ATTRIBUTE_BUILTINS:
            self.add(
                node.lineno,
                f"`{name}` used this way",
                f"call {name}(obj, 'name', …) directly with a literal attribute name",
            )

    # -- attribute chains ------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
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
                private_ok = root.id in ("self", "cls")
        else:
            if (
                isinstance(root, ast.Call)
                and isinstance(root.func, ast.Name)
                and root.func.id == "super"
            ):
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
                why = _DENIED_MEMBERS.get(module, {}).get(name)
                if why is None and module == "torch":
                    why = _torch_pattern_refusal(name)
                why = why or _GLOBAL_DENIED_ATTRIBUTES.get(name)
                if why:
                    self.add(link.lineno, what, why)
                    return
                module = None  # the chain has left the modules: an ordinary object follows
                continue
            if _is_dunder(name):
                if name not in _ALLOWED_DUNDER_ATTRIBUTES:
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
            elif name in _GLOBAL_DENIED_ATTRIBUTES:
                self.add(link.lineno, what, _GLOBAL_DENIED_ATTRIBUTES[name])
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

    def _is_module_chain(self, node: ast.expr) -> bool:
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in self.module_aliases

    # -- calls -----------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in _ATTRIBUTE_BUILTINS:
            self._check_attribute_builtin(node, func.id)
        elif isinstance(func, ast.Attribute) and func.attr == "format":
            if isinstance(func.value, ast.Constant) and isinstance(func.value.value, str):
                problem = _format_string_problem(func.value.value)
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
        on_self = isinstance(target, ast.Name) and target.id in ("self", "cls")
        if _is_dunder(name) or (name.startswith("_") and not on_self):
            self.add(
                node.lineno, f"{builtin}(…, {name!r})", "it reaches a dunder or private attribute"
            )
        elif name in _GLOBAL_DENIED_ATTRIBUTES:
            self.add(node.lineno, f"{builtin}(…, {name!r})", _GLOBAL_DENIED_ATTRIBUTES[name])
        elif not name.isidentifier():
            self.add(node.lineno, f"{builtin}(…, {name!r})", "the name is not an identifier")

    # -- definitions and other statements ------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if _is_dunder(node.name) and node.name not in _ALLOWED_DUNDER_DEFINITIONS:
            self.add(
                node.lineno,
                f"defining `{node.name}`",
                "only these special methods may be defined: "
                + ", ".join(sorted(_ALLOWED_DUNDER_DEFINITIONS)),
            )
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if _is_dunder(node.name):
            self.add(node.lineno, f"the class name `{node.name}`", "dunder names are not allowed")
        for keyword in node.keywords:
            if keyword.arg == "metaclass":
                self.add(node.lineno, "a metaclass", "metaclasses change how classes are built")
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name and _is_dunder(node.name):
            self.add(node.lineno, f"the name `{node.name}`", "dunder names are not allowed")
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        if _is_dunder(node.arg):
            self.add(node.lineno, f"the parameter `{node.arg}`", "dunder names are not allowed")
        self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        refusal = _REFUSED_NODES.get(type(node))
        if refusal:
            self.add(getattr(node, "lineno", 1), *refusal)
            return
        super().generic_visit(node)


def _outside(module: str) -> str:
    return f"the module {module!r} is outside the allow-list"


def _torch_pattern_refusal(name: str) -> str | None:
    """torch's JIT and storage classes share prefixes and suffixes; refuse them as families."""
    if name.startswith("Script"):
        return f"TorchScript classes compile and load code; {_WHY_CODE}"
    if name.endswith("Storage"):
        return f"storages can map files; {_WHY_FILES}"
    return None
