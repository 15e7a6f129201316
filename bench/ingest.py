"""Summary ingest: epoch summaries per second the API accepts, against MLflow and raw Postgres.

gradpilot's API (uvicorn with uvloop and httptools serving ``service.api.app.create_app`` on
a scratch Postgres database, migrated by ``service.db.migrate.upgrade``) takes epoch summaries
from 16 and 64 concurrent simulated workers, one summary per request and in batches of 10;
each summary carries mean/max/min for 64 parameter tensors and the total (plus six scalars:
201 numbers). The load comes from a separate process (``bench/_load.py``, raw asyncio HTTP/1.1,
one keep-alive connection per worker, closed loop), so its CPU cost is its own and printed,
beside the API's and Postgres's. Afterwards the rows are counted: none may be lost or stored
twice, and re-posting a batch must be reported as duplicates.

Side by side, on the same machine and Postgres server:

- **MLflow** (``mlflow server`` on its own scratch database, same number of workers) logging
  the same numbers with ``log_batch``, one summary (201 metrics) per call, one MLflow run per
  worker; its ``metrics`` rows are counted too. Skipped, with the reason printed, when MLflow
  is not installed (``pip install -e '.[bench]'``).
- **The raw ceiling**: psycopg inserting the same rows into the same table, ``executemany`` in
  transactions of 1,000 rows, and ``COPY``, from one connection, with the JSON already
  serialised.

Targets (issue 8), at 16 clients: ≥ 2,000 single-summary posts/s, ≥ 6,000 summaries/s in
batches, p99 ≤ 100 ms for single posts; no error at 64 clients; no lost or duplicated rows.

    python -m bench.ingest [--tiny] [--duration S] [--api-workers N] [--no-mlflow] [--json]
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import _common, _procs
from bench._summaries import load_summary, metric_count
from tests.support import postgres
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import stop, wait_for_http

USER_TOKEN = "bench-ingest-user-token-0123456789"
TENSORS = 64
TARGET_SINGLE = 2000.0
TARGET_BATCHED = 6000.0
TARGET_P99_MS = 100.0


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def api_server(
    db_url: str, home: Path, workers: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """uvicorn serving the API factory (``bench._ingest_app:make_app``) on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADPILOT_")}
    env.update(
        GRADPILOT_DATABASE_URL=db_url,
        GRADPILOT_HOME=str(home),
        GRADPILOT_API_TOKENS=json.dumps([USER_TOKEN]),
        PYTHONPATH=str(_common.ROOT),
    )
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "bench._ingest_app:make_app",
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--workers", str(workers), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=_common.ROOT, env=env)
    try:
        wait_for_port(port, 120, process)
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)


