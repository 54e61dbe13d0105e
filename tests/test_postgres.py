"""The PostgreSQL backend against a real server: writes, fleets, restarts, replay, reads.

The server is a throwaway one started from the installed binaries (or the one
``RC_TEST_POSTGRES_URL`` names); see tests/helpers/pgserver.py. Without either,
these tests skip and say how to enable them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.waiting import wait_until

from robust_collector import Collector
from robust_collector.cli import main
from robust_collector.config import DATABASE_URL_ENV
from robust_collector.errors import ConfigError
from robust_collector.storage.backup import BackupWriter, list_backup_files
from robust_collector.storage.postgres import (
    connect_postgres,
    init_postgres,
    pg_sql,
    postgres_ddl,
    redact_url,
)

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-pw-4217"


def with_password(url: str) -> str:
    """The same server, with a password in the URL (trust auth ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


def query(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    conn = connect_postgres(url, init=False)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def assert_contiguous(url: str, run_id: str | None = None) -> dict[str, int]:
    """Per symbol, sequence numbers have no hole and no repeat; returns counts."""
    where = "" if run_id is None else "WHERE run_id = %s"
    rows = query(
        url,
        f"SELECT run_id, symbol, count(*), count(DISTINCT seq), min(seq), max(seq) "
        f"FROM ticks {where} GROUP BY run_id, symbol",
        () if run_id is None else (run_id,),
    )
    counts = {}
    for run, sym, n, distinct, lo, hi in rows:
        assert n == distinct, f"{run}/{sym}: {n - distinct} duplicated sequence numbers"
        assert hi - lo + 1 == n, f"{run}/{sym}: {hi - lo + 1 - n} missing sequence numbers"
        counts[sym] = counts.get(sym, 0) + n
    return counts


# -- no server needed ----------------------------------------------------------------------


def test_statements_are_translated_to_postgres():
    assert pg_sql("INSERT OR IGNORE INTO t (a, b) VALUES (?, ?)") == (
        "INSERT INTO t (a, b) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    )
    assert pg_sql("SELECT * FROM t WHERE a LIKE 'x%' AND b = ?") == (
        "SELECT * FROM t WHERE a LIKE 'x%%' AND b = %s"
    )


def test_the_schema_translates_types_and_keys_ticks_by_time_for_timescale():
    plain = postgres_ddl()
    assert "BIGSERIAL PRIMARY KEY" in plain and "DOUBLE PRECISION" in plain
    assert "REAL" not in plain.replace("DOUBLE PRECISION", "")
    assert "tick_id   TEXT PRIMARY KEY" in plain
    assert "USING brin (ts_us)" in plain
    hyper = postgres_ddl(timescale=True)
    ticks = hyper.split("CREATE TABLE IF NOT EXISTS ticks (", 1)[1].split(");", 1)[0]
    assert "PRIMARY KEY (tick_id, ts_us)" in ticks
    assert "tick_id   TEXT NOT NULL" in ticks


def test_a_password_never_shows_in_a_url_we_print():
    assert redact_url(f"postgresql://u:{SECRET}@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_postgres_backend_without_a_url_is_a_one_line_config_error(make_config, monkeypatch):
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    config = make_config(storage={"backend": "postgresql"})
    with pytest.raises(ConfigError) as err:
        Collector(config)
    assert "storage.url" in str(err.value) and DATABASE_URL_ENV in str(err.value)
    assert "\n" not in str(err.value)


def test_a_url_that_is_not_postgres_is_refused_without_echoing_it(make_config):
    with pytest.raises(ConfigError) as err:
        make_config(storage={"url": f"mysql://root:{SECRET}@h/db"})
    assert "storage.url" in str(err.value) and "postgresql://" in str(err.value)
    assert SECRET not in str(err.value)


# -- against the server ----------------------------------------------------------------------


def test_db_init_creates_the_schema_and_is_idempotent(pg_url, capsys):
    assert main(["db", "init", "--db", pg_url]) == 0
    first = capsys.readouterr().out
    assert "schema version 4" in first and "created tables" in first and "ticks" in first
    tables = {r[0] for r in query(pg_url, "SELECT tablename FROM pg_tables")}
    assert {
        "ticks",
        "rejects",
        "errors",
        "health_snapshots",
        "breaker_events",
        "runs",
        "gaps",
        "trades",
        "trade_rejects",
    } <= tables
    indexes = {r[0] for r in query(pg_url, "SELECT indexname FROM pg_indexes")}
    assert {"ticks_ts", "ticks_symbol_ts", "health_run_component_ts"} <= indexes
    assert main(["db", "init", "--db", pg_url]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_db_init_migrates_a_version_1_schema(pg_url, capsys):
    conn = connect_postgres(pg_url, init=False)
    try:
        conn.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_us BIGINT NOT NULL, "
            "stopped_us BIGINT, status TEXT NOT NULL, pid BIGINT, host TEXT, "
            "symbols TEXT NOT NULL, config TEXT NOT NULL, summary TEXT)"
        )
        conn.execute("INSERT INTO runs VALUES ('old', 1, 2, 'stopped', 1, 'h', '[]', '{}', NULL)")
        conn.execute("CREATE TABLE rc_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO rc_schema VALUES (1)")
    finally:
        conn.close()
    assert main(["db", "init", "--db", pg_url]) == 0
    assert "migrated from version 1" in capsys.readouterr().out
    cols = {
        r[0]
        for r in query(
            pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'"
        )
    }
    assert "instance" in cols
    assert query(pg_url, "SELECT run_id FROM runs") == [("old",)]  # kept
    assert query(pg_url, "SELECT count(*) FROM trades") == [(0,)]  # version 3's, created


def test_collectors_starting_together_create_the_schema_once(pg_url):
    import threading

    errors: list[BaseException] = []

    def init() -> None:
        try:
            conn = connect_postgres(pg_url)
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert query(pg_url, "SELECT version FROM rc_schema") == [(4,)]


def test_collector_writes_everything_to_postgres_and_keeps_the_password_out(
    pg_url, make_config, caplog
):
    caplog.set_level(logging.DEBUG, logger="robust_collector")
    url = with_password(pg_url)
    config = make_config(
        storage={"backend": "postgresql", "url": url, "instance": "desk-1"},
        realtime_data={"health_check": {"check_interval_seconds": 0.2}},
    )
    c = Collector(config).start()
    try:
        assert c.wait_for(lambda s: s.stored >= 90, timeout=30)
        status = c.status()
    finally:
        summary = c.stop()
    assert SECRET not in status.database and "***" in status.database
    counts = assert_contiguous(pg_url, c.run_id)
    assert sum(counts.values()) == summary.stored == summary.storage.ticks_written
    (instance, status_, config_json) = query(
        pg_url, "SELECT instance, status, config FROM runs WHERE run_id = %s", (c.run_id,)
    )[0]
    assert (instance, status_) == ("desk-1", "stopped")
    assert SECRET not in config_json
    assert (
        query(pg_url, "SELECT count(*) FROM health_snapshots WHERE run_id = %s", (c.run_id,))[0][0]
        > 0
    )
    assert SECRET not in caplog.text
    # the readers take the URL where they take a SQLite path
    from robust_collector import analysis, read_ticks

    df = read_ticks(pg_url, run_id=c.run_id)
    assert df.height == summary.stored
    assert str(df.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert analysis.load_runs(pg_url).height == 1
    assert analysis.load_health(pg_url).height > 0
    assert set(analysis.tick_rates(analysis.load_ticks(pg_url))["symbol"]) == set(config.symbols)


def test_a_server_restart_mid_run_loses_nothing_and_duplicates_nothing(
    pg_server, pg_url, make_config
):
    if not pg_server.restartable:
        pytest.skip("needs a throwaway server it can stop and start (unset RC_TEST_POSTGRES_URL)")
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
        pg_server.stop("fast")
        try:
            wait_until(lambda: c.status().storage.ticks_to_backup >= 60, timeout=30)
            assert c.status().storage.mode in ("backup", "failing")
        finally:
            pg_server.start()
        wait_until(
            lambda: (
                (ws := c.status().storage).mode == "database"
                and ws.backup_files == 0
                and ws.held_rows == 0
                and ws.replayed_rows > 0
            ),
            timeout=30,
            detail=lambda: c.status().storage,
        )
        stored_after = c.status().stored
        assert c.wait_for(lambda s: s.stored >= stored_after + 30, timeout=30)
    finally:
        summary = c.stop()
    ws = summary.storage
    assert ws.lost_rows == 0 and ws.replayed_rows >= 60
    counts = assert_contiguous(pg_url, c.run_id)
    rejects = dict(
        query(
            pg_url,
            "SELECT symbol, count(*) FROM rejects WHERE run_id = %s GROUP BY symbol",
            (c.run_id,),
        )
    )
    for sym, emitted in c.source.emitted.items():
        dups = summary.symbols[sym].duplicates
        assert counts.get(sym, 0) + rejects.get(sym, 0) + dups == emitted, sym


def _fleet_config(tmp_path: Path, name: str, url: str, symbols: list[str]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "c.yaml").write_text(
        json.dumps(
            {
                "symbols": symbols,
                "storage": {
                    "backend": "postgresql",
                    "url": url,
                    "instance": name,
                    "flush_interval_seconds": 0.1,
                },
                "realtime_data": {
                    "collect_interval_seconds": 0.01,
                    "health_check": {"check_interval_seconds": 0.5},
                    "backup": {"backup_path": "backups"},
                },
            }
        )
    )
    return folder / "c.yaml"


def test_two_collector_processes_share_one_database_and_show_as_a_fleet(pg_url, tmp_path, capsys):
    from robust_collector.health.fleet import fleet_status

    assert main(["db", "init", "--db", pg_url]) == 0
    capsys.readouterr()
    configs = {
        "east": _fleet_config(tmp_path, "east", pg_url, ["SPY", "QQQ"]),
        "west": _fleet_config(tmp_path, "west", pg_url, ["IWM", "DIA", "TLT"]),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "robust_collector.cli",
                "run",
                "--config",
                str(cfg),
                "--duration",
                "6",
            ],
            cwd=cfg.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cfg in configs.values()
    ]
    try:
        both_running = wait_until(
            lambda: (
                sorted(i.instance for i in fleet_status(pg_url) if i.running) == ["east", "west"]
            ),
            timeout=20,
            fail=False,
        )
        if both_running:
            assert main(["health", "--db", pg_url]) == 0
            live = capsys.readouterr().out
            assert "2 of 2 instance(s) running" in live and "east" in live and "west" in live
            from robust_collector.dashboard import watch

            board = watch(pg_url, autostart=False)
            try:
                assert "east" in board.table_html.value and "west" in board.table_html.value
                assert "2 of 2 instance(s) running" in board.table_html.value
            finally:
                board.close()
    finally:
        outs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    assert both_running
    counts = assert_contiguous(pg_url)
    assert set(counts) == {"SPY", "QQQ", "IWM", "DIA", "TLT"}
    owners = dict(
        query(
            pg_url,
            "SELECT t.symbol, min(r.instance) FROM ticks t JOIN runs r USING (run_id) "
            "GROUP BY t.symbol HAVING count(DISTINCT r.instance) = 1",
        )
    )
    assert owners == {"SPY": "east", "QQQ": "east", "IWM": "west", "DIA": "west", "TLT": "west"}
    # both stopped cleanly: the fleet view says so per instance, exit code 3 (nothing runs)
    assert main(["health", "--db", pg_url, "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert {i["instance"]: i["running"] for i in data["instances"]} == {
        "east": False,
        "west": False,
    }
    assert all(i["stopped_cleanly"] and i["not_running_since"] for i in data["instances"])


def test_an_instance_that_stops_reporting_shows_as_not_running(pg_url, capsys):
    from robust_collector.health.fleet import fleet_status

    conn = connect_postgres(pg_url)
    try:
        now = int(time.time() * 1e6)
        cfg = json.dumps({"realtime_data": {"health_check": {"check_interval_seconds": 1}}})
        for run, inst, beat in (("r-live", "live", now), ("r-dead", "dead", now - 60_000_000)):
            conn.execute(
                "INSERT INTO runs (run_id, started_us, status, pid, host, instance, symbols, "
                "config) VALUES (%s, %s, 'running', 1, 'h', %s, '[\"SPY\"]', %s)",
                (run, beat - 1_000_000, inst, cfg),
            )
            conn.execute(
                "INSERT INTO health_snapshots (run_id, ts_us, component, level, reasons, "
                "metrics) VALUES (%s, %s, 'RobustDataCollector', 'HEALTHY', '[]', '{}')",
                (run, beat),
            )
    finally:
        conn.close()
    by_name = {i.instance: i for i in fleet_status(pg_url)}
    assert by_name["live"].running and not by_name["dead"].running
    assert not by_name["dead"].stopped_cleanly
    assert main(["health", "--db", pg_url]) == 2  # one died without stopping
    out = capsys.readouterr().out
    assert "1 of 2 instance(s) running" in out and "stopped reporting" in out
    assert main(["health", "--db", pg_url, "--component", "live"]) == 0  # one instance
    assert "1 of 1 instance(s) running" in capsys.readouterr().out
    assert main(["health", "--db", pg_url, "--component", "nosuch"]) == 3
    assert "no instance 'nosuch'" in capsys.readouterr().out


def _backup_rows(folder: Path, run: str, n: int) -> None:
    w = BackupWriter(folder, run)
    t0 = 1_767_225_600_000_000
    prices = (100.0, 100.01, 300.0, None, None, "simulated", run)
    ticks = [(f"{run}:SPY:{i}", "SPY", i, t0 + i, t0 + 500 + i, *prices) for i in range(1, n + 1)]
    rejects = [(f"{run}:SPY:0", "SPY", 0, t0, t0 + 500, *prices, "price_range", "bad", 7)]
    w.write_batch(ticks, rejects)
    w.close()


def test_recover_into_postgres_is_idempotent(pg_url, tmp_path, capsys):
    folder = tmp_path / "backups"
    _backup_rows(folder, "run-a", 500)
    assert main(["recover", "--db", pg_url, "--backup-path", str(folder), "--dry-run"]) == 0
    assert "would insert 501" in capsys.readouterr().out
    assert query(pg_url, "SELECT to_regclass('ticks')") == [(None,)]  # a dry run creates nothing
    assert main(["recover", "--db", pg_url, "--backup-path", str(folder), "--quiet"]) == 0
    assert "inserted 501" in capsys.readouterr().out
    assert query(pg_url, "SELECT count(*) FROM ticks") == [(500,)]
    assert query(pg_url, "SELECT count(*) FROM rejects") == [(1,)]
    # the same file again (e.g. copied back by hand): nothing new goes in
    recovered = list_backup_files(folder / "recovered")
    assert len(recovered) == 1
    recovered[0].rename(folder / recovered[0].name)
    assert main(["recover", "--db", pg_url, "--backup-path", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "inserted 0, already present 501" in out
    assert query(pg_url, "SELECT count(*) FROM ticks") == [(500,)]


def test_scan_backups_checks_tick_ids_against_postgres(pg_url, tmp_path):
    from robust_collector.analysis import scan_backups
    from robust_collector.storage.recovery import recover

    folder = tmp_path / "b"
    _backup_rows(folder, "run-b", 20)
    recover(pg_url, folder)
    _backup_rows(folder, "run-c", 5)
    scan = scan_backups(folder, db=pg_url, include_recovered=True)
    stored = scan.records.group_by("in_db").len().sort("in_db")
    assert dict(stored.iter_rows()) == {False: 6, True: 21}


def test_health_history_and_errors_read_from_postgres(pg_url, make_config, capsys):
    config = make_config(
        storage={"backend": "postgresql", "url": pg_url},
        source={"faults": {"failing_symbols": ["IWM"]}},
        realtime_data={"health_check": {"check_interval_seconds": 0.2}},
    )
    c = Collector(config).start()
    try:
        assert c.wait_for(lambda s: s.errors >= 1 and s.stored >= 20, timeout=30)
        wait_until(lambda: c.health_history().height >= 2, timeout=20)
    finally:
        c.stop()
    assert main(["health", "--db", pg_url, "--mode", "errors", "--json"]) == 0
    errors = json.loads(capsys.readouterr().out)
    assert any(e["symbol"] == "IWM" for e in errors)
    assert main(["health", "--db", pg_url, "--mode", "history"]) == 0
    history = capsys.readouterr().out
    assert any(level in history for level in ("HEALTHY", "DEGRADED", "UNHEALTHY")), history


def test_a_server_that_is_not_there_is_one_line(capsys):
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:9/none"
    assert main(["db", "init", "--db", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robust-collector db:") and err.count("\n") == 1
    assert SECRET not in err


def test_the_database_url_may_come_from_the_environment(pg_url, make_config, monkeypatch):
    monkeypatch.setenv(DATABASE_URL_ENV, pg_url)
    c = Collector(make_config(storage={"backend": "postgresql"})).start()
    try:
        assert c.wait_for(lambda s: s.stored >= 10, timeout=30)
    finally:
        c.stop()
    assert query(pg_url, "SELECT count(*) FROM ticks WHERE run_id = %s", (c.run_id,))[0][0] >= 10


def test_events_keep_their_order_and_tables(pg_url):
    from robust_collector.storage.postgres import PostgresBackend
    from robust_collector.storage.writer import INSERT_BREAKER_EVENT, INSERT_ERROR

    b = PostgresBackend(pg_url)
    conn = b.connect()
    try:
        events = [
            (INSERT_ERROR, ("r", 1, "source", "SPY", "E", "one")),
            (INSERT_ERROR, ("r", 2, "source", "SPY", "E", "two")),
            (INSERT_BREAKER_EVENT, ("r", 3, "SPY", "CLOSED", "OPEN", "x")),
            (INSERT_ERROR, ("r", 4, "source", "SPY", "E", "three")),
        ]
        b.write(conn, [], [], events)
        init_postgres(conn)  # a second init changes nothing
    finally:
        b.close(conn)
    assert query(pg_url, "SELECT message FROM errors ORDER BY id") == [
        ("one",),
        ("two",),
        ("three",),
    ]
    assert query(pg_url, "SELECT new_state FROM breaker_events") == [("OPEN",)]


def test_a_live_batch_meeting_stored_rows_stores_only_the_new_ones(pg_url):
    from robust_collector.storage.postgres import PostgresBackend

    def rows(lo: int, hi: int) -> list[tuple]:
        t0 = 1_767_225_600_000_000
        tail = (100.0, 100.01, 1.0, 1.0, None, "simulated", "r")
        return [(f"r:SPY:{i}", "SPY", i, t0 + i, t0 + i, *tail) for i in range(lo, hi)]

    b = PostgresBackend(pg_url)
    conn = b.connect()
    try:
        b.write(conn, rows(0, 10), [], [])
        # overlaps rows 5..9: the direct COPY fails its savepoint, the staged path goes on
        b.write(
            conn,
            rows(5, 15),
            [],
            [
                (
                    "INSERT INTO errors (run_id, ts_us, component, symbol, error_type, message) VALUES (?, ?, ?, ?, ?, ?)",
                    ("r", 1, "x", None, "E", "kept"),
                )
            ],
        )
    finally:
        b.close(conn)
    assert query(pg_url, "SELECT count(*), count(DISTINCT seq) FROM ticks") == [(15, 15)]
    assert query(pg_url, "SELECT message FROM errors") == [("kept",)]


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the root path of the throwaway server")
def test_the_throwaway_server_runs_as_postgres_when_we_are_root(pg_server):
    if not pg_server.restartable:
        pytest.skip("an external server (RC_TEST_POSTGRES_URL) is not ours to inspect")
    owner = query(pg_server.admin_url, "SELECT current_setting('data_directory')")[0][0]
    assert Path(owner).owner() == "postgres"


def test_the_backup_notebook_runs_against_postgres(pg_url, tmp_path):
    """Notebook 04 (an outage, backup files, recovery, counts that reconcile, gaps)
    with ``RC_DB`` set to the server's URL, executed by a real kernel."""
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "04_backup_recovery.ipynb"
    env = dict(os.environ, RC_DB=pg_url, RC_TMP="1")
    out = str(tmp_path / "out.ipynb")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--output",
            out,
            str(nb),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (ticks,) = query(pg_url, "SELECT count(*) FROM ticks")[0]
    (runs,) = query(pg_url, "SELECT count(*) FROM runs")[0]
    assert ticks > 0 and runs >= 1


def test_no_heartbeat_file_is_written_for_a_server_url(tmp_path, monkeypatch):
    """The stream runner and the collector both call write_heartbeat with the
    database they write to; for a URL that must not create a stray file."""
    from robust_collector.health import HealthLevel, HealthSnapshot
    from robust_collector.health.store import write_heartbeat

    monkeypatch.chdir(tmp_path)
    snap = HealthSnapshot(ts=time.time(), level=HealthLevel.HEALTHY, reasons=(), components=())
    write_heartbeat("postgresql://u@h/db", snap, "run", 1.0)
    assert list(tmp_path.rglob("*")) == []


def test_a_live_dashboard_opened_mid_run_shows_earlier_transitions_from_postgres(
    pg_url, make_config
):
    from robust_collector.dashboard.model import LiveFeed

    config = make_config(
        storage={"backend": "postgresql", "url": pg_url},
        source={"faults": {"failing_symbols": ["IWM"]}},
    )
    c = Collector(config).start()
    try:
        wait_until(
            lambda: (
                query(pg_url, "SELECT count(*) FROM breaker_events WHERE breaker = 'IWM'")[0][0] > 0
            ),
            timeout=20.0,
        )
        feed = LiveFeed(c)
        try:
            assert any(e.symbol == "IWM" for e in feed.log.events(0))
        finally:
            feed.close()
    finally:
        c.stop()


def test_a_server_down_at_start_is_caught_up_when_it_comes_back(pg_server, pg_url, make_config):
    """The run's own row, its ticks and its events wait (backup files, held events)
    until the server answers; then everything is there once."""
    if not pg_server.restartable:
        pytest.skip("needs a throwaway server it can stop and start (unset RC_TEST_POSTGRES_URL)")
    connect_postgres(pg_url).close()  # the schema exists; the server goes away next
    config = make_config(
        storage={
            "backend": "postgresql",
            "url": pg_url,
            "write_timeout_seconds": 1.0,
            "breaker_timeout_seconds": 0.2,
        },
    )
    pg_server.stop("fast")
    try:
        c = Collector(config).start()
        try:
            wait_until(lambda: c.status().storage.ticks_to_backup >= 30, timeout=30)
        finally:
            pg_server.start()
        wait_until(
            lambda: c.status().storage.replayed_rows >= 30,
            timeout=30,
            detail=lambda: c.status().storage,
        )
        assert c.wait_for(lambda s: s.storage.mode == "database", timeout=30)
    finally:
        summary = c.stop()
    assert summary.storage.lost_rows == 0
    assert query(pg_url, "SELECT status FROM runs WHERE run_id = %s", (c.run_id,)) == [("stopped",)]
    counts = assert_contiguous(pg_url, c.run_id)
    for sym, emitted in c.source.emitted.items():
        (rejected,) = query(
            pg_url,
            "SELECT count(*) FROM rejects WHERE run_id = %s AND symbol = %s",
            (c.run_id, sym),
        )[0]
        assert counts.get(sym, 0) + rejected + summary.symbols[sym].duplicates == emitted, sym
