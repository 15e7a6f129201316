"""Claiming runs so that several controller replicas never advance one run at once.

A claim is a short transaction (``SELECT … FOR UPDATE SKIP LOCKED`` on Postgres) that writes
a lease owner and expiry on the run; the lease, not a held row lock, protects the graph step,
because the graph's nodes write the same run row from their own sessions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Run, utcnow


def claim(session: Session, run_ids: list[str], owner: str, ttl_s: float) -> list[str]:
    if not run_ids:
        return []
    now = utcnow()
    stmt = select(Run.id).where(
        Run.id.in_(run_ids),
        or_(Run.lease_owner.is_(None), Run.lease_expires_at < now, Run.lease_owner == owner),
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    claimed = list(session.execute(stmt).scalars())
    if claimed:
        session.execute(
            update(Run)
            .where(Run.id.in_(claimed))
            .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_s))
        )
    session.commit()
    return claimed


def release(session: Session, run_id: str, owner: str) -> None:
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    session.commit()


def renew(session: Session, run_id: str, owner: str, ttl_s: float) -> None:
    session.execute(
        update(Run)
        .where(Run.id == run_id, Run.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=ttl_s))
    )
    session.commit()


@contextmanager
def kept(sessions: sessionmaker[Session], run_id: str, owner: str, ttl_s: float) -> Iterator[None]:
    """Hold a claimed lease for the duration of the block, renewing it every ``ttl_s / 3``
    (a graph step may take minutes of LLM calls), and release it afterwards. A controller
    that dies stops renewing, so another replica takes the run over after at most ``ttl_s``."""
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(ttl_s / 3):
            with sessions() as session:
                renew(session, run_id, owner, ttl_s)

    keeper = threading.Thread(target=keep, name=f"lease-{run_id[:8]}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        with sessions() as session:
            release(session, run_id, owner)
