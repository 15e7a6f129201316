"""The worker's side of the REST contract: spec, summaries, checkpoints, heartbeat, finish.

Reporting never stops training. Summaries and checkpoint registrations go to an outbox on
disk first (one JSON file each, written atomically) and are sent from there in batches; when the
API is unreachable the outbox keeps them and the next attempt waits out an exponential backoff
with jitter, measured across calls rather than by sleeping, so the training loop goes on. A
restarted worker finds the same outbox and sends what is left. Only ``finish`` waits: it first
empties the outbox, then posts the outcome, retrying until a deadline.

Only transient failures are retried (connection errors, timeouts, 429 and 5xx); any other 4xx
is a permanent answer and surfaces at once. A 409 from a worker endpoint other than ``finish``
means the job has ended (or was superseded) and its token no longer works: the client stops
sending (queued reports are set aside, not retried) and ``heartbeat`` answers "stop".
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from service.errors import ArtifactError
from service.schemas import worker_env
from service.schemas.artifacts import ArtifactUrls
from service.schemas.jobs import CheckpointIn, HeartbeatIn, JobFinish, JobSpec
from service.schemas.summaries import EpochSummaryIn
from worker.errors import ApiUnavailable, BadSpecError

log = logging.getLogger(__name__)

#: Largest batch the API accepts (``EpochSummaryBatch``).
MAX_BATCH = 1000


class TransientError(Exception):
    """A failure that another attempt may not have (network, timeout, 429, 5xx)."""


class PermanentError(Exception):
    """The API answered with a 4xx other than 429: repeating the request cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


#: The API's answer to any worker call of a job that has ended: stop, never retry.
JOB_ENDED = 409


class Backoff:
    """Exponential backoff with full jitter, as a clock rather than a sleep.

    ``ready()`` says whether the next attempt may go now; ``failed()`` pushes the next attempt
    out; ``succeeded()`` resets it.
    """

    def __init__(
        self,
        base_s: float = 0.5,
        max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.clock = clock
        self.failures = 0
        self.next_at = 0.0

    def delay(self) -> float:
        return random.uniform(0, min(self.max_s, self.base_s * 2**self.failures))

    def ready(self) -> bool:
        return self.clock() >= self.next_at

    def failed(self) -> float:
        wait = self.delay()
        self.failures += 1
        self.next_at = self.clock() + wait
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:2000]
    return str(body)[:2000]


