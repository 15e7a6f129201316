"""Escapes of whole classes, each refused with its line and a reason that names the rule.

Every source here passed the static check before it closed these classes: code generated
from data (class builders and string evaluators called on computed data), ``str.format``
reached by another route, and writes into objects that are not the model's own (which let a
model patch ``F.cross_entropy`` or ``torch.Tensor.argmax`` and fake its own accuracy).
"""

from __future__ import annotations

import pytest

from service.sandbox.static_check import StaticCheckRejected, check_source, find_violations

H = (
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
    "import collections\nimport dataclasses\nimport functools\nimport typing\n"
)  # 7 lines
L = 8  # the first line after H

# (name, source after H, line of the first finding, words its message must contain)
CODE_FROM_DATA = [
    (
        "type() with an annotations dict",
        "X = type('X', (), {'__annotations__': {'a=print(1),b': int}})\ndataclasses.dataclass(X)",
        L,
        ["type(", "more than one argument builds a class"],
    ),
    ("type() keyword namespace", "type('X', (), dict(a=1))", L, ["more than one argument"]),
    ("type(x) called", "type(int)('X', (), {})", L, ["`type(int)`", "may not be called"]),
    ("type(x) stored", "T = type(nn.Module)\nT('X', (), {})", L, ["`type(nn.Module)`"]),
    ("type as a value", "functools.partial(type, 'X')((), {})", L, ["`type` used as a value"]),
    ("type as a base", "class Meta(type):\n    pass", L, ["`type` used as a value"]),
    ("type[...] called", "type[int]('X', (), {})", L, ["`type` used as a value"]),
    ("type(x) patched", "type(torch.zeros(1)).argmax = f", L, ["type(torch.zeros(1))"]),
    ("dataclass on a library class", "dataclasses.dataclass(nn.Module)", L, ["decorator"]),
    (
        "dataclass(...)(cls)",
        "class A:\n    x: int\ndataclasses.dataclass(frozen=True)(A)",
        L + 2,
        ["only as a decorator on a class statement"],
    ),
    ("dataclass alias", "d = dataclasses.dataclass", L, ["`dataclasses.dataclass` used"]),
    (
        "dataclass via from-import and map",
        "from dataclasses import dataclass\nlist(map(dataclass, [A]))",
        L + 1,
        ["`dataclass` used this way"],
    ),
    ("dataclass reached via F", "F.dataclasses.dataclass(A)", L, ["decorator"]),
    ("dataclass on a def", "@dataclasses.dataclass\ndef f():\n    pass", L, ["class statement"]),
    (
        "dataclass computed flags",
        "@dataclasses.dataclass(**opts)\nclass A:\n    x: int",
        L,
        ["literal flags"],
    ),
    ("make_dataclass computed", "dataclasses.make_dataclass('X', names)", L, ["literal names"]),
    (
        "make_dataclass namespace",
        "dataclasses.make_dataclass('X', ['a'], namespace={'f': 1})",
        L,
        ["namespace"],
    ),
    ("namedtuple computed", "collections.namedtuple('P', fields)", L, ["field names"]),
    ("namedtuple concatenated", "collections.namedtuple('P', 'a ' + b)", L, ["field names"]),
    ("namedtuple computed name", "collections.namedtuple(name, 'a b')", L, ["name is not"]),
    ("namedtuple unpacked", "collections.namedtuple(*args)", L, ["unpacked"]),
    ("namedtuple alias", "nt = collections.namedtuple", L, ["used this way"]),
    (
        "namedtuple via typing",
        "typing.collections.namedtuple('P', fields)",
        L,
        ["field names"],
    ),
    ("NamedTuple functional", "typing.NamedTuple('P', [(n, int)])", L, ["literal names"]),
    ("TypedDict functional", "typing.TypedDict('P', {k: int})", L, ["string-literal keys"]),
    ("NewType computed", "typing.NewType(name, int)", L, ["name is not a string literal"]),
    (
        "update_wrapper",
        "functools.update_wrapper(torch.Tensor, fake, assigned=('argmax',), updated=())",
        L,
        ["update_wrapper", "attributes named by strings"],
    ),
    (
        "wraps with assigned",
        "functools.wraps(fake, assigned=('argmax',))(torch.Tensor)",
        L,
        ["decorator on a def"],
    ),
    (
        "wraps decorator with assigned",
        "@functools.wraps(g, assigned=('x',))\ndef f():\n    pass",
        L,
        ["one argument"],
    ),
    ("total_ordering on a library", "functools.total_ordering(torch.Tensor)", L, ["class"]),
    ("metaclass", "class A(metaclass=M):\n    pass", L, ["metaclass"]),
    ("class keywords computed", "class A(B, flag=compute()):\n    pass", L, ["class keyword"]),
    ("__init_subclass__", "class A:\n    def __init_subclass__(cls):\n        pass", L + 1, []),
    ("dunder keyword", "dict(__annotations__={'a': int})", L, ["`__annotations__=`"]),
    ("get_type_hints", "typing.get_type_hints(A)", L, ["evaluates strings"]),
    ("ForwardRef", "typing.ForwardRef('x')", L, ["evaluates strings"]),
]

