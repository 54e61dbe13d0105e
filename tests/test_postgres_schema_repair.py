"""Self-repair after schema loss on PostgreSQL (issue 20, finding 3): a table dropped under
a running collector is set up again by the writer itself (the schema setup re-run under
its advisory lock when a write meets "relation does not exist"), so ticks reach the
database again without a restart and nothing is lost.

The server is the one of tests/helpers/pgserver.py (or ``RC_TEST_POSTGRES_URL``'s);
without either, these tests skip.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.storage.postgres import PostgresBackend, connect_postgres

pytestmark = pytest.mark.integration


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = connect_postgres(url, init=False)
    try:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def drop_ticks_keeping_a_copy(url: str) -> None:
    """``DROP TABLE ticks``, its rows kept aside in ``ticks_before`` in the same
    transaction (no write commits in between), so the test can still count them."""
    conn = connect_postgres(url, init=False)
    try:
        with conn.transaction():
            conn.execute("LOCK TABLE ticks IN ACCESS EXCLUSIVE MODE")
            conn.execute("CREATE TABLE ticks_before AS SELECT * FROM ticks")
            conn.execute("DROP TABLE ticks")
    finally:
        conn.close()


def test_ticks_dropped_under_a_running_collector_come_back_and_nothing_is_lost(pg_url, make_config):
    config = make_config(
        storage={
            "backend": "postgresql",
            "url": pg_url,
            "write_timeout_seconds": 1.0,
            "breaker_timeout_seconds": 0.2,
        },
    )
    c = Collector(config).start()
    try:
        assert c.wait_for(lambda s: s.stored >= 60, timeout=30)
        drop_ticks_keeping_a_copy(pg_url)
        # the writer sets the table up again by itself and stores new ticks in it
        wait_until(
            lambda: (
                query(pg_url, "SELECT to_regclass('ticks') IS NOT NULL") == [(True,)]
                and query(pg_url, "SELECT count(*) FROM ticks")[0][0] >= 30
            ),
            timeout=15,
            what="ticks stored again after DROP TABLE ticks",
            detail=lambda: c.status().storage,
        )
        wait_until(
            lambda: (ws := c.status().storage).mode == "database" and ws.backup_files == 0,
            timeout=15,
            detail=lambda: c.status().storage,
        )
    finally:
        summary = c.stop()
    assert summary.storage.lost_rows == 0
    rows = query(
        pg_url,
        "SELECT symbol, count(*), count(DISTINCT seq), min(seq), max(seq) FROM "
        "(SELECT symbol, seq FROM ticks_before WHERE run_id = %(r)s "
        " UNION ALL SELECT symbol, seq FROM ticks WHERE run_id = %(r)s) t GROUP BY symbol",
        {"r": c.run_id},
    )
    rejects = dict(
        query(
            pg_url,
            "SELECT symbol, count(*) FROM rejects WHERE run_id = %s GROUP BY symbol",
            (c.run_id,),
        )
    )
    stored = {}
    for sym, n, distinct, lo, hi in rows:
        assert n == distinct, f"{sym}: {n - distinct} ticks stored twice"
        assert hi - lo + 1 == n, f"{sym}: {hi - lo + 1 - n} ticks missing"
        stored[sym] = n
    for sym, emitted in c.source.emitted.items():
        dups = summary.symbols[sym].duplicates
        assert stored.get(sym, 0) + rejects.get(sym, 0) + dups == emitted, sym
    # the re-made table is the verified schema: its key is back
    assert query(pg_url, "SELECT count(*) FROM pg_constraint WHERE conname = 'ticks_pkey'") == [
        (1,)
    ]


def test_a_replay_into_a_dropped_table_sets_it_up_again(pg_url):
    backend = PostgresBackend(pg_url)
    conn = backend.connect()
    try:
        query(pg_url, "DROP TABLE trades")
        row = ("r:SPY:t1", "SPY", 1, 10, 11, 1.0, 2.0, None, None, None, None, None, "s", "r")
        sink = backend.sink(conn)
        assert sink.insert([], [], [row]) == 1
        assert sink.insert([], [], [row]) == 0  # its key came back with it
    finally:
        backend.close(conn)
    assert query(pg_url, "SELECT trade_id FROM trades") == [("r:SPY:t1",)]
