"""What the agent's nodes need from the rest of the service, passed in (not imported globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from service.advisors._protocol import Advisor
from service.artifacts import ArtifactStore
from service.executors import Executor
from service.sandbox.report import ValidationReport
from service.settings import Settings

#: (source, input_shape, num_classes) -> the sandbox's report (``Sandbox.validate``)
Validator = Callable[[str, tuple[int, int, int], int], ValidationReport]


@dataclass
class AgentDeps:
    settings: Settings
    sessions: sessionmaker[Session]
    executor: Executor
    artifacts: ArtifactStore
    advisor_for: Callable[[str], Advisor]
    validate: Validator
    #: rounds of writer -> sandbox -> fixer before giving up on a proposal
    fixer_rounds: int = 3
