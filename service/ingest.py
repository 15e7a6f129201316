"""Group commit for epoch summaries.

Workers post summaries concurrently; committing each request on its own makes the database's
commit (an fsync on Postgres) the ceiling. Instead every post puts its rows on a queue and
awaits a future; a writer task drains whatever is queued, stores it all with one
``INSERT … ON CONFLICT DO NOTHING RETURNING`` and one commit, and tells each request which of
its rows were new. Under light load a batch is a single request, so latency does not grow;
under heavy load batches grow and the commit cost is shared. A batch that fails is written
again one request at a time, so that one bad post fails only itself, never its neighbours.

On Postgres two writer tasks share the queue, each with an asynchronous psycopg connection on
the event loop, and the INSERT is one short SQL statement executed per row in one pipelined
round trip, with the JSON serialised by pydantic-core straight from the validated models: the
benchmark (``bench/ingest.py``) found the first design's writer thread spending most of each
flush waiting for the GIL, and SQLAlchemy compiling a new statement for every batch size.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from pydantic import TypeAdapter
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import EpochSummary, utcnow
from service.errors import GradpilotError, InvalidInput
from service.jobs import JobBounds, insert_for
from service.schemas.summaries import EpochSummaryIn, NormStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryRow:
    """One epoch summary on its way into ``epoch_summaries``."""

    job_id: str
    run_id: str
    epoch: int
    created_at: datetime
    summary: EpochSummaryIn = field(repr=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.epoch)

    def as_dict(self) -> dict[str, Any]:
        """The row's columns as Python values (the SQLAlchemy path)."""
        return {
            **self.summary.model_dump(),
            "job_id": self.job_id,
            "run_id": self.run_id,
            "created_at": self.created_at,
        }

    def pg_params(self) -> tuple[Any, ...]:
        """The row's values in ``_PG_COLUMNS`` order, the JSON ones serialised by pydantic-core
        (straight from the validated models, keeping the layers' order as ``json`` must)."""
        s = self.summary
        return (
            self.job_id,
            self.run_id,
            self.epoch,
            s.train_loss,
            s.val_loss,
            s.train_accuracy,
            s.val_accuracy,
            s.learning_rate,
            _NORM_JSON.dump_json(s.grad_total).decode(),
            _LAYERS_JSON.dump_json(s.grad_layers).decode(),
            _WEIGHTS_JSON.dump_json(s.weight_norms).decode(),
            s.nonfinite_steps,
            s.steps,
            s.seconds,
            s.samples_per_second,
            self.created_at,
        )


_NORM_JSON = TypeAdapter(NormStats)
_LAYERS_JSON = TypeAdapter(dict[str, NormStats])
_WEIGHTS_JSON = TypeAdapter(dict[str, float])


def summary_rows(
    job_id: str, bounds: JobBounds, summaries: list[EpochSummaryIn]
) -> list[SummaryRow]:
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
    rows: dict[int, SummaryRow] = {}
    for s in summaries:
        if s.epoch not in rows:
            rows[s.epoch] = SummaryRow(job_id, bounds.run_id, s.epoch, now, s)
    return list(rows.values())


#: epoch_summaries' columns in the order of ``SummaryRow.pg_params``.
_PG_COLUMNS = (
    "job_id", "run_id", "epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy",
    "learning_rate", "grad_total", "grad_layers", "weight_norms", "nonfinite_steps", "steps",
    "seconds", "samples_per_second", "created_at",
)  # fmt: skip
_PG_CASTS = {"grad_total": "::jsonb", "grad_layers": "::json", "weight_norms": "::json"}
#: One short statement, executed for every row in one pipelined round trip: its text never
#: changes, so psycopg parses it once and Postgres prepares it once (a multi-row VALUES
#: statement is new text for every batch size, and psycopg re-parses long texts every time).
_PG_INSERT = (
    f"INSERT INTO epoch_summaries ({', '.join(_PG_COLUMNS)}) VALUES ("
    + ", ".join(f"%s{_PG_CASTS.get(c, '')}" for c in _PG_COLUMNS)
    + ") ON CONFLICT (job_id, epoch) DO NOTHING RETURNING job_id, epoch"
)


def _pg_params(rows: list[SummaryRow]) -> list[tuple[Any, ...]]:
    """Parameters for ``_PG_INSERT``, in (job, epoch) order: concurrent writers then take the
    unique index's locks in the same order and cannot deadlock."""
    return [r.pg_params() for r in sorted(rows, key=lambda r: r.key)]


def store_rows(session: Session, rows: list[SummaryRow]) -> set[tuple[str, int]]:
    """Insert rows, ignoring (job, epoch) pairs already stored; returns the pairs inserted.

    Through SQLAlchemy, for any dialect (the writer's SQLite path); the writer's Postgres
    path is ``SummaryWriter._flush_async``."""
    if not rows:
        return set()
    stmt = (
        insert_for(session)(EpochSummary)
        .values([r.as_dict() for r in rows])
        .on_conflict_do_nothing(index_elements=["job_id", "epoch"])
        .returning(EpochSummary.job_id, EpochSummary.epoch)
    )
    return {(r[0], r[1]) for r in session.execute(stmt).all()}


@dataclass
class _Pending:
    rows: list[SummaryRow]
    posted: int
    future: asyncio.Future[tuple[int, int]] = field(repr=False)


