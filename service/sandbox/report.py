"""What a sandboxed validation found: the one result type of the sandbox."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.errors import SandboxRejected

Stage = Literal[
    "static", "start", "import", "build", "forward", "loss", "backward", "check", "done"
]


_STAGE_PHRASES = {
    "static": "the static check",
    "start": "the sandbox's start",
    "import": "the module's top-level code",
    "build": "building the model",
    "forward": "forward",
    "loss": "the loss function",
    "backward": "backward",
    "check": "the checks after the training step",
    "done": "the end",
}


def describe_stage(stage: str) -> str:
    """A stage in words, for reasons: 'timed out after 5 s in building the model'."""
    return _STAGE_PHRASES.get(stage, stage)


class ValidationReport(BaseModel):
    """The outcome of building a model and running one training step on a dummy batch.

    ``ok`` is true only when every check passed; otherwise ``reason`` says what failed in words
    a person (or the repair advisor) can act on, and ``stage`` says where.
    """

    ok: bool
    reason: str | None = Field(default=None, description="Why validation failed; None when ok.")
    stage: Stage = Field(
        description="Where it stopped: static (the static check), start (the sandbox process), "
        "import (the module's top-level code), build, forward, loss, backward, check (shape, "
        "parameters, gradients, step time) or done."
    )
    error_type: str | None = Field(default=None, description="Exception class raised by the model.")
    traceback: str | None = Field(
        default=None,
        description="The model's traceback, trimmed to frames in the model's own code.",
    )
    parameters: int | None = Field(
        default=None, description="Number of parameters of the built model."
    )
    trainable_parameters: int | None = None
    output_shape: list[int] | None = Field(default=None, description="Shape forward returned.")
    loss: float | None = Field(default=None, description="Loss on the dummy batch.")
    custom_loss: bool | None = Field(
        default=None, description="Whether the model defines its loss."
    )
    step_seconds: float | None = Field(
        default=None, description="Seconds for one forward and backward pass on the dummy batch."
    )
    elapsed_seconds: float = Field(default=0.0, description="Wall time of the whole validation.")
    isolation: list[str] = Field(
        default_factory=list,
        description="The isolation the sandbox process ran under (e.g. network-namespace).",
    )
    isolation_level: str | None = Field(
        default=None,
        description="The level the validation ran with: 'full: …' or 'weak (no … isolation): "
        "…' (only where the operator allowed weak isolation).",
    )
    warnings: list[str] = Field(default_factory=list)
    log_tail: str | None = Field(default=None, description="The last lines the model printed.")

    def raise_for_failure(self) -> None:
        """Raise ``SandboxRejected`` with the reason unless the model passed."""
        if not self.ok:
            raise SandboxRejected(f"model validation failed at {self.stage}: {self.reason}")
