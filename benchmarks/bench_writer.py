"""The database writer against a bare executemany of the same rows, side by side.

Run: ``python -m benchmarks.bench_writer [--rows 300000] [--batch 1000] [--rounds 3]``

The writer path: batches submitted to ``SQLiteWriter`` (bounded queue, writer
thread, one transaction per batch, INSERT OR IGNORE, breaker bookkeeping),
timed from the first submit until ``stop()`` returns with everything committed.
The baseline: one connection doing ``executemany`` per batch in a transaction,
into the same schema with the same pragmas. Rounds alternate; best and median
rates are printed with the ratio. Target here: writer >= 0.8 of bare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench_backup import make_rows
from robust_collector.resilience import CircuitBreaker
from robust_collector.storage.schema import INSERT_TICKS, open_database
from robust_collector.storage.writer import Batch, SQLiteWriter


def bare(path: Path, batches: list[list[tuple]]) -> float:
    conn = open_database(path)
    t0 = time.perf_counter()
    for b in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_TICKS, b)
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def writer(path: Path, batches: list[list[tuple]]) -> float:
    w = SQLiteWriter(
        path, queue_max_batches=64, gate=CircuitBreaker("storage", failure_threshold=1)
    )
    w.start()
    t0 = time.perf_counter()
    for b in batches:
        w.submit(Batch(list(b)))
    w.stop()
    dt = time.perf_counter() - t0
    assert w.stats().ticks_written == sum(len(b) for b in batches)
    return dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    ticks, _ = make_rows(args.rows)
    batches = [ticks[i : i + args.batch] for i in range(0, len(ticks), args.batch)]
    times: dict[str, list[float]] = {"bare executemany": [], "SQLiteWriter": []}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for name, fn in (("bare executemany", bare), ("SQLiteWriter", writer)):
                times[name].append(fn(Path(d) / f"{name[:4]}{r}.db", batches))
    print(f"writer benchmark: {args.rows:,} rows in batches of {args.batch}, {args.rounds} rounds")
    print(f"{'path':<18} {'best rows/s':>12} {'median rows/s':>14}")
    for name, ts in times.items():
        print(
            f"{name:<18} {args.rows / min(ts):>12,.0f} {args.rows / statistics.median(ts):>14,.0f}"
        )
    ratio = min(times["bare executemany"]) / min(times["SQLiteWriter"])
    print(f"ratio writer / bare (best): {ratio:.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
