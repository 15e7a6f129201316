"""The model contract in one place: how a model file becomes a model and (maybe) a loss.

A model file is a Python module that defines ``build_model(input_shape, num_classes) ->
nn.Module``, or an ``nn.Module`` subclass ``CNN`` built as ``CNN(num_classes=…)`` when its
constructor takes ``num_classes`` (or ``**kwargs``) and as ``CNN()`` otherwise. It may define
``loss_function(outputs, targets)`` at module level or as a method of the model; without one the
trainer uses cross-entropy (``default_loss``). ``forward`` returns logits of shape (batch,
num_classes) as a plain tensor (``check_outputs``); the loss is a tensor of one element that
depends on the parameters — ``()`` or ``(1,)`` (``check_loss`` returns it as a 0-d scalar).

The sandbox's child process and the worker's trainer share this module: one contract, one set
of messages. ``load_model_module`` re-runs the
static check (it is cheap, and a caller that forgot it fails closed) and executes the source in a
fresh module whose builtins lack ``open``/``exec``/``eval``/``compile``/``input``/``breakpoint``
and whose ``__import__`` admits only the allowed modules: a second, runtime layer under the
static check.
"""

from __future__ import annotations

import builtins
import inspect
import linecache
import sys
import types
from collections.abc import Callable
from typing import Any, NamedTuple

from service.errors import SandboxRejected
from service.sandbox._module_table import ALLOWED_MODULES
from service.sandbox.static_check import check_source

#: Marks modules this contract created, so that a later model may reuse the name.
_MODEL_MARKER = "__gradpilot_model__"

_REMOVED_BUILTINS = (
    "open",
    "exec",
    "eval",
    "compile",
    "input",
    "breakpoint",
    "help",
    "exit",
    "quit",
    "globals",
    "locals",
    "vars",
)

BuildFunction = Callable[[tuple[int, ...], int], Any]
LossFunction = Callable[[Any, Any], Any]


class ModelContract(NamedTuple):
    """What a model file provides: unpacks as ``build, loss_function = contract``."""

    build: BuildFunction
    """``build(input_shape, num_classes) -> nn.Module``."""
    loss_function: LossFunction | None
    """The module-level ``loss_function(outputs, targets)``, or None."""

    def loss_for(self, model: Any) -> LossFunction | None:
        """The loss to train ``model`` with: its ``loss_function`` method, else the module's,
        else None (the caller's default, cross-entropy)."""
        method = getattr(type(model), "loss_function", None)
        if callable(method):
            bound: LossFunction = model.loss_function
            return bound
        return self.loss_function


class ContractViolation(SandboxRejected):
    """The model broke the contract (what forward or the loss returned)."""


def check_outputs(outputs: object, batch: int, num_classes: int) -> None:
    """Forward must return a plain tensor of logits of shape (batch, num_classes); a tensor
    subclass could override the arithmetic the metrics are computed with."""
    import torch

    if not isinstance(outputs, torch.Tensor):
        raise ContractViolation(
            f"forward returned a {type(outputs).__name__}, not a tensor of logits of shape "
            f"({batch}, {num_classes})"
        )
    if type(outputs) is not torch.Tensor:
        raise ContractViolation(
            f"forward returned a {type(outputs).__name__}, a tensor subclass; return a plain "
            "torch.Tensor of logits"
        )
    if tuple(outputs.shape) != (batch, num_classes):
        raise ContractViolation(
            f"forward returned shape {tuple(outputs.shape)} for a batch of {batch}; expected "
            f"({batch}, {num_classes}): one logit per class of this data set"
        )


def check_loss(loss: object, *, needs_grad: bool = True) -> Any:
    """The loss must be a tensor of one element that depends on the parameters (when gradients
    are being computed: ``needs_grad``); returns it as a 0-d tensor (what training sums and
    backpropagates)."""
    import torch

    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ContractViolation(f"the loss function must return a scalar tensor, returned {shape}")
    if needs_grad and not loss.requires_grad:
        raise ContractViolation("the loss does not depend on the model's parameters (no gradient)")
    return loss.reshape(())


