"""Health of the real collector, and the health CLI against a real database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from robust_collector import Collector
from robust_collector.health import HealthLevel

pytestmark = pytest.mark.integration


def levels_in_table(db) -> list[str]:
    conn = sqlite3.connect(db)
    return [
        r[0]
        for r in conn.execute(
            "SELECT level FROM health_snapshots WHERE component = 'system' ORDER BY id"
        )
    ]


def compress(seq):
    out = []
    for x in seq:
        if not out or out[-1] != x:
            out.append(x)
    return out


def test_healthy_degraded_healthy_is_visible_in_the_health_table(make_config):
    cfg = make_config(
        realtime_data={
            "health_check": {"check_interval_seconds": 0.05},
            "circuit_breaker": {"timeout_seconds": 0.3},
        }
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.health_level == "HEALTHY" and s.stored > 30, timeout=30)
        c.source.fail("IWM")
        c.wait_for(lambda s: s.health_level == "DEGRADED", timeout=30)
        snap = c.health()
        assert snap.level is HealthLevel.DEGRADED
        assert any(r.startswith("IWM: breaker OPEN since") for r in snap.reasons), snap.reasons
        assert snap.component("IWM").metrics["breaker_state"] in ("OPEN", "HALF_OPEN")
        assert snap.component("SPY").level is HealthLevel.HEALTHY
        c.source.heal("IWM")
        c.wait_for(lambda s: s.symbols["IWM"].breaker_state == "CLOSED", timeout=30)
        c.wait_for(lambda s: s.health_level == "HEALTHY", timeout=30)
    finally:
        c.stop()
    seq = compress(levels_in_table(c.db_path))
    assert "DEGRADED" in seq
    i = seq.index("DEGRADED")
    assert "HEALTHY" in seq[:i] and "HEALTHY" in seq[i:]
    assert c.errors().height > 0 and "IWM" in c.errors()["symbol"].to_list()
    hist = c.health_history()
    assert {"system", "IWM", "storage", "source", "RobustDataCollector"} <= set(
        hist["component"].to_list()
    )


def test_latest_is_the_cached_fallback_with_honest_ages(make_config):
    cfg = make_config(realtime_data={"health_check": {"max_stale_seconds": 0.5}})
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.symbols["IWM"].stored >= 3, timeout=30)
        c.source.fail("IWM")
        stale = c.wait_for(lambda s: c.latest("IWM").age_seconds > 0.5, timeout=30)
        assert stale
        lq = c.latest("IWM")
        assert lq.stale and lq.quote.symbol == "IWM"
        df = c.latest()
        assert df.filter(df["symbol"] == "IWM")["stale"].item() is True
        assert df.filter(df["symbol"] == "SPY")["stale"].item() is False
        stored_before = c.status().symbols["IWM"].stored
    finally:
        c.stop()
    # the cached value was never written again as a new tick
    assert c.status().symbols["IWM"].stored == stored_before


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def stopped_db(make_config):
    cfg = make_config(
        source={"faults": {"failing_symbols": ["IWM"]}},
        realtime_data={"health_check": {"check_interval_seconds": 0.05}},
    )
    with Collector(cfg) as c:
        c.wait_for(
            # an always-failing symbol is UNHEALTHY (issue 17, finding 4)
            lambda s: s.symbols["IWM"].breaker_state == "OPEN" and s.health_level == "UNHEALTHY",
            timeout=30,
        )
    return c.db_path


def test_health_cli_not_running_is_unknown_exit_3(stopped_db):
    p = run_cli("health", "--db", str(stopped_db))
    assert p.returncode == 3
    assert "not running" in p.stdout
    p = run_cli("health", "--db", str(stopped_db), "--json")
    data = json.loads(p.stdout)
    assert data["level"] == "UNKNOWN" and data["running"] is False
    assert data["level_when_last_seen"] == "UNHEALTHY"


def test_health_cli_errors_and_history_modes(stopped_db):
    p = run_cli("health", "--db", str(stopped_db), "--mode", "errors", "--component", "IWM")
    assert p.returncode == 0
    assert "RECENT ERRORS: IWM" in p.stdout and "simulated connection refused" in p.stdout
    # the seed's own command: the collector as a whole shows every error it recorded
    p = run_cli(
        "health", "--db", str(stopped_db), "--mode", "errors", "--component", "RobustDataCollector"
    )
    assert p.returncode == 0 and "simulated connection refused" in p.stdout
    p = run_cli("health", "--db", str(stopped_db), "--mode", "history", "--count", "500")
    assert p.returncode == 0 and "DEGRADED" in p.stdout and "IWM" in p.stdout
    p = run_cli("health", "--db", str(stopped_db), "--mode", "errors", "--json")
    rows = json.loads(p.stdout)
    assert rows and {"component", "symbol", "error_type", "message"} <= set(rows[0])


def test_health_cli_no_database_exit_3(tmp_path):
    p = run_cli("health", "--db", str(tmp_path / "none.db"))
    assert p.returncode == 3 and "no database" in p.stdout


@pytest.mark.parametrize(
    ("faults", "stale", "code", "level"),
    [
        ({}, 300, 0, "HEALTHY"),
        # an always-failing symbol is UNHEALTHY, like an always-404 one (issue 17, finding 4)
        ({"failing_symbols": ["IWM"]}, 300, 2, "UNHEALTHY"),
        ({"failing_symbols": ["SPY", "QQQ", "IWM"]}, 0.2, 2, "CRITICAL"),
    ],
)
def test_health_cli_against_a_running_collector(make_config, faults, stale, code, level):
    cfg = make_config(
        source={"faults": faults},
        realtime_data={"health_check": {"check_interval_seconds": 0.1, "max_stale_seconds": stale}},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.health_level == level, timeout=30)
        p = run_cli("health", "--db", str(c.db_path))
        assert p.returncode == code, p.stdout + p.stderr
        assert "SYSTEM HEALTH CHECK - " in p.stdout
        assert f"Overall Status: {level}" in p.stdout
        for line in (
            "Operations:",
            "Successes:",
            "Failures:",
            "Success Rate:",
            "Errors/minute:",
            "Data Age:",
            "Breaker:",
        ):
            assert line in p.stdout
        if level == "HEALTHY":
            assert "✅ All systems healthy!" in p.stdout
        else:
            assert "problem(s):" in p.stdout
        p = run_cli(
            "health",
            "--db",
            str(c.db_path),
            "--mode",
            "continuous",
            "--interval",
            "0.1",
            "--count",
            "2",
            "--json",
        )
        assert p.returncode == code
        docs = [json.loads(line) for line in p.stdout.strip().splitlines()]
        assert len(docs) == 2
        assert all(d["running"] is True and d["level"] == level for d in docs)
        p = run_cli("health", "--db", str(c.db_path), "--component", "SPY")
        assert (
            "SPY:" in p.stdout
            and "IWM:" not in p.stdout.split("COMPONENT HEALTH")[1].split("problem")[0]
        )
    finally:
        c.stop()


def test_health_cli_tells_the_truth_while_the_database_is_locked(make_config):
    cfg = make_config(
        storage={"write_timeout_seconds": 0.1, "breaker_timeout_seconds": 0.2},
        realtime_data={"health_check": {"check_interval_seconds": 0.2}},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.health_level == "HEALTHY" and s.stored > 20, timeout=30)
        blocker = sqlite3.connect(c.db_path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            c.wait_for(
                lambda s: s.storage.mode == "backup" and s.health_level == "DEGRADED", timeout=30
            )
            # longer than twice the check interval: the database's snapshots are stale now
            first = c.status().storage.ticks_to_backup
            c.wait_for(lambda s: s.storage.ticks_to_backup > first + 400, timeout=30)
            p = run_cli("health", "--db", str(c.db_path))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    finally:
        c.stop()
    assert p.returncode == 1, p.stdout
    assert "Overall Status: DEGRADED" in p.stdout and "writing to backup files" in p.stdout
