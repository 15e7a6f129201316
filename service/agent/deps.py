"""What the agent's nodes need from the rest of the service, passed in (not imported globals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.advisors._protocol import Advisor
from service.artifacts import ArtifactStore
from service.executors import Executor
from service.settings import Settings

#: (source, input_shape, num_classes) -> report with .ok, .reason, .parameters
Validator = Callable[[str, tuple[int, int, int], int], Any]


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
    extra: dict[str, Any] = field(default_factory=dict)
