"""The seed's "performance impact" claims, measured: the robust collector vs a bare loop.

Run: ``python -m benchmarks.bench_overhead [--seconds 20] [--interval 1.0]``

The seed's workload (3 symbols polled every second from the simulated feed)
runs twice, each in a fresh subprocess so memory is not shared: once through a
bare polling loop (fetch, insert, commit per tick) and once through the robust
collector (retry, breaker, validation, health, batching writer thread). Printed
side by side: CPU per tick, RSS, and latency from receive to committed (p50,
p99). The seed claimed +0.5% CPU, +10 MB and +10-50 ms; these are the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYMBOLS = ("SPY", "QQQ", "IWM")


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def run_bare(db: Path, seconds: float, interval: float) -> dict[str, Any]:
    from robust_collector.model import now_us
    from robust_collector.sources import SimulatedSource
    from robust_collector.storage.schema import INSERT_TICKS, open_database

    conn = open_database(db)
    src = SimulatedSource()
    latencies: list[float] = []

    async def poll(sym: str, until: float) -> None:
        loop = asyncio.get_running_loop()
        nxt = loop.time()
        while loop.time() < until:
            q = await src.fetch(sym)
            conn.execute("BEGIN")
            conn.execute(INSERT_TICKS, (*q.as_row(), "bare"))
            conn.execute("COMMIT")
            latencies.append((now_us() - q.recv_us) / 1000)
            nxt += interval
            await asyncio.sleep(max(0.0, nxt - loop.time()))

    async def main() -> None:
        await src.start("bare")
        until = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(poll(s, until) for s in SYMBOLS))

    cpu0 = time.process_time()
    asyncio.run(main())
    cpu = time.process_time() - cpu0
    return {"ticks": len(latencies), "cpu": cpu, "rss_mb": rss_mb(), "lat": latencies}


def run_robust(db: Path, seconds: float, interval: float) -> dict[str, Any]:
    from robust_collector import Collector
    from robust_collector.config import config_from_dict
    from robust_collector.model import now_us
    from robust_collector.storage import writer as writer_mod

    latencies: list[float] = []
    original = writer_mod.SQLiteWriter._count_written

    def timed(self: Any, batch: Any) -> None:  # commit time of every tick in the batch
        now = now_us()
        latencies.extend((now - row[4]) / 1000 for row in batch.ticks)
        original(self, batch)

    writer_mod.SQLiteWriter._count_written = timed  # type: ignore[method-assign]
    cfg = config_from_dict(
        {
            "storage": {"database": str(db)},
            "realtime_data": {
                "collect_interval_seconds": interval,
                "backup": {"backup_path": str(db.parent / "backups")},
            },
        }
    )
    c = Collector(cfg)
    cpu0 = time.process_time()
    c.start()
    time.sleep(seconds)  # the workload runs for a fixed wall time in both variants
    c.stop()
    cpu = time.process_time() - cpu0
    return {"ticks": len(latencies), "cpu": cpu, "rss_mb": rss_mb(), "lat": latencies}


def child(kind: str, seconds: float, interval: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        fn = run_bare if kind == "bare" else run_robust
        out = fn(Path(d) / "x.db", seconds, interval)
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--child", choices=("bare", "robust"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.seconds, args.interval)
        return
    results = {}
    for kind in ("bare", "robust"):
        p = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_overhead", "--child", kind,
             "--seconds", str(args.seconds), "--interval", str(args.interval)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[kind] = json.loads(p.stdout.strip().splitlines()[-1])
    print(
        f"seed workload: {len(SYMBOLS)} symbols every {args.interval:g}s for {args.seconds:g}s, "
        "each variant in its own process"
    )
    print(f"{'variant':<8} {'ticks':>6} {'CPU/tick':>10} {'RSS MB':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, r in results.items():
        lat = r["lat"]
        print(
            f"{kind:<8} {r['ticks']:>6} {r['cpu'] / max(1, r['ticks']) * 1e3:>8.2f}ms "
            f"{r['rss_mb']:>8.1f} {statistics.median(lat):>8.2f} {percentile(lat, 0.99):>8.2f}"
        )
    b, rb = results["bare"], results["robust"]
    print(
        f"robust - bare: CPU {(rb['cpu'] - b['cpu']) / args.seconds * 100:+.2f}% of one core, "
        f"RSS {rb['rss_mb'] - b['rss_mb']:+.1f} MB, "
        f"p50 latency {statistics.median(rb['lat']) - statistics.median(b['lat']):+.1f} ms "
        "(the batching writer commits every flush_interval_seconds: latency is a setting)"
    )


if __name__ == "__main__":
    main()
