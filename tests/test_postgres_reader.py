"""The reader's PostgreSQL connection is read-only on the server (issue 20, finding 9):
psycopg's ``read_only`` was ignored under autocommit, so a write went through.

The server is the one of tests/helpers/pgserver.py (or ``RC_TEST_POSTGRES_URL``'s);
without either, these tests skip.
"""

from __future__ import annotations

import pytest

from robust_collector.storage.postgres import connect_postgres
from robust_collector.storage.reader import open_reader, read_ticks

pytestmark = pytest.mark.integration


def test_a_write_through_the_readers_connection_is_refused(pg_url):
    psycopg = pytest.importorskip("psycopg")
    connect_postgres(pg_url).close()  # the schema
    reader = open_reader(pg_url)
    try:
        assert reader.execute("SELECT count(*) FROM ticks").fetchone() == (0,)  # reads work
        row = ("t1", "SPY", 1, 10, 11, 1.0, 1.1, 5.0, 6.0, None, "s", "r")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("CREATE TABLE scratch (a int)")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("DELETE FROM ticks")
    finally:
        reader.close()
    conn = connect_postgres(pg_url, init=False)
    try:
        assert conn.execute("SELECT to_regclass('scratch')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (0,)
    finally:
        conn.close()
    assert read_ticks(pg_url).is_empty()  # the readers built on it still read