@contextlib.contextmanager
def mlflow_server(
    db_url: str, home: Path, workers: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mlflow server`` on its own database (it creates its tables at start)."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server", "--backend-store-uri", db_url,
        "--default-artifact-root", (home / "mlartifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"}
    log = open(home / "mlflow-server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 300, process)
        wait_for_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)
        log.close()


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- load


def seed_jobs(db_url: str, n: int) -> list[dict[str, Any]]:
    """One run with ``n`` jobs (segments long enough for any test), each with its token."""
    from service import auth
    from service.db.models import Architecture, Job, Run
    from service.db.session import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    targets = []
    with make_sessionmaker(engine)() as session:
        run = Run(
            name="ingest benchmark",
            status="running",
            dataset={"name": "synthetic"},
            hyperparameters={},
            budget={"epochs_per_job": 1_000_000, "max_jobs": 1000},
            resources={},
            advisor="rules",
        )
        session.add(run)
        session.flush()
        session.add(Architecture(run_id=run.id, version=0, source="# bench", sha256="0" * 64))
        for i in range(n):
            job = Job(
                run_id=run.id,
                generation=i,
                attempt=1,
                architecture_version=0,
                hyperparameters={},
                epoch_start=0,
                epochs=10_000_000,
                schedule_total_epochs=10_000_000,
                status="running",
            )
            session.add(job)
            session.flush()
            targets.append({"job_id": job.id, "token": auth.mint_job_token(session, job.id)})
        session.commit()
    engine.dispose()
    return targets


def run_load(cfg: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Run the load generator process; its JSON result."""
    path = tmp / f"load-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(_common.ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench._load", str(path)],
        cwd=_common.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=cfg["warmup_s"] + cfg["duration_s"] + 300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def measured(
    cfg: dict[str, Any], tmp: Path, server_pid: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one load and summarise it with the CPU each party used."""
    api0, pg0 = _procs.tree_cpu_seconds(server_pid), _procs.postgres_cpu()
    wall0 = time.perf_counter()
    raw = run_load(cfg, tmp)
    wall = time.perf_counter() - wall0
    api_cpu = _procs.tree_cpu_seconds(server_pid) - api0
    pg_cpu = _procs.cpu_since(pg0, _procs.postgres_cpu())
    lat = raw["latencies_ms"]
    span = raw["wall_s"]
    stored = raw["all_summaries_ok"]
    summary = {
        "clients": len(cfg["targets"]),
        "batch": cfg.get("batch", 1),
        "seconds": cfg["duration_s"],
        "requests_per_s": raw["requests_ok"] / cfg["duration_s"],
        "summaries_per_s": raw["summaries_ok"] / cfg["duration_s"],
        "p50_ms": _common.percentile(lat, 50),
        "p99_ms": _common.percentile(lat, 99),
        "max_ms": max(lat) if lat else None,
        "errors": sum(raw["errors"].values()),
        "error_kinds": raw["errors"],
        "error_samples": raw.get("error_samples", []),
        # CPU over the generator's whole life (warm-up included), in cores.
        "cpu_cores": {
            "load_generator": raw["cpu_s"] / span,
            "server": api_cpu / wall,
            "postgres": pg_cpu / wall,
        },
        # CPU time per stored summary: what the design costs, whatever else runs on the machine.
        "cpu_ms_per_summary": {
            "server": 1000 * api_cpu / stored if stored else None,
            "postgres": 1000 * pg_cpu / stored if stored else None,
        },
        "duplicates_reported": raw["duplicates"],
    }
    return summary, raw


def verify_gradpilot_rows(
    db_url: str, targets: list[dict[str, Any]], raw: dict[str, Any]
) -> dict[str, Any]:
    """Rows stored for these jobs against what was sent and acknowledged."""
    import psycopg

    ids = [t["job_id"] for t in targets]
    sent = sum(raw["next_epochs"])
    with psycopg.connect(postgres.libpq_url(db_url)) as conn:
        rows, distinct, beyond = conn.execute(
            "SELECT count(*), count(DISTINCT (job_id, epoch)), "
            "count(*) FILTER (WHERE epoch < 0) FROM epoch_summaries WHERE job_id = ANY(%s)",
            (ids,),
        ).fetchone()  # type: ignore[misc]
    acked = raw["all_accepted"]
    errors = sum(raw["errors"].values())
    return {
        "summaries_sent": sent,
        "acknowledged": acked,
        "rows": rows,
        "lost": max(0, acked - rows),
        "duplicated": rows - distinct,
        "unacknowledged_but_stored": max(0, rows - acked),
        "errors": errors,
        "reposted": raw.get("reposted"),
        "ok": rows == distinct and rows >= acked and beyond == 0 and (errors > 0 or rows == sent),
    }


def gradpilot_part(
    db_url: str,
    tmp: Path,
    configs: list[tuple[int, int]],
    duration: float,
    warmup: float,
    workers: int,
) -> dict[str, Any]:
    from service.db.migrate import upgrade

    upgrade(db_url)
    results = []
    with api_server(db_url, tmp / "home", workers) as (url, process):
        for clients, batch in configs:
            targets = seed_jobs(db_url, clients)
            cfg = {
                "kind": "gradpilot",
                "url": url,
                "targets": targets,
                "batch": batch,
                "tensors": TENSORS,
                "warmup_s": warmup,
                "duration_s": duration,
                "repost_last": 4,
            }
            summary, raw = measured(cfg, tmp, process.pid)
            summary["rows"] = verify_gradpilot_rows(db_url, targets, raw)
            results.append(summary)
            _progress(f"gradpilot {clients} clients × {batch}", summary)
    return {"api_workers": workers, "results": results}


def mlflow_part(
    db_url: str, tmp: Path, clients_list: list[int], duration: float, warmup: float, workers: int
) -> dict[str, Any]:
    import psycopg

    started = time.perf_counter()
    with mlflow_server(db_url, tmp, workers) as (url, process):
        startup_s = time.perf_counter() - started
        experiment = _post_json(
            f"{url}/api/2.0/mlflow/experiments/create", {"name": f"bench-{time.time_ns()}"}
        )["experiment_id"]
        results = []
        for clients in clients_list:
            targets = []
            for i in range(clients):
                run = _post_json(
                    f"{url}/api/2.0/mlflow/runs/create",
                    {"experiment_id": experiment, "run_name": f"worker-{clients}-{i}"},
                )
                targets.append({"run_id": run["run"]["info"]["run_id"]})
            cfg = {
                "kind": "mlflow",
                "url": url,
                "targets": targets,
                "batch": 1,
                "tensors": TENSORS,
                "warmup_s": warmup,
                "duration_s": duration,
            }
            summary, raw = measured(cfg, tmp, process.pid)
            per = metric_count(load_summary(0, TENSORS))
            with psycopg.connect(postgres.libpq_url(db_url)) as conn:
                rows, distinct = conn.execute(
                    "SELECT count(*), count(DISTINCT (run_uuid, key, step, timestamp, value)) "
                    "FROM metrics WHERE run_uuid = ANY(%s)",
                    ([t["run_id"] for t in targets],),
                ).fetchone()  # type: ignore[misc]
            expected = raw["all_summaries_ok"] * per
            summary["metrics_per_call"] = per
            summary["rows"] = {
                "metric_rows": rows,
                "acknowledged_metric_rows": expected,
                "lost": max(0, expected - rows),
                "duplicated": rows - distinct,
                "ok": rows >= expected and rows == distinct,
            }
            results.append(summary)
            _progress(f"MLflow {clients} clients", summary)
    return {"workers": workers, "startup_s": startup_s, "results": results}


# --------------------------------------------------------------------------- raw ceiling

_COLUMNS = (
    "job_id, run_id, epoch, train_loss, val_loss, train_accuracy, val_accuracy, learning_rate, "
    "grad_total, grad_layers, weight_norms, nonfinite_steps, steps, seconds, samples_per_second, "
    "created_at"
)


def raw_part(db_url: str, n_rows: int) -> dict[str, Any]:
    """psycopg inserting the rows the API would store (JSON pre-serialised), one connection:
    ``executemany`` and ``COPY`` into ``epoch_summaries`` as migrated, and ``COPY`` into a copy
    of it whose ``grad_layers`` is compressed with lz4 instead of Postgres's default pglz (the
    per-tensor JSON, ~6.6 KB a row, is compressed on every insert: that is most of a row's cost).
    """
    import psycopg

    out: dict[str, Any] = {"rows": n_rows}
    for method in ("executemany", "copy", "copy_lz4"):
        job = seed_jobs(db_url, 1)[0]
        with psycopg.connect(postgres.libpq_url(db_url)) as conn:
            table = "epoch_summaries"
            if method == "copy_lz4":
                table = "bench_summaries_lz4"
                conn.execute(
                    f"CREATE TABLE {table} (LIKE epoch_summaries INCLUDING DEFAULTS "
                    "INCLUDING CONSTRAINTS INCLUDING INDEXES)"
                )
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN grad_layers SET COMPRESSION lz4")
                conn.commit()
            run_id = conn.execute(
                "SELECT run_id FROM jobs WHERE id = %s", (job["job_id"],)
            ).fetchone()[0]  # type: ignore[index]
            rows = []
            now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
            for epoch in range(n_rows):
                s = load_summary(epoch, TENSORS, seed=epoch % 16)
                rows.append(
                    (
                        job["job_id"], run_id, s["epoch"], s["train_loss"], s["val_loss"],
                        s["train_accuracy"], s["val_accuracy"], s["learning_rate"],
                        json.dumps(s["grad_total"]), json.dumps(s["grad_layers"]),
                        json.dumps(s["weight_norms"]), s["nonfinite_steps"], s["steps"],
                        s["seconds"], s["samples_per_second"], now,
                    )
                )  # fmt: skip
            pg0 = _procs.postgres_cpu()
            cpu0 = time.process_time()
            start = time.perf_counter()
            with conn.cursor() as cur:
                for i in range(0, n_rows, 1000):
                    chunk = rows[i : i + 1000]
                    if method == "executemany":
                        cur.executemany(_RAW_INSERT, chunk)
                    else:
                        with cur.copy(f"COPY {table} ({_COLUMNS}) FROM STDIN") as copy:
                            for row in chunk:
                                copy.write_row(row)
                    conn.commit()
            seconds = time.perf_counter() - start
            # Read the backend's CPU while its connection (and process) still lives.
            pg_cpu = _procs.cpu_since(pg0, _procs.postgres_cpu())
            cpu = time.process_time() - cpu0
            stored = conn.execute(
                f"SELECT count(*) FROM {table} WHERE job_id = %s", (job["job_id"],)
            ).fetchone()[0]  # type: ignore[index]
        out[method] = {
            "rows_per_s": n_rows / seconds,
            "seconds": seconds,
            "stored": stored,
            "cpu_cores": {"client": cpu / seconds, "postgres": pg_cpu / seconds},
        }
        _progress(f"raw {method}", {"rows_per_s": out[method]["rows_per_s"]})
    return out


_RAW_INSERT = (
    f"INSERT INTO epoch_summaries ({_COLUMNS}) VALUES ("
    + ", ".join("%s::jsonb" if i == 8 else "%s::json" if i in (9, 10) else "%s" for i in range(16))
    + ")"
)


def _progress(what: str, summary: dict[str, Any]) -> None:
    keys = ("requests_per_s", "summaries_per_s", "p50_ms", "p99_ms", "errors", "rows_per_s")
    shown = {k: round(summary[k], 1) for k in keys if summary.get(k) is not None}
    print(f"  {what}: {shown}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    p.add_argument("--duration", type=float, help="measured seconds per configuration")
    p.add_argument(
        "--api-workers",
        type=int,
        help="uvicorn worker processes (default: 1 and 2, each measured; tiny: 1)",
    )
    p.add_argument("--mlflow-workers", type=int, default=2, help="mlflow server --workers")
    p.add_argument("--no-mlflow", action="store_true", help="skip the MLflow comparison")
    args = p.parse_args(argv)
    duration = args.duration or (2.0 if args.tiny else 8.0)
    warmup = 0.5 if args.tiny else 1.5
    # MLflow answers a log_batch in ~0.1-1 s here: a longer window, so that whole requests land.
    ml_duration = max(duration, 8.0 if args.tiny else 15.0)
    workers = [args.api_workers] if args.api_workers else [1] if args.tiny else [1, 2]
    configs = [(16, 1), (16, 10)] if args.tiny else [(16, 1), (16, 10), (64, 1), (64, 10)]
    report: dict[str, Any] = {
        "benchmark": "ingest",
        "tensors_per_summary": TENSORS,
        "metrics_per_summary": metric_count(load_summary(0, TENSORS)),
        "duration_s": duration,
    }
    why_not = postgres.unavailable_reason(postgres.BENCH_ADMIN)
    if why_not:
        report["skipped"] = why_not
        report["headline"] = []
        return _common.finish(report, args, print_report)
    with tempfile.TemporaryDirectory(prefix="gp-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "home").mkdir()
        with postgres.scratch_database("gradpilot_bench", postgres.BENCH_ADMIN) as db_url:
            report["gradpilot_by_workers"] = [
                gradpilot_part(db_url, tmp, configs, duration, warmup, w) for w in workers
            ]
            report["raw"] = raw_part(db_url, 2000 if args.tiny else 20000)
        if args.no_mlflow:
            report["mlflow_skipped"] = "--no-mlflow"
        elif importlib.util.find_spec("mlflow") is None:
            report["mlflow_skipped"] = (
                "MLflow is not installed (pip install -e '.[bench]' installs it)"
            )
        else:
            with postgres.scratch_database(
                "gradpilot_bench_mlflow", postgres.BENCH_ADMIN
            ) as ml_url:
                clients = [16] if args.tiny else [16, 64]
                report["mlflow"] = mlflow_part(
                    ml_url, tmp, clients, ml_duration, 3.0, args.mlflow_workers
                )
    # The headline takes the worker count that ingested single posts fastest at 16 clients.
    report["gradpilot"] = max(
        report["gradpilot_by_workers"],
        key=lambda part: (_find(part["results"], 16, 1) or {}).get("summaries_per_s", 0),
    )
    report = _common.round_floats(report)
    report["headline"] = headline_rows(report)
    return _common.finish(report, args, print_report)


def _find(results: list[dict[str, Any]], clients: int, batch: int) -> dict[str, Any] | None:
    return next((r for r in results if r["clients"] == clients and r["batch"] == batch), None)


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    gp = report["gradpilot"]["results"]
    ml = report.get("mlflow", {}).get("results", [])
    raw = report["raw"]
    ml16 = _find(ml, 16, 1)
    ml_rate = ml16["summaries_per_s"] if ml16 else None
    rows = []
    single, batched = _find(gp, 16, 1), _find(gp, 16, 10)
    if single:
        rows.append(
            _common.headline(
                "ingest 16 clients, 1 summary/request",
                single["summaries_per_s"],
                "/s",
                baseline=ml_rate,
                baseline_name="MLflow log_batch, 16 clients" if ml_rate else None,
                target="≥ 2,000 /s",
                met=single["summaries_per_s"] >= TARGET_SINGLE,
                note=f"server CPU {single['cpu_ms_per_summary']['server']:.2f} ms and Postgres "
                f"{single['cpu_ms_per_summary']['postgres']:.2f} ms per summary; raw executemany "
                f"{raw['executemany']['rows_per_s']:.0f} rows/s, "
                f"COPY {raw['copy']['rows_per_s']:.0f}, COPY with lz4 "
                f"{raw['copy_lz4']['rows_per_s']:.0f} rows/s",
            )
        )
        rows.append(
            _common.headline(
                "ingest p99 latency, 16 clients, single",
                single["p99_ms"],
                "ms",
                baseline=ml16["p99_ms"] if ml16 else None,
                baseline_name="MLflow p99, 16 clients" if ml16 else None,
                target="≤ 100 ms",
                met=single["p99_ms"] is not None and single["p99_ms"] <= TARGET_P99_MS,
            )
        )
    if batched:
        rows.append(
            _common.headline(
                "ingest 16 clients, batches of 10",
                batched["summaries_per_s"],
                "/s",
                baseline=raw["executemany"]["rows_per_s"],
                baseline_name="raw psycopg executemany (the ceiling)",
                target="≥ 6,000 /s",
                met=batched["summaries_per_s"] >= TARGET_BATCHED,
            )
        )
    at64 = [r for r in gp if r["clients"] == 64]
    if at64:
        ml64 = _find(ml, 64, 1)
        rows.append(
            _common.headline(
                "ingest errors at 64 clients",
                sum(r["errors"] for r in at64),
                "",
                baseline=ml64["errors"] if ml64 else None,
                baseline_name="MLflow errors at 64 clients" if ml64 else None,
                target="0",
                met=sum(r["errors"] for r in at64) == 0,
            )
        )
    bad = [r for r in gp if not r["rows"]["ok"]]
    rows.append(
        _common.headline(
            "ingest lost + duplicated rows",
            sum(r["rows"]["lost"] + r["rows"]["duplicated"] for r in gp),
            "rows",
            target="0",
            met=not bad,
            note=f"{sum(r['rows']['rows'] for r in gp):,} rows checked",
        )
    )
    return rows


def print_report(report: dict[str, Any]) -> None:
    if report.get("skipped"):
        print(f"ingest skipped: {report['skipped']}")
        return
    print(
        f"Summary ingest ({report['metrics_per_summary']} numbers per summary, "
        f"{report['duration_s']} s per configuration; CPU in cores used)"
    )
    print(
        f"\n{'system':12} {'clients':>7} {'batch':>5} {'summaries/s':>12} {'requests/s':>11} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'rows ok':>8} "
        f"{'cpu: load':>10} {'server':>7} {'postgres':>9} {'ms/summary: server':>19} "
        f"{'postgres':>9}"
    )
    systems = [
        (f"gradpilot w{part['api_workers']}", part["results"])
        for part in report["gradpilot_by_workers"]
    ]
    if "mlflow" in report:
        systems.append((f"MLflow w{report['mlflow']['workers']}", report["mlflow"]["results"]))
    for name, results in systems:
        for r in results:
            c = r["cpu_cores"]
            print(
                f"{name:12} {r['clients']:>7} {r['batch']:>5} {r['summaries_per_s']:>12,.0f} "
                f"{r['requests_per_s']:>11,.0f} {_common.fmt(r['p50_ms']):>8} "
                f"{_common.fmt(r['p99_ms']):>8} {r['errors']:>7} {_common.fmt(r['rows']['ok']):>8} "
                f"{c['load_generator']:>10.2f} {c['server']:>7.2f} {c['postgres']:>9.2f} "
                f"{_common.fmt(r['cpu_ms_per_summary']['server']):>19} "
                f"{_common.fmt(r['cpu_ms_per_summary']['postgres']):>9}"
            )
    raw = report["raw"]
    for method in ("executemany", "copy", "copy_lz4"):
        m = raw[method]
        print(
            f"{'raw ' + method:24} {m['rows_per_s']:>12,.0f} rows/s "
            f"({raw['rows']:,} rows; client {m['cpu_cores']['client']:.2f}, "
            f"postgres {m['cpu_cores']['postgres']:.2f} cores)"
        )
    if report.get("mlflow_skipped"):
        print(f"MLflow skipped: {report['mlflow_skipped']}")
    elif "mlflow" in report:
        print(f"MLflow server start-up (its migrations): {report['mlflow']['startup_s']} s")
    for r in report["gradpilot"]["results"]:
        rows = r["rows"]
        print(
            f"rows, {r['clients']} clients × {r['batch']}: sent {rows['summaries_sent']:,}, "
            f"acknowledged {rows['acknowledged']:,}, stored {rows['rows']:,}, lost "
            f"{rows['lost']}, duplicated {rows['duplicated']}; re-posted {rows['reposted']}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