FORMAT = [
    ("getattr format", "getattr('{0.__globals__}', 'format')(fn)", L, ["'format'", "f-string"]),
    ("getattr format_map", "getattr(s, 'format_map')(d)", L, ["'format_map'"]),
    ("str.format unbound", "str.format('{0.__globals__}', fn)", L, ["`str.format`"]),
    ("format on a computed template", "('{0.' + attr + '}').format(fn)", L, ["….format"]),
    ("format stored", "f = '{0}'.format", L, ["….format"]),
    ("format via super", "super(str, s).format(fn)", L, ["format"]),
    ("type('').format", "type('').format('{0.x}', fn)", L, ["type('')"]),
]

WRITES = [
    ("F.cross_entropy =", "F.cross_entropy = lambda o, t: o.sum() * 0", L, ["`F`", "library"]),
    ("Tensor.argmax =", "torch.Tensor.argmax = fake", L, ["assigning to `torch.Tensor.argmax`"]),
    ("Module.__init__ =", "nn.Module.__init__ = fake", L, ["`nn.Module`"]),
    ("del F.relu", "del F.relu", L, ["deleting `F.relu`"]),
    ("augmented", "torch.Tensor.count += 1", L, ["`torch.Tensor`"]),
    ("annotated", "F.relu: object = fake", L, ["`F`"]),
    ("module item", "F.some_table['relu'] = fake", L, ["`F.some_table`"]),
    ("for target", "for F.relu in [fake]:\n    pass", L, ["`F`"]),
    ("comprehension target", "[0 for torch.Tensor.argmax in [fake]]", L, ["torch.Tensor"]),
    ("with target", "with ctx() as nn.Module.forward:\n    pass", L, ["nn.Module"]),
    ("setattr", "setattr(torch.Tensor, 'argmax', fake)", L, ["setattr(torch.Tensor"]),
    ("delattr", "delattr(nn.Module, 'forward')", L, ["delattr(nn.Module"]),
    ("alias", "x = torch.Tensor\nx.argmax = fake", L + 1, ["`x` may be a library object"]),
    ("alias of alias", "x = nn.Module\ny = x\ny.forward = fake", L + 2, ["`y`"]),
    ("tuple alias", "a, b = 1, torch.Tensor\nb.argmax = fake", L + 1, ["`b`"]),
    ("from-import", "from torch import Tensor\nTensor.argmax = fake", L + 1, ["`Tensor`"]),
    ("builtin", "object.x = 1", L, ["`object`"]),
    ("container", "xs = [torch.Tensor]\nxs[0].argmax = fake", L + 1, ["`xs[0]`"]),
    ("appended", "xs = []\nxs.append(nn.Module)\nxs[0].forward = fake", L + 2, ["`xs[0]`"]),
    ("dict get", "d = {'t': torch.Tensor}\nd.get('t').argmax = fake", L + 1, ["through a name"]),
    ("for over classes", "for c in (torch.Tensor,):\n    c.argmax = fake", L + 1, ["`c`"]),
    ("walrus", "(c := torch.Tensor)\nc.argmax = fake", L + 1, ["`c`"]),
    ("returned", "def g():\n    return torch.Tensor\nk = g()\nk.argmax = fake", L + 3, ["`k`"]),
    ("lambda", "g = lambda: torch.Tensor\nk = g()\nk.argmax = fake", L + 2, ["`k`"]),
    ("identity", "def ident(c):\n    return c\nk = ident(nn.Module)\nk.x = 1", L + 3, ["`k`"]),
    ("parameter", "def patch(c):\n    c.argmax = fake\npatch(torch.Tensor)", L + 1, ["parameter"]),
    (
        "parameter through a closure",
        "def patch(c):\n    def d(f):\n        c.argmax = f\n    return d",
        L + 2,
        ["parameter"],
    ),
    ("lambda parameter", "(lambda c: setattr(c, 'argmax', f))(torch.Tensor)", L, ["parameter"]),
    ("default", "def g(c=torch.Tensor):\n    return c\nx = g()\nx.argmax = 1", L + 3, ["`x`"]),
    (
        "self attribute",
        "class A:\n    def __init__(self):\n        self.k = torch.Tensor\n"
        "        self.k.argmax = fake",
        L + 3,
        ["`self.k`"],
    ),
    (
        "class attribute",
        "class A:\n    k = nn.Module\n    def f(self):\n        self.k.forward = fake",
        L + 3,
        ["`self.k`"],
    ),
    (
        "self swapped through the class",
        "class A:\n    def f(self):\n        self.argmax = fake\nA.f(torch.Tensor)",
        L + 3,
        ["`A.f` used other than as `A.f(self, …)`"],
    ),
    (
        "method taken from the class",
        "class A:\n    def f(self):\n        self.argmax = fake\ng = A.f\ng(torch.Tensor)",
        L + 3,
        ["`A.f`"],
    ),
    (
        "method through an alias of the class",
        "class A:\n    def f(self):\n        self.argmax = fake\nB = A\nB.f(torch.Tensor)",
        L + 4,
        ["`B.f`"],
    ),
    (
        "method via getattr on the class",
        "class A:\n    def f(self):\n        self.argmax = fake\ngetattr(A, 'f')(torch.Tensor)",
        L + 3,
        ["getattr(…, 'f')"],
    ),
    (
        "method via classmethod cls",
        "class A:\n    def f(self):\n        self.x = 1\n    @classmethod\n"
        "    def g(cls):\n        cls.f(torch.Tensor)",
        L + 5,
        ["`cls.f`"],
    ),
    (
        "method with a library object first",
        "class A:\n    def f(self):\n        self.x = 1\ndef g(k):\n    k.f(torch.Tensor)",
        L + 4,
        ["library object as self"],
    ),
    ("library method, library self", "nn.Module.train(torch.Tensor)", L, ["as self"]),
    ("mro walk", "type(self).mro()[1].forward = fake", L, ["mro"]),
    ("super private on others", "super(torch.Tensor, t)._cdata", L, ["…._cdata", "private"]),
    ("global torch setting", "torch.set_default_dtype(torch.float16)", L, ["global settings"]),
    ("grad mode", "torch.set_grad_enabled(False)", L, ["global settings"]),
    ("deterministic", "torch.use_deterministic_algorithms(True)", L, ["global settings"]),
]

