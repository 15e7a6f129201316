"""Operating-system isolation for the sandbox's child process (Linux; degrades elsewhere).

The child calls these itself, in order, before any model code runs (never through
``subprocess``'s ``preexec_fn``, which is unsafe in a threaded parent such as the API server):

1. ``enter_namespaces``: new network, mount, PID and IPC namespaces (as root; otherwise inside
   a new user namespace when the kernel allows it). No network interface but a down loopback.
   The process forks once so that the model runs as PID 1 of its own PID namespace: when it
   ends, the kernel kills everything it started.
2. ``private_tmp``: fresh size-capped tmpfs over ``/tmp``, ``/var/tmp``, ``/dev/shm`` and the
   scratch directory, so that nothing the model writes reaches the real disk or outlives it.
3. ``apply_static_limits``: no core files, a cap on file size and open files, a cap on processes.
4. ``drop_privileges``: as root, become ``nobody`` with no supplementary groups and
   ``no_new_privs``: the model can then write nowhere but its tmpfs, and read no private file.
5. ``apply_request_limits``: address space (the memory limit) and CPU time, once known.

Each step reports what it achieved, so that the validation report says which isolation held.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

PR_SET_NO_NEW_PRIVS = 38

#: Processes (threads included) the model may add beyond what its user already runs.
EXTRA_PROCESSES = 32
#: Largest file the model may write, and the size of each private tmpfs.
MAX_FILE_BYTES = 16 * 1024 * 1024
TMPFS_SIZE = "32m"
MAX_OPEN_FILES = 256


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _unshare(libc: ctypes.CDLL, flags: int) -> bool:
    return bool(libc.unshare(flags) == 0)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(result_fds: tuple[int, ...]) -> list[str]:
    """Move into new namespaces; returns the names of those entered.

    When a PID namespace was created this forks: the calling process waits for the child (PID 1
    of the new namespace), exits with its status and never returns; the child returns.
    ``result_fds`` are closed in the waiting process so that only the child holds them.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "unshare"):
        return []
    base = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    attempts = [(base, False)] if os.geteuid() == 0 else []
    attempts += [(base | CLONE_NEWUSER, True), (CLONE_NEWNET | CLONE_NEWUSER, True)]
    entered = 0
    for flags, user in attempts:
        if _unshare(libc, flags):
            entered = flags
            if user:
                with contextlib.suppress(OSError):
                    _write("/proc/self/setgroups", "deny")
                # Map our own ids, so that file ownership means the same inside.
                _write("/proc/self/uid_map", f"{uid} {uid} 1")
                _write("/proc/self/gid_map", f"{gid} {gid} 1")
            break
    names = []
    if entered & CLONE_NEWUSER:
        names.append("user-namespace")
    if entered & CLONE_NEWNET:
        names.append("network-namespace")
    if entered & CLONE_NEWIPC:
        names.append("ipc-namespace")
    if entered & CLONE_NEWNS:
        names.append("mount-namespace")
    if entered & CLONE_NEWPID:
        names.append("pid-namespace")
        _fork_into_pid_namespace(result_fds)
    return names


def _fork_into_pid_namespace(result_fds: tuple[int, ...]) -> None:
    pid = os.fork()
    if pid == 0:
        return
    # The waiting parent: it must not keep the result pipe open, nor react to the model.
    for fd in result_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    # A signal death of the child is passed on as 128 + signal, the shell's convention.
    os._exit(code if code >= 0 else 128 - code)


def private_tmp(scratch: Path) -> list[str]:
    """In a mount namespace: fresh tmpfs over the shared temporary folders and the scratch
    directory; chdir into the new scratch. Returns what was done."""
    libc = _libc()
    if libc is None:
        return []
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return []
    done = []
    options = f"size={TMPFS_SIZE},mode=1777".encode()
    needed = _interpreter_paths()
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        # The interpreter, its packages or the project may live there (a checkout under /tmp):
        # hold them open, mask the folder, then bind them back read-only at the same paths.
        keep = _outermost(p for p in needed if p.startswith(folder + "/") and os.path.isdir(p))
        held = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
        try:
            if libc.mount(b"tmpfs", folder.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
                continue
            for path, fd in held.items():
                os.makedirs(path, exist_ok=True)
                source = f"/proc/self/fd/{fd}".encode()
                if libc.mount(source, path.encode(), None, MS_BIND | MS_REC, None) != 0:
                    raise OSError(ctypes.get_errno(), f"cannot bind {path} back into {folder}")
                libc.mount(None, path.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
            done.append(folder)
        finally:
            for fd in held.values():
                os.close(fd)
    # The scratch directory may now be hidden under a fresh /tmp; recreate it and mount a
    # private tmpfs on it, so that the model's files never reach the real disk.
    scratch.mkdir(parents=True, exist_ok=True)
    flags = MS_NOSUID | MS_NODEV
    if libc.mount(b"tmpfs", str(scratch).encode(), b"tmpfs", flags, options) == 0:
        done.append("scratch")
    os.chdir(scratch)
    return ["private-tmp"] if done else []


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths not inside another one of them."""
    out: list[str] = []
    for p in sorted(set(paths)):
        if not any(p == q or p.startswith(q + "/") for q in out):
            out.append(p)
    return out


def _interpreter_paths() -> set[str]:
    """Folders this interpreter must still read after the mounts: its prefixes, its import
    path and the project (resolved, since a venv's python is often a symlink)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parents[2])}
    paths.update(p for p in sys.path if p)
    return {os.path.realpath(p) for p in paths} | paths


def apply_static_limits(extra_processes: int = EXTRA_PROCESSES) -> list[str]:
    """Limits known before the request: core files, file size, open files, processes."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    # A model writing past the size limit gets an OSError rather than a silent SIGXFSZ death.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(MAX_OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return ["rlimits"]


def limit_processes(uid: int, extra: int = EXTRA_PROCESSES) -> None:
    """RLIMIT_NPROC counts every task of the real user id; allow ``extra`` beyond today's."""
    limit = _tasks_of(uid) + extra
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _tasks_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count


def drop_privileges(scratch: Path) -> list[str]:
    """As root: become ``nobody`` (the scratch directory is handed over first). Always sets
    ``no_new_privs``. Returns what was done."""
    done = []
    if os.geteuid() == 0:
        try:
            import pwd

            nobody = pwd.getpwnam("nobody")
        except (ImportError, KeyError):
            nobody = None
        if nobody is not None:
            os.chown(scratch, nobody.pw_uid, nobody.pw_gid)
            limit_processes(nobody.pw_uid)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            done.append("uid-nobody")
    else:
        limit_processes(os.getuid())
        done.append("nproc-limit")
    libc = _libc()
    if libc is not None and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        done.append("no-new-privs")
    return done


def apply_request_limits(memory_mb: int, cpu_seconds: float) -> None:
    """Address space: what the process maps now plus ``memory_mb`` (torch alone maps a few
    GB of address space it never touches, so an absolute cap would be meaningless). CPU time:
    a backstop for the parent's wall-clock limit, should the parent die."""
    mapped = _mapped_bytes()
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime
    soft = int(spent + cpu_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _mapped_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
