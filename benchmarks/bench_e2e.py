"""End to end: a replay at speed 0 through the whole pipeline vs a bare executemany.

Run: ``python -m benchmarks.bench_e2e [--quotes 200000]`` and
``python -m benchmarks.bench_e2e --memory [--quotes 2000000]``.

The pipeline: the replay source, retry, circuit breaker, validation, health,
the batching writer thread, SQLite (WAL), from ``start()`` until the replay has
ended and ``stop()`` returned with everything committed. The baseline: the same
rows, already built, inserted with ``executemany`` into the same schema in
transactions of the same size. Both in one run, alternating; the ratio is
pipeline rate / bare rate (target >= 0.5, stretch 0.8). ``--memory`` samples
the process RSS while the pipeline runs and prints its growth (target < 30 MB
over 2 million quotes).
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

from robust_collector import Collector
from robust_collector.config import config_from_dict
from robust_collector.storage.backend import insert_ticks
from robust_collector.storage.schema import INSERT_TICKS, open_database
from robust_collector.storage.tables import INSERT_TRADES

SYMBOLS = ("SPY", "QQQ", "IWM")


def make_file(path: Path, n: int) -> pl.DataFrame:
    """A clean synthetic quote file (random walks, 1 ms apart), so nothing is rejected."""
    rng = random.Random(1)
    mids = {"SPY": 520.0, "QQQ": 450.0, "IWM": 210.0}
    rows = []
    t0 = 1_767_225_600_000_000
    for i in range(n):
        sym = SYMBOLS[i % 3]
        mids[sym] *= math.exp(rng.gauss(0, 0.0001))
        half = 0.01 * rng.choice((1, 1, 2)) / 2
        rows.append(
            (
                sym,
                t0 + i * 1000,
                round(mids[sym] - half, 2),
                round(mids[sym] + half, 2),
                100.0 * rng.randint(1, 9),
                100.0 * rng.randint(1, 9),
            )
        )
    df = pl.DataFrame(
        rows, schema=["symbol", "ts_us", "bid", "ask", "bid_size", "ask_size"], orient="row"
    )
    df.write_parquet(path)
    return df


def make_trades_file(path: Path, n: int) -> pl.DataFrame:
    """Clean synthetic trades (1 ms apart, some prints sharing a microsecond), so none is
    rejected or a duplicate: the trade path's cost, not its verdicts."""
    rng = random.Random(2)
    mids = {"SPY": 520.0, "QQQ": 450.0, "IWM": 210.0}
    rows = []
    t0 = 1_767_225_600_000_000
    for i in range(n):
        sym = SYMBOLS[i % 3]
        mids[sym] *= math.exp(rng.gauss(0, 0.0001))
        ts = t0 + (i // 2) * 1000  # two prints per microsecond, told apart by size/venue
        rows.append((sym, ts, round(mids[sym], 2), float(100 + i % 7), "NPQZ"[i % 4]))
    df = pl.DataFrame(rows, schema=["symbol", "ts_us", "price", "size", "venue"], orient="row")
    df.write_parquet(path)
    return df


def run_trade_pipeline(workdir: Path, data: Path) -> tuple[float, int]:
    cfg = config_from_dict(
        {
            "symbols": list(SYMBOLS),
            "source": {
                "type": "replay",
                "data": ["trades"],
                "trades_path": str(data),
                "speed": 0,
                "time_unit": "us",
            },
            "storage": {"database": str(workdir / "trades.db")},
            "realtime_data": {
                "buffer_size": 1000,
                "backup": {"backup_path": str(workdir / "trade-backups")},
            },
        }
    )
    c = Collector(cfg)
    t0 = time.perf_counter()
    c.start()
    c.wait_for(lambda s: c.finished, timeout=3600)
    summary = c.stop()
    return time.perf_counter() - t0, summary.trades_stored


def run_bare_trades(workdir: Path, df: pl.DataFrame, batch: int) -> float:
    """The same trade rows, already built, inserted with ``executemany``."""
    rows = [
        (f"bare:{sym}:t{i}", sym, i, ts, ts, price, size, venue, None, None, None, None,
         "replay", "bare")
        for i, (sym, ts, price, size, venue) in enumerate(df.iter_rows(), start=1)
    ]  # fmt: skip
    conn = open_database(workdir / "bare-trades.db")
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_TRADES, rows[i : i + batch])
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_pipeline(
    workdir: Path, data: Path, *, sample_rss: bool = False
) -> tuple[float, int, list[float]]:
    cfg = config_from_dict(
        {
            "symbols": list(SYMBOLS),
            "source": {"type": "replay", "path": str(data), "speed": 0, "time_unit": "us"},
            "storage": {"database": str(workdir / "pipe.db")},
            "realtime_data": {
                "buffer_size": 1000,
                "backup": {"backup_path": str(workdir / "backups")},
                "validation": {"rules": {"duplicate": False}},
            },
        }
    )
    c = Collector(cfg)
    samples: list[tuple[int, float]] = []  # (quotes processed, RSS MB)
    done = threading.Event()

    def sampler() -> None:
        while not done.wait(0.5):
            quotes = sum(s.quotes for s in c.status().symbols.values())
            samples.append((quotes, rss_mb()))

    if sample_rss:
        threading.Thread(target=sampler, daemon=True).start()
    t0 = time.perf_counter()
    c.start()
    c.wait_for(lambda s: c.finished, timeout=3600)
    summary = c.stop()
    dt = time.perf_counter() - t0
    done.set()
    return dt, summary.stored, samples


