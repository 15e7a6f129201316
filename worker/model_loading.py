"""Model loading in the trainer, by the one model contract (``service.sandbox.model_contract``).

The contract (``build_model`` or ``CNN``, an optional ``loss_function`` that is then the
training *and* validation loss, logits of shape (batch, classes), a one-element loss) is the
sandbox's: this module only maps its verdicts to the worker's errors. The source passes the
static check and is executed with the contract's restricted builtins, compiled under a file name
that marks its frames (``errors.MODEL_FILENAME_PREFIX``) so that an exception raised by it is
recognised as a code error and its traceback shows the model's own lines.

``GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK=1`` (tests only) skips the static check and the
restricted builtins, to show that the trainer's process boundary alone holds.

This runs only inside the confined trainer (``worker.trainer``), never in the supervisor.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from service.confinement import static_check_disabled
from service.errors import SandboxRejected
from service.sandbox import model_contract
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
    """The sandbox's static check; the trainer repeats it before importing anything. It fails
    closed: without the check nothing is imported."""
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
    unchecked = static_check_disabled()
    if not unchecked:
        static_check(source)
    try:
        return model_contract.exec_model_source(
            source,
            f"gradpilot_model_{digest[:12]}",
            filename=f"{MODEL_FILENAME_PREFIX}{digest[:12]}>",
            restricted=not unchecked,
        )
    except SyntaxError as e:
        raise ModelCodeError(f"the model file does not compile: {e}") from e


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
    try:
        contract = model_contract.contract_of(module)
    except SandboxRejected as e:
        raise ModelCodeError(e.message) from e
    model = contract.build(tuple(input_shape), num_classes)
    if not isinstance(model, nn.Module):
        raise ModelCodeError(
            f"the model file built a {type(model).__name__}, not a torch.nn.Module"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelCodeError("the model has no trainable parameters")
    own = contract.loss_for(model)
    loss_fn = own if own is not None else model_contract.default_loss(label_smoothing)
    return LoadedModel(model, loss_fn, own is not None, source_sha256(source), module)


def check_outputs(outputs: object, batch: int, num_classes: int) -> None:
    """The contract on what forward returns: plain-tensor logits of shape (batch, classes)."""
    try:
        model_contract.check_outputs(outputs, batch, num_classes)
    except model_contract.ContractViolation as e:
        raise ModelCodeError(e.message) from None


def check_loss(loss: object, *, needs_grad: bool = True) -> Tensor:
    """The contract on the loss: one element, depending on the parameters; returned 0-d."""
    try:
        result: Tensor = model_contract.check_loss(loss, needs_grad=needs_grad)
    except model_contract.ContractViolation as e:
        raise ModelCodeError(e.message) from None
    return result
