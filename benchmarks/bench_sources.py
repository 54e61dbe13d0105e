"""Cost of the real sources: HTTP fetch and parse, replay load and fetch, replay through a Collector.

Run: ``python -m benchmarks.bench_sources [--rounds 5] [--taq DIR]``

- ``http parse``: ``HttpSource.fetch`` over ``httpx.MockTransport`` (no network):
  the source's own cost per quote (request building, JSON, parsing, Quote);
- ``http local``: sequential fetches from a stdlib HTTP/1.1 server on 127.0.0.1
  (keep-alive), i.e. the floor of a real round trip on this machine;
- ``replay fetch``: ``ReplaySource.fetch`` at speed 0, quotes per second;
- ``replay collector``: the TAQ sample (or a synthetic file) through a real
  ``Collector`` at speed 0, quotes per second end to end (validation + SQLite).

Medians of ``--rounds`` rounds. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from robust_collector import Collector
from robust_collector.config import config_from_dict
from robust_collector.sources import HttpSource, HttpSourceConfig, ReplaySource, ReplaySourceConfig

REPO = Path(__file__).resolve().parents[1]
BODY = {
    "status": "OK",
    "request_id": "x",
    "results": {"T": "SPY", "P": 520.02, "S": 3, "p": 520.0, "s": 2, "t": 1767000000123456789},
}


def http_config(base_url: str) -> HttpSourceConfig:
    cfg = {"type": "http", "preset": "polygon", "base_url": base_url, "api_key_env": "K"}
    return config_from_dict({"source": cfg}).source


def fetch_many(src: HttpSource, n: int) -> float:
    async def go() -> float:
        await src.start("bench")
        t = time.perf_counter()
        for _ in range(n):
            await src.fetch("SPY")
        elapsed = time.perf_counter() - t
        await src.aclose()
        return elapsed

    return asyncio.run(go())


def bench_http_parse(n: int) -> float:
    data = json.dumps(BODY).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data, headers={"content-type": "application/json"})

    src = HttpSource(
        http_config("http://api.test"),
        environ={"K": "bench-key-123"},
        transport=httpx.MockTransport(handler),
    )
    return fetch_many(src, n) / n * 1e6  # µs per fetch


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16
    data = json.dumps(BODY).encode()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        self.wfile.write(self.data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def bench_http_local(n: int) -> float:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        src = HttpSource(
            http_config(f"http://127.0.0.1:{httpd.server_address[1]}"),
            environ={"K": "bench-key-123"},
        )
        return fetch_many(src, n) / n * 1e6
    finally:
        httpd.shutdown()
        httpd.server_close()


def taq_frame(taq: Path | None) -> tuple[pl.DataFrame, str]:
    if taq is not None and (taq / "sampleQDataRaw.parquet").exists():
        return pl.read_parquet(taq / "sampleQDataRaw.parquet"), "TAQ sample"
    n = 100_000
    t0 = 1_709_908_200_000_000
    df = pl.DataFrame(
        {
            "SYMBOL": ["XXX"] * n,
            "DT": pl.Series([t0 + 1000 * i for i in range(n)]).cast(pl.Datetime("us")),
            "BID": [100.0 + (i % 50) * 0.01 for i in range(n)],
            "OFR": [100.02 + (i % 50) * 0.01 for i in range(n)],
            "BIDSIZ": [100] * n,
            "OFRSIZ": [200] * n,
        }
    )
    return df, "synthetic"


def bench_replay_fetch(df: pl.DataFrame) -> tuple[float, float]:
    cfg = ReplaySourceConfig(columns_preset="taq", speed=0)
    t = time.perf_counter()
    src = ReplaySource(cfg, frame=df)
    load = time.perf_counter() - t
    sym = src.symbols[0]
    n = src.rows(sym)

    async def go() -> float:
        await src.start("bench")
        t = time.perf_counter()
        for _ in range(n):
            await src.fetch(sym)
        return time.perf_counter() - t

    return load, n / asyncio.run(go())


def bench_replay_collector(df: pl.DataFrame) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.parquet"
        df.write_parquet(path)
        sym = df.get_column("SYMBOL")[0]
        n = df.height
        cfg = config_from_dict(
            {
                "symbols": [sym],
                "source": {
                    "type": "replay",
                    "path": str(path),
                    "speed": 0,
                    "columns_preset": "taq",
                },
                "storage": {"database": "b.db", "queue_max_batches": 1024},
                "realtime_data": {
                    "collect_interval_seconds": 0.000001,
                    "buffer_size": 5000,
                    "health_check": {"check_interval_seconds": 60},
                },
            },
            base_dir=tmp,
        )
        c = Collector(cfg)
        t = time.perf_counter()
        c.start()
        c.wait_for(lambda s: s.symbols[sym].quotes == n, timeout=600)
        c.stop()
        return n / (time.perf_counter() - t)


def median(fn: Callable[[], float], rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fetches", type=int, default=2000)
    default_taq = os.environ.get("RC_TAQ_DIR", str(REPO.parent / "shared" / "data" / "taq_sample"))
    parser.add_argument("--taq", type=Path, default=Path(default_taq))
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the validator logs every reject
    print(f"python {sys.version.split()[0]} on {platform.machine()}, httpx {httpx.__version__}")
    print(
        f"http parse   (MockTransport): {median(lambda: bench_http_parse(args.fetches), args.rounds):8.1f} µs/fetch"
    )
    print(
        f"http local   (127.0.0.1)    : {median(lambda: bench_http_local(args.fetches), args.rounds):8.1f} µs/fetch"
    )
    df, label = taq_frame(args.taq)
    loads, rates = zip(*(bench_replay_fetch(df) for _ in range(args.rounds)), strict=True)
    print(f"replay load  ({label}, {df.height} rows): {statistics.median(loads) * 1e3:8.1f} ms")
    print(f"replay fetch (speed 0)      : {statistics.median(rates):8.0f} quotes/s")
    rate = median(lambda: bench_replay_collector(df), max(1, args.rounds // 2))
    print(f"replay through a Collector  : {rate:8.0f} quotes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
