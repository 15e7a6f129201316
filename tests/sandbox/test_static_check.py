"""The static check: every escape route is refused with its line and a reason; ordinary
PyTorch code is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import SandboxRejected
from service.sandbox.static_check import (
    ALLOWED_SUMMARY,
    MAX_SOURCE_BYTES,
    StaticCheckRejected,
    check_source,
    find_violations,
)
from tests.sandbox.good_models import GOOD_SOURCES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
H = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"  # 3 lines

# (name, source, line of the first finding, words its message must contain)
REFUSED = [
    # imports outside the allow-list, however spelled
    ("import os", "import os", 1, ["`import os`", "'os' is outside the allow-list"]),
    ("import subprocess", "import subprocess as sp", 1, ["subprocess", "outside the allow-list"]),
    ("from os", "from os import system", 1, ["`from os import …`"]),
    ("importlib", "import importlib", 1, ["importlib", "outside the allow-list"]),
    ("torch.utils", "import torch.utils.data", 1, ["torch.utils.data"]),
    ("relative import", "from . import x", 1, ["relative import"]),
    ("star import", "from torch import *", 1, ["star imports"]),
    ("from torch _C", "from torch import _C", 1, ["`from torch import _C`", "private member"]),
    ("from torch hub", "from torch import hub", 1, ["torch.hub", "outside the allow-list"]),
    ("from torch load", "from torch import load", 1, ["`from torch import load`", "files"]),
    ("from typing", "from typing import get_type_hints", 1, ["evaluates strings"]),
    # torch's loading, IO, compilation, process and distributed machinery
    ("torch.load", H + "torch.load('x.pt')", 4, ["`torch.load`", "read or write files"]),
    ("torch.save", H + "torch.save({}, 'x.pt')", 4, ["`torch.save`"]),
    ("torch.hub.load", H + "torch.hub.load('a', 'b')", 4, ["`torch.hub`"]),
    ("alias hub", "import torch as t\nt.hub.load('a', 'b')", 2, ["`t.hub`", "torch.hub"]),
    ("torch.jit", H + "torch.jit.script(f)", 4, ["`torch.jit`"]),
    ("torch.compile", H + "torch.compile(m)", 4, ["`torch.compile`", "compile"]),
    ("torch.ops", H + "torch.ops.load_library('x.so')", 4, ["`torch.ops`"]),
    ("torch.library", H + "torch.library.Library('x', 'DEF')", 4, ["`torch.library`"]),
    ("torch.classes", H + "torch.classes.load_library('x')", 4, ["`torch.classes`"]),
    ("torch._C", H + "torch._C._get_tracing_state()", 4, ["`torch._C`", "private"]),
    ("torch.backends", H + "torch.backends.cudnn.benchmark = True", 4, ["`torch.backends`"]),
    ("torch.package", H + "torch.package.PackageImporter('x')", 4, ["`torch.package`"]),
    ("torch.serialization", H + "torch.serialization.os.system('x')", 4, ["serialization"]),
    ("torch.multiprocessing", H + "torch.multiprocessing.Process()", 4, ["multiprocessing"]),
    ("torch.distributed", H + "torch.distributed.init_process_group('gloo')", 4, ["distributed"]),
    ("torch.cuda", H + "torch.cuda.is_available()", 4, ["`torch.cuda`"]),
    ("tensor.cuda", H + "x.cuda()", 4, ["`x.cuda`", "worker's job"]),
    ("torch.from_file", H + "torch.from_file('x', size=3)", 4, ["`torch.from_file`"]),
    ("storage file", H + "torch.UntypedStorage.from_file('x', False, 9)", 4, ["Storage"]),
    ("tensor storage", H + "t.untyped_storage().from_file('x', False, 9)", 4, ["untyped_storage"]),
    ("numpy", H + "t.numpy().tofile('x')", 4, ["numpy"]),
    ("ScriptModule", H + "torch.ScriptModule()", 4, ["TorchScript"]),
    ("set_default_tensor_type", H + "torch.set_default_tensor_type('os.system')", 4, ["run"]),
    ("tensor.type string", H + "torch.zeros(1).type('os.system')", 4, ["dotted name"]),
    ("nn.utils", H + "nn.utils.spectral_norm(m)", 4, ["`nn.utils`"]),
    # os and subprocess through attribute chains
    ("torch.os", H + "torch.os.system('ls')", 4, ["`torch.os`", "reaches the module 'os'"]),
    ("torch.sys", H + "torch.sys.modules['os']", 4, ["`torch.sys`", "'sys'"]),
    ("F.torch.os", H + "F.torch.os.system('ls')", 4, ["`F.torch.os`"]),
    ("nn.modules chain", H + "nn.modules.module.torch.os.system('x')", 4, ["`nn.modules`"]),
    ("F.importlib", H + "F.importlib.import_module('os')", 4, ["importlib"]),
    ("typing.sys", "import typing\ntyping.sys.modules['os']", 2, ["`typing.sys`"]),
    ("dataclasses.builtins", "import dataclasses\ndataclasses.builtins.exec('x')", 2, ["builtins"]),
    ("math.__loader__", "import math\nmath.__loader__.load_module('os')", 2, ["__loader__"]),
    ("collections._sys", "import collections\ncollections._sys.modules", 2, ["private"]),
    ("typing._eval_type", "import typing\ntyping._eval_type(x, {}, {})", 2, ["private"]),
    ("any .os", "x.os.system('ls')", 1, ["`x.os`", "standard-library module 'os'"]),
    ("any .subprocess", "x.subprocess.run(['ls'])", 1, ["subprocess"]),
    # modules may not become values (else `self` could be a module)
    ("module as value", H + "m = torch\nm.load('x')", 4, ["using the module `torch` as a value"]),
    ("module argument", H + "f(torch)", 4, ["as a value"]),
    ("submodule value", H + "x = torch.nn", 4, ["`torch.nn` as a value"]),
    ("use before import", "def f():\n    return t\nimport torch as t\n", 2, ["`t` as a value"]),
    ("from-import module", "from torch.nn import functional\nx = [functional]", 2, ["value"]),
    (
        "module via self",
        H + "class A:\n    def f(self):\n        return self._C\nA.f(torch)",
        7,
        ["as a value"],
    ),
    # dunder escapes
    ("subclasses", "().__class__.__bases__[0].__subclasses__()", 1, ["__class__", "dunder"]),
    ("mro", "type(x).__mro__[-1].__subclasses__()", 1, ["__mro__"]),
    ("globals via func", "f.__globals__['os']", 1, ["`f.__globals__`"]),
    (
        "traceback",
        "try:\n    1 / 0\nexcept Exception as e:\n    e.__traceback__.tb_frame",
        4,
        ["__traceback__"],
    ),
    ("__builtins__", "__builtins__['__import__']('os')", 1, ["`__builtins__`"]),
    ("__import__", "__import__('os')", 1, ["`__import__`"]),
    (
        "gi_frame",
        "g = (i for i in [1])\ng.gi_frame.f_back.f_globals",
        2,
        ["gi_frame", "introspection"],
    ),
    ("dunder def", "class A:\n    def __getattr__(self, n):\n        return 1", 2, ["__getattr__"]),
    ("metaclass", "class A(metaclass=M):\n    pass", 1, ["metaclass"]),
    ("private elsewhere", H + "torch.zeros(1)._cdata", 4, ["`…._cdata`", "self, cls or super()"]),
    # string-driven attribute access
    ("getattr concat", H + "getattr(torch, 'lo' + 'ad')('x')", 4, ["computed attribute name"]),
    ("getattr dunder", "getattr(x, '__globals__')", 1, ["'__globals__'", "dunder"]),
    ("getattr denied", "getattr(x, 'system')", 1, ["'system'"]),
    ("getattr as value", "import functools\nfunctools.reduce(getattr, ['a'], x)", 2, ["getattr"]),
    ("setattr computed", "setattr(self, f'l{i}', 1)", 1, ["computed", "nn.ModuleList"]),
    ("format fields", "'{0.__globals__}'.format(f)", 1, ["{0.__globals__}", "f-string"]),
    ("format nested", "'{0:{1.__globals__}}'.format(1, f)", 1, ["{1.__globals__}"]),
    ("format variable", "s = '{0.__globals__}'\ns.format(f)", 2, ["`s.format`"]),
    ("str.format", "str.format('{0.x}', f)", 1, ["`str.format`"]),
    ("get_type_hints", "import typing\ntyping.get_type_hints(f)", 2, ["evaluates strings"]),
    ("singledispatch", "import functools\nfunctools.singledispatch(f)", 2, ["evaluates strings"]),
    # builtins that load or run code, or reach the interpreter
    ("open", "open('/etc/passwd').read()", 1, ["`open`", "files"]),
    ("exec", "exec('import os')", 1, ["`exec`", "run, load or compile"]),
    ("eval", "eval('1')", 1, ["`eval`"]),
    ("compile", "compile('1', 'x', 'eval')", 1, ["`compile`"]),
    ("globals", "globals()['x']", 1, ["`globals`"]),
    ("locals", "locals()", 1, ["`locals`"]),
    ("vars", "vars(x)", 1, ["`vars`"]),
    ("breakpoint", "breakpoint()", 1, ["`breakpoint`"]),
    ("input", "input()", 1, ["`input`"]),
    ("match", "match x:\n    case A(__class__=c):\n        pass", 1, ["`match`"]),
    ("async", "async def f():\n    await g()", 1, ["`async def`"]),
    ("syntax error", "def f(:\n", 1, ["does not parse"]),
]


@pytest.mark.parametrize(
    ("source", "line", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused_with_line_and_reason(source: str, line: int, words: list[str]) -> None:
    with pytest.raises(SandboxRejected) as caught:
        check_source(source)
    error = caught.value
    assert isinstance(error, StaticCheckRejected)
    first = error.violations[0]
    assert first.line == line
    message = str(first)
    assert message.startswith(f"line {line}: ")
    for word in words:
        assert word in message, message
    # The whole message names every finding and says what *is* allowed.
    assert str(first) in error.message
    assert ALLOWED_SUMMARY in error.message


@pytest.mark.parametrize("name", sorted(GOOD_SOURCES))
def test_ordinary_models_are_accepted(name: str) -> None:
    check_source(GOOD_SOURCES[name])


@pytest.mark.parametrize("name", ["blog_flawed_cnn.py", "blog_revised_cnn.py", "flawed_digits.py"])
def test_examples_are_accepted(name: str) -> None:
    check_source((EXAMPLES / name).read_text())


def test_every_finding_is_listed_in_source_order() -> None:
    source = "import os\nimport torch\ntorch.load('a')\nopen('b')\n"
    with pytest.raises(StaticCheckRejected) as caught:
        check_source(source)
    assert [v.line for v in caught.value.violations] == [1, 3, 4]
    assert "3 findings" in caught.value.message


def test_main_guard_super_and_init_are_allowed() -> None:
    check_source(
        "import torch.nn as nn\n"
        "class CNN(nn.Module):\n"
        "    def __init__(self):\n"
        "        super(CNN, self).__init__()\n"
        "        nn.Module.__init__(self)\n"
        "        self._private = type(self).__name__\n"
        "if __name__ == '__main__':\n"
        "    print(CNN.__doc__, '{} {:>4}'.format(1, 2), '%s' % 3)\n"
        "while True:\n"
        "    break\n"
    )


def test_oversized_source_is_refused_before_parsing() -> None:
    violations = find_violations("x = 1\n" * (MAX_SOURCE_BYTES // 6 + 10))
    assert violations and str(MAX_SOURCE_BYTES) in str(violations[0])


def test_deeply_nested_source_is_refused_not_crashing() -> None:
    violations = find_violations("x = " + "(" * 5000 + "1" + ")" * 5000)
    assert violations
