"""Model loading by the model contract (see DESIGN.md, "The model contract").

A model file defines ``build_model(input_shape, num_classes) -> nn.Module`` or an ``nn.Module``
subclass ``CNN`` built as ``CNN(num_classes=…)`` or ``CNN()``. It may define
``loss_function(outputs, targets)``, as a method of the model or at module level; when it does,
that function is the training *and* validation loss (the reference implementation looked for it
on the DDP wrapper, never found it, and always used plain cross-entropy).

The source passes the sandbox's static check before it is compiled. It is compiled under a file
name that marks its frames (``errors.MODEL_FILENAME_PREFIX``), so that an exception raised by it
is recognised as a code error and its traceback shows the model's own lines.
"""

from __future__ import annotations

import hashlib
import inspect
import linecache
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from worker.errors import MODEL_FILENAME_PREFIX, BadSpecError, ModelCodeError

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LoadedModel:
    """A built model and the loss it is trained with."""

    model: nn.Module
    loss_fn: LossFn
    custom_loss: bool
    sha256: str
    module: types.ModuleType


def source_sha256(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def static_check(source: str) -> None:
    """The sandbox's static check; the worker repeats it before importing anything.

    Imported here rather than at module level so that the worker's other parts do not depend
    on the sandbox package. It fails closed: without the check nothing is imported.
    """
    from service.errors import SandboxRejected
    from service.sandbox.static_check import check_source

    try:
        check_source(source)
    except SandboxRejected as e:
        raise ModelCodeError(f"the model file was rejected by the static check: {e}") from e


def load_module(source: str, expected_sha256: str | None = None) -> types.ModuleType:
    """Check, compile and execute a model file as a fresh module."""
    digest = source_sha256(source)
    if expected_sha256 and expected_sha256 != digest:
        raise BadSpecError(
            f"model source hash {digest[:12]} does not match the spec's {expected_sha256[:12]}"
        )
    static_check(source)
    filename = f"{MODEL_FILENAME_PREFIX}{digest[:12]}>"
    # Tracebacks read source lines through linecache; an entry with no mtime is never purged.
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as e:
        raise ModelCodeError(f"the model file does not compile: {e}") from e
    name = f"gradpilot_model_{digest[:12]}"
    module = types.ModuleType(name)
    module.__file__ = filename
    # Registered so that dataclasses and pickling inside the model resolve its module.
    sys.modules[name] = module
    exec(code, module.__dict__)
    return module


def _construct(module: types.ModuleType, input_shape: tuple[int, ...], num_classes: int) -> object:
    build = getattr(module, "build_model", None)
    if callable(build):
        return build(tuple(input_shape), num_classes)
    cls = getattr(module, "CNN", None)
    if isinstance(cls, type):
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        accepts = "num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
        return cls(num_classes=num_classes) if accepts else cls()
    raise ModelCodeError(
        "the model file defines neither build_model(input_shape, num_classes) nor a class CNN"
    )


def _cross_entropy(label_smoothing: float) -> LossFn:
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        return criterion(outputs, targets)

    return loss


def resolve_loss(
    module: types.ModuleType, model: nn.Module, label_smoothing: float
) -> tuple[LossFn, bool]:
    """The model's ``loss_function`` method, else the module's, else cross-entropy with the
    spec's label smoothing. Returns the function and whether it is the model's own."""
    method = getattr(type(model), "loss_function", None)
    if callable(method):
        return model.loss_function, True  # type: ignore[return-value]
    function = getattr(module, "loss_function", None)
    if callable(function):
        return function, True
    return _cross_entropy(label_smoothing), False


def load_model(
    source: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    expected_sha256: str | None = None,
    label_smoothing: float = 0.0,
) -> LoadedModel:
    """Check, import and build the model; an exception from the model's code propagates with its
    own frames in the traceback (``errors.classify`` calls it a code error)."""
    module = load_module(source, expected_sha256)
    model = _construct(module, input_shape, num_classes)
    if not isinstance(model, nn.Module):
        raise ModelCodeError(
            f"the model file built a {type(model).__name__}, not a torch.nn.Module"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelCodeError("the model has no trainable parameters")
    loss_fn, custom = resolve_loss(module, model, label_smoothing)
    return LoadedModel(model, loss_fn, custom, source_sha256(source), module)


def check_outputs(outputs: object, batch: int, num_classes: int) -> None:
    """The contract on what forward returns: logits of shape (batch, num_classes)."""
    if not isinstance(outputs, torch.Tensor):
        raise ModelCodeError(f"forward returned a {type(outputs).__name__}, not a tensor of logits")
    if tuple(outputs.shape) != (batch, num_classes):
        raise ModelCodeError(
            f"forward returned shape {tuple(outputs.shape)}; expected ({batch}, {num_classes}) "
            "logits for this data set"
        )


def check_loss(loss: object) -> None:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ModelCodeError(f"loss_function must return a scalar tensor, returned {shape}")
    if not loss.requires_grad:
        raise ModelCodeError("loss_function returned a tensor that does not depend on the outputs")
