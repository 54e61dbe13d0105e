"""The poison catalogue through each WebSocket preset, from a real local feed into a Collector.

The fake feed (``helpers.ws_feed``) keeps streaming good quotes for every symbol
while the test sends hostile items for one symbol at a time, one item per frame:
lone surrogates, NUL, control and escape characters, 2**63 and 2**64, 1e308,
NaN and infinities in every numeric field, timestamps in s/ms/us/ns, empty and
null fields, wrong types, a 10,000-deep value. A marker frame the preset ignores
(a bar, an aggregate) ends each batch: once the stream counted it as ignored,
everything before it was processed, so the stream's ``malformed`` counter moved
only for that symbol's items. Afterwards every quote item the server sent for a
symbol is a stored tick, a stored reject, a counted duplicate or one counted
malformed item; nothing is lost, every supervised unit kept running without a
restart, every stored number is bounded and every stored text clean.

Frames that belong to no symbol (not JSON, 10,000 deep, a bad symbol, an
unsubscribed one) are each one counted malformed item, and a frame larger than
``max_message_bytes`` ends the connection (close code 1009), which is recorded
and reconnected; under a raised ``max_message_bytes`` the boundary's 8 MB bound
makes a 10 MB frame one malformed item without a reconnect.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from helpers.waiting import wait_until
from helpers.ws_feed import SYMBOLS, FakeFeed, rows, st, stream_config

from robust_collector import Collector
from robust_collector.boundary import INT64_MAX, INT64_MIN, TS_MAX_US, TS_MIN_US, clean_text
from robust_collector.config import Config
from robust_collector.model import new_quote, now_us
from robust_collector.validation import validate_frame
from robust_collector.validation.streaming import Validator

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_keys")]

NUMERIC: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    -1.0,
    0,
    None,
    "abc",
    "1e999",
    "NaN",
    True,
    [],
    {},
    2**63,
    2**64,
    10**400,
    "\ud83d",
    "\x00",
    "\x1b[2J",
]
FIELDS = ["bp", "ap", "bs", "as"]
DEEP_TEXT = "[" * 10_000 + "]" * 10_000
DEEP = "__deep__"  # a field value written out as DEEP_TEXT (json.dumps cannot nest so deep)


def times(preset: str) -> list[Any]:
    """The time field in every wrong unit and type (alpaca wants RFC 3339, polygon ms)."""
    ns = time.time_ns()
    common: list[Any] = [2**63, 2**64, 10**400, -5, 0, None, "", 1.5e300, math.nan, True, []]
    if preset == "alpaca":
        units = [ns // 10**9, ns // 10**6, ns // 10**3, ns, str(ns // 10**6)]
        texts = ["2025-13-45T99:99:99Z", "now", "\ud83d", "9999-12-31T23:59:59Z"]
        return units + texts + ["1970-01-01T00:00:00Z", "2024-01-01T00:00:00.\x00Z", *common]
    return [ns // 10**9, ns // 10**3, ns, str(ns // 10**6), "\x1b[2J", *common]


def frame(item: dict[str, Any]) -> str:
    """One item as a frame (a ``DEEP`` value becomes a 10,000-deep list)."""
    return json.dumps([item]).replace(json.dumps(DEEP), DEEP_TEXT)


def catalogue(feed: FakeFeed, sym: str) -> list[dict[str, Any]]:
    """One hostile quote item per entry, every one of them for ``sym``."""
    preset = feed.preset
    out = [feed.quote(sym, **{f: v}) for f in FIELDS for v in NUMERIC]
    out += [feed.quote(sym, t=t) for t in times(preset)]
    kind = {"T": "q", "S": sym} if preset == "alpaca" else {"ev": "Q", "sym": sym}
    out += [
        kind,  # nothing but the type and the symbol
        {**kind, "bp": None, "ap": None, "bs": None, "as": None, "t": None},
        feed.quote(sym, bp=None, ap=None),
        feed.quote(sym, bp="", ap=""),
        feed.quote(sym, x=DEEP),  # the whole frame is too deep: one malformed item
        feed.quote(sym, pad="\ud83d\x00\x1b]0;pwned\x07" * 2000),  # clean quote, hostile extra
    ]
    if preset == "alpaca":
        out += [
            feed.quote(sym, c=["\ud83d", "\x00", "\x1b[31m"], bx="\x00", z="\udc00"),
            feed.quote(sym, c=[[[]]] * 3, bx=2**64),
        ]
    else:
        out += [feed.quote(sym, bx="\ud83d", ax=2**64, q=-(2**64)), feed.quote(sym, q=None)]
    return out


def marker(preset: str) -> dict[str, Any]:
    """A well-formed message of a kind the stream does not collect: counted as ignored."""
    return {"T": "b", "S": "SPY"} if preset == "alpaca" else {"ev": "A", "sym": "SPY"}


def orphan_frames(feed: FakeFeed) -> list[str | bytes]:
    """Frames that belong to no subscribed symbol: each must be one malformed item."""
    q = feed.quote
    sym_key = "S" if feed.preset == "alpaca" else "sym"
    bad_symbols: list[Any] = ["\ud83d", "SPY\x00", "\x1b[2J", "", "X" * 100, 2**64, None, []]
    frames: list[str | bytes] = [
        DEEP_TEXT,
        '{"a":' * 3000,
        "",
        "null",
        '"just a string"',
        "NaN",
        "[1]",
        "{}",
        b"\xff\xfe\x00",
        b"\xed\xa0\xbd lone surrogate bytes",
        "\x00\x1b[2J",
        json.dumps([q("ZZZ")]),  # a symbol we did not subscribe to
    ]
    frames += [json.dumps([{**q("SPY"), sym_key: s}]) for s in bad_symbols]
    return frames


def send(feed: FakeFeed, frames: list[str | bytes]) -> None:
    """Send raw frames on the live connection, in order (the ticker's frames interleave)."""

    async def go() -> None:
        assert feed.live is not None
        for f in frames:
            await feed.live.send(f)

    feed.call(go)


def settle(c: Collector, feed: FakeFeed, markers: list[int]) -> None:
    """Send a marker frame and wait until the stream processed it (and so all before it)."""
    markers[0] += 1
    send(feed, [json.dumps([marker(feed.preset)])])
    wait_until(
        lambda: st(c)["ignored"] >= markers[0],
        timeout=20.0,
        what="the marker frame to be processed",
        detail=lambda: st(c),
    )


def assert_bounded(c: Collector) -> None:
    """Every stored number is bounded, every stored text clean."""
    for sym, ts, bid, ask, bsz, asz in rows(
        c, "SELECT symbol, ts_us, bid, ask, bid_size, ask_size FROM ticks"
    ):
        assert sym in SYMBOLS
        assert TS_MIN_US <= ts <= TS_MAX_US, (sym, ts)
        assert 0 < bid <= ask < 1e6, (sym, bid, ask)
        for size in (bsz, asz):
            assert size is None or 0 <= size < math.inf, (sym, size)
    conn = sqlite3.connect(c.db_path)
    try:
        for table in ("ticks", "rejects", "errors", "gaps"):
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for row in conn.execute(f"SELECT * FROM {table}"):
                for col, v in zip(cols, row, strict=True):
                    if isinstance(v, int):
                        assert INT64_MIN <= v <= INT64_MAX, (table, col, v)
                    elif isinstance(v, float):
                        assert not math.isnan(v), (table, col)
                    elif isinstance(v, str):
                        assert clean_text(v, len(v) + 1) == v, (table, col, v[:120])
                        assert len(v) <= 2000, (table, col, len(v))
    finally:
        conn.close()


@pytest.mark.parametrize("preset", ["alpaca", "polygon"])
def test_every_poison_item_is_accounted_for_per_symbol(
    make_config: Callable[..., Config], feed_factory: Any, preset: str
) -> None:
    feed = feed_factory(preset, interval=0.01)
    cfg = stream_config(
        make_config,
        feed,
        realtime_data={"validation": {"future_tolerance_seconds": 60}},
    )
    c = Collector(cfg).start()
    poison = {s: 0 for s in SYMBOLS}
    malformed = {s: 0 for s in SYMBOLS}
    markers = [0]
    try:
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="the first quotes")
        for sym in ("SPY", "QQQ"):  # IWM stays clean: the control
            items = feed.call(lambda sym=sym: catalogue(feed, sym))
            before = st(c)["malformed"]
            send(feed, [frame(it) for it in items])
            poison[sym] += len(items)
            settle(c, feed, markers)
            malformed[sym] = st(c)["malformed"] - before
            assert 0 < malformed[sym] < len(items), (sym, malformed[sym], len(items))
        orphans = orphan_frames(feed)
        before = st(c)["malformed"]
        send(feed, orphans)
        settle(c, feed, markers)
        assert st(c)["malformed"] - before == len(orphans)  # each frame one malformed item
        # still collecting: every symbol gets good quotes after the catalogue
        counts = {s: c.status().symbols[s].accepted for s in SYMBOLS}
        wait_until(
            lambda: all(c.status().symbols[s].accepted >= counts[s] + 10 for s in SYMBOLS),
            timeout=10.0,
            what="good quotes after the poison",
        )
        status = c.status()
        assert status.running
        assert status.units and all(
            u.state == "running" and u.restarts == 0 for u in status.units.values()
        ), status.units
        stream = st(c)
        assert stream["state"] == "connected" and stream["reconnects"] == 0, stream
        # the ticker stops; one last marker proves every frame sent was processed
        seen = feed.idle_checks
        feed.flowing = False
        wait_until(lambda: feed.idle_checks > seen, timeout=10.0, what="the ticker to stop")
        settle(c, feed, markers)
    finally:
        summary = c.stop()
    for sym in SYMBOLS:
        (ticks,) = rows(c, f"SELECT count(*) FROM ticks WHERE symbol = '{sym}'")[0]
        (rejects,) = rows(c, f"SELECT count(*) FROM rejects WHERE symbol = '{sym}'")[0]
        s = summary.symbols[sym]
        sent = feed.sent.get(sym, 0) + poison[sym]
        assert ticks + rejects + s.duplicates + malformed[sym] + s.lost == sent, (
            sym,
            sent,
            ticks,
            rejects,
            s.duplicates,
            malformed[sym],
        )
        assert s.lost == 0 and ticks > 0
        assert s.stored == ticks
    assert summary.storage is not None and summary.storage.lost_rows == 0
    rules = {r for (r,) in rows(c, "SELECT DISTINCT rule FROM rejects WHERE symbol = 'SPY'")}
    assert "bad_timestamp" in rules, rules  # s/us/ns confusion lands outside the window
    assert_bounded(c)


