"""The rules advisor: offline, deterministic decisions from the diagnostics.

The embedded default and the fallback when an LLM advisor fails, in four parts:

* ``policy``: which of continue, tune, redesign or finish, and why (``decide``).
* ``recipes``: the hyperparameter changes of a ``tune`` (``tune_changes``, ``fresh_recipe``).
* ``repair``: deterministic fixes of the classic shape errors of model code.
* ``advisor``: ``RulesAdvisor``, the ``Advisor`` protocol over the three, and the report's
  deterministic summary.
"""

from __future__ import annotations

from service.advisors.rules.advisor import NAME, RulesAdvisor, summary_paragraph
from service.advisors.rules.policy import Decision, Situation, decide
from service.advisors.rules.recipes import fresh_recipe, tune_changes
from service.advisors.rules.repair import repair_source

__all__ = [
    "NAME",
    "Decision",
    "RulesAdvisor",
    "Situation",
    "decide",
    "fresh_recipe",
    "repair_source",
    "summary_paragraph",
    "tune_changes",
]
