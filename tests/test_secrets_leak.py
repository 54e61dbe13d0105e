"""No credential leaks, whole or in part, from anything the collector writes (issue 16).

Runs the real CLI (HTTP source against a local server, WebSocket source against a local
feed, PostgreSQL storage reached and unreachable) with DEBUG logging on and recognisable
credentials in every form a user can give them, then greps every byte written: stdout,
stderr, the log, the database (dumped), backup files, the heartbeat file, ``health`` in
every mode with and without ``--json``, and exception texts, for any 8-character piece
of each secret.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import ws_feed as feed_module
from helpers.http_server import Provider, QuoteServer, Reply

from robust_collector import secrets
from robust_collector.storage.postgres import redact_url

pytestmark = pytest.mark.integration

PG_USERINFO_PW = "Pg#Userinfo-Qz81Kx"  # an unencoded '#': urlsplit takes it for a fragment
PG_QUERY_PW = "PgQueryPw-Wm47Tr"
PG_BAD_PW = "PgBad Pw-Lk29Jd"  # a blank: libpq refuses the URL and quotes the password
HTTP_KEY = "HttpKey-Fv62Nc-Rb58Ys"
WS_KEY = "WsKey-Hp35Gt-Ue90Ow"
WS_SECRET = "WsSecret-Aa11Bb22Cc33Dd44Ee55Ff66Gg77H8"  # 40 characters
SECRETS = (PG_USERINFO_PW, PG_QUERY_PW, PG_BAD_PW, HTTP_KEY, WS_KEY, WS_SECRET)
PIECE = 8

# the CLI with DEBUG logging on every logger (the CLI's own basicConfig then does nothing)
DEBUG_CLI = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,"
    " format='%(levelname)s %(name)s: %(message)s')\n"
    "from robust_collector.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def pieces(secret: str) -> set[str]:
    """Every ``PIECE``-character substring of ``secret``."""
    return {secret[i : i + PIECE] for i in range(len(secret) - PIECE + 1)}


def leaks(text: str) -> list[str]:
    """The pieces of any secret found in ``text``."""
    return sorted({p for s in SECRETS for p in pieces(s) if p in text})


def test_pieces_are_found_so_the_check_can_fail() -> None:
    assert leaks(f"...token={HTTP_KEY[:9]}...") == [HTTP_KEY[:8], HTTP_KEY[1:9]]
    assert leaks("nothing here") == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Outputs:
    """Everything the CLI printed, keyed by the command that printed it."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd
        self.texts: dict[str, str] = {}

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [sys.executable, "-c", DEBUG_CLI, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**self.env, **(env or {})},
            cwd=self.cwd,
        )
        shown = " ".join(redact_url(a) for a in args)
        self.texts[f"{shown}: stdout"] = p.stdout
        self.texts[f"{shown}: stderr"] = p.stderr
        return p


@pytest.fixture
def http_server() -> Iterator[QuoteServer]:
    prov = Provider("finnhub")
    filler = "upstream failure " + "x" * 90  # the key lands past the API text's 120-char cut
    prov.faults["ECHO"] = lambda n: Reply(500, {"error": f"{filler} token={HTTP_KEY}"})
    prov.faults["DENIED"] = lambda n: Reply(401, {"error": f"Invalid API key {HTTP_KEY}"})
    srv = QuoteServer(prov).__enter__()
    yield srv
    srv.__exit__()


@pytest.fixture
def ws_feed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(feed_module, "KEY", WS_KEY)  # the feed accepts these keys only
    monkeypatch.setattr(feed_module, "SECRET", WS_SECRET)
    feed = feed_module.FakeFeed("alpaca", interval=0.02)
    yield feed
    feed.close()


def with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


def dump_postgres(url: str) -> str:
    """Every row of every table of the database, as text."""
    import psycopg

    out = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            out.append(f"{table}: {conn.execute(f'SELECT * FROM {table}').fetchall()!r}")
    return "\n".join(out)


