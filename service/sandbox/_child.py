"""The sandbox's child process: ``python -m service.sandbox._child --request-fd N``.

Protocol with ``runner`` (one JSON object per line on the child's original stdout, which is
kept for results only; the model's own prints go to stderr, which the parent keeps a tail of):

1. the child confines itself (``service.confinement``), imports torch, drops privileges and
   writes ``{"event": "ready", "isolation": [...], "level": "full: …"}``, or, when a required
   layer is missing and weak isolation is not allowed, ``{"event": "refused", "reason": …}``;
2. it reads one request object from the request pipe (until EOF): source, input shape, classes,
   limits;
3. it writes ``{"event": "stage", "stage": ...}`` as it goes and ends with
   ``{"event": "result", ...}`` carrying the fields of ``ValidationReport``.

The model is checked statically again here, executed with restricted builtins, built by the
model contract, and run forward and backward on a random batch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from service.confinement import Confinement, IsolationRefused, _linux, confine, enforce
from service.errors import SandboxRejected
from service.sandbox import model_contract
from service.sandbox.report import describe_stage
from service.sandbox.static_check import check_source

MODEL_FILENAME = "<model>"
MODULE_NAME = "gradpilot_sandboxed_model"


class _Failure(Exception):
    """A check the model failed (not an exception from the model's code)."""


class Channel:
    """The result pipe: one JSON object per line, written only by the process that opened it
    (a model that forks cannot forge or duplicate results through it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()

    def send(self, event: str, **fields: Any) -> None:
        if os.getpid() != self.pid:
            return
        data = (json.dumps({"event": event, **fields}, default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request-fd", type=int, required=True)
    parser.add_argument("--no-namespaces", action="store_true")
    parser.add_argument("--allow-weak", action="store_true")
    args = parser.parse_args(argv)

    # Keep the original stdout for results; everything printed from now on goes to stderr.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    scratch = Path.cwd()

    nobody = _linux.resolve_user("nobody") or (65534, 65534)
    isolation = confine(
        Confinement(
            scratch=scratch,
            private_scratch=True,
            keep_fds=(result_fd, args.request_fd),
            namespaces=not args.no_namespaces,
            user=nobody,
        ),
        preload=_preload,
    )
    channel = Channel(result_fd)
    try:
        level = enforce(isolation, allow_weak=args.allow_weak, what="the sandbox").describe()
    except IsolationRefused as e:
        channel.send("refused", reason=e.message, isolation=isolation)
        os._exit(0)
    channel.send("ready", isolation=isolation, level=level)

    raw = b""
    while chunk := os.read(args.request_fd, 1 << 16):
        raw += chunk
    os.close(args.request_fd)
    if not raw:
        return 0  # the parent went away (a spare that was never used)
    request = json.loads(raw)
    _linux.apply_request_limits(int(request["memory_mb"]), float(request["timeout_s"]))
    result = _validate(request, channel)
    # The model's prints first, so that the parent finds them in the pipe with the result.
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    channel.send("result", **result)
    # Skip the interpreter's (and torch's) slow teardown: the parent has what it needs.
    os._exit(0)


def _preload() -> None:
    """Import, as the starting user, everything validation needs: after the privilege drop the
    interpreter may no longer read its own installation (e.g. a Python under /root)."""
    import collections  # noqa: F401
    import collections.abc  # noqa: F401
    import dataclasses  # noqa: F401
    import functools  # noqa: F401
    import itertools  # noqa: F401
    import typing  # noqa: F401

    import torch
    import torch.fft  # noqa: F401
    import torch.linalg  # noqa: F401
    import torch.nn.functional as F
    import torch.nn.init  # noqa: F401
    import torch.special  # noqa: F401

    torch.set_num_threads(1)
    # One tiny training step loads the lazily imported parts of autograd and the CPU kernels.
    layer = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten()
    )
    out = layer(torch.randn(2, 3, 6, 6))
    F.cross_entropy(out[:, :3], torch.tensor([0, 1])).backward()


def _validate(request: dict[str, Any], channel: Channel) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    source: str = request["source"]
    input_shape = tuple(int(v) for v in request["input_shape"])
    num_classes = int(request["num_classes"])
    batch = int(request["batch_size"])
    max_parameters = int(request["max_parameters"])
    max_step = request.get("max_step_seconds")
    memory_mb = int(request["memory_mb"])
    result: dict[str, Any] = {"ok": False, "warnings": []}
    stage = "static"

    def enter(name: str) -> None:
        nonlocal stage
        stage = name
        channel.send("stage", stage=name)

    try:
        if not request.get("unchecked"):
            check_source(source)
        enter("import")
        module = model_contract.exec_model_source(
            source, MODULE_NAME, filename=MODEL_FILENAME, restricted=not request.get("unchecked")
        )
        contract = model_contract.contract_of(module)

        enter("build")
        model = contract.build(input_shape, num_classes)
        if not isinstance(model, nn.Module):
            raise _Failure(f"the model file built a {type(model).__name__}, not a torch.nn.Module")
        parameters = sum(p.numel() for p in model.parameters())
        trainable = [p for p in model.parameters() if p.requires_grad]
        result["parameters"] = parameters
        result["trainable_parameters"] = sum(p.numel() for p in trainable)
        if parameters > max_parameters:
            raise _Failure(
                f"the model has {parameters:,} parameters; the limit is {max_parameters:,}"
            )
        if not trainable:
            raise _Failure("the model has no trainable parameters")
        loss_fn = contract.loss_for(model)
        result["custom_loss"] = loss_fn is not None
        if loss_fn is None:
            loss_fn = model_contract.default_loss()
        model.train()
        inputs = torch.randn(batch, *input_shape)
        targets = torch.randint(0, num_classes, (batch,))

        timings = []
        for attempt in range(2):
            started = time.perf_counter()
            enter("forward")
            outputs = model(inputs)
            if attempt == 0:
                _check_outputs(outputs, batch, num_classes, result)
            enter("loss")
            loss = loss_fn(outputs, targets)
            if attempt == 0:
                _check_loss(loss, result)
            enter("backward")
            model.zero_grad(set_to_none=True)
            loss.backward()
            timings.append(time.perf_counter() - started)
            if attempt == 0:
                enter("check")
                _check_gradients(model, result)
                if max_step is not None and timings[0] > 2 * float(max_step):
                    break  # far too slow already; no need to measure again
        step = min(timings)
        result["step_seconds"] = round(step, 4)
        enter("check")
        if max_step is not None and step > float(max_step):
            raise _Failure(
                f"one training step on a batch of {batch} takes {step:.2f} s on the CPU; "
                f"the limit is {float(max_step):g} s"
            )
        result["ok"] = True
        stage = "done"
    except _Failure as e:
        result["reason"] = str(e)
    except SandboxRejected as e:
        result["reason"] = e.message
    except (MemoryError, RuntimeError) as e:
        if _is_out_of_memory(e):
            result["reason"] = (
                f"exceeded the memory limit of {memory_mb} MB in {describe_stage(stage)}: "
                f"{type(e).__name__}: {_first_line(e)}"
            )
            result["error_type"] = type(e).__name__
        else:
            _describe_exception(e, stage, result)
    except BaseException as e:  # noqa: BLE001 - SystemExit and friends are the model's too
        _describe_exception(e, stage, result)
    result["stage"] = stage
    return result


def _check_outputs(outputs: Any, batch: int, num_classes: int, result: dict[str, Any]) -> None:
    import torch

    if isinstance(outputs, torch.Tensor):
        result["output_shape"] = list(outputs.shape)
    try:
        model_contract.check_outputs(outputs, batch, num_classes)
    except model_contract.ContractViolation as e:
        raise _Failure(e.message) from None
    if not bool(torch.isfinite(outputs).all()):
        raise _Failure("forward returned NaN or infinite logits on a random batch")


def _check_loss(loss: Any, result: dict[str, Any]) -> None:
    import torch

    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        value = float(loss.detach().reshape(()))
        result["loss"] = value if math.isfinite(value) else None
        if not math.isfinite(value):
            raise _Failure(f"the loss on a random batch is {value}, not a finite number")
    try:
        model_contract.check_loss(loss)
    except model_contract.ContractViolation as e:
        raise _Failure(e.message) from None


def _check_gradients(model: Any, result: dict[str, Any]) -> None:
    import torch

    missing, non_finite, reached = [], [], 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            missing.append(name)
        elif not bool(torch.isfinite(parameter.grad).all()):
            non_finite.append(name)
        else:
            reached += 1
    if non_finite:
        raise _Failure(
            "the gradients of " + _names(non_finite) + " are NaN or infinite on a random batch"
        )
    if not reached:
        raise _Failure("no gradient reaches any parameter: the loss does not depend on them")
    if missing:
        result["warnings"].append(
            "no gradient reaches "
            + _names(missing)
            + " (defined but unused in forward?); they will not train"
        )


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return any(
        marker in text
        for marker in ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def _describe_exception(e: BaseException, stage: str, result: dict[str, Any]) -> None:
    """The model's exception, trimmed to frames of the model's own code."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == MODEL_FILENAME]
    lines = ["Traceback (model code only):"]
    for frame in frames:
        lines.append(f'  File "model.py", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    message = "".join(traceback.format_exception_only(type(e), e)).strip()
    lines.append(message)
    result["traceback"] = "\n".join(lines)
    result["error_type"] = type(e).__name__
    where = ""
    if frames:
        last = frames[-1]
        where = f" at line {last.lineno} ({last.line.strip()})" if last.line else ""
    result["reason"] = (
        f"{describe_stage(stage)} failed{where}: {type(e).__name__}: {_first_line(e)}"
    )


if __name__ == "__main__":
    sys.exit(main())
