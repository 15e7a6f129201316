"""The sandbox for untrusted model code: a static check, then a trial run in a limited process.

- ``check_source(source)`` — the static allow-list check (raises ``SandboxRejected``).
- ``validate_model(source, input_shape, num_classes, ...)`` — the check, then building the model
  and one forward/backward step in a separate, isolated process; returns a ``ValidationReport``.
- ``Sandbox`` — the same with a warm spare process, for low decision latency.
- ``load_model_module(source, module_name)`` — the model contract, shared with the worker.
"""

from service.sandbox.model_contract import ModelContract, load_model_module
from service.sandbox.report import ValidationReport
from service.sandbox.runner import Sandbox, SandboxLimits, SandboxUnavailable, validate_model
from service.sandbox.static_check import StaticCheckRejected, Violation, check_source

__all__ = [
    "ModelContract",
    "Sandbox",
    "SandboxLimits",
    "SandboxUnavailable",
    "StaticCheckRejected",
    "ValidationReport",
    "Violation",
    "check_source",
    "load_model_module",
    "validate_model",
]