class Outbox:
    """Reports waiting to be sent, one JSON file each, in the order they were queued."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._counter = 0

    def _write(self, name: str, payload: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)

    def add_summary(self, summary: EpochSummaryIn) -> None:
        # Keyed by epoch: a summary re-measured after a restart replaces an unsent one.
        self._write(f"summary-{summary.epoch:08d}.json", summary.model_dump(mode="json"))

    def add_checkpoint(self, checkpoint: CheckpointIn) -> None:
        self._write(f"checkpoint-{checkpoint.epoch:08d}.json", checkpoint.model_dump(mode="json"))

    def pending(self, kind: str) -> list[Path]:
        return sorted(self.folder.glob(f"{kind}-*.json"))

    def __len__(self) -> int:
        return len(self.pending("summary")) + len(self.pending("checkpoint"))

    def reject(self, path: Path, reason: str) -> None:
        """Move an item the API refused for good out of the way, keeping it for inspection."""
        rejected = self.folder / "rejected"
        rejected.mkdir(exist_ok=True)
        path.replace(rejected / path.name)
        (rejected / f"{path.name}.reason").write_text(reason)


def default_spool_dir(job_id: str) -> Path:
    """``$GRADPILOT_SPOOL_DIR/<job_id>``, else a folder under the temp folder."""
    base = os.environ.get(worker_env.SPOOL_DIR)
    root = Path(base) if base else Path(tempfile.gettempdir()) / "gradpilot-spool"
    return root / job_id


class ApiClient:
    """Talks to ``/v1/jobs/{job_id}/…`` with the job's bearer token."""

    def __init__(
        self,
        base_url: str,
        job_id: str,
        token: str,
        *,
        spool_dir: Path | None = None,
        timeout_s: float = 10.0,
        attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.job_id = job_id
        self.attempts = attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/v1/jobs/{job_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=transport,
        )
        self.outbox = Outbox(spool_dir or default_spool_dir(job_id))
        self.send_backoff = Backoff(backoff_base_s, backoff_max_s)
        self.heartbeat_backoff = Backoff(backoff_base_s, backoff_max_s)
        #: why the API said this job has ended (its token is dead); None while it lives
        self.ended: str | None = None

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; raises ``TransientError`` or ``PermanentError``."""
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as e:  # connect, read, timeouts, protocol errors
            raise TransientError(f"{method} {path}: {type(e).__name__}: {e}") from e
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise PermanentError(response.status_code, _detail(response))
        return response.json() if response.content else None

    def _retrying(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        deadline_s: float | None = None,
    ) -> Any:
        """Retry transient failures with jittered backoff, ``attempts`` times or until the
        deadline (when one is given)."""
        backoff = Backoff(self.backoff_base_s, self.backoff_max_s)
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._request(method, path, body)
            except TransientError as e:
                if deadline_s is not None:
                    out_of_time = time.monotonic() - start + backoff.delay() > deadline_s
                    if out_of_time:
                        raise ApiUnavailable(f"the API stayed unreachable: {e}") from e
                elif attempt >= self.attempts:
                    raise ApiUnavailable(f"the API stayed unreachable: {e}") from e
                wait = backoff.failed()
                log.warning("%s; retrying in %.1fs", e, wait)
                time.sleep(wait)

    # ------------------------------------------------------------------ endpoints

    def get_spec(self, deadline_s: float = 120.0) -> JobSpec:
        try:
            data = self._retrying("GET", "/spec", deadline_s=deadline_s)
        except PermanentError as e:
            raise BadSpecError(f"the API refused the job spec: {e}") from e
        try:
            return JobSpec.model_validate(data)
        except ValueError as e:
            raise BadSpecError(f"the job spec does not match this worker's schema: {e}") from e

    def artifact_urls(self, put: list[str]) -> ArtifactUrls:
        """The job's artifact URLs, with upload URLs for the checkpoint names in ``put``."""
        query = f"?{urlencode({'put': put}, doseq=True)}" if put else ""
        try:
            data = self._retrying("GET", f"/artifact-urls{query}")
        except PermanentError as e:
            self._note_ended(e)
            raise ArtifactError(f"the API refused the job's artifact URLs: {e}") from e
        return ArtifactUrls.model_validate(data)

    def _note_ended(self, e: PermanentError) -> None:
        if e.status == JOB_ENDED and self.ended is None:
            self.ended = e.detail
            log.error("the API says this job has ended; stopping its reports: %s", e.detail)

    def report_summary(self, summary: EpochSummaryIn) -> None:
        """Queue a summary and send what is queued if the backoff allows; never blocks long."""
        self.outbox.add_summary(summary)
        self.flush()

    def report_checkpoint(self, checkpoint: CheckpointIn) -> None:
        self.outbox.add_checkpoint(checkpoint)
        self.flush()

    def flush(self, *, force: bool = False) -> bool:
        """Send queued reports once (if the backoff allows or ``force``). True when the outbox
        is empty afterwards."""
        if not len(self.outbox):
            return True
        if self.ended is not None:
            self._set_aside(f"the job has ended: {self.ended}")
            return True
        if not force and not self.send_backoff.ready():
            return False
        try:
            self._send_summaries()
            self._send_checkpoints()
        except TransientError as e:
            wait = self.send_backoff.failed()
            log.warning(
                "could not send %d queued report(s) (%s); keeping them, next try in %.1fs",
                len(self.outbox),
                e,
                wait,
            )
            return False
        self.send_backoff.succeeded()
        return not len(self.outbox)

    def _set_aside(self, reason: str) -> None:
        """Move every queued report out of the way (kept for inspection, never sent)."""
        for path in self.outbox.pending("summary") + self.outbox.pending("checkpoint"):
            self.outbox.reject(path, reason)

    def _send_summaries(self) -> None:
        while paths := self.outbox.pending("summary")[:MAX_BATCH]:
            items = [json.loads(p.read_text()) for p in paths]
            try:
                ack = self._request("POST", "/summaries", {"summaries": items})
            except PermanentError as e:
                self._note_ended(e)
                if self.ended is not None:  # the job, not the batch, is refused
                    self._set_aside(str(e))
                    return
                if len(paths) == 1:
                    log.error("the API refused summary %s for good: %s", paths[0].name, e)
                    self.outbox.reject(paths[0], str(e))
                    continue
                # Find the offending one(s): send each alone.
                for path in paths:
                    try:
                        self._request(
                            "POST", "/summaries", {"summaries": [json.loads(path.read_text())]}
                        )
                        path.unlink()
                    except PermanentError as single:
                        log.error("the API refused summary %s for good: %s", path.name, single)
                        self.outbox.reject(path, str(single))
                continue
            log.debug("sent %d summaries: %s", len(items), ack)
            for path in paths:
                path.unlink()

    def _send_checkpoints(self) -> None:
        for path in self.outbox.pending("checkpoint"):
            try:
                self._request("POST", "/checkpoints", json.loads(path.read_text()))
            except PermanentError as e:
                self._note_ended(e)
                log.error("the API refused checkpoint %s for good: %s", path.name, e)
                self.outbox.reject(path, str(e))
                continue
            path.unlink()

    def drain(self, deadline_s: float) -> None:
        """Send everything queued, waiting out the API up to ``deadline_s``."""
        start = time.monotonic()
        backoff = Backoff(self.backoff_base_s, self.backoff_max_s)
        while not self.flush(force=True):
            wait = backoff.failed()
            if time.monotonic() - start + wait > deadline_s:
                raise ApiUnavailable(
                    f"{len(self.outbox)} report(s) could not be sent within {deadline_s:.0f}s; "
                    f"they stay in {self.outbox.folder}"
                )
            time.sleep(wait)

    def heartbeat(self, epoch: int | None) -> bool:
        """Tell the API the job is alive; returns ``cancel_requested``. Never blocks on an
        unreachable API beyond one short request (then backs off until a later call)."""
        if self.ended is not None:
            return True
        if not self.heartbeat_backoff.ready():
            return False
        body = HeartbeatIn(epoch=epoch).model_dump(mode="json")
        try:
            answer = self._request("POST", "/heartbeat", body)
        except (TransientError, PermanentError) as e:
            if isinstance(e, PermanentError):
                self._note_ended(e)
                if self.ended is not None:
                    return True  # the job has ended: stop as if cancelled
            wait = self.heartbeat_backoff.failed()
            log.warning("heartbeat failed (%s); next in %.1fs at the earliest", e, wait)
            return False
        self.heartbeat_backoff.succeeded()
        return bool(isinstance(answer, dict) and answer.get("cancel_requested"))

    def finish(self, outcome: JobFinish, deadline_s: float = 300.0) -> None:
        """Send what is queued, then the outcome; waits out an unreachable API up to the
        deadline (then raises ``ApiUnavailable``)."""
        self.drain(deadline_s)
        try:
            self._retrying(
                "POST", "/finish", outcome.model_dump(mode="json"), deadline_s=deadline_s
            )
        except PermanentError as e:
            # e.g. 409 when a retried attempt finishes a job that was already finished.
            log.error("the API refused the job's outcome: %s", e)
