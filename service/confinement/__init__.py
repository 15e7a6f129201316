"""Confinement of untrusted model code: one implementation for validation and training.

The sandbox's child (``service.sandbox._child``) and the worker's trainer
(``worker.trainer``) both call ``confine`` on themselves before any model code runs, then
``policy.enforce`` on what it achieved: missing isolation fails closed unless the operator
allowed a weaker level (``GRADPILOT_ALLOW_WEAK_ISOLATION=true``). ``scrubbed_environment``
is the whole environment such a process is started with (nothing inherited, so no
credential can leak into it).
"""

from service.confinement.confine import Confinement, confine
from service.confinement.environment import scrubbed_environment
from service.confinement.policy import (
    ALLOW_WEAK_ENV,
    UNSAFE_DISABLE_STATIC_CHECK_ENV,
    Assessment,
    IsolationRefused,
    assess,
    enforce,
    static_check_disabled,
    weak_allowed,
)

__all__ = [
    "ALLOW_WEAK_ENV",
    "UNSAFE_DISABLE_STATIC_CHECK_ENV",
    "Assessment",
    "Confinement",
    "IsolationRefused",
    "assess",
    "confine",
    "enforce",
    "scrubbed_environment",
    "static_check_disabled",
    "weak_allowed",
]
