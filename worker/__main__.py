"""``python -m worker``: train one job segment and exit with a code the scheduler understands.

Environment (names in ``service.schemas.worker_env``): ``GRADPILOT_API_URL``,
``GRADPILOT_JOB_ID``, ``GRADPILOT_JOB_TOKEN`` (required);
``GRADPILOT_SPOOL_DIR`` (where unsent reports wait; default: the temp folder),
``GRADPILOT_FINISH_DEADLINE_S`` (how long to wait out an unreachable API at the end, 300),
``GRADPILOT_DATA_DIR`` (CIFAR files when the spec names none), ``GRADPILOT_AWS_ENDPOINT_URL``
and ``AWS_*`` (an s3:// artifact store). Under ``torchrun`` it trains with DDP.

Exit codes (``service.schemas.exit_codes``): 0 success; 3 the model's code raised (not retryable);
4 infrastructure (retryable); 5 stopped by SIGTERM or a cancel after a checkpoint (retryable,
resumes); 6 the spec could not be fetched or used (not retryable).
"""

from __future__ import annotations

import logging
import os
import sys

from service.schemas import exit_codes, worker_env
from service.schemas.jobs import JobFinish
from worker import distributed
from worker.client import ApiClient
from worker.errors import ApiUnavailable, BadSpecError, Preempted, classify
from worker.signals import StopFlag

log = logging.getLogger("worker")


def _configure_logging(rank: int) -> None:
    logging.basicConfig(
        level=os.environ.get(worker_env.LOG_LEVEL, "INFO").upper(),
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main() -> int:
    stop = StopFlag().install()
    try:
        # The supervisor joins no process group: the confined trainers do (worker.job).
        from worker.job import supervisor_context

        ctx = supervisor_context()
    except Exception:
        logging.basicConfig()
        log.exception("could not join the process group")
        return exit_codes.INFRASTRUCTURE_ERROR
    _configure_logging(ctx.rank)
    try:
        return _run(ctx, stop)
    finally:
        distributed.teardown(ctx)


def _run(ctx: distributed.Context, stop: StopFlag) -> int:
    missing = worker_env.missing(os.environ)
    if missing:
        log.error("missing environment: %s", ", ".join(missing))
        return exit_codes.BAD_SPEC
    deadline = worker_env.finish_deadline_s(os.environ)
    env = worker_env.WorkerEnvironment.from_env(os.environ)
    client = ApiClient(env.api_url, env.job_id, env.job_token)
    try:
        try:
            spec = client.get_spec()
        except BadSpecError as e:
            log.error("%s", e)
            return exit_codes.BAD_SPEC
        except ApiUnavailable as e:
            log.error("%s", e)
            return exit_codes.INFRASTRUCTURE_ERROR
        from worker.job import Job

        job = Job(
            spec,
            client if ctx.is_main else None,
            ctx,
            stop,
            finish_deadline_s=deadline,
            artifact_urls=client.artifact_urls,
        )
        try:
            return job.run()
        except Preempted as e:
            log.warning("stopped (%s) after a checkpoint", e)
            return exit_codes.PREEMPTED
        except ApiUnavailable as e:
            # Training is done or checkpointed; only the report is missing. A retry resumes
            # from the checkpoint and reports again.
            log.error("%s", e)
            return exit_codes.INFRASTRUCTURE_ERROR
        except Exception as e:
            failure = classify(e)
            log.error("job failed (%s):\n%s", failure.kind, failure.traceback)
            if ctx.is_main:
                try:
                    client.finish(
                        JobFinish(
                            status="failed",
                            error_kind=failure.kind,
                            exit_code=failure.exit_code,
                            message=failure.message[:20_000],
                            traceback=failure.traceback[-200_000:],
                        ),
                        deadline_s=min(deadline, 120.0),
                    )
                except Exception as report_error:
                    log.error("could not report the failure: %s", report_error)
            return failure.exit_code
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