def default_loss(label_smoothing: float = 0.0) -> LossFunction:
    """Cross-entropy (with the spec's label smoothing): the loss of a model that defines none.
    It calls torch's kernel through a reference taken when this is built, so that a model that
    replaces ``F.cross_entropy`` later does not change it."""
    import torch

    kernel = torch._C._nn.cross_entropy_loss
    mean = 1  # torch.nn._reduction: 'mean'

    def cross_entropy(outputs: Any, targets: Any) -> Any:
        # The stub says str; the kernel takes the enum (F.cross_entropy passes it the same way).
        return kernel(outputs, targets, None, mean, -100, label_smoothing)  # type: ignore[arg-type]

    return cross_entropy


def load_model_module(
    source: str, module_name: str, *, filename: str | None = None
) -> ModelContract:
    """Check and execute model ``source`` as a fresh module named ``module_name``.

    Returns the build function and the module-level loss function (or None). Raises
    ``SandboxRejected`` when the source fails the static check or does not follow the model
    contract; any exception raised by the model's own top-level code propagates unchanged, with
    the model's frames (compiled under ``filename``, default ``<module_name>``) in its traceback.
    The module is registered in ``sys.modules`` (dataclasses and pickling look it up there),
    replacing an earlier model module of the same name.
    """
    check_source(source)
    module = exec_model_source(source, module_name, filename=filename, restricted=True)
    return contract_of(module)


def exec_model_source(
    source: str, module_name: str, *, filename: str | None = None, restricted: bool = True
) -> types.ModuleType:
    """Compile and execute ``source`` into a new module, *without* the static check.

    Callers must have checked the source. ``restricted=False`` gives the module the full
    builtins; only the sandbox's own tests use it, to prove that the process boundary holds
    even when the static check is bypassed.
    """
    if not module_name.isidentifier():
        raise ValueError(f"module name {module_name!r} is not an identifier")
    existing = sys.modules.get(module_name)
    if existing is not None and not getattr(existing, _MODEL_MARKER, False):
        raise ValueError(f"module name {module_name!r} is taken by a real module")
    filename = filename or f"<{module_name}>"
    # Tracebacks read source lines through linecache; an entry without mtime is never purged.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    code = compile(source, filename, "exec", dont_inherit=True)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    setattr(module, _MODEL_MARKER, True)
    if restricted:
        module.__dict__["__builtins__"] = _restricted_builtins()
    sys.modules[module_name] = module
    exec(code, module.__dict__)
    return module


def contract_of(module: types.ModuleType) -> ModelContract:
    """The build and loss functions of an executed model module (the contract's rules)."""
    namespace = module.__dict__
    loss = namespace.get("loss_function")
    if loss is not None and not callable(loss):
        raise SandboxRejected("`loss_function` is defined but is not a function")
    build = namespace.get("build_model")
    if build is not None:
        if not callable(build):
            raise SandboxRejected("`build_model` is defined but is not a function")
        return ModelContract(_call_build_model(build), loss)
    cls = namespace.get("CNN")
    if cls is not None:
        if not isinstance(cls, type):
            raise SandboxRejected("`CNN` is defined but is not a class")
        return ModelContract(_construct_cnn(cls), loss)
    raise SandboxRejected(
        "the model file defines neither build_model(input_shape, num_classes) nor a class CNN; "
        "define one of them (see the model contract)"
    )


def _call_build_model(build: Callable[..., Any]) -> BuildFunction:
    def construct(input_shape: tuple[int, ...], num_classes: int) -> Any:
        return build(tuple(input_shape), num_classes)

    return construct


def _construct_cnn(cls: type) -> BuildFunction:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    takes_classes = "num_classes" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )

    def construct(input_shape: tuple[int, ...], num_classes: int) -> Any:
        return cls(num_classes=num_classes) if takes_classes else cls()

    return construct


def _restricted_builtins() -> dict[str, Any]:
    namespace = {k: v for k, v in vars(builtins).items() if k not in _REMOVED_BUILTINS}
    namespace["__import__"] = _guarded_import
    return namespace


def _guarded_import(
    name: str,
    globals: dict[str, Any] | None = None,  # noqa: A002 - the signature of __import__
    locals: dict[str, Any] | None = None,  # noqa: A002
    fromlist: tuple[str, ...] | list[str] | None = (),
    level: int = 0,
) -> types.ModuleType:
    if level != 0 or (name not in ALLOWED_MODULES and name != "__future__"):
        raise ImportError(f"model code may not import {name!r}")
    return builtins.__import__(name, globals, locals, fromlist or (), 0)
