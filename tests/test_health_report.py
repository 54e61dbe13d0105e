"""`robust-collector health` from another process: liveness, ages, and safe output.

The reports are judged here against databases and heartbeat files written by
hand, so each rule is exercised exactly: a run recorded as stopped reads as
stopped; a pid recorded on this host that is gone (exited, a zombie, or reused
by another process) is dead at once; a heartbeat older than
max(3 x its interval, 3 s) is "not reporting"; every report shows its age; and
text that came from outside is printed escaped, never raw to the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from robust_collector.cli import main, status_line
from robust_collector.health import ComponentHealth, HealthLevel, HealthSnapshot
from robust_collector.health import report as hr
from robust_collector.health.fleet import fleet_status, render_fleet
from robust_collector.health.store import (
    StoredSnapshot,
    heartbeat_path,
    latest_snapshot,
    mark_heartbeat_stopped,
    process_start,
    snapshot_rows,
    write_heartbeat,
)
from robust_collector.model import now_us
from robust_collector.storage.schema import open_database

OSC = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
HOST = socket.gethostname()


def _db(tmp_path: Path) -> Path:
    db = tmp_path / "ticks.db"
    open_database(db).close()
    return db


def _run_row(
    db: Path,
    run_id: str,
    *,
    pid: int | None,
    host: str | None,
    status: str = "running",
    interval: float = 60.0,
    instance: str | None = None,
    symbols: str = '["SPY"]',
) -> None:
    cfg = json.dumps({"realtime_data": {"health_check": {"check_interval_seconds": interval}}})
    conn = open_database(db)
    with conn:
        conn.execute(
            "INSERT INTO runs (run_id, started_us, stopped_us, status, pid, host, instance, "
            "symbols, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                now_us() - 10_000_000,
                now_us() if status == "stopped" else None,
                status,
                pid,
                host,
                instance,
                symbols,
                cfg,
            ),
        )
    conn.close()


def _snap(ts: float | None = None, reasons: tuple[str, ...] = ()) -> HealthSnapshot:
    comp = ComponentHealth(
        "SPY", "symbol", HealthLevel.HEALTHY, reasons, {"operations": 3, "successes": 3}
    )
    level = HealthLevel.DEGRADED if reasons else HealthLevel.HEALTHY
    return HealthSnapshot(time.time() if ts is None else ts, level, reasons, (comp,))


def _store(db: Path, snap: HealthSnapshot, run_id: str) -> None:
    conn = open_database(db)
    with conn:
        for sql, row in snapshot_rows(snap, run_id):
            conn.execute(sql, row)
    conn.close()


def _stored(**over) -> StoredSnapshot:
    base = dict(
        run_id="r1",
        ts_us=now_us(),
        level=HealthLevel.HEALTHY,
        reasons=(),
        components=(),
        run_status="running",
        run_stopped_us=None,
        check_interval_seconds=60.0,
        pid=None,
        host=None,
        heartbeat_us=None,
        heartbeat_interval_seconds=1.0,
    )
    base.update(over)
    return StoredSnapshot(**base)


def _gone_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- liveness -------------------------------------------------------------------------


def test_a_fresh_snapshot_of_a_live_pid_is_running():
    live = hr.liveness(_stored(pid=os.getpid(), host=HOST), now_us())
    assert live.state == "running" and live.message is None


def test_a_pid_gone_on_this_host_is_dead_at_once_whatever_the_age():
    pid = _gone_pid()
    live = hr.liveness(_stored(pid=pid, host=HOST), now_us())  # written just now
    assert live.state == "dead" and live.failed
    assert f"collector pid {pid} on host {HOST} is not running" in live.message
    assert "last heartbeat" in live.message


@pytest.mark.integration
def test_a_killed_but_unreaped_process_is_dead():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(p.pid, 9)
        deadline = time.monotonic() + 10
        while hr.pid_alive(p.pid) is not False:  # the zombie appears within microseconds
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        p.wait()


def test_a_reused_pid_is_not_the_collector():
    start = process_start(os.getpid())
    assert start is not None
    assert hr.pid_alive(os.getpid(), start) is True
    assert hr.pid_alive(os.getpid(), str(int(start) + 1)) is False
    live = hr.liveness(_stored(pid=os.getpid(), host=HOST, pid_start="1"), now_us())
    assert live.state == "dead"


def test_a_stale_heartbeat_from_another_host_is_not_running():
    now = now_us()
    live = hr.liveness(
        _stored(pid=1234, host="box-2", ts_us=now - 7_000_000, heartbeat_interval_seconds=1.0),
        now,
    )
    assert live.state == "silent" and live.failed
    assert (
        live.message == "collector pid 1234 on host box-2 is not running (last heartbeat 7.0 s ago)"
    )


def test_the_silence_threshold_is_three_beats_and_never_under_3s():
    now = now_us()
    two = _stored(pid=1, host="other", ts_us=now - 2_500_000, heartbeat_interval_seconds=0.2)
    assert hr.liveness(two, now).running  # 2.5 s: under the 3 s floor
    four = dataclasses.replace(two, ts_us=now - 3_500_000)
    assert hr.liveness(four, now).state == "silent"
    slow = _stored(pid=1, host="other", ts_us=now - 20_000_000, heartbeat_interval_seconds=10)
    assert hr.liveness(slow, now).running  # 20 s < 3 x 10 s
    # the newer heartbeat counts, not only the snapshot's own time
    beat = _stored(
        pid=1,
        host="other",
        ts_us=now - 50_000_000,
        heartbeat_us=now - 500_000,
        heartbeat_interval_seconds=1,
    )
    assert hr.liveness(beat, now).running


def test_a_live_but_silent_process_on_this_host_is_reported_stuck():
    now = now_us()
    live = hr.liveness(_stored(pid=os.getpid(), host=HOST, ts_us=now - 9_000_000), now)
    assert live.state == "silent" and "is not reporting" in live.message
    assert "9.0 s" in live.message


def test_a_run_recorded_as_stopped_reads_as_stopped_not_as_an_error():
    live = hr.liveness(
        _stored(pid=_gone_pid(), host=HOST, run_status="stopped", run_stopped_us=now_us()),
        now_us(),
    )
    assert live.state == "stopped" and not live.failed
    assert "was stopped at" in live.message


# -- the health command against files written by hand ---------------------------------


def test_health_reports_the_snapshot_age_in_text_and_json(tmp_path, capsys):
    db = _db(tmp_path)
    _run_row(db, "r1", pid=os.getpid(), host=HOST)
    snap = _snap(time.time() - 1.5)
    _store(db, snap, "r1")
    write_heartbeat(db, snap, "r1", 60.0, heartbeat_interval=1.0)
    assert main(["health", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[1]
    assert first.startswith("SYSTEM HEALTH CHECK - as of ") and " UTC, " in first
    assert first.endswith(" s ago")
    age = float(first.rsplit(", ", 1)[1].split(" s ago")[0])
    assert 1.4 <= age < 30
    assert "last heartbeat" in out
    assert main(["health", "--db", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["as_of"].startswith("as of ") and 1.4 <= data["age_seconds"] < 30
    assert data["heartbeat_age_seconds"] < 30 and data["pid"] == os.getpid()
    assert data["state"] == "running" and data["running"] is True
    assert main(["health", "--db", str(db), "--mode", "history", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["age_seconds"] >= 1.4 for r in rows)
    assert main(["health", "--db", str(db), "--mode", "history"]) == 0
    assert "newest snapshot as of " in capsys.readouterr().out


def test_health_says_dead_collector_is_critical_with_pid_and_host(tmp_path, capsys):
    db = _db(tmp_path)
    pid = _gone_pid()
    _run_row(db, "r1", pid=pid, host=HOST)
    snap = _snap()
    _store(db, snap, "r1")
    assert main(["health", "--db", str(db)]) == 2
    out = capsys.readouterr().out
    assert f"CRITICAL: collector pid {pid} on host {HOST} is not running" in out
    assert "last snapshot as of " in out and "last level HEALTHY" in out


def test_a_heartbeat_marked_stopped_reads_as_stopped_while_the_runs_row_says_running(
    tmp_path, capsys
):
    db = _db(tmp_path)
    _run_row(db, "r1", pid=_gone_pid(), host=HOST)  # the stop could not reach the database
    write_heartbeat(db, _snap(), "r1", 60.0, heartbeat_interval=1.0)
    assert mark_heartbeat_stopped(db, "r1")
    assert not mark_heartbeat_stopped(db, "another-run")
    assert main(["health", "--db", str(db)]) == 3
    out = capsys.readouterr().out
    assert "UNKNOWN" in out and "is not running: run r1 was stopped at" in out
    assert main(["health", "--db", str(db), "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "stopped" and data["level"] == "UNKNOWN"


def test_the_heartbeat_file_records_pid_host_time_and_interval(tmp_path):
    db = tmp_path / "x.db"
    before = now_us()
    write_heartbeat(db, _snap(), "r1", 60.0)  # the old four-argument call still works
    data = orjson.loads(heartbeat_path(db).read_bytes())
    assert data["pid"] == os.getpid() and data["host"] == HOST
    assert data["written_us"] >= before and data["heartbeat_interval_seconds"] == 60.0
    assert data["status"] == "running"
    write_heartbeat(db, _snap(reasons=("bad \ud83d",)), "r1", 60.0, heartbeat_interval=1.0)
    data = orjson.loads(heartbeat_path(db).read_bytes())
    assert data["heartbeat_interval_seconds"] == 1.0
    assert data["reasons"] == ["bad \\ud83d"]  # a lone surrogate cannot kill the health loop
    snap = latest_snapshot(db)
    assert snap is not None and snap.pid == os.getpid() and snap.beat_interval_seconds == 1.0


# -- output boundary: outside text is printed escaped -----------------------------------


def test_errors_mode_prints_escape_sequences_escaped(tmp_path, capsys):
    db = _db(tmp_path)
    conn = open_database(db)
    with conn:
        conn.execute(
            "INSERT INTO errors (run_id, ts_us, component, symbol, error_type, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("r1", now_us(), "source", f"SPY{CLEAR}", f"HTTPError{OSC}", f"quota {OSC} {CLEAR}!"),
        )
    conn.close()
    assert main(["health", "--db", str(db), "--mode", "errors"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "quota \\x1b]0;pwned\\x07 \\x1b[2J!" in out
    assert "[source/SPY\\x1b[2J] HTTPError\\x1b]0;pwned\\x07" in out
    assert " s ago)" in out  # each error's age
    assert main(["health", "--db", str(db), "--mode", "errors", "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    rows = json.loads(out)
    assert rows[0]["message"] == f"quota {OSC} {CLEAR}!" and rows[0]["age_seconds"] >= 0


def test_single_report_prints_outside_reasons_escaped(tmp_path, capsys):
    db = _db(tmp_path)
    _run_row(db, "r1", pid=os.getpid(), host=HOST)
    _store(db, _snap(reasons=(f"SPY: API said {OSC}{CLEAR}",)), "r1")
    assert main(["health", "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "API said \\x1b]0;pwned\\x07\\x1b[2J" in out


def test_fleet_view_prints_names_and_reasons_escaped(tmp_path):
    db = _db(tmp_path)
    _run_row(
        db,
        "r1",
        pid=os.getpid(),
        host=f"box{CLEAR}",
        instance=f"east{OSC}",
        symbols=json.dumps([f"SPY{CLEAR}"]),
    )
    _store(
        db,
        HealthSnapshot(
            time.time(),
            HealthLevel.DEGRADED,
            (f"feed said {OSC}",),
            (ComponentHealth("x", "symbol", HealthLevel.DEGRADED, (), {}),),
        ),
        "r1",
    )
    conn = open_database(db)
    with conn:  # the fleet reads the collector's system row
        conn.execute(
            "UPDATE health_snapshots SET component = 'RobustDataCollector' "
            "WHERE component = 'system'"
        )
    conn.close()
    text = render_fleet(fleet_status(db), str(db))
    assert "\x1b" not in text and "\x07" not in text
    assert "east\\x1b]0;pwned\\x07" in text and "feed said \\x1b]0;pwned\\x07" in text
    assert "SPY\\x1b[2J" in text and "box\\x1b[2J" in text


def test_fleet_view_sees_a_dead_pid_on_this_host_at_once(tmp_path):
    db = _db(tmp_path)
    _run_row(db, "r1", pid=_gone_pid(), host=HOST, instance="east")
    _store(db, _snap(), "r1")
    conn = open_database(db)
    with conn:
        conn.execute(
            "UPDATE health_snapshots SET component = 'RobustDataCollector' "
            "WHERE component = 'system'"
        )
    conn.close()
    (inst,) = fleet_status(db)
    assert not inst.running and inst.process_gone and not inst.stopped_cleanly
    assert "stopped reporting: process gone" in render_fleet([inst], str(db))
    assert inst.as_dict()["last_heartbeat_age_seconds"] < 30


@pytest.mark.integration
def test_run_status_line_shows_outside_text_escaped(make_config):
    from robust_collector.collector import Collector

    c = Collector(make_config(symbols=["SPY"]))
    st = c.status()
    evil = dataclasses.replace(st.symbols["SPY"], symbol=f"SPY{OSC}", breaker_state=CLEAR)
    c.status = lambda: dataclasses.replace(st, symbols={"SPY": evil})  # type: ignore[method-assign]
    line = status_line(c)
    assert "\x1b" not in line and "\x07" not in line
    assert "SPY\\x1b]0;pwned\\x07" in line and "[\\x1b[2J]" in line
    assert line.split()[0] in {lvl.name for lvl in HealthLevel}  # the level evaluated now


@pytest.mark.parametrize("seconds", [0.04, 1.25, 59.9, 61, 7300])
def test_ages_read_naturally(seconds):
    text = hr.fmt_ago(seconds)
    assert text.endswith(" ago")
    if seconds < 60:
        assert text == f"{seconds:.1f} s ago"
    assert hr.as_of(1_796_000_000_000_000, 1_796_000_000_000_000 + int(seconds * 1e6)).startswith(
        "as of 2026-"
    )


# -- --component: one component, its exit code, its JSON ---------------------------------


def _two_components_db(tmp_path: Path) -> Path:
    """A running collector's snapshot: SPY healthy, IWM degraded (so overall DEGRADED)."""
    db = _db(tmp_path)
    _run_row(db, "r1", pid=os.getpid(), host=HOST)
    spy = ComponentHealth("SPY", "symbol", HealthLevel.HEALTHY, (), {"operations": 3})
    iwm = ComponentHealth(
        "IWM", "symbol", HealthLevel.DEGRADED, ("IWM: breaker OPEN",), {"operations": 3}
    )
    snap = HealthSnapshot(time.time(), HealthLevel.DEGRADED, ("IWM: breaker OPEN",), (spy, iwm))
    _store(db, snap, "r1")
    return db


