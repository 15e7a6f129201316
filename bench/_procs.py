"""CPU seconds of processes, read from ``/proc``: a server with its worker processes, and every
Postgres backend, so that a benchmark can say where the machine's cores went."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, user+system CPU seconds) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    return name, ppid, cpu


def _all() -> dict[int, tuple[str, int, float]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its live descendants."""
    procs = _all()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        if pid in procs:
            total += procs[pid][2]
        stack.extend(children.get(pid, []))
    return total


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every live ``postgres`` process (the server and its backends), by pid."""
    return {pid: cpu for pid, (name, _, cpu) in _all().items() if name.startswith("postgres")}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two snapshots by the processes alive at the second (a backend
    that exited in between is lost, never counted negative)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