CASES = CODE_FROM_DATA + FORMAT + WRITES


@pytest.mark.parametrize(
    ("source", "line", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_escape_is_refused_with_line_and_reason(source: str, line: int, words: list[str]) -> None:
    with pytest.raises(StaticCheckRejected) as caught:
        check_source(H + source)
    lines = [v.line for v in caught.value.violations]
    assert line in lines, caught.value.message
    messages = [str(v) for v in caught.value.violations if v.line == line]
    assert any(all(word in m for word in words) for m in messages), messages
    assert all(m.startswith(f"line {line}: ") and " is not allowed: " in m for m in messages)


def test_the_model_may_still_change_its_own_objects() -> None:
    check_source(
        H + "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(2, 2)\n"
        "        self.fc.bias = None\n"
        "        self.layers = nn.ModuleList([nn.Linear(2, 2)])\n"
        "        self.layers[0].weight = self.fc.weight\n"
        "        setattr(self, 'scale', 2.0)\n"
        "        del self.scale\n"
        "def build_model(input_shape, num_classes):\n"
        "    net = Net()\n"
        "    net.fc = nn.Linear(2, num_classes)\n"
        "    for p in net.parameters():\n"
        "        p.requires_grad = False\n"
        "    table = {}\n"
        "    table['k'] = nn.ReLU\n"
        "    return net\n"
    )


def test_names_are_resolved_by_scope() -> None:
    """A parameter called ``model`` elsewhere does not make this function's ``model`` suspect."""
    source = (
        H + "def train(model):\n"
        "    return model\n"
        "def build_model(input_shape, num_classes):\n"
        "    model = nn.Linear(2, num_classes)\n"
        "    model.bias = None\n"
        "    return model\n"
    )
    assert find_violations(source) == []


def test_global_alias_is_seen_from_a_function() -> None:
    source = (
        H + "x = None\ndef f():\n    global x\n    x = torch.Tensor\ndef g():\n    x.argmax = 1\n"
    )
    assert [v.line for v in find_violations(source)] == [L + 5]


def test_names_too_intricate_to_follow_are_refused() -> None:
    # a chain of aliases written backwards takes one round of the analysis per link
    links = "\n".join(f"def f{i}():\n    return f{i + 1}()" for i in range(60))
    source = H + links + "\ndef f60():\n    return torch.Tensor\n"
    assert any("too intricately" in str(v) for v in find_violations(source))


@pytest.mark.parametrize("name", ["resnet", "own_objects"])
def test_the_allowed_fixtures_are_real_models(name: str) -> None:
    """The sources the check must accept load through the worker, build and run."""
    import torch

    from tests.sandbox.good_models import GOOD_SOURCES
    from worker.model_loading import load_module

    module = load_module(GOOD_SOURCES[name])
    model = module.build_model((3, 32, 32), 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
