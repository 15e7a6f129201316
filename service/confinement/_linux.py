"""The Linux mechanisms of confinement, each one step that reports what it achieved.

A confined process calls these itself, in order, before any untrusted code runs (never through
``subprocess``'s ``preexec_fn``, which is unsafe in a threaded parent such as the API server):

1. ``enter_namespaces``: new network (unless asked to keep the host's), mount, PID and IPC
   namespaces (as root; otherwise inside a new user namespace when the kernel allows it). The
   process forks once so that the untrusted code runs as PID 1 of its own PID namespace: when
   it ends, the kernel kills everything it started.
2. ``isolate_filesystem`` (in a mount namespace): every existing mount read-only, a fresh
   ``/proc`` for the new PID namespace (other processes' ``environ`` disappear), size-capped
   tmpfs over ``/tmp``, ``/var/tmp``, ``/dev/shm`` and over the folders to hide (the
   supervisor's home, its spool), and the scratch directory either private (a tmpfs) or shared
   read-write with the supervisor.
3. ``apply_static_limits``: no core files, a cap on file size and open files.
4. ``drop_privileges``: as root (or holding CAP_SETUID), become another uid with no
   supplementary groups and no capabilities; ``no_new_privs``; a process limit.
5. ``deny_network_sockets``: a seccomp filter that refuses any socket but ``AF_UNIX`` (the
   network layer where namespaces are refused, as under Docker's default seccomp profile).
6. ``apply_request_limits``: address space and CPU time, once known.

Why one module of this length: these are the ordered, interdependent system calls of one
confinement sequence (the order is the security argument), kept together so they are reviewed
together.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
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

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

#: Processes (threads included) the confined code may add beyond what its user already runs.
EXTRA_PROCESSES = 64
#: Largest file the confined code may write, and the size of each private tmpfs.
MAX_FILE_BYTES = 16 * 1024 * 1024
TMPFS_SIZE = "32m"
MAX_OPEN_FILES = 256


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def die_with_parent() -> None:
    """SIGKILL this process when the process that started it dies (a killed supervisor must
    not leave its trainer running)."""
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# ----------------------------------------------------------------------------- namespaces


def enter_namespaces(keep_fds: tuple[int, ...] = (), *, network: bool = True) -> list[str]:
    """Move into new namespaces; returns the names of those entered.

    ``network=False`` keeps the host's network (ranks of a multi-GPU job must reach each
    other). When a PID namespace was created this forks: the calling process waits for the
    child (PID 1 of the new namespace), exits with its status and never returns; the child
    returns. ``keep_fds`` are closed in the waiting process so that only the child holds them.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "unshare"):
        return []
    net = CLONE_NEWNET if network else 0
    base = net | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    attempts = [(base, False)] if os.geteuid() == 0 else []
    attempts += [(base | CLONE_NEWUSER, True)]
    if net:
        attempts += [(CLONE_NEWNET | CLONE_NEWUSER, True)]
    entered = 0
    for flags, user in attempts:
        if libc.unshare(flags) == 0:
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
        _fork_into_pid_namespace(keep_fds)
    return names


def _fork_into_pid_namespace(keep_fds: tuple[int, ...]) -> None:
    pid = os.fork()
    if pid == 0:
        return
    # The waiting parent: it must not keep the pipes open, nor react to the untrusted code;
    # a SIGTERM for it (spot reclaim) is passed on to the child.
    for fd in keep_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(pid, signal.SIGTERM))
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


# ----------------------------------------------------------------------------- filesystem


def isolate_filesystem(
    scratch: Path,
    *,
    private_scratch: bool,
    hide: Iterable[str] = (),
    fresh_proc: bool = True,
) -> list[str]:
    """In a mount namespace: read-only mounts, a fresh ``/proc``, private temporary folders,
    ``hide`` masked by empty tmpfs, and the scratch directory writable; chdir into it.

    ``private_scratch`` mounts a tmpfs on the scratch directory (nothing reaches the disk);
    otherwise the real directory stays shared with the process that made it.
    """
    libc = _libc()
    if libc is None:
        return []
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return []
    done: list[str] = []
    scratch = Path(os.path.realpath(scratch))
    scratch_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
    try:
        if _remount_all_read_only(libc):
            done.append("read-only-filesystem")
        if (
            fresh_proc
            and libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) == 0
        ):
            done.append("private-proc")
        needed = _interpreter_paths()
        masked = []
        for folder in ("/tmp", "/var/tmp", "/dev/shm", *hide):
            if _mask(libc, folder, needed):
                masked.append(folder)
        if {"/tmp", "/var/tmp", "/dev/shm"} & set(masked):
            done.append("private-tmp")
        if set(masked) - {"/tmp", "/var/tmp", "/dev/shm"}:
            done.append("hidden-home")
        # The scratch directory may now be hidden under a fresh /tmp or made read-only: bind
        # the real one back (or a private tmpfs) at the same path, writable.
        os.makedirs(scratch, exist_ok=True)
        flags = MS_NOSUID | MS_NODEV
        options = f"size={TMPFS_SIZE},mode=1777".encode()
        if private_scratch:
            ok = libc.mount(b"tmpfs", str(scratch).encode(), b"tmpfs", flags, options) == 0
        else:
            source = f"/proc/self/fd/{scratch_fd}".encode()
            ok = libc.mount(source, str(scratch).encode(), None, MS_BIND, None) == 0
            # A bind keeps the read-only flag its source mount was just given: clear it.
            ok = (
                ok
                and libc.mount(
                    None, str(scratch).encode(), None, MS_BIND | MS_REMOUNT | flags, None
                )
                == 0
            )
        if ok:
            done.append("scratch-directory")
    finally:
        os.close(scratch_fd)
    os.chdir(scratch)
    return done


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, flags to keep) of every mount, from ``/proc/self/mountinfo``."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            flags = 0
            for option in fields[5].split(","):
                flags |= _MOUNT_FLAGS.get(option, 0)
            points.append((point, flags))
    return points


