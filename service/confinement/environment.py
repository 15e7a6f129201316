"""The whole environment a confined process starts with: nothing inherited."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: The folder that holds the ``service`` and ``worker`` packages.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

#: Variables a confined process may receive from its parent besides the fixed ones: none
#: of them carries a credential (torchrun's rendezvous, the GPU selection, the log level).
PASSED_THROUGH = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_RUN_ID",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    "OMP_NUM_THREADS",
    "GRADPILOT_LOG_LEVEL",
    "PYTHONUNBUFFERED",
    # Tests only (docs/security.md): the trainer skips the static check.
    "GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK",
)


def scrubbed_environment(
    scratch: Path, *, inherit_from: Mapping[str, str] | None = None, threads: int | None = 1
) -> dict[str, str]:
    """PATH, HOME and TMPDIR in ``scratch``, PYTHONPATH to the project, single-threaded math
    libraries (unless ``threads`` is None), and the harmless ``PASSED_THROUGH`` variables of
    ``inherit_from``. Never a token, an ``AWS_*`` variable or a credentials endpoint."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "PYTHONPATH": str(PACKAGE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "LANG": "C.UTF-8",
    }
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    for name in PASSED_THROUGH if inherit_from is not None else ():
        assert inherit_from is not None
        if name in inherit_from:
            env[name] = inherit_from[name]
    if inherit_from is not None and "CUDA_VISIBLE_DEVICES" not in inherit_from:
        del env["CUDA_VISIBLE_DEVICES"]  # a trainer sees the GPUs its supervisor sees
    return env
