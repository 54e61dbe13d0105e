"""Shared fixtures: configs pointed at a temporary folder, and the TAQ sample location."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from robust_collector.config import Config, config_from_dict

REPO = Path(__file__).resolve().parents[1]

# a user's own database URL must not send the SQLite tests to their PostgreSQL server
# (the CLI honours it when no --db or config says otherwise); tests that mean it set it
os.environ.pop("ROBUST_COLLECTOR_DATABASE_URL", None)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a fast test config (10 ms polls) writing under ``tmp_path``; kwargs override."""

    def make(**over: Any) -> Config:
        base = {
            "symbols": ["SPY", "QQQ", "IWM"],
            "storage": {"database": "db/ticks.db", "flush_interval_seconds": 0.05},
            "realtime_data": {
                "collect_interval_seconds": 0.01,
                "buffer_size": 20,
                "retry": {"retry_delay": 0.005, "max_delay": 0.05},
                "backup": {"backup_path": "backups"},
            },
        }
        return config_from_dict(_merge(base, over), base_dir=tmp_path)

    return make


@pytest.fixture
def taq_dir() -> Path:
    """The shared TAQ sample folder; tests using it skip where it is absent."""
    d = Path(os.environ.get("RC_TAQ_DIR", REPO.parent / "shared" / "data" / "taq_sample"))
    if not (d / "sampleQDataRaw.parquet").exists():
        pytest.skip(f"TAQ sample not found at {d} (set RC_TAQ_DIR to its folder)")
    return d


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server: ``RC_TEST_POSTGRES_URL``'s, else a throwaway one of our own."""
    pytest.importorskip("psycopg", reason="the PostgreSQL tests need psycopg (the test extra)")
    from helpers.pgserver import HOW_TO_ENABLE, URL_ENV, PgServer, find_bin_dir

    url = os.environ.get(URL_ENV)
    if url:
        server = PgServer(url)
        server.wait_ready(timeout=10)
        yield server
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(HOW_TO_ENABLE)
    server = PgServer.start_throwaway(bin_dir)
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh empty database on the test server, dropped afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def feed_factory() -> Iterator[Callable[..., Any]]:
    """``make(preset, **kw)`` -> a fake WebSocket feed on 127.0.0.1; all closed at the end."""
    from helpers.ws_feed import FakeFeed

    feeds: list[FakeFeed] = []

    def make(preset: str = "alpaca", **kw: Any) -> FakeFeed:
        f = FakeFeed(preset, **kw)
        feeds.append(f)
        return f

    yield make
    for f in feeds:
        f.close()


@pytest.fixture
def stream_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream presets' credentials, as the fake feeds expect them."""
    from helpers.ws_feed import KEY, SECRET

    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
