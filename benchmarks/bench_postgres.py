"""The PostgreSQL writer against a bare COPY of the same rows, side by side.

Run: ``python -m benchmarks.bench_postgres [--rows 200000] [--batch 1000] [--rounds 3]``

The writer path: batches submitted to ``StorageWriter`` with ``PostgresBackend``
(bounded queue, writer thread, breaker bookkeeping, one transaction per batch:
COPY into the session's staging table, then ``INSERT ... SELECT ... ON CONFLICT
DO NOTHING`` into ticks), timed from the first submit until ``stop()`` returns
with everything committed. The baseline: one connection doing a bare ``COPY``
of each batch straight into ticks in a transaction (no idempotence: a replayed
row would fail it). Same server, same schema, fresh database per round; rounds
alternate. Target: writer >= 0.7 of bare COPY. Also printed: the replay path alone
(every batch through staging), which a live batch takes only when it meets a row
already stored.

The server: ``--url`` / ``RC_TEST_POSTGRES_URL``, else a throwaway one started
from the installed PostgreSQL binaries (as the tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.bench_backup import make_rows
from robust_collector.resilience import CircuitBreaker
from robust_collector.storage.postgres import PostgresBackend, PostgresSink, connect_postgres
from robust_collector.storage.schema import TICK_COLUMNS
from robust_collector.storage.writer import Batch, StorageWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.pgserver import URL_ENV, PgServer, find_bin_dir

COPY_BARE = f"COPY ticks ({', '.join(TICK_COLUMNS)}) FROM STDIN"


@contextlib.contextmanager
def server(url: str | None) -> Iterator[PgServer]:
    if url:
        yield PgServer(url)
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise LookupError(f"no PostgreSQL binaries found; pass --url or set {URL_ENV}")
    s = PgServer.start_throwaway(bin_dir)
    try:
        yield s
    finally:
        s.destroy()


def bare(url: str, batches: list[list[tuple]]) -> float:
    conn = connect_postgres(url)
    t0 = time.perf_counter()
    for b in batches:
        with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_BARE) as copy:
            for row in b:
                copy.write_row(row)
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def writer(url: str, batches: list[list[tuple]]) -> float:
    w = StorageWriter(
        PostgresBackend(url),
        queue_max_batches=64,
        gate=CircuitBreaker("storage", failure_threshold=1),
    )
    w.start()
    t0 = time.perf_counter()
    for b in batches:
        w.submit(Batch(list(b)))
    w.stop()
    dt = time.perf_counter() - t0
    written = w.stats().ticks_written
    assert written == sum(len(b) for b in batches), (written, w.stats().last_error)
    return dt


def staged(url: str, batches: list[list[tuple]]) -> float:
    """The replay path: COPY into staging, INSERT ... ON CONFLICT DO NOTHING."""
    conn = connect_postgres(url)
    sink = PostgresSink(conn)
    t0 = time.perf_counter()
    for b in batches:
        sink.insert(b, [])
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--url", default=os.environ.get(URL_ENV))
    args = ap.parse_args(argv)
    ticks, _ = make_rows(args.rows)
    batches = [ticks[i : i + args.batch] for i in range(0, len(ticks), args.batch)]
    paths = (("bare COPY", bare), ("PostgreSQL writer", writer), ("replay (staged)", staged))
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("bench_postgres skipped: psycopg is not installed (pip install -e '.[bench]')")
        return
    if not args.url and find_bin_dir() is None:
        print(f"bench_postgres skipped: no PostgreSQL binaries found; pass --url or set {URL_ENV}")
        return
    with server(args.url) as s:
        for _ in range(args.rounds):
            for name, fn in paths:
                url = s.create_database()
                try:
                    connect_postgres(url).close()  # the schema, outside the timing
                    times[name].append(fn(url, batches))
                finally:
                    s.drop_database(url)
    print(
        f"PostgreSQL writer benchmark: {args.rows:,} rows in batches of {args.batch}, "
        f"{args.rounds} rounds"
    )
    print(f"{'path':<18} {'best rows/s':>12} {'median rows/s':>14}")
    for name, ts in times.items():
        print(
            f"{name:<18} {args.rows / min(ts):>12,.0f} {args.rows / statistics.median(ts):>14,.0f}"
        )
    ratio = min(times["bare COPY"]) / min(times["PostgreSQL writer"])
    print(f"ratio writer / bare COPY (best): {ratio:.2f}  (target >= 0.7)")
    ratio = min(times["bare COPY"]) / min(times["replay (staged)"])
    print(f"ratio replay (staged, idempotent) / bare COPY (best): {ratio:.2f}")


if __name__ == "__main__":
    main()
