"""What the static check refuses by name: builtins, attributes, module members, syntax.

Deny-lists complement the allow-list of modules (``_module_table``): they name the public
members of *allowed* modules that still reach files, code, devices or the interpreter, and the
standard-library module names that are refused as attributes anywhere.
"""

from __future__ import annotations

import ast
import sys

ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__", "__qualname__", "__doc__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__"})
ALLOWED_DUNDER_DEFINITIONS = frozenset(
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

WHY_CODE = "model code may not run, load or compile other code"
WHY_FILES = "model code may not read or write files or data outside the model"
WHY_OS = "model code may not reach the operating system, the interpreter or other modules"
WHY_INTROSPECTION = "frame, code and traceback introspection can escape the sandbox"
WHY_DEVICE = "device placement, processes and distribution are the worker's job, not the model's"
WHY_EVAL_STRINGS = "it evaluates strings as code"
WHY_GLOBAL_SETTINGS = (
    "torch's global settings (default dtype and device, grad mode, precision, threads) belong "
    "to the worker: a model that changes them changes how the training loop computes"
)

#: Builtins refused wherever they appear.
DENIED_BUILTINS: dict[str, str] = {
    "open": WHY_FILES,
    "exec": WHY_CODE,
    "eval": WHY_CODE,
    "compile": WHY_CODE,
    "globals": WHY_OS,
    "locals": WHY_OS,
    "vars": WHY_OS,
    "breakpoint": WHY_OS,
    "input": WHY_OS,
    "help": WHY_OS,
    "exit": WHY_OS,
    "quit": WHY_OS,
}

#: Builtins that take an attribute name as a string: only direct calls with a literal name.
ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})

#: Standard-library module names that are harmless and double as ordinary attribute names
#: (``x.chunk(2)``, ``t.select(0, 1)``, ``d.copy()``, ``torch.trace(m)``); every other
#: standard-library module name is refused as an attribute anywhere.
HARMLESS_STDLIB_NAMES = frozenset(
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
        if not name.startswith("_") and name not in HARMLESS_STDLIB_NAMES:
            denied[name] = f"it names the standard-library module {name!r}; {WHY_OS}"
    for name in ("np", "numpy", "typing_extensions", "stdlib_re", "torch", "sympy", "triton"):
        denied[name] = f"it names the module {name!r}; {WHY_OS}"
    for name in ("hub", "jit", "ops", "library", "package", "serialization", "fx", "onnx"):
        denied[name] = f"torch.{name} loads, saves or compiles code; {WHY_CODE}"
    for name in ("utils", "compiler", "export", "profiler", "testing", "backends"):
        denied[name] = f"torch.{name} is outside the allowed modules; {WHY_CODE}"
    for name in ("multiprocessing", "distributed", "cuda", "mps", "xpu", "mtia", "accelerator"):
        denied[name] = WHY_DEVICE
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
        denied[name] = WHY_FILES
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
        denied[name] = WHY_CODE if name not in ("getenv", "putenv", "environ") else WHY_OS
    for name in ("get_type_hints", "ForwardRef", "singledispatch", "singledispatchmethod"):
        denied[name] = WHY_EVAL_STRINGS
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
        denied[name] = WHY_INTROSPECTION
    # a class's method resolution order reaches its bases, classes that are not the model's
    # own (``type(self).mro()[1].forward = …`` would patch ``nn.Module``)
    denied["mro"] = "it walks to base classes that are not the model's own"
    return denied


GLOBAL_DENIED_ATTRIBUTES: dict[str, str] = _global_denied_attributes()

#: Public, non-module members of allowed modules that are refused.
DENIED_MEMBERS: dict[str, dict[str, str]] = {
    "torch": {
        **{
            name: WHY_FILES
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
            name: WHY_CODE
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
            name: WHY_DEVICE
            for name in ("fork", "wait", "Future", "prepare_multiprocessing_environment")
        },
    },
    "typing": {"get_type_hints": WHY_EVAL_STRINGS, "ForwardRef": WHY_EVAL_STRINGS},
    "functools": {
        "singledispatch": WHY_EVAL_STRINGS,
        "singledispatchmethod": WHY_EVAL_STRINGS,
    },
}

REFUSED_NODES: dict[type[ast.AST], tuple[str, str]] = {
    ast.Match: ("a `match` statement", "class patterns read attributes by name"),
    ast.AsyncFunctionDef: ("`async def`", "models are synchronous"),
    ast.AsyncFor: ("`async for`", "models are synchronous"),
    ast.AsyncWith: ("`async with`", "models are synchronous"),
    ast.Await: ("`await`", "models are synchronous"),
}


def is_dunder(name: str) -> bool:
    """``__name__``-style: the interpreter's own names."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def outside(module: str) -> str:
    """The reason given for a module that is not on the allow-list."""
    return f"the module {module!r} is outside the allow-list"


def torch_pattern_refusal(name: str) -> str | None:
    """torch's JIT and storage classes share prefixes and suffixes; refuse them as families."""
    if name.startswith("Script"):
        return f"TorchScript classes compile and load code; {WHY_CODE}"
    if name.endswith("Storage"):
        return f"storages can map files; {WHY_FILES}"
    if (name.startswith("set_") and name != "set_printoptions") or name.startswith("use_"):
        return WHY_GLOBAL_SETTINGS
    return None
