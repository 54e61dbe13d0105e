"""The streaming source end to end: a Collector against a real ``websockets`` server on
127.0.0.1 speaking the alpaca or polygon protocol, with faults.

Each scenario waits on conditions (never fixed sleeps) and ends by checking the
stream's state, reconnects, resubscriptions, gap rows, health levels, and that
nothing was lost between the reader and the database: every quote the server
sent is a tick, a reject or a counted duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import wait_until
from helpers.ws_feed import (
    KEY,
    SECRET,
    SYMBOLS,
    all_stored,
    assert_nothing_lost,
    gap_rows,
    received_all,
    rfc3339,
    rows,
    st,
    stop_flow,
    stream_config,
)

from robust_collector import Collector
from robust_collector.boundary import clean_text
from robust_collector.config import Config
from robust_collector.storage.recovery import recover

# -- scenarios --------------------------------------------------------------------------

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_keys")]


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_dropped_connection_reconnects_resubscribes_and_records_the_outage(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    feed = feed_factory(preset)
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(lambda: st(c)["quotes"] >= 60, timeout=10.0, what="quotes")
        assert st(c)["subscribed"] == tuple(sorted(SYMBOLS))
        stop_flow(c, feed)
        feed.call(lambda: feed.live.transport.abort())  # dropped mid-stream, no close frame
        feed.flowing = True
        wait_until(
            lambda: st(c)["reconnects"] == 1 and st(c)["state"] == "connected",
            timeout=10.0,
            what="reconnect",
        )
        n = st(c)["quotes"]
        wait_until(
            lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="quotes after the reconnect"
        )
        stop_flow(c, feed)
    finally:
        c.stop()
    assert feed.connections == 2
    assert feed.subscribes == [sorted(SYMBOLS), sorted(SYMBOLS)] or all(
        sorted(s) == sorted(SYMBOLS) for s in feed.subscribes
    )
    assert len(feed.subscribes) == 2  # resubscribed every symbol
    down = [g for g in gap_rows(c) if g[1] == "stream_down"]
    assert sorted(g[0] for g in down) == sorted(SYMBOLS)
    assert all(g[3] > g[2] for g in down)
    assert "connection dropped" in down[0][4] or "1006" in down[0][4]
    assert rows(c, "SELECT count(*) FROM errors WHERE error_type = 'StreamClosed'")[0][0] == 1
    assert_nothing_lost(c, feed)


def test_open_but_silent_connection_is_caught_and_reconnected(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("polygon")
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(lambda: st(c)["quotes"] >= 60, timeout=10.0, what="quotes")
        stop_flow(c, feed)  # the server keeps the socket open and answers pings, but says nothing
        wait_until(
            lambda: st(c)["reconnects"] >= 1,
            timeout=10.0,
            what="a reconnect after every symbol went silent",
        )
        assert st(c)["last_cause"] == "every symbol silent"
        feed.flowing = True
        wait_until(
            lambda: st(c)["state"] == "connected" and len(feed.subscribes) >= 2,
            timeout=10.0,
            what="resub",
        )
        n = st(c)["quotes"]
        wait_until(
            lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="quotes after the reconnect"
        )
        stop_flow(c, feed)
    finally:
        c.stop()
    gaps = gap_rows(c)
    silent = {g[0] for g in gaps if g[1] == "symbol_silent"}
    down = {g[0] for g in gaps if g[1] == "stream_down"}
    assert silent == set(SYMBOLS) and down == set(SYMBOLS)
    assert any("every symbol silent" in g[4] for g in gaps if g[1] == "stream_down")
    assert_nothing_lost(c, feed)


def test_half_dead_connection_is_caught_by_ping_timeout(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca")
    # symbols may be silent for 30 s before that counts: only the ping can catch this
    cfg = stream_config(
        make_config,
        feed,
        source={"silence_floor_seconds": 30.0, "silence_ceiling_seconds": 60.0},
    )
    c = Collector(cfg).start()
    try:
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="quotes")
        stop_flow(c, feed)
        # the server stops reading: no pong comes back, though TCP stays up
        feed.call(lambda: feed.live.transport.pause_reading())
        wait_until(
            lambda: st(c)["reconnects"] >= 1,
            timeout=10.0,
            what="a reconnect after the ping timed out",
        )
    finally:
        c.stop()
    assert st(c)["last_cause"] == "ping timeout"
    causes = {g[4] for g in gap_rows(c) if g[1] == "stream_down"}
    assert causes and all("ping timeout" in d for d in causes), causes


def test_one_silent_symbol_is_marked_stale_without_a_reconnect(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca")
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(lambda: c.status().symbols["IWM"].quotes >= 40, timeout=10.0, what="IWM quotes")
        feed.active.discard("IWM")
        wait_until(lambda: "IWM" in st(c)["silent"], timeout=10.0, what="IWM marked silent")
        health = c.health()
        iwm = health.component("IWM")
        assert iwm.level.name == "DEGRADED" and "stale" in iwm.reasons[0]
        assert health.component("SPY").level.name == "HEALTHY"
        assert st(c)["silent"] == ("IWM",) and st(c)["reconnects"] == 0
        feed.active.add("IWM")
        wait_until(lambda: not st(c)["silent"], timeout=10.0, what="IWM back")
        stop_flow(c, feed)
    finally:
        c.stop()
    gaps = gap_rows(c)
    assert [(g[0], g[1]) for g in gaps] == [("IWM", "symbol_silent")]
    assert "threshold" in gaps[0][4]
    assert feed.connections == 1
    assert_nothing_lost(c, feed)


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_refused_credentials_stop_the_stream_without_a_reconnect_storm(
    make_config: Callable[..., Config],
    feed_factory: Any,
    preset: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = feed_factory(preset)
    feed.auth_error = "refused"
    caplog.set_level(logging.DEBUG)
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(lambda: st(c)["state"] == "failed", timeout=10.0, what="the stream to fail")
        # "failed" is set as the supervisor returns (no await in between): no task is
        # left that could connect again, so one connection now is one connection for good
        assert feed.connections == 1
        health = c.health()
        assert health.level.name == "CRITICAL"
        assert any("stream stopped" in r for r in health.component("source").reasons)
    finally:
        c.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert "\n" not in line and "not reconnecting" in line
    assert ("402" in line) if preset == "alpaca" else ("auth_failed" in line)
    assert "APCA_API_KEY_ID" in line or "POLYGON_API_KEY" in line
    everything = "\n".join(r.getMessage() for r in caplog.records)
    stored = str(rows(c, "SELECT * FROM errors")) + str(rows(c, "SELECT * FROM health_snapshots"))
    assert KEY not in everything + stored and SECRET not in everything + stored
    assert rows(c, "SELECT count(*) FROM errors WHERE error_type = 'StreamAuthError'")[0][0] == 1


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_connection_limit_is_transient_and_backs_off(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    feed = feed_factory(preset)
    feed.limit_refusals = 3
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(
            lambda: st(c)["state"] == "connected",
            timeout=10.0,
            what="a connection after the refusals",
        )
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="quotes")
        stop_flow(c, feed)
    finally:
        c.stop()
    assert feed.connections == 4 and st(c)["connect_failures"] == 3
    waits = [b - a for a, b in zip(feed.connect_times, feed.connect_times[1:], strict=False)]
    assert all(w >= 0.02 for w in waits), waits  # at least half the 0.05 s first delay
    assert waits[2] > waits[0]  # exponential
    msgs = [m for (m,) in rows(c, "SELECT message FROM errors WHERE error_type='StreamRefused'")]
    assert len(msgs) == 3
    assert all(("406" in m) if preset == "alpaca" else ("max_connections" in m) for m in msgs)
    assert_nothing_lost(c, feed)


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_malformed_and_half_valid_messages_keep_the_valid_parts(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    feed = feed_factory(preset)
    feed.flowing = False
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )
        ts_key, sym_key = ("t", "S") if preset == "alpaca" else ("t", "sym")

        async def faults() -> None:
            ws = feed.live
            assert ws is not None
            await ws.send("this is not json {")
            await ws.send(json.dumps({"unexpected": "shape"}))
            await ws.send("42")
            good = [feed.quote("SPY"), feed.quote("QQQ")]
            bad_price = feed.quote("IWM", bp="abc")
            no_time = feed.quote("SPY")
            del no_time[ts_key]
            crossed = feed.quote("QQQ", bp=200.0, ap=100.0)  # valid shape, rejected by rules
            stranger = feed.quote("TSLA")
            await ws.send(json.dumps([good[0], bad_price, no_time, good[1], crossed, stranger]))
            for q in (*good, crossed):
                feed.sent[q[sym_key]] = feed.sent.get(q[sym_key], 0) + 1

        feed.call(faults)
        wait_until(lambda: st(c)["malformed"] >= 6, timeout=10.0, what="malformed items counted")
        feed.flowing = True
        n = st(c)["quotes"]
        wait_until(lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="the stream goes on")
        stop_flow(c, feed)
    finally:
        c.stop()
    assert st(c)["malformed"] == 6 and st(c)["reconnects"] == 0
    msgs = [m for (m,) in rows(c, "SELECT message FROM errors WHERE error_type='MalformedMessage'")]
    assert len(msgs) == 6
    assert any("not JSON" in m for m in msgs) and any("bp: expected a number" in m for m in msgs)
    assert any("t: " in m for m in msgs) and any("TSLA" in m for m in msgs)
    assert rows(c, "SELECT rule FROM rejects")[0][0] == "crossed"
    assert_nothing_lost(c, feed)


def test_burst_of_50k_messages_is_stored_without_loss(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca")
    feed.flowing = False
    cfg = stream_config(
        make_config,
        feed,
        realtime_data={"buffer_size": 1000},
        source={
            "silence_floor_seconds": 5.0,
            "silence_ceiling_seconds": 30.0,
            "ping_interval_seconds": 1.0,
            "ping_timeout_seconds": 5.0,
        },
    )
    c = Collector(cfg).start()
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )

        async def burst() -> None:
            for i in range(50_000):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        t0 = time.monotonic()
        feed.call(lambda: asyncio.wait_for(burst(), 60))
        wait_until(lambda: received_all(c, feed), timeout=30, what="the burst to be read")
        wait_until(
            lambda: c.status().stored >= 50_000 - 3 * 60, timeout=30, what="the burst stored"
        )
        elapsed = time.monotonic() - t0
    finally:
        c.stop()
    assert sum(feed.sent.values()) == 50_000
    assert st(c)["malformed"] == 0 and st(c)["reconnects"] == 0
    assert_nothing_lost(c, feed)
    print(f"50k burst: {50_000 / elapsed:,.0f} messages/s end to end")


def test_full_queue_spills_to_backup_and_loses_nothing(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca")
    feed.flowing = False
    cfg = stream_config(
        make_config,
        feed,
        source={
            "queue_max_messages": 50,
            "silence_floor_seconds": 5.0,
            "silence_ceiling_seconds": 30.0,
            "ping_timeout_seconds": 5.0,
        },
    )
    c = Collector(cfg).start()
    gate = threading.Event()
    assert c._writer is not None
    real_submit = c._writer.submit

    def stuck_submit(batch: Any) -> None:  # a writer that cannot keep up
        gate.wait(10)
        real_submit(batch)

    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )
        c._writer.submit = stuck_submit  # type: ignore[method-assign]

        async def burst() -> None:
            for i in range(3000):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(burst)
        # read = validated (spilled) + still queued for the stuck processor
        wait_until(
            lambda: st(c)["quotes"] + st(c)["queue_depth"] == 3000,
            timeout=10.0,
            what="every frame read while the writer is stuck",
        )
        assert st(c)["spills"] >= 1 and st(c)["max_queue_depth"] <= 50
        reasons = c.health().component("source").reasons
        assert any("stream queue overflowed" in r for r in reasons), reasons
        gate.set()
        wait_until(
            lambda: received_all(c, feed),
            timeout=10.0,
            what="the queue drained once the writer is back",
        )
        spilled = st(c)["spilled_rows"]
        assert spilled > 0
        # the spill file is closed and replayed during the run, not at the next start
        wait_until(
            lambda: (
                c.status().storage.replayed_rows >= spilled and c.status().storage.backup_files == 0
            ),
            timeout=10.0,
            what="the spilled rows replayed into the database",
        )
    finally:
        gate.set()
        c.stop()
    report = recover(c.db_path, Path(cfg.realtime_data.backup.backup_path))
    assert report.inserted == 0  # nothing was left for a later recovery
    assert_nothing_lost(c, feed)


class LatestQuotes:
    """Alpaca's REST ``/v2/stocks/{symbol}/quotes/latest`` on 127.0.0.1, for the refresh."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sym = self.path.split("/")[3]
                outer.requests.append((sym, self.headers.get("APCA-API-KEY-ID")))
                t = rfc3339(time.time_ns())
                quote = {"bp": 100.20, "ap": 100.22, "bs": 1, "as": 1, "t": t}
                body = json.dumps({"symbol": sym, "quote": quote}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_reconnect_refreshes_every_symbol_over_rest_in_the_streams_sequence(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca")
    rest = LatestQuotes()
    cfg = stream_config(
        make_config,
        feed,
        source={"refresh_preset": "alpaca", "refresh_base_url": rest.url},
    )
    c = Collector(cfg).start()
    try:
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="quotes")
        assert rest.requests == []  # the first connection needs no refresh
        stop_flow(c, feed)
        feed.call(lambda: feed.live.transport.abort())
        feed.flowing = True
        wait_until(
            lambda: st(c)["refreshed"] == len(SYMBOLS),
            timeout=10.0,
            what="every symbol refreshed over REST",
        )
        n = st(c)["quotes"]
        wait_until(lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="quotes after the refresh")
        stop_flow(c, feed)
    finally:
        c.stop()
        rest.close()
    assert sorted(sym for sym, _ in rest.requests) == sorted(SYMBOLS)
    assert all(key == KEY for _, key in rest.requests)  # the stream's credentials
    # one sequence per symbol, refreshed quotes included: no hole, no repeat
    for sym in SYMBOLS:
        n, distinct, lo, hi = rows(
            c,
            f"SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM "
            f"(SELECT seq FROM ticks WHERE symbol = '{sym}' UNION ALL "
            f"SELECT seq FROM rejects WHERE symbol = '{sym}')",
        )[0]
        dups = c.status().symbols[sym].duplicates
        assert n == distinct and hi - lo + 1 == n + dups, sym
        assert n + dups == feed.sent[sym] + 1, sym  # every streamed quote, plus one refresh


def test_slow_processing_of_a_burst_is_not_taken_for_a_dead_connection(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    """A busy stream is not a dead one: while validation lags behind a burst, the pong
    waits in the socket behind the quotes; the quotes still arriving prove the peer alive,
    so the connection is kept (a 0.3 s ping timeout, processing ~100 µs a frame)."""
    feed = feed_factory("alpaca")
    feed.flowing = False
    cfg = stream_config(
        make_config,
        feed,
        realtime_data={"buffer_size": 500},
        source={
            "silence_floor_seconds": 5.0,
            "silence_ceiling_seconds": 30.0,
            "ping_interval_seconds": 0.1,
            "ping_timeout_seconds": 0.3,
        },
    )
    c = Collector(cfg).start()
    real_parse = c.source.parse

    def slow_parse(frame: Any) -> Any:  # validation that cannot keep up with the burst
        end = time.perf_counter() + 100e-6
        while time.perf_counter() < end:
            pass
        return real_parse(frame)

    c.source.parse = slow_parse  # type: ignore[method-assign]
    n = 15_000
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )

        async def burst() -> None:
            for i in range(n):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(lambda: asyncio.wait_for(burst(), 60))
        wait_until(lambda: received_all(c, feed), timeout=30, what="the burst to be read")
        wait_until(
            lambda: all_stored(c, feed), timeout=30, what="the burst stored (spills replayed)"
        )
    finally:
        c.stop()
    assert sum(feed.sent.values()) == n
    assert st(c)["reconnects"] == 0 and st(c)["last_cause"] is None
    assert feed.connections == 1
    assert_nothing_lost(c, feed)


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_a_10000_deep_frame_is_one_malformed_item_and_the_stream_goes_on(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    """Finding 3: a deeply nested frame raised RecursionError in the parser and the
    processor task died silently (connected, HEALTHY, nothing stored)."""
    feed = feed_factory(preset)
    feed.flowing = False
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )

        async def poison() -> None:
            ws = feed.live
            assert ws is not None
            await ws.send("[" * 10_000 + "]" * 10_000)
            for i in range(30):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(poison)
        wait_until(
            lambda: received_all(c, feed), timeout=10.0, what="the quotes after the deep frame"
        )
        wait_until(
            lambda: all_stored(c, feed), timeout=10.0, what="the quotes after the deep frame stored"
        )
        assert st(c)["state"] == "connected" and st(c)["reconnects"] == 0
    finally:
        c.stop()
    assert st(c)["malformed"] == 1
    (msg,) = rows(c, "SELECT message FROM errors WHERE error_type = 'MalformedMessage'")[0]
    assert "nested deeper than" in msg
    assert_nothing_lost(c, feed)


def test_a_frame_whose_processing_raises_is_counted_and_the_processor_goes_on(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    """Whatever one frame raises (here: a parser bug) is one malformed item; the
    processor task survives and processes the frames after it."""
    feed = feed_factory("alpaca")
    feed.flowing = False
    c = Collector(stream_config(make_config, feed)).start()
    real_parse = c.source.parse

    def buggy_parse(frame: Any) -> Any:
        if "BOOM" in str(frame):
            raise RecursionError("maximum recursion depth exceeded \ud83d\x1b[2J")
        return real_parse(frame)

    c.source.parse = buggy_parse  # type: ignore[method-assign]
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )

        async def frames() -> None:
            ws = feed.live
            assert ws is not None
            await ws.send('[{"T": "BOOM"}]')
            for i in range(30):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(frames)
        wait_until(
            lambda: received_all(c, feed), timeout=10.0, what="the quotes after the failing frame"
        )
        wait_until(
            lambda: all_stored(c, feed),
            timeout=10.0,
            what="the quotes after the failing frame stored",
        )
    finally:
        c.stop()
    assert st(c)["malformed"] == 1
    (msg,) = rows(c, "SELECT message FROM errors WHERE error_type = 'MalformedMessage'")[0]
    assert "RecursionError" in msg and "\ud83d" not in msg and "\x1b" not in msg
    assert_nothing_lost(c, feed)


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_a_server_error_frame_with_hostile_text_is_cleaned(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    """Finding 1's stream side: an error frame carrying a lone surrogate, NUL and terminal
    escapes becomes an error (row, last_error, log) every sink accepts; the stream goes on."""
    feed = feed_factory(preset)
    feed.flowing = False
    c = Collector(stream_config(make_config, feed)).start()
    hostile = "slow client \ud83d\x00\x1b[2J\x1b]0;pwned\x07" + "x" * 5000
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )

        async def frames() -> None:
            ws = feed.live
            assert ws is not None
            if preset == "alpaca":
                err = {"T": "error", "code": 407, "msg": hostile}
            else:
                err = {"ev": "status", "status": "error", "message": hostile}
            await ws.send(json.dumps([err]))
            for i in range(30):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(frames)
        wait_until(
            lambda: received_all(c, feed), timeout=10.0, what="the quotes after the error frame"
        )
        wait_until(
            lambda: all_stored(c, feed),
            timeout=10.0,
            what="the quotes after the error frame stored",
        )
        last = st(c)["last_error"]
    finally:
        c.stop()
    assert last is not None and "slow client" in last
    assert clean_text(last) == last and len(last) <= 2100
    msgs = [m for (m,) in rows(c, "SELECT message FROM errors WHERE message LIKE '%slow client%'")]
    assert msgs and all(clean_text(m) == m for m in msgs)
    assert st(c)["reconnects"] == 0
    assert_nothing_lost(c, feed)


def test_a_batch_the_executor_refuses_is_submitted_directly(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    """Finding 9, made deterministic: once interpreter shutdown has begun, concurrent.futures
    refuses new work ("cannot schedule new futures after interpreter shutdown") and the
    batch handed to the worker thread was lost, counted nowhere. A shut-down executor
    refuses the same way; the batch must be submitted directly instead."""
    from concurrent.futures import ThreadPoolExecutor

    feed = feed_factory("alpaca")
    feed.flowing = False
    c = Collector(stream_config(make_config, feed)).start()
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )
        dead = ThreadPoolExecutor(max_workers=1)
        dead.shutdown()
        loop = c._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(_set_executor(dead), loop).result(5)

        async def quotes() -> None:
            for i in range(300):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(quotes)
        wait_until(lambda: received_all(c, feed), timeout=10.0, what="every quote processed")
        wait_until(lambda: all_stored(c, feed), timeout=10.0, what="every accepted quote stored")
    finally:
        c.stop()
    assert_nothing_lost(c, feed)


async def _set_executor(executor: Any) -> None:
    asyncio.get_running_loop().set_default_executor(executor)


def test_stream_units_are_restartable_after_a_crash(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    """``units()`` gives the supervisor factories it can call again: a processor that
    crashed resumes on the same queue, and nothing read before the crash is lost."""
    feed = feed_factory("alpaca")
    feed.flowing = False
    c = Collector(stream_config(make_config, feed)).start()
    runner = c._stream
    assert runner is not None
    names = [name for name, _ in runner.units()]
    assert names[:3] == ["stream-supervisor", "stream-processor", "stream-silence"]
    real_flush = runner._flush
    crashes: list[str] = []

    async def flaky_flush() -> None:
        task = asyncio.current_task()
        if not crashes and task is not None and "processor" in task.get_name():
            crashes.append(task.get_name())  # before the buffers are taken: nothing lost
            raise RuntimeError("processor crash for the test")
        await real_flush()

    runner._flush = flaky_flush  # type: ignore[method-assign]
    try:
        wait_until(
            lambda: st(c)["state"] == "connected" and feed.live is not None,
            timeout=10.0,
            what="connected",
        )

        async def quotes() -> None:
            for i in range(200):
                await feed.send([feed.quote(SYMBOLS[i % 3])])

        feed.call(quotes)
        wait_until(lambda: received_all(c, feed), timeout=10.0, what="every quote processed")
        wait_until(
            lambda: all_stored(c, feed), timeout=10.0, what="every quote stored after the restart"
        )
        assert crashes, "the processor never flushed"
        units = c.status().units
        assert units["stream-processor"].restarts >= 1, units
    finally:
        c.stop()
    assert st(c)["reconnects"] == 0
    assert_nothing_lost(c, feed)