def huge_frame(feed: FakeFeed, mb: int = 10) -> str:
    """One quote item padded to ``mb`` megabytes."""
    return json.dumps([feed.quote("SPY", pad="x" * (mb * 1024 * 1024))])


def test_a_frame_over_max_message_bytes_closes_and_the_stream_reconnects(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("alpaca", interval=0.01)
    # no silence verdict while the feed pauses (on a loaded machine an "every symbol
    # silent" reconnect came first and the huge frame met a closing connection)
    quiet = {"silence_floor_seconds": 60.0, "silence_ceiling_seconds": 60.0}
    c = Collector(stream_config(make_config, feed, source=quiet)).start()
    try:
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="the first quotes")
        seen = feed.idle_checks
        feed.flowing = False  # nothing else in flight when the connection goes
        wait_until(lambda: feed.idle_checks > seen, timeout=10.0, what="the ticker to stop")
        wait_until(
            lambda: st(c)["quotes"] == sum(feed.sent.values()), timeout=10.0, what="all quotes"
        )
        send(feed, [huge_frame(feed)])
        feed.flowing = True
        wait_until(
            lambda: st(c)["reconnects"] >= 1 and st(c)["state"] == "connected",
            timeout=15.0,
            what="the reconnect after the huge frame",
        )
        n = st(c)["quotes"]
        wait_until(lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="quotes afterwards")
        status = c.status()
        assert status.running
        assert all(u.restarts == 0 for u in status.units.values()), status.units
    finally:
        c.stop()
    assert feed.connections >= 2
    down = [d for (d,) in rows(c, "SELECT detail FROM gaps WHERE cause = 'stream_down'")]
    assert down and any("1009" in d for d in down), down
    assert_bounded(c)