def test_no_piece_of_any_credential_is_written_anywhere(
    tmp_path: Path, pg_url: str, http_server: QuoteServer, ws_feed: Any
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "RC_", "PG"))}
    env.update(
        RC_HTTP_KEY=HTTP_KEY,
        APCA_API_KEY_ID=WS_KEY,
        APCA_API_SECRET_KEY=WS_SECRET,
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    out = Outputs(env, work)
    good_url = with_password(pg_url, PG_USERINFO_PW)
    dead = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere"
    query_url = f"{dead}?password={PG_QUERY_PW}&connect_timeout=1"
    bad_url = f"postgresql://postgres:{PG_BAD_PW}@[::1:5432/db"
    common = (
        "realtime_data:\n  collect_interval_seconds: 0.05\n"
        "  health_check: {check_interval_seconds: 0.2}\n"
        "  backup: {backup_path: backups}\n"
        "storage: {flush_interval_seconds: 0.1, database: http.db, write_timeout_seconds: 1}\n"
    )
    (work / "http.yaml").write_text(
        "symbols: [SPY, ECHO, DENIED]\n"
        f"source: {{type: http, preset: finnhub, base_url: '{http_server.url}',"
        " api_key_env: RC_HTTP_KEY, timeout_seconds: 0.5}\n" + common
    )
    (work / "ws.yaml").write_text(
        "symbols: [SPY, QQQ]\n"
        f"source: {{type: websocket, preset: alpaca, base_url: '{ws_feed.url}',"
        " open_timeout_seconds: 2}\n" + common.replace("http.db", "ws.db")
    )
    (work / "sim.yaml").write_text("symbols: [SPY]\n" + common.replace("http.db", "sim.db"))

    # 1. HTTP source into SQLite: API texts echo the key (cut short), heartbeat, errors table
    p = out.cli("run", "--config", "http.yaml", "--duration", "2.5", "--status-interval", "0.5")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "token=***" in p.stderr or "Invalid API key ***" in p.stderr + p.stdout
    # 2. WebSocket into PostgreSQL, the URL with a password from the environment
    pg_env = {"ROBUST_COLLECTOR_DATABASE_URL": good_url}
    p = out.cli("run", "--config", "ws.yaml", "--duration", "2.5", "--db", good_url, env=pg_env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "auth" in p.stderr  # websockets' DEBUG frame lines are there, masked
    # 3. an unreachable server given with ?password=: every batch goes to backup files
    p = out.cli("run", "--config", "sim.yaml", "--duration", "2", "--db", query_url)
    assert list((work / "backups").glob("*.jsonl")), p.stderr[-2000:]
    commands = [
        ("recover", "--db", query_url, "--backup-path", "backups", "--quiet"),
        ("recover", "--db", bad_url, "--backup-path", "backups", "--quiet"),
        ("db", "init", "--db", good_url),
        ("db", "init", "--db", bad_url),
        ("db", "init", "--db", query_url),
    ]
    for db in ("http.db", good_url, bad_url, query_url):
        for mode in ("single", "continuous", "history", "errors"):
            extra = ("--count", "1", "--interval", "0.1") if mode == "continuous" else ()
            for js in ((), ("--json",)):
                commands.append(("health", "--db", db, "--mode", mode, *extra, *js))
    # each in its own process (nothing registered by one masks another's output), a few
    # at a time: they only read, and each spends most of its time importing
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda args: out.cli(*args), commands))
    assert "ECHO" in out.texts["health --db http.db --mode errors: stdout"]

    # exception texts raised to a caller of the library
    from robust_collector.errors import StorageError
    from robust_collector.storage.recovery import recover

    for url in (bad_url, query_url):
        with pytest.raises(StorageError) as err:
            recover(url, work / "backups", progress=False)
        out.texts[f"recover({redact_url(url)}) raised"] = f"{err.value!s} {err.value!r}"

    found: dict[str, list[str]] = {}
    for where, text in out.texts.items():
        if leaks(text):
            found[where] = leaks(text)
    for f in sorted(work.rglob("*")):
        if f.is_file():
            text = f.read_bytes().decode("utf-8", "replace")
            if leaks(text):
                found[str(f.relative_to(work))] = leaks(text)
    db_dump = dump_postgres(pg_url)
    assert "ws.yaml" not in db_dump and "SPY" in db_dump
    if leaks(db_dump):
        found["the PostgreSQL dump"] = leaks(db_dump)
    assert found == {}, "\n".join(f"{k}: {v[:3]}" for k, v in found.items())


