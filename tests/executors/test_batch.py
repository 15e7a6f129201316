"""The AWS Batch executor: requests under moto, status mapping and retries under a Stubber
(moto ignores retry strategies and never fails a job the way AWS does), error translation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber

from service.errors import ExecutorError, InvalidInput
from service.executors import Executor
from service.executors.batch import (
    CANCEL_PREFIX,
    BatchExecutor,
    TransientExecutorError,
    make_batch_client,
    parse_log_location,
    resolve_array_environment,
    retry_strategy,
)
from service.schemas.exit_codes import (
    BAD_SPEC,
    CODE_ERROR,
    INFRASTRUCTURE_ERROR,
    PREEMPTED,
    SUCCESS,
)
from service.settings import Settings
from tests.support.factories import submission
from tests.support.moto import batch_settings, moto_batch_stack

# -- under moto ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    with moto_batch_stack() as outputs:
        yield outputs


@pytest.fixture
def executor(stack: dict[str, str], tmp_path: Path) -> Iterator[BatchExecutor]:
    ex = BatchExecutor(batch_settings(stack, tmp_path))
    yield ex
    ex.close()


def _capture(executor: BatchExecutor, operation: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        seen.append(json.loads(json.dumps(params)))

    executor.client.meta.events.register(f"provide-client-params.batch.{operation}", hook)
    return seen


def test_is_an_executor(executor: BatchExecutor) -> None:
    assert isinstance(executor, Executor)
    assert executor.name == "batch"


def test_submit_sends_the_worker_request(executor: BatchExecutor, stack: dict[str, str]) -> None:
    sent = _capture(executor, "SubmitJob")
    job = submission("gp-01234567-g1-a1")

    job_id = executor.submit(job)

    (request,) = sent
    assert request["jobName"] == "gp-01234567-g1-a1"
    assert request["jobQueue"] == stack["JobQueueName"]
    assert request["jobDefinition"] == stack["JobDefinitionName"]
    overrides = request["containerOverrides"]
    env = {e["name"]: e["value"] for e in overrides["environment"]}
    assert env == job.environment
    assert overrides["resourceRequirements"] == [
        {"type": "GPU", "value": "1"},
        {"type": "VCPU", "value": "4"},
        {"type": "MEMORY", "value": "15000"},
    ]
    assert overrides["command"] == ["python", "-m", "worker"]
    assert request["retryStrategy"] == retry_strategy()
    assert request["timeout"] == {"attemptDurationSeconds": 3600}
    assert request["tags"]["gradpilot:run"] == job.run_id
    assert request["tags"]["gradpilot:attempt"] == "1"
    # What Batch stored: the worker's environment comes back from describe_jobs.
    described = executor.describe([job_id])[job_id]
    stored = {e["name"]: e["value"] for e in described["container"]["environment"]}
    assert stored["GRADPILOT_JOB_TOKEN"] == "token-gp-01234567-g1-a1"
    assert stored["GRADPILOT_ARTIFACT_URL"] == stack["ArtifactUrl"]  # from the job definition


def test_several_gpus_run_torchrun(executor: BatchExecutor) -> None:
    sent = _capture(executor, "SubmitJob")
    executor.submit(submission("gp-01234567-g2-a1", gpus=4, vcpus=48, memory_mib=180000))
    overrides = sent[0]["containerOverrides"]
    assert overrides["command"] == [
        "torchrun",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "worker",
    ]
    assert {"type": "GPU", "value": "4"} in overrides["resourceRequirements"]
    assert {"type": "VCPU", "value": "48"} in overrides["resourceRequirements"]


def test_submit_is_idempotent_by_name_across_processes(
    executor: BatchExecutor, stack: dict[str, str], tmp_path: Path
) -> None:
    job = submission("gp-01234567-g3-a1")
    first = executor.submit(job)
    assert executor.submit(job) == first
    # A fresh process (a restarted controller) remembers nothing and asks Batch by name.
    other = BatchExecutor(batch_settings(stack, tmp_path))
    sent = _capture(other, "SubmitJob")
    assert other.submit(job) == first
    assert sent == []
    listed = other.client.list_jobs(
        jobQueue=stack["JobQueueName"],
        filters=[{"name": "JOB_NAME", "values": ["gp-01234567-g3-a1"]}],
    )["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [first]
    # Another attempt is another job.
    assert executor.submit(submission("gp-01234567-g3-a2")) != first


def test_retry_after_a_timed_out_submit_does_not_submit_twice(
    executor: BatchExecutor, stack: dict[str, str]
) -> None:
    """Batch accepted the job but the response was lost: the caller's retry finds it."""

    def lose_response(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://batch.us-east-1.amazonaws.com")

    executor.client.meta.events.register_first("after-call.batch.SubmitJob", lose_response)
    job = submission("gp-01234567-g4-a1")
    with pytest.raises(TransientExecutorError, match="transient"):
        executor.submit(job)
    executor.client.meta.events.unregister("after-call.batch.SubmitJob", lose_response)

    job_id = executor.submit(job)
    listed = executor.client.list_jobs(
        jobQueue=stack["JobQueueName"],
        filters=[{"name": "JOB_NAME", "values": [job.name]}],
    )["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [job_id]


def test_status_and_log_location_of_a_finished_job(
    executor: BatchExecutor, stack: dict[str, str]
) -> None:
    job_id = executor.submit(submission("gp-01234567-g5-a1"))
    status = executor.status([job_id, "no-such-job"])
    assert status[job_id].state == "succeeded"
    assert status[job_id].infrastructure_failure is False
    assert status["no-such-job"].state == "unknown"
    location = executor.log_location(job_id)
    assert location is not None and location.startswith("cloudwatch://")
    group, stream = parse_log_location(location)
    assert group == stack["LogGroupName"]  # from the job definition's awslogs options
    assert job_id in stream
    assert status[job_id].log_location == location
    assert executor.log_locations(job_id) == [location]


def test_a_missing_queue_names_the_setting(stack: dict[str, str], tmp_path: Path) -> None:
    executor = BatchExecutor(batch_settings(stack, tmp_path, batch_job_queue="no-such-queue"))
    with pytest.raises(ExecutorError) as info:
        executor.submit(submission("gp-01234567-g6-a1"))
    assert "GRADPILOT_BATCH_JOB_QUEUE" in info.value.message
    assert "gradpilot infra deploy" in info.value.message
    assert not isinstance(info.value, TransientExecutorError)


def test_a_missing_job_definition_names_the_setting(stack: dict[str, str], tmp_path: Path) -> None:
    executor = BatchExecutor(batch_settings(stack, tmp_path, batch_job_definition="no-such-def"))
    with pytest.raises(ExecutorError) as info:
        executor.submit(submission("gp-01234567-g7-a1"))
    assert "GRADPILOT_BATCH_JOB_DEFINITION" in info.value.message
    assert "gradpilot infra deploy" in info.value.message


def test_bad_job_names_are_refused(executor: BatchExecutor) -> None:
    with pytest.raises(InvalidInput, match="job name"):
        executor.submit(submission("bad name with spaces"))


def test_array_job_gives_each_candidate_its_own_environment(executor: BatchExecutor) -> None:
    candidates = [submission(f"gp-01234567-g8-a1-c{i}") for i in range(3)]
    sent = _capture(executor, "SubmitJob")

    ids = executor.submit_array(candidates, name="gp-01234567-g8-a1-x3")

    parent = ids[0].split(":")[0]
    assert ids == [f"{parent}:{i}" for i in range(3)]
    assert sent[0]["arrayProperties"] == {"size": 3}
    statuses = executor.status(ids)
    assert [statuses[i].state for i in ids] == ["succeeded"] * 3
    assert [statuses[i].extra["array_index"] for i in ids] == ["0", "1", "2"]
    for index, child in enumerate(ids):
        # What a child container sees: the array's environment plus its own index.
        described = executor.describe([child])[child]
        env = {e["name"]: e["value"] for e in described["container"]["environment"]}
        resolved = resolve_array_environment(env, index)
        assert resolved["GRADPILOT_JOB_ID"] == candidates[index].environment["GRADPILOT_JOB_ID"]
        assert resolved["GRADPILOT_JOB_TOKEN"] == f"token-{candidates[index].name}"
        assert resolved["GRADPILOT_API_URL"] == "http://api:8765"
    # Resubmitting the same array finds it.
    assert executor.submit_array(candidates, name="gp-01234567-g8-a1-x3") == ids
    assert len(sent) == 1


def test_array_candidates_must_share_resources(executor: BatchExecutor) -> None:
    with pytest.raises(InvalidInput, match="same gpus"):
        executor.submit_array(
            [submission("gp-01234567-g9-a1-c0"), submission("gp-01234567-g9-a1-c1", gpus=2)]
        )


# -- retry strategy and status mapping (moto stores neither behaviour) ----------------------


def test_retry_strategy_retries_spot_reclaims_and_retryable_exits_only() -> None:
    strategy = retry_strategy()
    assert strategy["attempts"] == 3
    rules = strategy["evaluateOnExit"]
    assert len(rules) <= 5  # AWS's limit
    assert rules[0] == {"onStatusReason": "Host EC2*", "action": "RETRY"}
    retried = {r["onExitCode"] for r in rules if r["action"] == "RETRY" and "onExitCode" in r}
    assert retried == {str(INFRASTRUCTURE_ERROR), str(PREEMPTED)}
    assert {"onExitCode": str(CODE_ERROR), "action": "EXIT"} in rules
    # Batch retries a job that matches no rule: the last rule must exit on anything.
    assert rules[-1] == {"onReason": "*", "action": "EXIT"}
    for code in (CODE_ERROR, BAD_SPEC, 1, 137):
        assert _first_match(rules, exit_code=code, status_reason="Essential container exited") == (
            "EXIT"
        )
    assert _first_match(rules, exit_code=None, status_reason="Host EC2 (instance i-1) terminated.")
    assert _first_match(rules, exit_code=PREEMPTED, status_reason="x") == "RETRY"


def _first_match(rules: list[dict[str, str]], *, exit_code: int | None, status_reason: str) -> str:
    """Batch's evaluation: the first rule whose every condition's glob matches decides."""

    def glob(pattern: str, value: str | None) -> bool:
        if value is None:
            return False
        return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern

    for rule in rules:
        checks = [
            ("onExitCode", None if exit_code is None else str(exit_code)),
            ("onStatusReason", status_reason),
            ("onReason", status_reason),
        ]
        if all(glob(rule[key], value) for key, value in checks if key in rule):
            return rule["action"]
    return "RETRY"


NOW = 1_700_000_000.0


def _job(status: str, **fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "jobName": "gp-01234567-g1-a1",
        "jobId": "job-1",
        "jobQueue": "arn:aws:batch:us-east-1:123456789012:job-queue/gradpilot-gpu",
        "status": status,
        "startedAt": int(NOW * 1000),
        "createdAt": int((NOW - 60) * 1000),
        "jobDefinition": "arn:aws:batch:us-east-1:123456789012:job-definition/gradpilot-worker:1",
        "container": {
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": "/gradpilot/gradpilot/worker"},
            }
        },
    }
    job.update(fields)
    return job


def _stubbed(settings: Settings) -> tuple[BatchExecutor, Stubber]:
    client = boto3.client(
        "batch", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    return BatchExecutor(settings, client=client, clock=lambda: NOW), Stubber(client)


@pytest.fixture
def plain_settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        executor="batch",
        batch_job_queue="gradpilot-gpu",
        batch_job_definition="gradpilot-worker",
        artifact_url="s3://bucket/gradpilot",
        batch_runnable_timeout_s=1800,
    )


def _status_of(settings: Settings, job: dict[str, Any]):  # type: ignore[no-untyped-def]
    executor, stubber = _stubbed(settings)
    stubber.add_response("describe_jobs", {"jobs": [job]}, {"jobs": [job["jobId"]]})
    with stubber:
        result = executor.status([job["jobId"]])[job["jobId"]]
    stubber.assert_no_pending_responses()
    return result


@pytest.mark.parametrize(
    ("batch_status", "state"),
    [
        ("SUBMITTED", "submitted"),
        ("PENDING", "submitted"),
        ("RUNNABLE", "submitted"),
        ("STARTING", "submitted"),
        ("RUNNING", "running"),
        ("SUCCEEDED", "succeeded"),
    ],
)
def test_batch_states_map_to_executor_states(
    plain_settings: Settings, batch_status: str, state: str
) -> None:
    status = _status_of(plain_settings, _job(batch_status))
    assert status.state == state
    assert status.extra["batch_status"] == batch_status
    assert status.infrastructure_failure is False


def test_a_spot_reclaim_is_an_infrastructure_failure(plain_settings: Settings) -> None:
    job = _job(
        "FAILED",
        statusReason="Host EC2 (instance i-123) terminated.",
        attempts=[
            {
                "container": {"logStreamName": "gradpilot/default/a1"},
                "statusReason": "Host EC2 (instance i-123) terminated.",
                "stoppedAt": int(NOW * 1000),
            }
        ],
    )
    status = _status_of(plain_settings, job)
    assert status.state == "failed"
    assert status.infrastructure_failure is True
    assert status.reason == "Host EC2 (instance i-123) terminated."
    assert status.exit_code is None


def test_a_code_error_is_not_an_infrastructure_failure(plain_settings: Settings) -> None:
    job = _job(
        "FAILED",
        statusReason="Essential container in task exited",
        container={"exitCode": CODE_ERROR, "logStreamName": "gradpilot/default/a1"},
        attempts=[{"container": {"exitCode": CODE_ERROR, "logStreamName": "gradpilot/default/a1"}}],
    )
    status = _status_of(plain_settings, job)
    assert status.state == "failed"
    assert status.exit_code == CODE_ERROR
    assert status.infrastructure_failure is False
    assert "Essential container in task exited" in (status.reason or "")


@pytest.mark.parametrize("code", [INFRASTRUCTURE_ERROR, PREEMPTED])
def test_retryable_exit_codes_are_infrastructure_failures(
    plain_settings: Settings, code: int
) -> None:
    job = _job("FAILED", attempts=[{"container": {"exitCode": code}}])
    status = _status_of(plain_settings, job)
    assert (status.state, status.exit_code, status.infrastructure_failure) == ("failed", code, True)


def test_a_successful_exit_code_is_reported(plain_settings: Settings) -> None:
    job = _job("SUCCEEDED", attempts=[{"container": {"exitCode": SUCCESS}}])
    assert _status_of(plain_settings, job).exit_code == SUCCESS


def test_a_job_we_terminated_is_cancelled(plain_settings: Settings) -> None:
    job = _job("FAILED", statusReason=f"{CANCEL_PREFIX}: the user cancelled the run")
    status = _status_of(plain_settings, job)
    assert status.state == "cancelled"
    assert status.infrastructure_failure is False


def test_cancel_terminates_with_a_recognisable_reason(plain_settings: Settings) -> None:
    executor, stubber = _stubbed(plain_settings)
    stubber.add_response(
        "terminate_job", {}, {"jobId": "job-1", "reason": f"{CANCEL_PREFIX}: run cancelled"}
    )
    with stubber:
        executor.cancel("job-1", "run cancelled")
    stubber.assert_no_pending_responses()


def test_runnable_too_long_warns_with_likely_causes(plain_settings: Settings) -> None:
    job = _job("RUNNABLE", createdAt=int((NOW - 3 * 3600) * 1000))
    status = _status_of(plain_settings, job)
    assert status.state == "submitted"
    assert status.extra["warning"] == "runnable_timeout"
    assert status.reason is not None
    for cause in ("maxvCpus", "not available in this region", "quota"):
        assert cause in status.reason
    assert "180 min" in status.reason


def test_runnable_within_the_limit_has_no_warning(plain_settings: Settings) -> None:
    status = _status_of(plain_settings, _job("RUNNABLE", createdAt=int((NOW - 600) * 1000)))
    assert "warning" not in status.extra
    assert status.reason is None


def test_a_retried_job_counts_runnable_time_from_its_last_attempt(
    plain_settings: Settings,
) -> None:
    job = _job(
        "RUNNABLE",
        createdAt=int((NOW - 5 * 3600) * 1000),
        attempts=[{"statusReason": "Host EC2 (instance i-9) terminated.", "stoppedAt": int(NOW)}],
    )
    job["attempts"][0]["stoppedAt"] = int((NOW - 120) * 1000)
    assert "warning" not in _status_of(plain_settings, job).extra


def test_every_attempt_has_a_log_stream(plain_settings: Settings) -> None:
    job = _job(
        "RUNNING",
        attempts=[
            {
                "container": {"logStreamName": "gradpilot/default/first"},
                "statusReason": "Host EC2 (instance i-1) terminated.",
            }
        ],
    )
    job["container"]["logStreamName"] = "gradpilot/default/second"
    status = _status_of(plain_settings, job)
    assert (
        status.log_location == "cloudwatch:///gradpilot/gradpilot/worker//gradpilot/default/second"
    )
    assert status.extra["log_streams"].split() == [
        "cloudwatch:///gradpilot/gradpilot/worker//gradpilot/default/first",
        "cloudwatch:///gradpilot/gradpilot/worker//gradpilot/default/second",
    ]
    assert status.extra["log_console_url"].startswith(
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:"
    )


def test_describe_jobs_goes_in_batches_of_100(plain_settings: Settings) -> None:
    ids = [f"job-{i:03d}" for i in range(250)]
    executor, stubber = _stubbed(plain_settings)
    for chunk in (ids[:100], ids[100:200], ids[200:]):
        jobs = [_job("RUNNING", jobId=i) for i in chunk[:-1]]  # Batch forgot the last one
        stubber.add_response("describe_jobs", {"jobs": jobs}, {"jobs": chunk})
    with stubber:
        status = executor.status(ids)
    stubber.assert_no_pending_responses()  # exactly three calls, in order
    assert len(status) == 250
    assert status["job-099"].state == "unknown"
    assert status["job-000"].state == "running"


# -- transport faults and credentials -------------------------------------------------------


class _ScriptedBatch(BaseHTTPRequestHandler):
    """Answers each request with the next scripted (status, headers, body)."""

    script: list[tuple[int, dict[str, str], dict[str, Any]]] = []
    requests: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append(self.path)
        script = type(self).script
        status, headers, body = script.pop(0) if len(script) > 1 else script[0]
        payload = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted_batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_ScriptedBatch]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    handler = type("Handler", (_ScriptedBatch,), {"script": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def _scripted_executor(handler: Any, tmp_path: Path, attempts: int) -> BatchExecutor:
    settings = Settings(
        home=tmp_path,
        executor="batch",
        batch_job_queue="gradpilot-gpu",
        batch_job_definition="gradpilot-worker",
        artifact_url="s3://bucket/gradpilot",
        aws_endpoint_url=handler.url,
    )
    return BatchExecutor(settings, client=make_batch_client(settings, max_attempts=attempts))


def test_throttling_is_retried_then_reported_as_transient(
    scripted_batch: Any, tmp_path: Path
) -> None:
    throttled = (429, {"x-amzn-ErrorType": "TooManyRequestsException"}, {"message": "Slow down"})
    scripted_batch.script = [throttled]
    executor = _scripted_executor(scripted_batch, tmp_path, attempts=2)
    started = time.monotonic()
    with pytest.raises(TransientExecutorError, match="transient") as info:
        executor.status(["job-1"])
    assert len(scripted_batch.requests) == 2  # botocore retried once before giving up
    assert info.value.transient
    assert time.monotonic() - started < 30


def test_a_5xx_is_retried_and_the_call_succeeds(scripted_batch: Any, tmp_path: Path) -> None:
    scripted_batch.script = [
        (500, {"x-amzn-ErrorType": "ServerException"}, {"message": "Internal"}),
        (200, {}, {"jobs": []}),
    ]
    executor = _scripted_executor(scripted_batch, tmp_path, attempts=3)
    assert executor.status(["job-1"])["job-1"].state == "unknown"
    assert len(scripted_batch.requests) == 2


def test_missing_credentials_say_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = Settings(
        home=tmp_path,
        executor="batch",
        batch_job_queue="gradpilot-gpu",
        batch_job_definition="gradpilot-worker",
        artifact_url="s3://bucket/gradpilot",
        aws_endpoint_url="http://127.0.0.1:9",
    )
    executor = BatchExecutor(settings)
    with pytest.raises(ExecutorError, match="no AWS credentials") as info:
        executor.submit(submission("gp-01234567-g1-a1"))
    assert "AWS_ACCESS_KEY_ID" in info.value.message


def test_access_denied_names_the_permissions_and_is_not_transient(
    plain_settings: Settings,
) -> None:
    executor, stubber = _stubbed(plain_settings)
    stubber.add_client_error(
        "list_jobs", "AccessDeniedException", "User x is not authorized to ListJobs", 403
    )
    with stubber, pytest.raises(ExecutorError) as info:
        executor.submit(submission("gp-01234567-g1-a1"))
    assert "batch:ListJobs" in info.value.message and "batch:SubmitJob" in info.value.message
    assert not isinstance(info.value, TransientExecutorError)
    assert info.value.__cause__ is not None  # translated with `raise ... from e`


def test_throttling_that_outlives_the_retries_is_transient(plain_settings: Settings) -> None:
    executor, stubber = _stubbed(plain_settings)
    stubber.add_client_error("terminate_job", "TooManyRequestsException", "Slow down", 429)
    with stubber, pytest.raises(TransientExecutorError, match="the controller tries again"):
        executor.cancel("job-1", "run cancelled")
