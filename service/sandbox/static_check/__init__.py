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
  ``__doc__`` (nor dunder keyword arguments): this closes
  ``().__class__.__base__.__subclasses__()``, ``f.__globals__``, ``math.__loader__``,
  ``e.__traceback__`` and the like. No frame, code, traceback or ``mro()`` introspection.
* **No private attributes** (``_name``) except directly on ``self``/``cls``/``super()``.
* **No builtins that run or load code or reach the interpreter**: ``open``, ``exec``, ``eval``,
  ``compile``, ``__import__``, ``globals``, ``locals``, ``vars``, ``breakpoint``, ``input``;
  ``getattr``/``setattr``/``delattr``/``hasattr`` only with a literal, public attribute name.
* **No loading, saving, compiling, processes, devices, distribution or global torch
  settings**: ``torch.load``, ``torch.save``, ``torch.compile``, ``torch.jit``, ``torch.hub``,
  ``torch.utils``, ``torch.set_default_dtype`` … and any attribute named like a
  standard-library module that reaches the operating system (``os``, ``sys``, ``subprocess`` …).
* **No code generated from data** (``_codegen``): a callable that builds classes or writes and
  executes source may be used only in the one form in which everything it reads was written by
  the model: ``@dataclass`` on a class statement, ``namedtuple``/``make_dataclass``/
  ``NamedTuple`` with literal names, ``type(x)`` with one argument only to compare or name.
* **No string-driven attribute access**: ``str.format`` only as a call on a literal whose fields
  do not reach attributes or items, never through ``getattr``/``str.format``/an alias;
  ``typing.get_type_hints``/``ForwardRef`` and ``functools.singledispatch`` (which evaluate
  annotation strings) are refused; ``tensor.type('a.dotted.name')`` is refused.
* **Writes only to the model's own objects** (``_ownership``): assignment, augmented
  assignment, ``del``, ``setattr`` and ``delattr`` may change attributes and items of ``self``,
  of the model's classes and of objects the model built, never of modules, imported classes
  and functions, builtins, or anything that may be one of them (``x = torch.Tensor;
  x.argmax = …``, a parameter, ``type(t)``); a model's method may not be called through its
  class with anything but an instance as ``self``.

The check is defence in depth; the sandbox's process boundary (``runner``) is the real one.
"""

from __future__ import annotations

import ast

from service.sandbox.static_check._checker import Checker
from service.sandbox.static_check._report import ALLOWED_SUMMARY, StaticCheckRejected, Violation

#: Larger sources are refused before parsing (parsing is the only cost we pay for any input).
MAX_SOURCE_BYTES = 256 * 1024

__all__ = [
    "ALLOWED_SUMMARY",
    "MAX_SOURCE_BYTES",
    "StaticCheckRejected",
    "Violation",
    "check_source",
    "find_violations",
]


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
    try:
        checker = Checker(tree)
        checker.visit(tree)
    except RecursionError:
        return [Violation(1, "this source", "it is nested too deeply to check")]
    return sorted(set(checker.violations), key=lambda v: (v.line, v.what))
