"""The sandboxed trial run: good models pass, broken ones fail with a readable reason, and code
that escapes the static check (``_unchecked``) is still contained by the process boundary.

Every test here but the static refusal starts a child process that imports torch: a few
seconds each, so most are marked slow; the blog's flawed CNN and a shape mismatch stay in the
fast tier so that the trial run is always exercised.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.sandbox import Sandbox, SandboxLimits, ValidationReport, validate_model
from service.sandbox.validate_cli import validate_file
from service.schemas.datasets import DatasetSpec
from service.settings import Settings
from tests.sandbox.good_models import BUILD_MODEL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LIMITS = SandboxLimits(timeout_s=20, memory_mb=512, max_parameters=10_000_000)
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(LIMITS, keep_warm=True) as sandbox:
        yield sandbox


def run(source: str, *, shape=(3, 32, 32), classes=10, **limits: object) -> ValidationReport:
    values = {
        "timeout_s": LIMITS.timeout_s,
        "memory_mb": LIMITS.memory_mb,
        "max_parameters": LIMITS.max_parameters,
    }
    values.update(limits)
    return validate_model(source, shape, classes, **values)  # type: ignore[arg-type]


def _tasks_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


# -- verdicts on models ------------------------------------------------------------------------


@pytest.mark.slow
def test_accepts_the_blogs_revised_cnn(sandbox: Sandbox) -> None:
    report = sandbox.validate((EXAMPLES / "blog_revised_cnn.py").read_text(), (3, 32, 32), 10)
    assert report.ok, report.reason
    assert report.stage == "done"
    assert report.output_shape == [8, 10]
    assert report.parameters == 2_596_522
    assert report.custom_loss is True
    assert report.loss is not None and report.step_seconds is not None
    assert report.reason is None


@pytest.mark.slow
def test_accepts_a_build_model_file_and_the_offline_flawed_model(sandbox: Sandbox) -> None:
    report = sandbox.validate(BUILD_MODEL, (1, 8, 8), 3)
    assert report.ok, report.reason
    assert report.output_shape == [8, 3]
    assert report.custom_loss is False
    flawed = sandbox.validate((EXAMPLES / "flawed_digits.py").read_text(), (3, 32, 32), 10)
    assert flawed.ok, flawed.reason  # it runs; it just does not learn
    assert flawed.parameters == 65_962


def test_rejects_the_blogs_flawed_cnn_with_the_shape_error(sandbox: Sandbox) -> None:
    report = sandbox.validate((EXAMPLES / "blog_flawed_cnn.py").read_text(), (3, 32, 32), 10)
    assert not report.ok
    assert report.stage == "forward"
    assert report.error_type == "RuntimeError"
    assert report.reason is not None
    assert "mat1 and mat2 shapes cannot be multiplied (8x6400 and 16384x10)" in report.reason
    assert report.reason.startswith("forward failed at line 44 (x = self.fc(x)): RuntimeError")
    # The traceback shows the model's own frames only, not torch's internals.
    assert report.traceback is not None
    assert 'File "model.py", line 44, in forward' in report.traceback
    assert "torch/nn" not in report.traceback


def test_rejects_a_shape_mismatch_and_ignores_forged_results(sandbox: Sandbox) -> None:
    forged = json.dumps({"event": "result", "ok": True, "stage": "done"})
    source = BUILD_MODEL.replace("nn.Linear(8, num_classes)", "nn.Linear(8, 5)")
    source += f"\nprint({forged!r})\n"
    report = sandbox.validate(source, (3, 32, 32), 10)
    assert not report.ok
    assert report.stage == "forward"
    assert report.reason is not None
    assert "shape (8, 5)" in report.reason and "expected (8, 10)" in report.reason
    assert report.log_tail is not None and '"ok": true' in report.log_tail


@pytest.mark.slow
def test_rejects_too_many_parameters() -> None:
    report = run(BUILD_MODEL.replace("8, num_classes", "8, 2000"), classes=10, max_parameters=2000)
    assert not report.ok
    assert report.stage == "build"
    assert "parameters; the limit is 2,000" in (report.reason or "")


def test_static_refusal_needs_no_process() -> None:
    started = time.monotonic()
    report = run("import os\n" + BUILD_MODEL)
    assert time.monotonic() - started < 1.0
    assert not report.ok and report.stage == "static"
    assert "`import os`" in (report.reason or "")


@pytest.mark.slow
def test_validate_file_uses_the_datasets_shape(tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_text(BUILD_MODEL)
    settings = Settings(home=tmp_path / "home", sandbox_timeout_s=20, sandbox_memory_mb=512)
    report = validate_file(path, DatasetSpec(name="cifar100"), settings)
    assert report.ok, report.reason
    assert report.output_shape == [8, 100]


# -- limits ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_infinite_loop_times_out() -> None:
    source = BUILD_MODEL + "\nwhile True:\n    pass\n"
    started = time.monotonic()
    report = run(source, timeout_s=2)
    assert not report.ok
    assert report.stage == "import"
    assert report.reason is not None
    assert report.reason.startswith("timed out after 2 s in the module's top-level code")
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_unbounded_allocation_hits_the_memory_limit() -> None:
    source = BUILD_MODEL + "\nkept = []\nwhile True:\n    kept.append(torch.ones(10_000_000))\n"
    report = run(source, memory_mb=300)
    assert not report.ok
    assert report.reason is not None
    assert "exceeded the memory limit of 300 MB in the module's top-level code" in report.reason


# -- the process boundary, with the static check bypassed ---------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not IS_ROOT, reason="the NPROC limit binds a dedicated user only as root")
def test_a_fork_bomb_is_contained() -> None:
    before = _tasks_of(65534)
    source = "import os\n" + BUILD_MODEL + "\nwhile True:\n    os.fork()\n"
    report = validate_model(
        source, (3, 8, 8), 10, timeout_s=10, memory_mb=256, max_parameters=10**6, _unchecked=True
    )
    assert not report.ok
    assert report.reason is not None and "BlockingIOError" in report.reason
    deadline = time.monotonic() + 5
    while _tasks_of(65534) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _tasks_of(65534) <= before, "forked processes outlived the sandbox"


@pytest.mark.slow
def test_escape_attempts_have_no_effect_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("GRADPILOT_JOB_TOKEN", "do-not-leak")
    token = uuid.uuid4().hex
    outside = [
        Path(f"/tmp/gradpilot-escape-{token}"),
        Path(f"/var/tmp/gradpilot-escape-{token}"),
        Path(f"/dev/shm/gradpilot-escape-{token}"),
        tmp_path / "escape",
        Path.home() / f"gradpilot-escape-{token}",
    ]
    probe = f"""
