"""Pick an advisor from a run's advisor spec: ``rules``, or an LLM by ``provider:model``."""

from __future__ import annotations

import threading
from collections.abc import Callable

from service.advisors._protocol import Advisor
from service.settings import Settings


def advisor_factory(settings: Settings) -> Callable[[str], Advisor]:
    """A cached ``spec -> Advisor``; LLM clients are built once per spec and reused."""
    cache: dict[str, Advisor] = {}
    lock = threading.Lock()

    def get(spec: str) -> Advisor:
        with lock:
            if spec not in cache:
                cache[spec] = _build(spec, settings)
            return cache[spec]

    return get


def _build(spec: str, settings: Settings) -> Advisor:
    if spec == "rules":
        from service.advisors.rules import RulesAdvisor

        return RulesAdvisor()
    from service.advisors.llm import LLMAdvisor

    return LLMAdvisor.from_spec(spec, settings)