def _unique(batch: list[_Pending]) -> list[SummaryRow]:
    """The batch's rows, the first copy of each (job, epoch) pair."""
    rows: dict[tuple[str, int], SummaryRow] = {}
    for p in batch:
        for r in p.rows:
            rows.setdefault(r.key, r)
    return list(rows.values())


def _libpq_dsn(engine: Engine) -> str:
    """The engine's Postgres URL as psycopg's own connection string."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class SummaryWriter:
    """The group-commit writer; one per API process, started lazily inside its event loop.

    On Postgres ``writers`` (default 2) tasks drain the queue, each with its own asynchronous
    psycopg connection on the event loop: while one batch is in the database the next is being
    gathered and sent, and no thread competes with the request handlers for the GIL (a writer
    thread did: a flush of 8 rows took ~20 ms of which ~2.5 ms was its own CPU time). On
    SQLite one task writes through the session in a thread (SQLite has one writer anyway).
    """

    def __init__(
        self, sessions: sessionmaker[Session], max_rows: int = 2000, *, writers: int | None = None
    ) -> None:
        self.sessions = sessions
        self.max_rows = max_rows
        bind = sessions.kw.get("bind")
        self._dsn = (
            _libpq_dsn(bind)
            if isinstance(bind, Engine) and bind.dialect.name == "postgresql"
            else None
        )
        self.writers = writers or (2 if self._dsn else 1)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, rows: list[SummaryRow], posted: int) -> tuple[int, int]:
        """Store rows (from ``summary_rows``); returns (accepted, duplicates) for this post."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or all(t.done() for t in self._tasks):
            self._queue = asyncio.Queue()
            self._loop = loop
            self._tasks = [
                loop.create_task(self._run(self._queue), name=f"summary-writer-{i}")
                for i in range(self.writers)
            ]
        pending = _Pending(rows, posted, loop.create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            while True:
                batch = [await queue.get()]
                size = len(batch[0].rows)
                while not queue.empty() and size < self.max_rows:
                    item = queue.get_nowait()
                    batch.append(item)
                    size += len(item.rows)
                # the whole batch in one transaction; if it fails, each request on its own
                groups = [batch] if len(batch) == 1 else [batch, *([p] for p in batch)]
                try:
                    for group in groups:
                        if all(p.future.done() for p in group):
                            continue
                        try:
                            if self._dsn is None:
                                inserted = await asyncio.to_thread(self._flush, group)
                            else:
                                if conn is None or conn.closed:
                                    conn = await _connect(self._dsn)
                                inserted = await self._flush_async(conn, group)
                        except Exception as e:  # noqa: BLE001 - the group's requests get the error
                            if conn is not None and conn.broken:
                                await conn.close()
                                conn = None
                            if group is batch and len(batch) > 1:
                                log.warning(
                                    "storing a batch of %d summaries failed (%s); "
                                    "writing its %d requests one by one",
                                    size,
                                    e,
                                    len(batch),
                                )
                                continue
                            log.error("storing %d summaries failed: %s", len(group[0].rows), e)
                            if not group[0].future.done():
                                group[0].future.set_exception(_error_for(e))
                            continue
                        _answer(group, inserted)
                        if group is batch:
                            break
                except BaseException:
                    # the writer itself broke: no request may wait for an answer forever
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(
                                GradpilotError("the summary writer stopped; retry shortly")
                            )
                    raise
        finally:
            if conn is not None:
                await conn.close()

    @staticmethod
    async def _flush_async(
        conn: psycopg.AsyncConnection[Any], batch: list[_Pending]
    ) -> set[tuple[str, int]]:
        inserted: set[tuple[str, int]] = set()
        async with conn.transaction():
            cursor = conn.cursor()
            await cursor.executemany(_PG_INSERT, _pg_params(_unique(batch)), returning=True)
            while True:
                inserted.update((job_id, epoch) for job_id, epoch in await cursor.fetchall())
                if not cursor.nextset():
                    break
        return inserted

    def _flush(self, batch: list[_Pending]) -> set[tuple[str, int]]:
        with self.sessions() as session:
            inserted = store_rows(session, _unique(batch))
            session.commit()
        return inserted


def _answer(batch: list[_Pending], inserted: set[tuple[str, int]]) -> None:
    """Tell each request of a stored batch how many of its rows were new."""
    for p in batch:
        mine = 0
        for r in p.rows:
            if r.key in inserted:
                inserted.discard(r.key)  # a later request with this pair: a duplicate
                mine += 1
        if not p.future.done():
            p.future.set_result((mine, p.posted - mine))


#: errors that mean "these rows can never be stored", not "try again"
_REFUSED: tuple[type[Exception], ...] = (
    sa_exc.IntegrityError,
    sa_exc.DataError,
    psycopg.IntegrityError,
    psycopg.DataError,
    OverflowError,  # sqlite3: an integer beyond 64 bits
)


def _error_for(e: Exception) -> GradpilotError:
    """The error one request's failed write answers with: the rows' fault (422, do not retry)
    or the database's (retry)."""
    if isinstance(e, GradpilotError):
        return e
    if isinstance(e, _REFUSED):
        reason = str(getattr(e, "orig", None) or e).splitlines()[0][:300]
        return InvalidInput(f"the database refused these summaries ({reason}); do not resend them")
    return GradpilotError("the database did not take the summaries; retry shortly")


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)
