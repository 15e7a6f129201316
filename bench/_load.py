"""The ingest load generator: simulated workers posting epoch summaries over raw asyncio HTTP/1.1.

Run as its own process (``python -m bench._load CONFIG.json``) so that its CPU time is its own
and visible: it prints one JSON object with what it sent, what was acknowledged, the latency
of every request in the measured window, errors, and its own CPU seconds. Each simulated
worker holds one keep-alive connection and posts as fast as answers come back (a closed loop),
so the number of workers is the concurrency.

Targets: ``gradpilot`` (``POST /v1/jobs/{id}/summaries`` with the job's token; a batch of
``batch`` summaries per request) and ``mlflow`` (``POST /api/2.0/mlflow/runs/log-batch``, one
summary per request as ~200 metrics). A plain client instead of httpx: at thousands of requests
per second httpx alone would need a core, and the point is to measure the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench._summaries import SCALARS, load_summary


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; ``post`` returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        ).encode()
        self.writer.write(head + headers + b"\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value.strip())
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
            return status, data
        return status, await self.reader.readexactly(length or 0)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = None


def mlflow_metrics(summary: dict[str, Any], timestamp_ms: int) -> list[dict[str, Any]]:
    """The summary's numbers as MLflow metrics (what a user of MLflow would log per epoch)."""
    step = summary["epoch"]
    metrics = [
        {"key": k, "value": summary[k], "timestamp": timestamp_ms, "step": step} for k in SCALARS
    ]
    for stat in ("mean", "max", "min"):
        metrics.append(
            {
                "key": f"grad_total/{stat}",
                "value": summary["grad_total"][stat],
                "timestamp": timestamp_ms,
                "step": step,
            }
        )
    for name, stats in summary["grad_layers"].items():
        for stat in ("mean", "max", "min"):
            metrics.append(
                {
                    "key": f"grad/{name}/{stat}",
                    "value": stats[stat],
                    "timestamp": timestamp_ms,
                    "step": step,
                }
            )
    return metrics


class Worker:
    """One simulated worker: its target (a job or an MLflow run) and its epoch counter."""

    def __init__(self, cfg: dict[str, Any], target: dict[str, Any], index: int) -> None:
        self.kind = cfg["kind"]
        self.batch = int(cfg.get("batch", 1))
        self.tensors = int(cfg.get("tensors", 64))
        self.target = target
        self.epoch = int(target.get("epoch_start", 0))
        self.template = load_summary(0, self.tensors, seed=index)
        if self.kind == "gradpilot":
            self.path = f"/v1/jobs/{target['job_id']}/summaries"
            self.headers = f"Authorization: Bearer {target['token']}\r\n".encode()
        else:
            self.path = "/api/2.0/mlflow/runs/log-batch"
            self.headers = b""
        self.last_body: bytes | None = None

    def next_body(self) -> tuple[bytes, int]:
        """The next request's body and the number of summaries in it."""
        if self.kind == "gradpilot":
            summaries = []
            for _ in range(self.batch):
                s = dict(self.template)
                s["epoch"] = self.epoch
                self.epoch += 1
                summaries.append(s)
            return orjson.dumps({"summaries": summaries}), self.batch
        s = dict(self.template)
        s["epoch"] = self.epoch
        self.epoch += 1
        metrics = mlflow_metrics(s, int(time.time() * 1000))
        return orjson.dumps({"run_id": self.target["run_id"], "metrics": metrics}), 1


async def drive(cfg: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(cfg["url"])
    host, port = url.hostname or "127.0.0.1", int(url.port or 80)
    warmup_s, duration_s = float(cfg.get("warmup_s", 1.0)), float(cfg["duration_s"])
    workers = [Worker(cfg, t, i) for i, t in enumerate(cfg["targets"])]
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    out: dict[str, Any] = {
        "requests_ok": 0,
        "summaries_ok": 0,
        "accepted": 0,
        "duplicates": 0,
        "all_summaries_ok": 0,
        "all_accepted": 0,
        "errors": {},
        "latencies_ms": [],
    }

    def error(kind: str) -> None:
        out["errors"][kind] = out["errors"].get(kind, 0) + 1

    async def run(w: Worker) -> None:
        conn = Connection(host, port)
        while loop.time() < stop_at:
            body, n = w.next_body()
            sent = loop.time()
            try:
                status, reply = await conn.post(w.path, w.headers, body)
            except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as e:
                error(type(e).__name__)
                await conn.close()
                await asyncio.sleep(0.05)
                continue
            done = loop.time()
            if status != 200:
                error(f"HTTP {status}")
                if len(out.setdefault("error_samples", [])) < 3:
                    out["error_samples"].append(reply[:300].decode("utf-8", "replace"))
                continue
            accepted = n
            if w.kind == "gradpilot":
                ack = orjson.loads(reply)
                accepted = int(ack["accepted"])
                if sent >= measure_from:
                    out["duplicates"] += int(ack["duplicates"])
            out["all_summaries_ok"] += n
            out["all_accepted"] += accepted
            if measure_from <= sent and done <= stop_at:
                out["requests_ok"] += 1
                out["summaries_ok"] += n
                out["accepted"] += accepted
                out["latencies_ms"].append((done - sent) * 1000.0)
            w.last_body = body
        await conn.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(run(w) for w in workers))
    out["cpu_s"] = time.process_time() - cpu0
    out["wall_s"] = loop.time() - start
    out["measured_s"] = duration_s
    out["next_epochs"] = [w.epoch for w in workers]
    # Re-post the last body of a few workers: an idempotent API counts them as duplicates.
    if cfg.get("repost_last"):
        reposted = {"summaries": 0, "accepted": 0, "duplicates": 0}
        for w in workers[: int(cfg["repost_last"])]:
            if w.last_body is None:
                continue
            conn = Connection(host, port)
            status, reply = await conn.post(w.path, w.headers, w.last_body)
            await conn.close()
            if status == 200 and w.kind == "gradpilot":
                ack = orjson.loads(reply)
                reposted["summaries"] += w.batch
                reposted["accepted"] += int(ack["accepted"])
                reposted["duplicates"] += int(ack["duplicates"])
        out["reposted"] = reposted
    return out


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    with open(args[0]) as f:
        cfg = json.load(f)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        result = asyncio.run(drive(cfg))
    else:
        result = uvloop.run(drive(cfg))
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
