"""Fenced leases: a graph step whose lease was lost cannot write.

Each claim of a run writes a fresh token into ``runs.lease_owner`` (``<replica>/<claim id>``).
While a step runs, :func:`fenced` holds that token in a context variable (LangGraph runs nodes
with a copy of the caller's context, so the nodes' own sessions see it). Every flush that writes
and every ORM ``UPDATE``/``DELETE`` in a session of a fenced step first reads the run's lease
owner — ``FOR UPDATE`` on Postgres, in the same transaction as the writes — and raises
:class:`LeaseLost` when another claim has replaced the token. The row lock taken by that read is
held until the step's transaction ends, so a replica taking the run over (``SELECT … FOR UPDATE
SKIP LOCKED``) cannot slip in between the check and the commit.

LangGraph's own checkpoint writes go through its connection pool, not these sessions, and are
not fenced; a step that lost its lease fails at its first database write instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from service.db.models import Run
from service.errors import GradpilotError

_CHECKED = "gradpilot_fence_checked"


class LeaseLost(GradpilotError):
    """The step's lease on its run was taken over: its writes are refused."""


@dataclass(frozen=True)
class Fence:
    run_id: str
    token: str


_FENCE: ContextVar[Fence | None] = ContextVar("gradpilot_fence", default=None)
_installed: set[int] = set()


@contextmanager
def fenced(run_id: str, token: str) -> Iterator[None]:
    """Writes in this context (and in the graph nodes it runs) need ``token`` to hold the
    run's lease."""
    reset = _FENCE.set(Fence(run_id, token))
    try:
        yield
    finally:
        _FENCE.reset(reset)


def install(sessions: sessionmaker[Session]) -> None:
    """Check the fence in every session ``sessions`` makes (once per session maker)."""
    if id(sessions) in _installed:
        return
    _installed.add(id(sessions))
    event.listen(sessions, "before_flush", _before_flush)
    event.listen(sessions, "do_orm_execute", _on_execute)
    event.listen(sessions, "after_commit", _forget)
    event.listen(sessions, "after_rollback", _forget)


def check(session: Session) -> None:
    """Raise :class:`LeaseLost` unless the current fence's token holds the run's lease (a
    no-op outside a fenced step, and once per transaction)."""
    fence = _FENCE.get()
    if fence is None or session.info.get(_CHECKED):
        return
    session.info[_CHECKED] = True  # before the query: it flushes and would come back here
    stmt = select(Run.lease_owner).where(Run.id == fence.run_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    owner = session.execute(stmt, execution_options={"gradpilot_fence_read": True}).scalar()
    if owner != fence.token:
        session.info.pop(_CHECKED, None)
        raise LeaseLost(
            f"run {fence.run_id}: this step's lease was taken over by {owner or 'nobody'}; "
            "its writes are dropped (the new owner carries the run on)"
        )


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        check(session)


def _on_execute(state: ORMExecuteState) -> None:
    if state.execution_options.get("gradpilot_fence_read"):
        return
    if state.is_update or state.is_delete or state.is_insert:
        check(state.session)


def _forget(session: Session) -> None:
    session.info.pop(_CHECKED, None)