def test_an_unknown_component_is_one_line_listing_the_known_ones_exit_3(tmp_path, capsys):
    db = _two_components_db(tmp_path)
    assert main(["health", "--db", str(db), "--component", "nosuch"]) == 3
    out = capsys.readouterr().out  # one line; no report, no "All systems healthy!"
    assert out == "❔ UNKNOWN: no component named 'nosuch'; known: SPY, IWM\n"
    assert main(["health", "--db", str(db), "--component", "nosuch", "--json"]) == 3
    assert json.loads(capsys.readouterr().out) == {
        "level": "UNKNOWN",
        "error": "no component named 'nosuch'; known: SPY, IWM",
    }
    args = ["--mode", "continuous", "--count", "3", "--interval", "0.01"]
    assert main(["health", "--db", str(db), "--component", "nosuch", *args]) == 3
    assert capsys.readouterr().out.count("no component named") == 1  # said once, then stops


def test_component_sets_the_exit_code_and_filters_json(tmp_path, capsys):
    db = _two_components_db(tmp_path)
    assert main(["health", "--db", str(db)]) == 1  # overall DEGRADED
    capsys.readouterr()
    assert main(["health", "--db", str(db), "--component", "SPY"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("✅ SPY: healthy (overall: DEGRADED)")
    assert "IWM" not in out and "All systems healthy" not in out
    assert main(["health", "--db", str(db), "--component", "IWM"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("⚠️ IWM: DEGRADED (overall: DEGRADED)")
    assert main(["health", "--db", str(db), "--component", "SPY", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["component"] == "SPY" and data["level"] == "DEGRADED"
    assert [c["name"] for c in data["components"]] == ["SPY"]


def test_history_json_holds_reasons_and_metrics_as_data_not_strings(tmp_path, capsys):
    db = _two_components_db(tmp_path)
    assert main(["health", "--db", str(db), "--mode", "history", "--json"]) == 0
    rows = {r["component"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["IWM"]["reasons"] == ["IWM: breaker OPEN"]
    assert rows["IWM"]["metrics"]["operations"] == 3
    assert rows["SPY"]["reasons"] == [] and rows["system"]["level"] == "DEGRADED"
