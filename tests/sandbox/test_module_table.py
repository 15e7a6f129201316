"""The static check's table of submodules matches the installed torch and Python.

If this fails after a torch upgrade, regenerate ``service/sandbox/_module_table.py`` from the
``live_table()`` below and review every new submodule: only pure tensor maths belongs in
``ALLOWED_MODULES``.
"""

from __future__ import annotations

import importlib
import types
import warnings

from service.sandbox._module_table import ALLOWED_MODULES, SUBMODULES
from service.sandbox.static_check import find_violations

#: Modules that, reached from model code, would let it out of the sandbox.
DANGEROUS = {
    "os",
    "sys",
    "subprocess",
    "builtins",
    "importlib",
    "ctypes",
    "inspect",
    "types",
    "operator",
    "pickle",
    "threading",
    "multiprocessing",
    "torch.hub",
    "torch.jit",
    "torch.serialization",
    "torch.utils",
    "torch.package",
    "torch.ops",
    "torch.library",
    "torch.multiprocessing",
    "torch.distributed",
    "torch.backends",
    "torch.cuda",
    "torch.fx",
    "torch.compiler",
    "numpy",
}


def live_table() -> dict[str, dict[str, str]]:
    table = {}
    for name in sorted(ALLOWED_MODULES):
        module = importlib.import_module(name)
        table[name] = {
            attr: value.__name__
            for attr, value in sorted(vars(module).items())
            if isinstance(value, types.ModuleType) and not attr.startswith("_")
        }
    return table


def test_table_matches_the_installed_modules() -> None:
    # A fresh interpreter: what other tests imported (torch loads submodules lazily) would
    # otherwise show up as attributes and make the comparison depend on test order.
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, tests.sandbox.test_module_table as t; print(json.dumps(t.live_table()))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == SUBMODULES


def test_no_dangerous_module_is_allowed_or_reachable() -> None:
    assert not (ALLOWED_MODULES & DANGEROUS)
    # Walking only through allowed modules (the only ones the check lets a chain enter),
    # every module reached is itself allowed.
    for parent in ALLOWED_MODULES:
        for attr, target in SUBMODULES[parent].items():
            alias = {"torch": "torch", "torch.nn": "nn"}.get(parent)
            if target not in ALLOWED_MODULES and alias:
                source = f"import torch\nimport torch.nn as nn\n{alias}.{attr}.anything\n"
                assert find_violations(source), f"{parent}.{attr} -> {target} was not refused"


#: Names that match the loader words below but only answer questions.
HARMLESS = {
    "compiled_with_cxx11_abi",
    "is_storage",
    "profiler_allow_cudagraph_cupti_lazy_reinit_cuda12",
}
LOADER_WORDS = (
    "load",
    "save",
    "file",
    "compile",
    "import_",
    "script",
    "storage",
    "serial",
    "librar",
)


def test_public_loaders_of_torch_are_refused() -> None:
    import torch

    for name in dir(torch):
        if name.startswith("_") or name in HARMLESS:
            continue
        if any(word in name.lower() for word in LOADER_WORDS):
            assert find_violations(f"import torch\ntorch.{name}\n"), f"torch.{name} allowed"


def test_no_public_class_or_function_attribute_is_a_module() -> None:
    """The check assumes that once a chain leaves the modules (``torch.Tensor``, ``F.relu``), no
    public attribute leads back into one."""
    found = []
    for name in sorted(ALLOWED_MODULES):
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if attr.startswith("_") or isinstance(value, types.ModuleType) or not callable(value):
                continue
            for member in dir(value):
                if member.startswith("_"):
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # deprecated members warn when read
                        inner = getattr(value, member)
                except Exception:  # noqa: BLE001 - descriptors may raise anything
                    continue
                if isinstance(inner, types.ModuleType):
                    found.append(f"{name}.{attr}.{member}")
    assert not found
