"""The command line against a real PostgreSQL server (tests/helpers/pgserver.py): the
documented fleet setup with only ROBUST_COLLECTOR_DATABASE_URL set, and what the
fleet's health commands say about each instance."""

from __future__ import annotations

import json
import time

import pytest

from robust_collector.cli import main
from robust_collector.storage.postgres import connect_postgres

pytestmark = pytest.mark.integration


def _fleet_errors(url: str) -> None:
    """Two instances' runs and one error each, plus an error of a run not in ``runs``."""
    conn = connect_postgres(url)  # creates the schema
    try:
        now = int(time.time() * 1e6)
        for run, inst in (("r-east", "east"), ("r-west", "west")):
            conn.execute(
                "INSERT INTO runs (run_id, started_us, status, pid, host, instance, symbols, "
                "config) VALUES (%s, %s, 'stopped', 1, 'h', %s, '[\"SPY\"]', '{}')",
                (run, now - 5_000_000, inst),
            )
        for i, (run, sym) in enumerate((("r-east", "SPY"), ("r-west", "IWM"), ("r-gone", "DIA"))):
            conn.execute(
                "INSERT INTO errors (run_id, ts_us, component, symbol, error_type, message) "
                "VALUES (%s, %s, 'source', %s, 'HTTPError', 'HTTP 503')",
                (run, now - 3_000_000 + i, sym),
            )
    finally:
        conn.close()


def test_errors_mode_on_a_fleet_says_which_instance_each_error_came_from(pg_url, capsys):
    _fleet_errors(pg_url)
    assert main(["health", "--db", pg_url, "--mode", "errors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith("  instance east  [source/SPY] HTTPError") for line in lines)
    assert any(line.endswith("  instance west  [source/IWM] HTTPError") for line in lines)
    assert any(line.endswith("  instance unknown  [source/DIA] HTTPError") for line in lines)
    assert main(["health", "--db", pg_url, "--mode", "errors", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["symbol"]: r["instance"] for r in rows} == {"SPY": "east", "IWM": "west", "DIA": None}