def test_a_10mb_frame_under_a_raised_max_message_bytes_is_one_malformed_item(
    make_config: Callable[..., Config], feed_factory: Any
) -> None:
    feed = feed_factory("polygon", interval=0.01)
    cfg = stream_config(make_config, feed, source={"max_message_bytes": 16 * 1024 * 1024})
    c = Collector(cfg).start()
    markers = [0]
    try:
        wait_until(lambda: st(c)["quotes"] >= 30, timeout=10.0, what="the first quotes")
        before = st(c)["malformed"]
        send(feed, [huge_frame(feed)])
        settle(c, feed, markers)
        assert st(c)["malformed"] - before == 1
        assert st(c)["reconnects"] == 0 and st(c)["state"] == "connected"
        n = st(c)["quotes"]
        wait_until(lambda: st(c)["quotes"] >= n + 30, timeout=10.0, what="quotes afterwards")
        assert all(u.restarts == 0 for u in c.status().units.values())
    finally:
        c.stop()
    msgs = [
        m for (m,) in rows(c, "SELECT message FROM errors WHERE error_type = 'MalformedMessage'")
    ]
    assert any("exceeds" in m for m in msgs), msgs
    assert_bounded(c)


@pytest.mark.parametrize("field", ["bid_size", "ask_size"])
@pytest.mark.parametrize("size", [math.inf, math.nan])
def test_a_non_finite_size_is_rejected_as_non_finite(size: float, field: str) -> None:
    sizes = {"bid_size": 3.0, "ask_size": 2.0, field: size}
    t = now_us()
    q = new_quote("r:SPY:1", "SPY", 1, t, t, 100.0, 100.02, *sizes.values(), None, "t")
    verdict = Validator().check(q)
    assert verdict.rule == "non_finite", verdict
    assert verdict.reason == f"{field.replace('_', ' ')} {size} is not finite"
    # the batch engine decides alike
    frame = validate_frame(pl.DataFrame([q.as_dict()]))
    assert frame.frame["reject_rule"].to_list() == ["non_finite"]
    assert frame.frame["reject_reason"].to_list() == [verdict.reason]
