"""The command line against a real PostgreSQL server (tests/helpers/pgserver.py): the
documented fleet setup with only ROBUST_COLLECTOR_DATABASE_URL set, and what the
fleet's health commands say about each instance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robust_collector.cli import main
from robust_collector.storage.postgres import connect_postgres

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


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


# -- the documented setup: only ROBUST_COLLECTOR_DATABASE_URL set ------------------------


def _only_the_variable(url: str) -> dict[str, str]:
    """A fresh shell's environment with the variable exported and nothing else of ours."""
    return {"PATH": os.environ["PATH"], "ROBUST_COLLECTOR_DATABASE_URL": url}


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _project(tmp_path: Path) -> Path:
    """A folder like the repository: its default config names storage.database (a
    SQLite file) but no backend, so the variable decides."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "spy_qqq_config.yaml", tmp_path / "config")
    return tmp_path


def _tables(url: str) -> set[str]:
    conn = connect_postgres(url, init=False)
    try:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
    finally:
        conn.close()


def test_db_init_run_and_health_use_the_variable_alone(pg_url, tmp_path):
    cwd, env = _project(tmp_path), _only_the_variable(pg_url)
    shown = pg_url  # trust auth: no password to hide
    p = _cli("db", "init", cwd=cwd, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"PostgreSQL {shown}: schema version "), p.stdout
    assert {"ticks", "runs", "health_snapshots"} <= _tables(pg_url)
    p = _cli("run", "--duration", "0.8", "--status-interval", "5", cwd=cwd, env=env)
    assert p.returncode == 0, p.stderr
    assert f"data went to {shown} (" in p.stdout
    conn = connect_postgres(pg_url, init=False)
    try:
        assert conn.execute("SELECT count(*) FROM ticks").fetchone()[0] > 0
    finally:
        conn.close()
    p = _cli("health", cwd=cwd, env=env)  # no arguments: the fleet view of that server
    assert p.returncode == 3, p.stderr  # the one run was stopped: nothing runs
    assert p.stdout.startswith(f"fleet at {shown}: 0 of 1 instance(s) running"), p.stdout
    p = _cli("health", "--mode", "errors", cwd=cwd, env=env)
    assert p.returncode == 0 and "RECENT ERRORS" in p.stdout, p.stderr
    assert not (cwd / "data" / "market_data.db").exists()  # no SQLite file anywhere
    assert not list(cwd.rglob("*.db"))


def test_recover_uses_the_variable_and_db_or_an_explicit_backend_still_win(pg_url, tmp_path):
    from robust_collector.storage.backup import BackupWriter

    cwd, env = _project(tmp_path), _only_the_variable(pg_url)
    with BackupWriter(tmp_path / "bk", "r1") as w:
        t0 = int(time.time() * 1e6)
        w.write_batch(
            [
                (f"r1:SPY:{i}", "SPY", i, t0 + i, t0 + i, 1.0, 1.01, 1.0, 1.0, None, "sim", "r1")
                for i in range(1, 6)
            ]
        )
    p = _cli("recover", "--backup-path", "bk", "--quiet", cwd=cwd, env=env)
    assert p.returncode == 0, p.stderr
    assert "inserted 5" in p.stdout
    conn = connect_postgres(pg_url, init=False)
    try:
        assert conn.execute("SELECT count(*) FROM ticks").fetchone()[0] == 5
    finally:
        conn.close()
    assert not list(cwd.rglob("*.db"))
    # --db names another database: it wins
    p = _cli("db", "init", "--db", "local.db", cwd=cwd, env=env)
    assert p.returncode == 0 and p.stdout.startswith("SQLite database local.db:"), p.stdout
    # a config that says backend: sqlite itself wins too
    (cwd / "own.yaml").write_text("storage: {backend: sqlite, database: own.db}\n")
    p = _cli("db", "init", "--config", "own.yaml", cwd=cwd, env=env)
    assert p.returncode == 0 and "own.db" in p.stdout and (cwd / "own.db").exists(), p.stdout
    # a config naming only storage.database is overridden by the variable, and says so
    (cwd / "db_only.yaml").write_text("storage: {database: mine.db}\n")
    p = _cli("db", "init", "--config", "db_only.yaml", cwd=cwd, env=env)
    assert p.returncode == 0 and not (cwd / "mine.db").exists(), p.stdout
    assert "note: the database is ROBUST_COLLECTOR_DATABASE_URL, not db_only.yaml" in p.stderr
