"""Which isolation is required, and the level a confined process actually reached.

Untrusted code must not reach the network, the other processes, or any file but its scratch
directory. Each of these three *guards* holds when one of the layers named for it was achieved:

- network: ``network-namespace`` (no interface but a down loopback) or
  ``seccomp-no-network-sockets`` (only ``AF_UNIX`` sockets can be created);
- processes: ``private-proc`` (a PID namespace with its own ``/proc``) or a uid change
  (``uid-<n>``: another user's ``/proc/<pid>/environ`` cannot be read);
- files: ``read-only-filesystem`` with ``private-tmp`` (a mount namespace) or a uid change.

A scrubbed environment, rlimits and ``no_new_privs`` are always applied. When a guard is
missing, the process refuses to run the code (``IsolationRefused``, a one-line message naming
what is missing and how to enable it) unless the operator allowed a weaker level with
``GRADPILOT_ALLOW_WEAK_ISOLATION=true``. The level recorded for a job or a validation is
``full`` or ``weak (no …)`` followed by the layers, e.g.
``full: network-namespace, private-proc, uid-65534, …``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.errors import GradpilotError

#: The operator's explicit choice to run untrusted code under less isolation than required.
ALLOW_WEAK_ENV = "GRADPILOT_ALLOW_WEAK_ISOLATION"
#: Tests only: skip the static check (and the restricted builtins) so that tests can show the
#: process boundary alone holds. Never set it in a deployment.
UNSAFE_DISABLE_STATIC_CHECK_ENV = "GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK"

_HOW = {
    "network": "run as root, or enable unprivileged user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0), "
    "or install libseccomp2",
    "processes": "run as root (the code then runs as another uid), or enable user namespaces",
    "files": "run as root (the code then runs as another uid), or enable user namespaces",
}


class IsolationRefused(GradpilotError):
    """A required isolation layer is missing and weak isolation was not allowed."""

    status_code = 503


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def weak_allowed(environ: dict[str, str] | None = None) -> bool:
    """Whether the operator allowed weak isolation (``GRADPILOT_ALLOW_WEAK_ISOLATION``)."""
    env = os.environ if environ is None else environ
    return truthy(env.get(ALLOW_WEAK_ENV))


def static_check_disabled(environ: dict[str, str] | None = None) -> bool:
    """Whether the test-only switch ``GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK`` is on."""
    env = os.environ if environ is None else environ
    return truthy(env.get(UNSAFE_DISABLE_STATIC_CHECK_ENV))


def _uid_changed(layers: list[str]) -> bool:
    return any(layer.startswith("uid-") and layer[4:].isdigit() for layer in layers)


def missing_guards(layers: list[str], *, need_network: bool = True) -> list[str]:
    """The guards (network, processes, files) that none of ``layers`` provides."""
    have = set(layers)
    missing = []
    if need_network and not {"network-namespace", "seccomp-no-network-sockets"} & have:
        missing.append("network")
    if "private-proc" not in have and not _uid_changed(layers):
        missing.append("processes")
    if not {"read-only-filesystem", "private-tmp"} <= have and not _uid_changed(layers):
        missing.append("files")
    return missing


@dataclass(frozen=True)
class Assessment:
    """The verdict on the layers a process achieved."""

    level: str
    """``full`` or ``weak``."""
    missing: list[str]
    layers: list[str]

    def describe(self) -> str:
        head = "full" if not self.missing else f"weak (no {' or '.join(self.missing)} isolation)"
        return f"{head}: {', '.join(self.layers)}"[:300]


def assess(layers: list[str], *, need_network: bool = True) -> Assessment:
    missing = missing_guards(layers, need_network=need_network)
    return Assessment("weak" if missing else "full", missing, list(layers))


def enforce(
    layers: list[str], *, allow_weak: bool, what: str, need_network: bool = True
) -> Assessment:
    """The assessment of ``layers``; raises ``IsolationRefused`` when a guard is missing and
    weak isolation is not allowed. ``what`` names the process in the message (``the trainer``)."""
    result = assess(layers, need_network=need_network)
    if result.missing and not allow_weak:
        how = "; ".join(f"{guard}: {_HOW[guard]}" for guard in result.missing)
        raise IsolationRefused(
            f"{what} refuses to run untrusted code: no {', '.join(result.missing)} isolation "
            f"on this host (achieved: {', '.join(layers) or 'none'}). To enable it — {how}; "
            f"or set {ALLOW_WEAK_ENV}=true to accept weaker isolation"
        )
    return result
