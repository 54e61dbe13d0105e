"""A real ``websockets`` server on 127.0.0.1 speaking the alpaca or polygon protocol, with faults.

``FakeFeed`` streams quotes for ``SYMBOLS`` (and trades for the symbols subscribed
to trades: alpaca ``T: t``, polygon ``ev: T``) and can drop, go silent, refuse
credentials or subscriptions; the functions below build a streaming config against
it and read back what a ``Collector`` stored. Shared by the streaming tests.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from helpers.waiting import wait_until
from robust_collector import Collector
from robust_collector.config import Config

KEY, SECRET = "key-AbC123xyz", "secret-ZyX987qwe"
SYMBOLS = ["SPY", "QQQ", "IWM"]


def rfc3339(ns: int) -> str:
    s, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"


class FakeFeed:
    """A WebSocket market-data server in its own thread; tests steer it by attributes."""

    def __init__(self, preset: str = "alpaca", *, interval: float = 0.01) -> None:
        self.preset = preset
        self.interval = interval
        self.active: set[str] = set(SYMBOLS)  # symbols the ticker quotes
        self.flowing = True
        self.auth_error: str | None = None  # "402" / "auth_failed": refuse every auth
        self.limit_refusals = 0  # the first N connections get "connection limit exceeded"
        self.refuse: set[str] = set()  # symbols whose subscription the server refuses
        self.connections = 0
        self.idle_checks = 0  # loop turns that sent nothing (flow stopped)
        self.connect_times: list[float] = []
        self.subscribes: list[list[str]] = []  # the quote symbols of each subscription
        self.trade_subscribes: list[list[str]] = []  # the trade symbols of each subscription
        self.trading: set[str] = set()  # symbols whose trades the live connection gets
        self.trades_only: set[str] = set()  # subscribed to trades, not quotes: no quotes
        self.sent: dict[str, int] = {}  # quotes sent per symbol
        self.sent_trades: dict[str, int] = {}  # trades sent per symbol
        self.live: ServerConnection | None = None
        self.all: list[ServerConnection] = []
        self._n = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    # -- server thread ------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def open_server() -> Any:
            return await serve(self._handler, "127.0.0.1", 0)

        self._server = self._loop.run_until_complete(open_server())
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop and wait for it."""

        async def go() -> Any:
            r = fn()
            return await r if asyncio.iscoroutine(r) else r

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(30)

    def close(self) -> None:
        async def shut() -> None:
            for ws in self.all:  # no closing handshake: some tests leave a socket half dead
                ws.transport.abort()
            self._server.close()
            await self._server.wait_closed()

        try:
            self.call(shut)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def quote(self, sym: str, **over: Any) -> dict[str, Any]:
        self._n += 1
        bid = 100.0 + (self._n % 50) * 0.01
        ns = time.time_ns()
        if self.preset == "alpaca":
            q = {"T": "q", "S": sym, "bx": "V", "bp": bid, "bs": 3, "ax": "V", "ap": bid + 0.02}
            q.update({"as": 2, "c": ["R"], "z": "B", "t": rfc3339(ns)})
        else:
            q = {"ev": "Q", "sym": sym, "bx": 4, "bp": bid, "bs": 3, "ax": 7, "ap": bid + 0.02}
            q.update({"as": 2, "t": ns // 1_000_000, "q": self._n})
        q.update(over)
        return q

    def trade(self, sym: str, **over: Any) -> dict[str, Any]:
        """A trade message in the preset's shape (price near the quotes, a fresh id)."""
        self._n += 1
        price = 100.0 + (self._n % 50) * 0.01
        ns = time.time_ns()
        if self.preset == "alpaca":
            t = {"T": "t", "S": sym, "i": self._n, "x": "V", "p": price, "s": 100}
            t.update({"c": ["@"], "t": rfc3339(ns), "z": "B"})
        else:
            t = {"ev": "T", "sym": sym, "x": 4, "i": str(self._n), "z": 2, "p": price}
            t.update({"s": 100, "c": [37], "t": ns // 1_000_000, "q": self._n})
        t.update(over)
        return t

    @staticmethod
    def is_trade(item: dict[str, Any]) -> bool:
        return item.get("T") == "t" or item.get("ev") == "T"

    async def send(self, items: list[dict[str, Any]], *, count: bool = True) -> None:
        ws = self.live
        assert ws is not None
        await ws.send(json.dumps(items))
        if count:
            for it in items:
                sym = it.get("S") or it.get("sym")
                sent = self.sent_trades if self.is_trade(it) else self.sent
                sent[sym] = sent.get(sym, 0) + 1

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.all.append(ws)
        self.connect_times.append(time.monotonic())
        n = self.connections
        try:
            if self.preset == "alpaca":
                ok = await self._alpaca(ws, n)
            else:
                ok = await self._polygon(ws, n)
            if not ok:
                return
            self.live = ws
            while True:
                if self.flowing and self.active:
                    items = [self.quote(s) for s in sorted(self.active - self.trades_only)]
                    items += [self.trade(s) for s in sorted(self.active & self.trading)]
                    await self.send(items)
                else:
                    self.idle_checks += 1
                try:  # the pause between quotes, ending at once when the connection closes
                    await asyncio.wait_for(ws.wait_closed(), self.interval)
                    return
                except TimeoutError:
                    pass
        except ConnectionClosed:
            pass

    async def _alpaca(self, ws: ServerConnection, n: int) -> bool:
        await ws.send(json.dumps([{"T": "success", "msg": "connected"}]))
        auth = json.loads(await ws.recv())
        if self.auth_error or auth != {"action": "auth", "key": KEY, "secret": SECRET}:
            await ws.send(json.dumps([{"T": "error", "code": 402, "msg": "auth failed"}]))
            await ws.close()
            return False
        if n <= self.limit_refusals:
            err = {"T": "error", "code": 406, "msg": "connection limit exceeded"}
            await ws.send(json.dumps([err]))
            await ws.close()
            return False
        await ws.send(json.dumps([{"T": "success", "msg": "authenticated"}]))
        sub = json.loads(await ws.recv())
        quotes, trades = sub.get("quotes", []), sub.get("trades", [])
        self._subscribed(quotes, trades)
        granted = [q for q in quotes if q not in self.refuse]
        granted_trades = [t for t in trades if t not in self.refuse]
        ack = {"T": "subscription", "trades": granted_trades, "quotes": granted, "bars": []}
        await ws.send(json.dumps([ack]))
        return True

    def _subscribed(self, quotes: list[str], trades: list[str]) -> None:
        self.subscribes.append(quotes)
        self.trade_subscribes.append(trades)
        self.trading = set(trades) - self.refuse
        self.trades_only = set(trades) - set(quotes)

    async def _polygon(self, ws: ServerConnection, n: int) -> bool:
        def status(st: str, msg: str) -> str:
            return json.dumps([{"ev": "status", "status": st, "message": msg}])

        await ws.send(status("connected", "Connected Successfully"))
        auth = json.loads(await ws.recv())
        if self.auth_error or auth != {"action": "auth", "params": KEY}:
            await ws.send(status("auth_failed", "authentication failed"))
            await ws.close()
            return False
        if n <= self.limit_refusals:
            await ws.send(status("max_connections", "Maximum number of connections exceeded."))
            await ws.close()
            return False
        await ws.send(status("auth_success", "authenticated"))
        sub = json.loads(await ws.recv())
        params = [p for p in sub["params"].split(",") if p]
        syms = [p.removeprefix("Q.") for p in params if not p.startswith("T.")]
        trades = [p.removeprefix("T.") for p in params if p.startswith("T.")]
        self._subscribed(syms, trades)
        for prefix, names in (("Q.", syms), ("T.", trades)):
            for s in names:
                if s not in self.refuse:
                    await ws.send(status("success", f"subscribed to: {prefix}{s}"))
        return True


def stream_config(make_config: Callable[..., Config], feed: FakeFeed, **over: Any) -> Config:
    source = {
        "type": "websocket",
        "preset": feed.preset,
        "base_url": feed.url,
        "ping_interval_seconds": 0.2,
        "ping_timeout_seconds": 0.3,
        "open_timeout_seconds": 2.0,
        "reconnect_delay_seconds": 0.05,
        "reconnect_max_delay_seconds": 0.2,
        "silence_floor_seconds": 0.15,
        "silence_ceiling_seconds": 1.0,
        "silence_min_samples": 5,
        "silence_check_interval_seconds": 0.03,
        **over.pop("source", {}),
    }
    rt = {"health_check": {"check_interval_seconds": 0.2}, **over.pop("realtime_data", {})}
    return make_config(source=source, realtime_data=rt, **over)


def rows(c: Collector, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(c.db_path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def st(c: Collector) -> dict[str, Any]:
    s = c.stream_status()
    assert s is not None
    return s


def received_all(c: Collector, feed: FakeFeed) -> bool:
    return st(c)["quotes"] == sum(feed.sent.values())


def assert_nothing_lost(c: Collector, feed: FakeFeed) -> None:
    """Every quote the server sent is a stored tick, a stored reject or a counted duplicate."""
    summary = c.status()
    for sym in SYMBOLS:
        (ticks,) = rows(c, f"SELECT count(*) FROM ticks WHERE symbol = '{sym}'")[0]
        (rej,) = rows(c, f"SELECT count(*) FROM rejects WHERE symbol = '{sym}'")[0]
        dups = summary.symbols[sym].duplicates
        assert ticks + rej + dups == feed.sent.get(sym, 0), sym


def all_stored(c: Collector, feed: FakeFeed) -> bool:
    """Every sent quote is in the database (a tick or a reject) or a counted duplicate."""
    dups = sum(s.duplicates for s in c.status().symbols.values())
    (ticks,) = rows(c, "SELECT count(*) FROM ticks")[0]
    (rej,) = rows(c, "SELECT count(*) FROM rejects")[0]
    return bool(ticks + rej + dups == sum(feed.sent.values()))


def gap_rows(c: Collector) -> list[tuple[Any, ...]]:
    return rows(c, "SELECT symbol, cause, start_us, end_us, detail FROM gaps ORDER BY id")


def stop_flow(c: Collector, feed: FakeFeed) -> None:
    seen = feed.idle_checks
    feed.flowing = False
    # the server's loop has seen the flag (a send already past the check has completed)
    wait_until(
        lambda: feed.idle_checks > seen or feed.live is None,
        timeout=10.0,
        what="the server to go quiet",
    )
    wait_until(lambda: received_all(c, feed), timeout=10.0, what="every sent quote to arrive")