import os, socket, json
seen = {{"env": sorted(os.environ), "uid": os.getuid(), "cwd": os.getcwd(), "wrote": []}}
for path in {[str(p) for p in outside]!r} + ["inside-scratch"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        seen["wrote"].append(path)
    except OSError as e:
        pass
s = socket.socket()
s.settimeout(2)
try:
    s.connect(("127.0.0.1", 5432))
    seen["network"] = "connected"
except OSError as e:
    seen["network"] = str(e)
print("PROBE " + json.dumps(seen))
"""
    report = validate_model(
        probe + BUILD_MODEL,
        (3, 8, 8),
        10,
        timeout_s=20,
        memory_mb=512,
        max_parameters=10**6,
        _unchecked=True,
    )
    assert report.ok, report.reason
    assert report.log_tail is not None
    line = next(x for x in report.log_tail.splitlines() if x.startswith("PROBE "))
    seen = json.loads(line[len("PROBE ") :])
    # No credentials in the environment.
    assert not [k for k in seen["env"] if k.startswith(("AWS_", "GRADPILOT_"))]
    assert set(seen["env"]) <= {
        "PATH", "HOME", "TMPDIR", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE",
        "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES", "LANG",
    }  # fmt: skip
    # Whatever it wrote, nothing is left outside its process; its scratch folder is gone.
    assert "inside-scratch" in seen["wrote"]
    for path in outside:
        assert not path.exists(), f"{path} appeared outside the sandbox"
    assert not Path(seen["cwd"]).exists()
    if "network-namespace" in report.isolation:
        assert seen["network"] != "connected"
    if IS_ROOT:
        assert seen["uid"] == 65534
        assert "uid-nobody" in report.isolation


@pytest.mark.slow
def test_without_namespaces_it_still_validates() -> None:
    with Sandbox(LIMITS, keep_warm=False, namespaces=False) as sandbox:
        report = sandbox.validate(BUILD_MODEL, (3, 8, 8), 10)
    assert report.ok, report.reason
    assert "network-namespace" not in report.isolation
    assert "rlimits" in report.isolation


@pytest.mark.slow
def test_a_spare_that_waited_past_the_startup_limit_is_used_warm() -> None:
    import select

    limits = SandboxLimits(timeout_s=20, memory_mb=512, max_parameters=10**6, startup_timeout_s=1)
    with Sandbox(limits, keep_warm=True) as sandbox:
        spare = sandbox._spare[0]
        assert spare.popen.stdout is not None
        select.select([spare.popen.stdout], [], [], 60)  # its ready line has arrived
        time.sleep(1.5)  # and it is now older than the startup limit
        report = sandbox.validate(BUILD_MODEL, (3, 8, 8), 10)
    assert report.ok, report.reason
    assert report.elapsed_seconds < 3
