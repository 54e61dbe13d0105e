"""Streaming source: messages per second through parse + validate + store vs a bare parse.

Run: ``python -m benchmarks.bench_stream [--messages 50000] [--rounds 3]``

- ``bare parse``: ``AlpacaStream.parse`` of every frame (JSON + field checks), nothing else;
- ``pipeline``: the same frames through a real ``Collector``'s stream path (queue,
  parse, validation, batching, the writer thread and SQLite), timed until every
  quote is stored. No network: frames go straight into the stream queue, so the
  figure is our cost, not the socket's.

Both run in one process, side by side; the ratio carries over between machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from robust_collector import Collector
from robust_collector.config import config_from_dict
from robust_collector.sources.websocket_presets import AlpacaStream

SYMBOLS = ("SPY", "QQQ", "IWM")


def frames(n: int) -> list[bytes]:
    """``n`` one-quote alpaca frames, prices wandering in a band, times increasing."""
    out = []
    t0 = int(time.time()) - 60
    for i in range(n):
        bid = 100.0 + (i % 50) * 0.01
        ns = (t0 * 1_000_000_000) + i * 1000
        s, frac = divmod(ns, 1_000_000_000)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{frac:09d}Z"
        q = {"T": "q", "S": SYMBOLS[i % 3], "bx": "V", "bp": bid, "bs": 3, "ax": "V",
             "ap": bid + 0.02, "as": 2, "c": ["R"], "z": "B", "t": ts}  # fmt: skip
        out.append(orjson.dumps([q]))
    return out


def bare(data: Sequence[bytes]) -> float:
    parse = AlpacaStream().parse
    t = time.perf_counter()
    for f in data:
        parse(f)
    return len(data) / (time.perf_counter() - t)


def pipeline(data: Sequence[bytes]) -> float:
    os.environ.setdefault("APCA_API_KEY_ID", "bench-key")
    os.environ.setdefault("APCA_API_SECRET_KEY", "bench-secret")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict(
            {
                "symbols": list(SYMBOLS),
                "source": {
                    "type": "websocket",
                    "preset": "alpaca",
                    "base_url": "ws://127.0.0.1:9",
                    "reconnect_delay_seconds": 60,
                    "queue_max_messages": len(data) + 1,
                },
                "storage": {"database": "b.db", "flush_interval_seconds": 0.05},
                "realtime_data": {
                    "buffer_size": 1000,
                    "health_check": {"enabled": False},
                    "backup": {"backup_path": "bk"},
                },
            },
            base_dir=Path(tmp),
        )
        c = Collector(cfg).start()
        runner: Any = c._stream
        loop = c._loop
        assert runner is not None and loop is not None

        def feed() -> None:  # on the loop, as the reader would: stamp, queue, wake
            now = time.time_ns() // 1000
            runner.queue.extend((now, f) for f in data)
            runner._wake.set()

        t = time.perf_counter()
        loop.call_soon_threadsafe(feed)
        c.wait_for(lambda s: s.stored + s.rejects >= len(data), timeout=300)
        rate = len(data) / (time.perf_counter() - t)
        c.stop()
        return rate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    data = frames(args.messages)
    b = statistics.median(bare(data) for _ in range(args.rounds))
    p = statistics.median(pipeline(data) for _ in range(args.rounds))
    print(f"{args.messages:,} alpaca quote frames, median of {args.rounds} rounds")
    print(f"{'bare parse':<34}{b:>12,.0f} msg/s")
    print(f"{'parse + validate + store (SQLite)':<34}{p:>12,.0f} msg/s")
    print(f"{'ratio pipeline / bare parse':<34}{p / b:>12.2f}")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
