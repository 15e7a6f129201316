"""Group commit for epoch summaries.

Workers post summaries concurrently; committing each request on its own makes the database's
commit (an fsync on Postgres) the ceiling. Instead every post puts its rows on a queue and
awaits a future; one writer task drains whatever is queued, stores it all with one
``INSERT … ON CONFLICT DO NOTHING RETURNING`` and one commit, and tells each request which of
its rows were new. Under light load a batch is a single request, so latency does not grow;
under heavy load batches grow and the commit cost is shared.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.db.models import EpochSummary, utcnow
from service.errors import GradpilotError, InvalidInput
from service.jobs import JobBounds, insert_for
from service.schemas.summaries import EpochSummaryIn

log = logging.getLogger(__name__)


def summary_rows(
    job_id: str, bounds: JobBounds, summaries: list[EpochSummaryIn]
) -> list[dict[str, Any]]:
    """Rows for a batch after checking every epoch lies in the job's segment.

    A batch that repeats an epoch keeps its first copy. An epoch outside the segment refuses
    the whole batch, so that a request either lands whole or not at all.
    """
    end = bounds.epoch_start + bounds.epochs
    bad = [s.epoch for s in summaries if not bounds.epoch_start <= s.epoch < end]
    if bad:
        raise InvalidInput(
            f"epoch {bad[0]} is outside this job's segment [{bounds.epoch_start}, {end}): "
            "post only the epochs the job trains"
        )
    now = utcnow()
    rows: dict[int, dict[str, Any]] = {}
    for s in summaries:
        rows.setdefault(
            s.epoch,
            {
                **s.model_dump(exclude={"grad_total", "grad_layers"}),
                "grad_total": s.grad_total.model_dump(),
                "grad_layers": {k: v.model_dump() for k, v in s.grad_layers.items()},
                "job_id": job_id,
                "run_id": bounds.run_id,
                "created_at": now,
            },
        )
    return list(rows.values())


def store_rows(session: Session, rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """Insert rows, ignoring (job, epoch) pairs already stored; returns the pairs inserted."""
    if not rows:
        return set()
    stmt = (
        insert_for(session)(EpochSummary)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["job_id", "epoch"])
        .returning(EpochSummary.job_id, EpochSummary.epoch)
    )
    return {(r[0], r[1]) for r in session.execute(stmt).all()}


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    posted: int
    future: asyncio.Future[tuple[int, int]] = field(repr=False)


class SummaryWriter:
    """The group-commit writer; one per API process, started lazily inside its event loop."""

    def __init__(self, sessions: sessionmaker[Session], max_rows: int = 2000) -> None:
        self.sessions = sessions
        self.max_rows = max_rows
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None

    async def write(self, rows: list[dict[str, Any]], posted: int) -> tuple[int, int]:
        """Store rows (from ``summary_rows``); returns (accepted, duplicates) for this post."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name="summary-writer")
        pending = _Pending(rows, posted, loop.create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            size = len(batch[0].rows)
            while not queue.empty() and size < self.max_rows:
                item = queue.get_nowait()
                batch.append(item)
                size += len(item.rows)
            try:
                inserted = await asyncio.to_thread(self._flush, batch)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                log.error("storing %d summaries failed: %s", size, e)
                error = (
                    e
                    if isinstance(e, GradpilotError)
                    else GradpilotError("the database did not take the summaries; retry shortly")
                )
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p in batch:
                mine = 0
                for r in p.rows:
                    key = (r["job_id"], r["epoch"])
                    if key in inserted:
                        inserted.discard(key)  # a later request with the same pair is a duplicate
                        mine += 1
                if not p.future.done():
                    p.future.set_result((mine, p.posted - mine))

    def _flush(self, batch: list[_Pending]) -> set[tuple[str, int]]:
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for p in batch:
            for r in p.rows:
                rows.setdefault((r["job_id"], r["epoch"]), r)
        with self.sessions() as session:
            inserted = store_rows(session, list(rows.values()))
            session.commit()
        return inserted
