"""Issue 17: ``robust-collector run`` against a dead, wrong or unauthorised API ends with
one clear line and a non-zero exit code (4); a working API still exits 0.

Real subprocesses against real servers on 127.0.0.1 (HTTP and WebSocket).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.http_server import ENV, KEY, Provider, QuoteServer, Reply

pytestmark = pytest.mark.integration

EXIT_SOURCE_FAILED = 4
REPO = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, source: str, *, duration: float = 1.5) -> subprocess.CompletedProcess:
    (tmp_path / "c.yaml").write_text(
        "symbols: [SPY, QQQ]\n"
        f"source:\n{source}"
        "storage: {database: t.db, flush_interval_seconds: 0.05}\n"
        "realtime_data:\n"
        "  collect_interval_seconds: 0.05\n"
        "  retry: {retry_delay: 0.01, max_delay: 0.05}\n"
    )
    env = {**os.environ, **ENV, "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": "s3cret-value"}
    # the package next to these tests, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    return subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", "run", "--config", "c.yaml",
         "--duration", str(duration), "--status-interval", "10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def http_source(base_url: str, preset: str = "polygon", extra: str = "") -> str:
    return (
        f"  type: http\n  preset: {preset}\n  base_url: {base_url}\n"
        "  api_key_env: RC_TEST_KEY\n  timeout_seconds: 0.3\n" + extra
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_run_against_a_port_nothing_listens_on_fails_naming_host_and_port(tmp_path):
    port = free_port()
    p = run(tmp_path, http_source(f"http://127.0.0.1:{port}"))
    assert p.returncode == EXIT_SOURCE_FAILED, p.stdout + p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "nothing stored: every request to the source failed" in last
    assert f"127.0.0.1:{port}" in last and "failed attempts" in last
    assert "Traceback" not in p.stderr
    # the summary counts every failed request of each symbol, not one per poll or per run
    failed = summary_column(p.stdout, "failed req")
    assert set(failed) == {"SPY", "QQQ"} and all(n > 1 for n in failed.values()), failed


def test_a_run_whose_stream_port_nothing_listens_on_fails_with_one_line_and_gaps(tmp_path):
    port = free_port()
    source = (
        f"  type: websocket\n  preset: alpaca\n  base_url: ws://127.0.0.1:{port}\n"
        "  reconnect_delay_seconds: 0.05\n  reconnect_max_delay_seconds: 0.2\n"
    )
    p = run(tmp_path, source, duration=1.5)
    assert p.returncode == EXIT_SOURCE_FAILED, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    verdicts = [ln for ln in p.stderr.splitlines() if ln.startswith("robust-collector run:")]
    assert len(verdicts) == 1, p.stderr  # one clear line
    line = verdicts[0]
    assert line == p.stderr.strip().splitlines()[-1]
    assert "nothing stored: every request to the source failed" in line
    assert f"127.0.0.1:{port}" in line
    attempts = int(line.split("(")[1].split(" failed attempts")[0])
    assert attempts > 1  # the stream kept trying, and every attempt is counted
    gaps = sqlite_rows(
        tmp_path / "t.db", "SELECT symbol, cause, start_us, end_us, detail FROM gaps"
    )
    assert sorted(g[0] for g in gaps) == ["QQQ", "SPY"], gaps  # one outage row per symbol
    assert all(g[1] == "stream_down" and "never connected" in g[4] for g in gaps), gaps
    assert all(g[3] > g[2] for g in gaps), gaps


def summary_column(stdout: str, name: str) -> dict[str, int]:
    """One integer column of the run summary's per-symbol table, by symbol."""
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["symbol"] and name in ln)
    col = lines[head].split().index(name.split()[0])
    out: dict[str, int] = {}
    for ln in lines[head + 1 :]:
        cells = ln.split()
        if not cells:
            break
        out[cells[0]] = int(cells[col])
    return out


def sqlite_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_a_run_against_a_wrong_base_url_fails(tmp_path):
    with QuoteServer(lambda req: Reply(404, {"message": "no such route"})) as srv:
        p = run(tmp_path, http_source(srv.url + "/wrong"))
    assert p.returncode == EXIT_SOURCE_FAILED, p.stdout + p.stderr
    assert "nothing stored" in p.stderr and "HTTP 404" in p.stderr


def test_a_run_with_refused_credentials_fails_naming_the_variables(tmp_path):
    prov = Provider("polygon")
    for s in ("SPY", "QQQ"):
        prov.faults[s] = lambda n: Reply(401, {"status": "ERROR", "error": "Unknown API Key"})
    with QuoteServer(prov) as srv:
        p = run(tmp_path, http_source(srv.url, extra="  auth_retry_seconds: 0.5\n"))
    assert p.returncode == EXIT_SOURCE_FAILED, p.stdout + p.stderr
    assert "the source failed: credentials refused" in p.stderr
    assert "RC_TEST_KEY" in p.stderr and KEY not in p.stdout + p.stderr
    errors = [ln for ln in p.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, errors  # one clear error in the log, not one per symbol


def test_a_run_against_a_working_api_still_exits_0(tmp_path):
    with QuoteServer(Provider("polygon")) as srv:
        p = run(tmp_path, http_source(srv.url), duration=1.0)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_run_whose_stream_refuses_the_credentials_fails(tmp_path, feed_factory):
    feed = feed_factory("alpaca")
    feed.auth_error = "refused"
    source = f"  type: websocket\n  preset: alpaca\n  base_url: {feed.url}\n"
    p = run(tmp_path, source, duration=20)
    assert p.returncode == EXIT_SOURCE_FAILED, p.stdout + p.stderr
    assert "the source failed: stream stopped" in p.stderr
    assert "APCA_API_KEY_ID" in p.stderr
    elapsed = float(p.stdout.split("stopped after ")[1].split("s")[0])
    assert elapsed < 15  # the run ends once the stream has stopped for good
