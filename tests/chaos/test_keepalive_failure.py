"""A keepalive that fails in an unplanned way ends its connection loudly: the stream reconnects."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from helpers.waiting import wait_until
from helpers.ws_feed import assert_nothing_lost, gap_rows, st, stop_flow, stream_config
from websockets.asyncio.client import ClientConnection

from robust_collector import Collector
from robust_collector.config import Config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_keys")]


def test_a_ping_that_raises_closes_the_connection_and_the_stream_reconnects(
    make_config: Callable[..., Config],
    feed_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = feed_factory("alpaca")
    # symbols may be silent for 30 s before that counts: only the keepalive watches the peer
    cfg = stream_config(
        make_config,
        feed,
        source={"silence_floor_seconds": 30.0, "silence_ceiling_seconds": 60.0},
    )
    real_ping = ClientConnection.ping
    pings = 0

    async def ping(self: ClientConnection, *args: Any, **kwargs: Any) -> Any:
        nonlocal pings
        pings += 1
        if pings == 1:  # the first connection's first ping: a bug nobody planned for
            raise RuntimeError("ping broke")
        return await real_ping(self, *args, **kwargs)

    monkeypatch.setattr(ClientConnection, "ping", ping)
    caplog.set_level(logging.ERROR, logger="robust_collector.sources.websocket")
    c = Collector(cfg).start()
    try:
        wait_until(
            lambda: st(c)["reconnects"] >= 1 and st(c)["state"] == "connected",
            timeout=10.0,
            what="a reconnect after the keepalive failed",
            detail=lambda: st(c),
        )
        assert st(c)["last_cause"] == "keepalive failed (RuntimeError: ping broke)"
        # the new connection is watched again: its pings go out and it keeps storing
        wait_until(lambda: pings >= 3, timeout=10.0, what="pings on the new connection")
        n = st(c)["quotes"]
        wait_until(lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="quotes after it")
        stop_flow(c, feed)
    finally:
        c.stop()
    assert st(c)["reconnects"] == 1 and feed.connections == 2
    failures = [r for r in caplog.records if "keepalive failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None  # once, with its traceback
    causes = {g[4] for g in gap_rows(c) if g[1] == "stream_down"}
    assert causes and all("keepalive failed" in d for d in causes), causes
    assert_nothing_lost(c, feed)
