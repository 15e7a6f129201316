"""A hostile model, run through the real worker with the static check switched off.

It behaves during validation (two forward passes) and acts only once it is being trained: it
tries to read the job token (its environment, every ``/proc/<pid>/environ`` it can see, the
supervisor's included), the user token file and the AWS credentials under the supervisor's
home, to write files to the host's /tmp, /var/tmp, /dev/shm, the home, the artifact store and
the repository, and to reach the API on 127.0.0.1. The process boundary alone must hold: the
job still trains, and the probe found no secret and left no file outside its scratch folder.
It runs as root (the trainer becomes another uid) and as an unprivileged user (user
namespaces), and without namespaces a non-root host refuses unless weak isolation is allowed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.schemas import exit_codes
from service.schemas.datasets import DatasetSpec
from service.schemas.hyperparameters import Hyperparameters
from service.schemas.jobs import JobSpec
from tests.support.fake_api import JOB_TOKEN, FakeApi, worker_env
from tests.support.paths import ROOT
from worker.model_loading import source_sha256

pytestmark = pytest.mark.slow

AWS_SECRET = "aws-secret-" + uuid.uuid4().hex
USER_TOKEN = "user-token-" + uuid.uuid4().hex
SECRETS = (JOB_TOKEN, AWS_SECRET, USER_TOKEN)

PROBE = r"""
import glob
import json
import os
import socket

import torch
from torch import nn

HOME = {home!r}
OUTSIDE = {outside!r}
API_PORT = {port}


def probe():
    seen = {{"uid": os.getuid(), "pid": os.getpid(), "env": dict(os.environ), "read": {{}},
            "wrote": [], "network": None, "inet_socket": None}}
    targets = glob.glob("/proc/[0-9]*/environ") + [
        "/proc/self/environ",
        f"/proc/{{os.getppid()}}/environ",
        HOME + "/.gradpilot/token",
        HOME + "/.aws/credentials",
        "/root/.aws/credentials",
    ]
    for path in targets:
        try:
            with open(path, "rb") as f:
                data = f.read(100_000)
            if data:
                seen["read"][path] = data.decode("utf-8", "replace")
        except OSError:
            pass
    for path in OUTSIDE:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            seen["wrote"].append(path)
        except OSError:
            pass
    with open("inside-scratch", "w") as f:
        f.write("allowed")
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        seen["inet_socket"] = "created"
        s.settimeout(3)
        s.connect(("127.0.0.1", API_PORT))
        seen["network"] = "connected"
        s.close()
    except OSError as e:
        seen["network"] = str(e)
    return seen


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, stride=4, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, num_classes)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            # Validation runs two forward passes: act only later, inside a real training run.
            if self.calls == 4:
                print("PROBE " + json.dumps(probe()), flush=True)
        x = torch.relu(self.conv(x))
        return self.fc(torch.flatten(x, 1))
