"""Where the repository and its example models are, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

#: The repository's root (a worker started by a test runs there).
ROOT = Path(__file__).resolve().parents[2]
#: The example models (``examples/*.py``) that the README's runs and the benchmarks use.
EXAMPLES = ROOT / "examples"
