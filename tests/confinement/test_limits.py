"""Limits are only ever lowered: a process without CAP_SYS_RESOURCE (a non-root supervisor,
any container — the compose stack hit this) cannot raise a hard limit, so confinement must
keep a lower one in force instead of failing with "not allowed to raise maximum limit"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

SCRIPT = """
import os, resource
from service.confinement import _linux
resource.setrlimit(resource.RLIMIT_NPROC, (500, 500))
resource.setrlimit(resource.RLIMIT_CPU, (30, 30))
os.setgid(65534); os.setuid(65534)  # nobody: no CAP_SYS_RESOURCE from here on
_linux.limit_processes(65534, extra=10_000)
_linux.apply_request_limits(512, 3600.0)
print(resource.getrlimit(resource.RLIMIT_NPROC), resource.getrlimit(resource.RLIMIT_CPU))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_limits_below_the_platforms_are_kept_not_raised() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(500, 500) (30, 30)"
