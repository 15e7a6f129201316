"""``confine``: the ordered steps a confined process applies to itself."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.confinement import _linux


@dataclass(frozen=True)
class Confinement:
    """How to confine one process."""

    scratch: Path
    """The only writable folder (besides private temporary ones)."""
    private_scratch: bool = True
    """A tmpfs over the scratch directory (validation); False keeps it shared with the parent
    (the trainer hands its checkpoints over there)."""
    keep_fds: tuple[int, ...] = ()
    """The pipes to the parent: closed in the PID namespace's waiting process."""
    namespaces: bool = True
    network_namespace: bool = True
    """False keeps the host's network (the ranks of a multi-GPU job must reach each other)."""
    hide: tuple[str, ...] = ()
    """Folders to mask with an empty tmpfs (the supervisor's home and spool)."""
    user: tuple[int, int] | None = None
    """(uid, gid) to become when this process may change uid."""
    die_with_parent: bool = False
    """SIGKILL when the parent dies. Only for a parent that is one thread (the supervisor):
    the signal follows the *thread* that started the child, and a server's threads come and
    go."""
    max_file_bytes: int = _linux.MAX_FILE_BYTES
    max_open_files: int = _linux.MAX_OPEN_FILES
    extra_layers: list[str] = field(default_factory=list)


def confine(spec: Confinement, preload: Callable[[], None] = lambda: None) -> list[str]:
    """Apply every layer the platform allows, in order; returns the layers achieved.

    ``preload`` runs after the filesystem is isolated and before privileges are dropped:
    imports that need the starting user's rights (an interpreter under /root) go there. In a
    PID namespace the calling process forks (see ``_linux.enter_namespaces``).
    """
    layers = ["process", "clean-environment", *spec.extra_layers]
    if spec.die_with_parent:
        _linux.die_with_parent()
    if spec.namespaces:
        layers += _linux.enter_namespaces(spec.keep_fds, network=spec.network_namespace)
        if spec.die_with_parent and "pid-namespace" in layers:
            _linux.die_with_parent()  # the forked child: its parent is now the waiting process
    if "mount-namespace" in layers:
        layers += _linux.isolate_filesystem(
            spec.scratch,
            private_scratch=spec.private_scratch,
            hide=spec.hide,
            fresh_proc="pid-namespace" in layers,
        )
    else:
        os.chdir(spec.scratch)
    preload()
    layers += _linux.apply_static_limits(spec.max_file_bytes, spec.max_open_files)
    layers += _linux.drop_privileges(spec.scratch, spec.user)
    if spec.network_namespace and "network-namespace" not in layers:
        layers += _linux.deny_network_sockets()
    return layers
