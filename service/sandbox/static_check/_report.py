"""The findings of the static check and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import SandboxRejected

ALLOWED_SUMMARY = (
    "Model code may import only torch, torch.nn, torch.nn.functional, torch.nn.init "
    "(also torch.linalg, torch.fft, torch.special), math, typing, collections, functools, "
    "itertools and dataclasses, and use them through their public attributes "
    "(e.g. nn.Conv2d, F.relu, torch.flatten)."
)


@dataclass(frozen=True)
class Violation:
    """One thing the static check refused: where, what, and why."""

    line: int
    what: str
    why: str

    def __str__(self) -> str:
        if not self.what:
            return f"line {self.line}: {self.why}"
        return f"line {self.line}: {self.what} is not allowed: {self.why}"


class StaticCheckRejected(SandboxRejected):
    """The model source failed the static check; ``violations`` lists every finding."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        lines = "\n".join(f"  {v}" for v in violations)
        super().__init__(
            f"the model code failed the static check ({len(violations)} finding"
            f"{'s' if len(violations) != 1 else ''}):\n{lines}\n{ALLOWED_SUMMARY}"
        )