def _remount_all_read_only(libc: ctypes.CDLL) -> bool:
    """Remount every mount read-only (keeping its nosuid/nodev/noexec, which a user namespace
    may not clear); true when the root itself became read-only."""
    root = False
    for point, flags in _mount_points():
        if point.startswith(("/proc", "/sys")):
            continue
        result = libc.mount(
            None, point.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, None
        )
        if result == 0 and point == "/":
            root = True
    return root


def _mask(libc: ctypes.CDLL, folder: str, needed: set[str]) -> bool:
    """Cover ``folder`` with an empty tmpfs; the interpreter's folders inside it (a checkout
    under /tmp, a venv under the home) are held open and bound back read-only."""
    if not os.path.isdir(folder) or os.path.islink(folder) or folder == "/":
        return False
    keep = _outermost(p for p in needed if p.startswith(folder + "/") and os.path.isdir(p))
    if any(folder == p or folder.startswith(p + "/") for p in needed):
        # The folder is the interpreter's own (or inside it): masking would break the process;
        # its contents stay visible read-only.
        return False
    held = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
    options = f"size={TMPFS_SIZE},mode=1777".encode()
    try:
        if libc.mount(b"tmpfs", folder.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options) != 0:
            return False
        for path, fd in held.items():
            os.makedirs(path, exist_ok=True)
            source = f"/proc/self/fd/{fd}".encode()
            if libc.mount(source, path.encode(), None, MS_BIND | MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), f"cannot bind {path} back into {folder}")
            libc.mount(None, path.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        return True
    finally:
        for fd in held.values():
            os.close(fd)


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
    paths = {p for p in paths if os.path.isabs(p)}
    return {os.path.realpath(p) for p in paths} | paths


# ----------------------------------------------------------------------------- limits


def apply_static_limits(
    max_file_bytes: int = MAX_FILE_BYTES, max_open_files: int = MAX_OPEN_FILES
) -> list[str]:
    """Limits known before the request: core files, file size, open files."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    # Code writing past the size limit gets an OSError rather than a silent SIGXFSZ death.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max_open_files if hard == resource.RLIM_INFINITY else min(max_open_files, hard)
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


# ----------------------------------------------------------------------------- privileges


def resolve_user(name_or_uid: str) -> tuple[int, int] | None:
    """(uid, gid) of a user name or a numeric uid (its gid: the user's, else the same)."""
    import pwd

    try:
        if name_or_uid.isdigit():
            uid = int(name_or_uid)
            try:
                return uid, pwd.getpwuid(uid).pw_gid
            except KeyError:
                return uid, uid
        entry = pwd.getpwnam(name_or_uid)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return None


def drop_privileges(scratch: Path, user: tuple[int, int] | None) -> list[str]:
    """Become ``user`` (uid, gid) with no supplementary groups and no capabilities when this
    process may (root, or CAP_SETUID as the image's supervisor); the scratch directory is
    handed over first when it is private. Always limits processes and sets ``no_new_privs``.
    Returns what was done: ``uid-<n>`` only when the uid really changed."""
    done = []
    before = os.getuid()
    if user is not None and user[0] != before:
        uid, gid = user
        try:
            if os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.chown(scratch, uid, gid)
            limit_processes(uid)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except OSError:
            pass  # not allowed here: the caller's policy decides whether that is acceptable
        if os.getuid() == uid and os.geteuid() == uid:
            done.append(f"uid-{uid}")
            if uid == 65534:
                done.append("uid-nobody")
    if os.getuid() == before:
        limit_processes(before)
        done.append("nproc-limit")
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
        _clear_capabilities(libc)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
            done.append("no-new-privs")
    return done


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _clear_capabilities(libc: ctypes.CDLL) -> None:
    """Empty the effective, permitted and inheritable sets (a uid change between two non-root
    uids keeps them; the image's supervisor holds CAP_SETUID/CAP_SETGID)."""
    if os.geteuid() == 0:
        return  # still root: nothing we could drop would stop it; the policy reports it
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    libc.capset(ctypes.byref(header), data)


# ----------------------------------------------------------------------------- seccomp

AF_UNIX = 1
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_NE = 1


def _scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def deny_network_sockets() -> list[str]:
    """Install a seccomp filter: ``socket()`` of any family but ``AF_UNIX`` fails with EACCES,
    and ``io_uring`` (which could open sockets behind the filter) is refused. Needs libseccomp
    (Debian ``libseccomp2``) and ``no_new_privs`` or CAP_SYS_ADMIN; returns [] without them."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    except OSError:
        return []
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return []
    try:
        deny = _scmp_act_errno(errno.EACCES)
        socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
        not_unix = (_ArgCmp * 1)(_ArgCmp(0, _SCMP_CMP_NE, AF_UNIX, 0))
        if lib.seccomp_rule_add_array(ctx, deny, socket_nr, 1, not_unix) != 0:
            return []
        for name in (b"io_uring_setup", b"io_uring_enter", b"io_uring_register"):
            nr = lib.seccomp_syscall_resolve_name(name)
            if nr >= 0:
                lib.seccomp_rule_add_array(ctx, _scmp_act_errno(errno.EPERM), nr, 0, None)
        if lib.seccomp_load(ctx) != 0:
            return []
    finally:
        lib.seccomp_release(ctx)
    return ["seccomp-no-network-sockets"]
