"""`gradpilot validate MODEL.py --dataset D [--json]`: exit status and a readable reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _validate(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "validate",
            str(path),
            "--dataset",
            "digits",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_valid_and_invalid_models() -> None:
    ok = _validate(EXAMPLES / "flawed_digits.py", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    bad = _validate(EXAMPLES / "blog_flawed_cnn.py", "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and "mat1 and mat2" in report["reason"]
    human = _validate(EXAMPLES / "blog_flawed_cnn.py")
    assert human.returncode == 1 and "invalid" in human.stderr


def test_static_refusal_and_missing_file(tmp_path: Path) -> None:
    evil = tmp_path / "evil.py"
    evil.write_text("import subprocess\n")
    out = _validate(evil, "--json")
    assert out.returncode == 1
    assert (
        json.loads(out.stdout)["ok"] is False and "subprocess" in json.loads(out.stdout)["reason"]
    )
    missing = _validate(tmp_path / "nope.py", "--json")
    assert missing.returncode == 1 and json.loads(missing.stdout)["ok"] is False
