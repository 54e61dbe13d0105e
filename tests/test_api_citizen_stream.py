"""Issue 17, streaming: a Collector against a real ``websockets`` server on 127.0.0.1.

A stream that never connects records its outage; a dead peer's ping timeout is not
mislabelled as silence; refused subscriptions are reported at once; settings a stream
ignores are named at start.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import ws_feed
from helpers.waiting import wait_until
from helpers.ws_feed import (
    SYMBOLS,
    gap_rows,
    rows,
    st,
    stop_flow,
    stream_config,
)

from robust_collector import Collector
from robust_collector.config import Config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_keys")]


class Mute:
    """A TCP server that accepts connections and never says a word (a half-dead server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.sock.settimeout(0.05)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


class _Url:
    """What ``stream_config`` reads of a feed: its preset and URL."""

    def __init__(self, preset: str, url: str) -> None:
        self.preset, self.url = preset, url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 10. a stream that never connects records its outage ------------------------------------


@pytest.mark.parametrize("server", ["refused", "half-dead"])
def test_a_stream_that_never_connects_records_a_gap_from_the_start(
    make_config: Callable[..., Config], server: str
) -> None:
    mute = Mute() if server == "half-dead" else None
    port = mute.port if mute is not None else free_port()
    cfg = stream_config(
        make_config, _Url("alpaca", f"ws://127.0.0.1:{port}"), source={"open_timeout_seconds": 0.2}
    )
    try:
        c = Collector(cfg).start()
        try:
            wait_until(
                lambda: st(c)["connect_failures"] >= 2,
                timeout=10.0,
                what="failed connection attempts",
            )
            assert c.health().component("source").level.name == "UNHEALTHY"
        finally:
            c.stop()
    finally:
        if mute is not None:
            mute.close()
    gaps = [g for g in gap_rows(c) if g[1] == "stream_down"]
    assert sorted(g[0] for g in gaps) == sorted(SYMBOLS)
    assert all("never connected" in g[4] and "until stop" in g[4] for g in gaps), gaps
    (started,) = rows(c, "SELECT started_us FROM runs")[0]
    assert all(abs(g[2] - started) < 2_000_000 for g in gaps)  # from the start of the run
    assert rows(c, "SELECT count(*) FROM errors WHERE error_type = 'StreamRefused'")[0][0] >= 2


def test_a_stream_refused_at_first_has_one_never_connected_gap_ending_at_its_first_connect(
    make_config: Callable[..., Config], feed_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    cfg = stream_config(
        make_config,
        _Url("alpaca", f"ws://127.0.0.1:{port}"),
        # the stream's breaker would otherwise stop the attempts for 60 s after five
        realtime_data={"circuit_breaker": {"failure_threshold": 1000}},
    )
    c = Collector(cfg).start()
    try:
        wait_until(lambda: st(c)["connect_failures"] >= 2, timeout=10.0, what="refusals")
        # the feed now starts on the very port the collector has been trying
        real_serve = ws_feed.serve
        monkeypatch.setattr(ws_feed, "serve", lambda h, host, _port: real_serve(h, host, port))
        feed_up_us = int(time.time() * 1e6)
        feed = feed_factory("alpaca")
        assert feed.port == port
        wait_until(lambda: st(c)["connects"] >= 1, timeout=10.0, what="the first connect")
        connected_seen_us = int(time.time() * 1e6)
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="quotes")
    finally:
        c.stop()
    assert st(c)["connects"] == 1 and st(c)["reconnects"] == 0
    gaps = [g for g in gap_rows(c) if g[1] == "stream_down"]
    assert sorted(g[0] for g in gaps) == sorted(SYMBOLS), gaps  # one outage, one row a symbol
    assert all("never connected" in g[4] and "until stop" not in g[4] for g in gaps), gaps
    assert all("ConnectionRefusedError" in g[4] for g in gaps), gaps
    (started,) = rows(c, "SELECT started_us FROM runs")[0]
    assert all(abs(g[2] - started) < 2_000_000 for g in gaps)  # from the start of the run
    assert all(feed_up_us <= g[3] <= connected_seen_us for g in gaps), (
        feed_up_us,
        connected_seen_us,
        gaps,
    )  # to the first connect, not to the stop
    assert rows(c, "SELECT count(*) FROM ticks")[0][0] >= 30


# -- 11. a dead peer is a ping timeout, even when the symbols went silent too ----------------


def test_a_ping_timeout_coinciding_with_all_silent_is_labelled_ping_timeout(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca")
    # a ping is always out (every 0.05 s) when the 0.15 s silence floor passes
    cfg = stream_config(
        make_config, feed, source={"ping_interval_seconds": 0.05, "ping_timeout_seconds": 0.5}
    )
    c = Collector(cfg).start()
    try:
        wait_until(lambda: st(c)["quotes"] >= 60, timeout=10.0, what="quotes")
        stop_flow(c, feed)
        feed.call(lambda: feed.live.transport.pause_reading())  # no pong, no data: dead
        wait_until(lambda: st(c)["reconnects"] >= 1, timeout=10.0, what="a reconnect")
    finally:
        c.stop()
    assert st(c)["last_cause"] == "ping timeout"
    down = [g for g in gap_rows(c) if g[1] == "stream_down"]
    assert down and all("ping timeout" in g[4] for g in down), down


# -- 12. subscription acknowledgements are checked against the request ------------------------


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_a_refused_subscription_is_reported_at_once(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    feed = feed_factory(preset)
    feed.refuse = {"IWM"}
    feed.active = {"SPY", "QQQ"}
    # the silence ceiling (30 s) would be the only judge of IWM without the ack check
    cfg = stream_config(
        make_config,
        feed,
        source={
            "silence_ceiling_seconds": 30.0,
            "silence_floor_seconds": 10.0,
            "open_timeout_seconds": 0.5,
        },
    )
    c = Collector(cfg).start()
    try:
        wait_until(
            lambda: rows(c, "SELECT symbol FROM errors WHERE error_type = 'SubscriptionRefused'"),
            timeout=3,
            what="the refusal reported",
        )
        assert st(c)["subscribed"] == ("QQQ", "SPY")
        iwm = c.health().component("IWM")
        assert iwm.level.name == "UNHEALTHY"
        assert any("subscription to IWM refused" in r for r in iwm.reasons), iwm.reasons
        assert c.health().component("SPY").level.name == "HEALTHY"
        # after a reconnect that grants IWM, the current set includes it and the flag clears
        feed.refuse = set()
        feed.active = set(SYMBOLS)
        feed.call(lambda: feed.live.transport.abort())
        wait_until(
            lambda: st(c)["subscribed"] == tuple(sorted(SYMBOLS)),
            timeout=10.0,
            what="IWM subscribed",
        )
        assert not c.health().component("IWM").metrics.get("subscription_refused")
        # and a reconnect that refuses it again shrinks the set: no union of old acks
        feed.refuse = {"IWM"}
        feed.active = {"SPY", "QQQ"}
        feed.call(lambda: feed.live.transport.abort())
        wait_until(
            lambda: st(c)["reconnects"] >= 2 and st(c)["state"] == "connected",
            timeout=10.0,
            what="reconnect",
        )
        wait_until(
            lambda: st(c)["subscribed"] == ("QQQ", "SPY"), timeout=10.0, what="the current set"
        )
    finally:
        c.stop()
    refused = rows(c, "SELECT symbol, message FROM errors WHERE error_type = 'SubscriptionRefused'")
    assert {r[0] for r in refused} == {"IWM"}
    assert "subscription to IWM refused" in refused[0][1]


# -- 13. settings a stream does not use are named at start ------------------------------------


def test_polling_settings_set_for_a_stream_are_warned_about_at_start(
    make_config: Callable[..., Config], feed_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    feed = feed_factory("alpaca")
    caplog.set_level(logging.WARNING)
    cfg = stream_config(make_config, feed, realtime_data={"retry": {"max_retries": 7}})
    with Collector(cfg) as c:
        wait_until(lambda: st(c)["quotes"] >= 10, timeout=10.0, what="quotes")
        stop_flow(c, feed)
    lines = [
        r.getMessage() for r in caplog.records if "not used by a streaming source" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    assert "realtime_data.retry.max_retries" in lines[0]
    assert "realtime_data.collect_interval_seconds" in lines[0]  # make_config sets 0.01