def run_bare(workdir: Path, df: pl.DataFrame, batch: int, *, multi: bool = False) -> float:
    """Bare inserts of the same rows: ``executemany``, or (``multi``) the writer's own
    64-rows-per-statement insert, so its speed-up is not mistaken for low overhead."""
    rows = [
        (f"bare:{sym}:{i}", sym, i, ts, ts, bid, ask, bs, az, None, "replay", "bare")
        for i, (sym, ts, bid, ask, bs, az) in enumerate(df.iter_rows(), start=1)
    ]
    conn = open_database(workdir / ("bare-multi.db" if multi else "bare.db"))
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        if multi:
            insert_ticks(conn, rows[i : i + batch])
        else:
            conn.executemany(INSERT_TICKS, rows[i : i + batch])
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quotes", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--memory", action="store_true", help="track RSS over a long run instead")
    args = ap.parse_args(argv)
    n = args.quotes or (2_000_000 if args.memory else 200_000)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        data = work / "quotes.parquet"
        df = make_file(data, n)
        if args.memory:
            before = rss_mb()
            dt, stored, samples = run_pipeline(work, data, sample_rss=True)
            # the replay source reads its whole file at start (a one-off peak); steady
            # state is measured from the first sample after 10% of the quotes
            steady = [(q, m) for q, m in samples if q >= n // 10]
            base = steady[0][1] if steady else float("nan")
            peak = max((m for _, m in steady), default=float("nan"))
            last = steady[-1][1] if steady else float("nan")
            print(f"memory: {stored:,} quotes through the pipeline in {dt:.0f}s")
            print(
                f"RSS before start {before:.0f} MB; at 10% of the quotes {base:.0f} MB; "
                f"peak after that {peak:.0f} MB; last sample {last:.0f} MB"
            )
            print(f"growth over the run: {peak - base:+.1f} MB (target < 30 MB)")
            return
        pipe, bare, multi = [], [], []
        for r in range(args.rounds):
            sub = work / f"r{r}"
            sub.mkdir()
            bare.append(run_bare(sub, df, 1000))
            multi.append(run_bare(sub, df, 1000, multi=True))
            dt, stored, _ = run_pipeline(sub, data)
            assert stored == n, f"pipeline stored {stored} of {n}"
            pipe.append(dt)
    print(f"end to end: {n:,} quotes (3 symbols), replay at speed 0, {args.rounds} rounds")
    print(f"bare executemany   {n / min(bare):>10,.0f} rows/s")
    print(f"bare 64-row INSERT {n / min(multi):>10,.0f} rows/s  (the writer's insert, bare)")
    print(f"whole pipeline     {n / min(pipe):>10,.0f} quotes/s")
    print(f"ratio pipeline / bare: {min(bare) / min(pipe):.2f}  (target >= 0.5, stretch 0.8)")
    print(f"ratio pipeline / bare 64-row INSERT: {min(multi) / min(pipe):.2f}")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        trades_path = work / "trades.parquet"
        tdf = make_trades_file(trades_path, n)
        tpipe, tbare = [], []
        for r in range(args.rounds):
            sub = work / f"t{r}"
            sub.mkdir()
            tbare.append(run_bare_trades(sub, tdf, 1000))
            dt, stored = run_trade_pipeline(sub, trades_path)
            assert stored == n, f"trade pipeline stored {stored} of {n}"
            tpipe.append(dt)
    print(f"trades: {n:,} trades (3 symbols), replay at speed 0, {args.rounds} rounds")
    print(f"bare executemany   {n / min(tbare):>10,.0f} rows/s")
    print(f"whole pipeline     {n / min(tpipe):>10,.0f} trades/s")
    print(
        f"ratio trade pipeline / bare: {min(tbare) / min(tpipe):.2f}  (the quote path's target >= 0.5)"
    )


if __name__ == "__main__":
    main()
