"""The database a notebook writes to: the config overrides that select it, and an outage
on demand (``database_locked``) for demonstrations and drills."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from robust_collector.analysis.paths import Pathish
from robust_collector.storage.backend import is_postgres_url


def storage_settings(db: Pathish) -> dict[str, Any]:
    """The ``storage`` config overrides that write to ``db``: a SQLite path or a
    ``postgresql://`` URL (so a notebook's ``RC_DB`` may be either)."""
    if is_postgres_url(db):
        return {"backend": "postgresql", "url": str(db)}
    return {"backend": "sqlite", "database": str(db)}


@contextlib.contextmanager
def database_locked(db: Pathish) -> Iterator[None]:
    """Make ``db`` refuse writes from other connections until the block ends (readers
    still read): a database outage on demand, for demonstrations and drills."""
    if is_postgres_url(db):
        from robust_collector.storage.postgres import connect_postgres

        conn = connect_postgres(str(db))
        try:
            with conn.transaction():
                conn.execute("LOCK TABLE ticks, rejects IN EXCLUSIVE MODE")
                yield
        finally:
            conn.close()
        return
    import sqlite3

    # wait out the writer's transaction in progress (a lock taken at the wrong instant
    # failed at once with "database is locked"), then hold the lock
    blocker = sqlite3.connect(str(db), timeout=30, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            blocker.execute("ROLLBACK")
        blocker.close()
