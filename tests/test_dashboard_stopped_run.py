"""watch() of a run that is over: its clocks stop where the run stopped.

A 90 s run watched later once showed "uptime 1m 42s" and times in state that kept
growing; the view of a stopped run ends its uptime and every time in state at the
run's recorded stop (runs.stopped_us).
"""

from __future__ import annotations

import re
from pathlib import Path

from robust_collector.dashboard.model import view_from_database
from robust_collector.dashboard.render import render_status, render_symbols
from robust_collector.model import now_us
from robust_collector.storage.schema import open_database

S = 1_000_000  # one second in microseconds


def _stopped_run(tmp_path: Path, t0: int) -> Path:
    """Run r1: started at t0, SPY's breaker opened at t0+30 s, stopped at t0+90 s."""
    db = tmp_path / "ticks.db"
    conn = open_database(db)
    with conn:
        conn.execute(
            "INSERT INTO runs (run_id, started_us, stopped_us, status, pid, host, symbols, "
            "config) VALUES ('r1', ?, ?, 'stopped', 1, 'h', '[\"SPY\", \"QQQ\"]', '{}')",
            (t0, t0 + 90 * S),
        )
        conn.execute(
            "INSERT INTO breaker_events (run_id, ts_us, breaker, old_state, new_state, reason) "
            "VALUES ('r1', ?, 'SPY', 'CLOSED', 'OPEN', '5 failures')",
            (t0 + 30 * S,),
        )
    conn.close()
    return db


def _in_state(html: str) -> dict[str, str]:
    """Each symbol row's "In state" cell, as shown."""
    rows = re.findall(r'data-symbol="(\w+)".*?</tr>', html, flags=re.S)
    cells = re.findall(r'<tr class="rc-symbol".*?</tr>', html, flags=re.S)
    return {
        sym: re.findall(r"<td[^>]*>([^<]*)</td>", row)[0]
        for sym, row in zip(rows, cells, strict=True)
    }


def test_a_stopped_run_shows_its_uptime_and_times_in_state_up_to_its_stop(tmp_path):
    t0 = now_us() - 600 * S
    db = _stopped_run(tmp_path, t0)
    for later in (200, 500):  # seen 110 s and 410 s after the stop: the same clocks
        view = view_from_database(db, now_us=t0 + later * S)
        status = render_status(view)
        assert "uptime 1m 30s" in status, status
        assert 'data-running="false"' in status
        assert _in_state(render_symbols(view)) == {"SPY": "1m 00s", "QQQ": "1m 30s"}