"""


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder any uid can use (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="gradpilot-hostile-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _setup(
    world: Path, api: FakeApi, owner: int | None
) -> tuple[JobSpec, dict[str, str], list[Path]]:
    home = world / "home"
    (home / ".gradpilot").mkdir(parents=True)
    (home / ".aws").mkdir()
    (home / ".gradpilot" / "token").write_text(USER_TOKEN)
    (home / ".aws" / "credentials").write_text(f"[default]\naws_secret_access_key={AWS_SECRET}\n")
    artifacts = world / "artifacts"
    spool = world / "spool"
    for folder in (artifacts, spool):
        folder.mkdir()
    tag = uuid.uuid4().hex
    outside = [
        Path(f"/tmp/gradpilot-escape-{tag}"),
        Path(f"/var/tmp/gradpilot-escape-{tag}"),
        Path(f"/dev/shm/gradpilot-escape-{tag}"),
        home / f"escape-{tag}",
        artifacts / f"escape-{tag}",
        world / f"escape-{tag}",
        ROOT / f"escape-{tag}",
    ]
    if owner is not None:
        for path in [world, *world.rglob("*")]:
            os.chown(path, owner, owner)
        for path in (home / ".gradpilot" / "token", home / ".aws" / "credentials"):
            path.chmod(0o600)
    source = PROBE.format(home=str(home), outside=[str(p) for p in outside], port=api.port)
    spec = JobSpec(
        job_id="hostile",
        run_id="run-hostile",
        generation=0,
        attempt=0,
        model_source=source,
        model_sha256=source_sha256(source),
        dataset=DatasetSpec(name="synthetic", synthetic_samples=240),
        hyperparameters=Hyperparameters(optimizer="sgd", learning_rate=0.05, batch_size=32),
        epoch_start=0,
        epochs=1,
        schedule_total_epochs=1,
        artifact_prefix=artifacts.as_uri(),
        checkpoint_every=1,
        seed=0,
    )
    api.add(spec)
    env = worker_env(
        api,
        spec.job_id,
        spool,
        HOME=str(home),
        TMPDIR="/tmp",
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_ACCESS_KEY_ID="AKIAHOSTILETEST",
        AWS_CONTAINER_CREDENTIALS_FULL_URI="http://169.254.170.23/v1/credentials",
        GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK="1",
        PYTHONPATH=str(ROOT),
    )
    return spec, env, outside


#: This machine's Python lives under /root (mode 0700); an unprivileged user could not even
#: start it. In a private mount namespace, /root becomes an empty world-readable tmpfs with
#: only the interpreter bound back: a host whose Python the user may run, as on any system.
AS_USER = """
set -e
mkdir -p "$W/pyenv"
mount --bind /root/.pyenv "$W/pyenv"
mount -t tmpfs -o mode=0755,size=1m tmpfs /root
mkdir /root/.pyenv
mount --bind "$W/pyenv" /root/.pyenv
exec setpriv --reuid=$U --regid=$U --clear-groups "$PY" -m worker
"""


def _run_worker(env: dict[str, str], log: Path, as_user: int | None) -> int:
    command = [sys.executable, "-m", "worker"]
    if as_user is not None:
        world = Path(env["HOME"]).parent
        env = {**env, "W": str(world), "U": str(as_user), "PY": sys.executable}
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", AS_USER]
    with log.open("wb") as out:
        proc = subprocess.run(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=300
        )
    return proc.returncode


def _probe(log: Path) -> dict[str, object]:
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.startswith("PROBE ")]
    assert lines, f"the model never probed:\n{text[-4000:]}"
    seen: dict[str, object] = json.loads(lines[0][len("PROBE ") :])
    return seen


def _assert_contained(seen: dict[str, object], outside: list[Path]) -> None:
    text = json.dumps(seen)
    for secret in SECRETS:
        assert secret not in text, f"the model read a secret: {seen['read']}"
    env = seen["env"]
    assert isinstance(env, dict)
    assert not [k for k in env if k.startswith("AWS_") or k == "GRADPILOT_JOB_TOKEN"]
    # Writes to /tmp, /var/tmp and /dev/shm may succeed: into the trainer's own tmpfs, gone
    # with it. Nothing may land in the real folders, the home, the artifacts or the repository.
    wrote = seen["wrote"]
    assert isinstance(wrote, list)
    private = ("/tmp/", "/var/tmp/", "/dev/shm/")
    assert [p for p in wrote if not p.startswith(private)] == [], f"wrote outside: {wrote}"
    for path in outside:
        assert not path.exists(), f"{path} appeared outside the trainer's scratch"
    assert seen["network"] != "connected"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs the worker as root and nobody")


@needs_root
def test_hostile_model_as_root_reads_no_secret_and_writes_nothing_outside(
    api: FakeApi, world: Path
) -> None:
    spec, env, outside = _setup(world, api, owner=None)
    log = world / "worker.log"
    assert _run_worker(env, log, as_user=None) == exit_codes.SUCCESS, log.read_text()[-4000:]
    seen = _probe(log)
    _assert_contained(seen, outside)
    assert seen["uid"] != 0, "the trainer kept root's uid"
    ((_, finish),) = api.finishes
    assert finish["status"] == "succeeded"
    assert finish["isolation"].startswith("full:"), finish["isolation"]
    assert "network-namespace" in finish["isolation"] and "uid-" in finish["isolation"]
    assert api.epochs("hostile") == [0]


@needs_root
def test_hostile_model_as_an_unprivileged_user_is_contained_by_namespaces(
    api: FakeApi, world: Path
) -> None:
    spec, env, outside = _setup(world, api, owner=65534)
    log = world / "worker.log"
    code = _run_worker(env, log, as_user=65534)
    assert code == exit_codes.SUCCESS, log.read_text()[-4000:]
    seen = _probe(log)
    # Same uid as the supervisor: the user namespace, its own /proc and the hidden home hold.
    assert seen["uid"] == 65534
    _assert_contained(seen, outside)
    ((_, finish),) = api.finishes
    assert finish["isolation"].startswith("full:"), finish["isolation"]
    assert "user-namespace" in finish["isolation"] and "private-proc" in finish["isolation"]


@needs_root
def test_without_namespaces_an_unprivileged_user_is_refused_unless_weak_is_allowed(
    api: FakeApi, world: Path
) -> None:
    spec, env, outside = _setup(world, api, owner=65534)
    env["GRADPILOT_DISABLE_NAMESPACES"] = "1"
    log = world / "worker.log"
    assert _run_worker(env, log, as_user=65534) == exit_codes.BAD_SPEC, log.read_text()[-4000:]
    assert "PROBE " not in log.read_text()  # the model never ran
    ((_, finish),) = api.finishes
    assert finish["status"] == "failed" and finish["error_kind"] == "infrastructure"
    message = finish["message"]
    assert "no processes, files isolation" in message, message
    assert "GRADPILOT_ALLOW_WEAK_ISOLATION=true" in message and "\n" not in message

    # The operator lowers the level explicitly: it runs, and the weak level is recorded.
    api.finishes.clear()
    env["GRADPILOT_ALLOW_WEAK_ISOLATION"] = "true"
    assert _run_worker(env, log, as_user=65534) == exit_codes.SUCCESS, log.read_text()[-4000:]
    ((_, finish),) = api.finishes
    assert finish["isolation"].startswith("weak (no processes or files isolation)")
    # Even so, the environment holds no secret and the seccomp filter stops the network.
    seen = _probe(log)
    assert JOB_TOKEN not in json.dumps(seen["env"]) and AWS_SECRET not in json.dumps(seen["env"])
    assert seen["inet_socket"] is None and seen["network"] != "connected"


def test_the_hostile_model_passes_validation_without_acting(tmp_path: Path) -> None:
    """It behaves in the sandbox (two forward passes), which is why training must be confined."""
    from service.sandbox import validate_model

    source = PROBE.format(home=str(tmp_path), outside=[], port=1)
    report = validate_model(
        source, (3, 32, 32), 10, timeout_s=30, memory_mb=1024, max_parameters=10**6,
        _unchecked=True,
    )  # fmt: skip
    assert report.ok, report.reason
    assert "PROBE" not in (report.log_tail or "")
    assert report.isolation_level is not None and report.isolation_level.startswith("full:")