def test_run_does_not_print_the_database_password(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run``'s first line names the database: masked."""
    from robust_collector.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROBUST_COLLECTOR_DATABASE_URL", with_password(pg_url, PG_USERINFO_PW))
    (tmp_path / "c.yaml").write_text("symbols: [SPY]\nstorage: {backend: postgresql}\n")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["run", "--config", "c.yaml", "--duration", "0.3"]) == 0
    assert leaks(buf.getvalue()) == [], buf.getvalue().splitlines()[0]


def test_secrets_module_masks_every_libpq_form() -> None:
    secrets.register_url_secrets(f"postgresql://u:{PG_BAD_PW}@[::1:1/db")
    cases = {
        f"postgresql://u:{PG_USERINFO_PW}@h:5432/db": "postgresql://u:***@h:5432/db",
        f"postgres://u@h/db?sslmode=require&password={PG_QUERY_PW}": (
            "postgres://u@h/db?sslmode=require&password=***"
        ),
        f"host=h port=5432 password={PG_QUERY_PW} user=u": "host=h port=5432 password=*** user=u",
        f"host=h password='{PG_QUERY_PW} x' user=u": "host=h password=*** user=u",
        f"postgresql://u:{PG_BAD_PW}@[::1:1/db": "postgresql://u:***@[::1:1/db",
        "postgresql://u@h/db": "postgresql://u@h/db",
    }
    for url, shown in cases.items():
        assert redact_url(url) == shown
    # inside any text, e.g. libpq's own error messages
    assert secrets.redact(f'unexpected spaces found in "{PG_BAD_PW}"') == (
        'unexpected spaces found in "***"'
    )
    assert secrets.redact(f"cannot open postgresql://u:{PG_USERINFO_PW}@h/db: x") == (
        "cannot open postgresql://u:***@h/db: x"
    )


def test_a_secret_cut_short_before_redaction_is_still_masked() -> None:
    secrets.register_secret(WS_SECRET)
    assert secrets.redact(f"...token={WS_SECRET[:19]}...") == "...token=***..."
    assert secrets.redact(f"'{WS_SECRET[-22:]}\"}}'") == "'***\"}'"
    assert secrets.scrub("x" * 1990 + WS_SECRET, limit=2000) == "x" * 1990 + "***"


def test_library_log_records_with_auth_frames_or_secret_pieces_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    secrets.register_secret(WS_SECRET)
    caplog.set_level(logging.DEBUG)
    frame = '{"action":"auth","key":"k","secret":"' + WS_SECRET
    logging.getLogger("websockets.client").debug("> TEXT '%s...' [93 bytes]", frame[:40])
    logging.getLogger("websockets.client").debug("> TEXT '...%s' [93 bytes]", WS_SECRET[-22:])
    logging.getLogger("httpx").info("HTTP Request: GET http://h/q?token=%s", WS_SECRET[:12])
    logging.getLogger("psycopg").warning("error: %s", f"password={PG_QUERY_PW}")
    assert leaks(caplog.text) == []
    assert secrets.HIDDEN_RECORD in caplog.text and "token=***" in caplog.text


def test_a_keyword_dsn_given_as_db_is_refused_not_taken_for_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from robust_collector.cli import main

    monkeypatch.chdir(tmp_path)
    dsn = f"host=127.0.0.1 password={PG_QUERY_PW}"
    for argv in (["health", "--db", dsn], ["db", "init", "--db", dsn], ["run", "--db", dsn]):
        assert main(argv) == 2
        printed = capsys.readouterr()
        assert leaks(printed.out + printed.err) == []
        assert "connection string" in printed.err
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the password
