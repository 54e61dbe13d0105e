"""Backup files and recovery against their bare baselines, side by side in one run.

Run: ``python -m benchmarks.bench_backup [--rows 300000] [--batch 1000] [--rounds 3]``

Writing: ``BackupWriter.write_batch`` (kind, checksum, flock, rotation) against a
bare orjson JSONL append of the same rows with the same fsync policy. Recovery:
``recover()`` (checksum and type checks, INSERT OR IGNORE, durable commits, file
moves), parsing inline and in its helper process, against one bare
``executemany`` of the same row tuples into the same schema. Rounds are
interleaved so machine noise hits every candidate alike; rates are rows per
second from the best round, with the median beside it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from robust_collector.storage.backup import BackupWriter
from robust_collector.storage.recovery import recover
from robust_collector.storage.schema import (
    INSERT_REJECTS,
    INSERT_TICKS,
    REJECT_COLUMNS,
    TICK_COLUMNS,
    open_database,
)

RUN_ID = "20260101T000000Z-bench000"
SYMBOLS = ("SPY", "QQQ", "IWM")


def make_rows(
    n: int, reject_every: int = 100
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Realistic rows: symbols interleaved, prices with some gaps, about 1% rejects."""
    rng = random.Random(7)
    ticks: list[tuple[Any, ...]] = []
    rejects: list[tuple[Any, ...]] = []
    t0 = 1_767_225_600_000_000
    for i in range(n):
        sym = SYMBOLS[i % 3]
        mid = 100.0 + rng.random() * 400
        row = (
            f"{RUN_ID}:{sym}:{i // 3 + 1}",
            sym,
            i // 3 + 1,
            t0 + i * 1000,
            t0 + i * 1000 + rng.randrange(50, 500),
            mid - 0.01,
            mid + 0.01,
            float(rng.randrange(1, 50) * 100),
            float(rng.randrange(1, 50) * 100),
            None if i % 4 else mid,
            "simulated",
            RUN_ID,
        )
        if i % reject_every == reject_every - 1:
            rejects.append((*row, "price_change", "moved 6.1% > 5.0%", row[4] + 10))
        else:
            ticks.append(row)
    return ticks, rejects


def batches(
    ticks: list[tuple[Any, ...]], rejects: list[tuple[Any, ...]], size: int
) -> list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """Split into batches of about ``size`` rows, rejects spread across them."""
    n = max(1, len(ticks) // size)
    per_r = -(-len(rejects) // n) if rejects else 0
    return [
        (
            ticks[i * size : (i + 1) * size if i < n - 1 else None],
            rejects[i * per_r : (i + 1) * per_r],
        )
        for i in range(n)
    ]


def bare_jsonl(folder: Path, work: list[Any], fsync: bool) -> None:
    """The baseline writer: orjson dicts, one append and (optionally) one fsync per batch."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "bare.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    dumps = orjson.dumps
    try:
        for ticks, rejects in work:
            parts = [dumps(dict(zip(TICK_COLUMNS, r, strict=True))) for r in ticks]
            parts += [dumps(dict(zip(REJECT_COLUMNS, r, strict=True))) for r in rejects]
            parts.append(b"")
            os.write(fd, b"\n".join(parts))
            if fsync:
                os.fdatasync(fd)
    finally:
        os.close(fd)


def backup_writer(folder: Path, work: list[Any], fsync: bool) -> None:
    """The backup path as the writer thread uses it."""
    with BackupWriter(folder, RUN_ID, fsync="batch" if fsync else "never") as w:
        for ticks, rejects in work:
            w.write_batch(ticks, rejects)


def bare_executemany(db: Path, ticks: list[Any], rejects: list[Any]) -> None:
    """The baseline insert: the same tuples, one transaction, the same schema and pragmas."""
    conn = open_database(db)
    conn.execute("BEGIN")
    conn.executemany(INSERT_TICKS, ticks)
    conn.executemany(INSERT_REJECTS, rejects)
    conn.execute("COMMIT")
    conn.close()


WRITE_JOBS = ["bare JSONL, fsync", "backup, fsync", "bare JSONL, no fsync", "backup, no fsync"]
READ_JOBS = ["bare executemany", "recover (inline)", "recover (reader process)"]


def write_round(d: Path, work: list[Any], seed: int) -> dict[str, float]:
    """Time the four writers once each, in a shuffled order; the fsync'd backup is kept."""
    jobs = {
        "bare JSONL, fsync": lambda: bare_jsonl(d / "bare-fsync", work, True),
        "backup, fsync": lambda: backup_writer(d / "backup", work, True),
        "bare JSONL, no fsync": lambda: bare_jsonl(d / "bare-nofsync", work, False),
        "backup, no fsync": lambda: backup_writer(d / "backup-nofsync", work, False),
    }
    return {k: timed(jobs[k]) for k in shuffled(jobs, seed)}


def read_round(d: Path, ticks: list[Any], rejects: list[Any], seed: int) -> dict[str, float]:
    """Time the bare insert and both recoveries of the same backup files."""
    for name in ("inline", "process"):
        shutil.copytree(d / "backup", d / f"r-{name}")
    jobs = {
        "bare executemany": lambda: bare_executemany(d / "bare.db", ticks, rejects),
        "recover (inline)": lambda: recover(d / "inline.db", d / "r-inline", reader_process=False),
        "recover (reader process)": lambda: recover(
            d / "process.db", d / "r-process", reader_process=True
        ),
    }
    return {k: timed(jobs[k]) for k in shuffled(jobs, seed)}


def shuffled(keys: Any, seed: int) -> list[str]:
    out = list(keys)
    random.Random(seed).shuffle(out)
    return out


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    """Run both comparisons and print rates and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000, help="quotes per round")
    ap.add_argument("--batch", type=int, default=1000, help="rows per backup batch")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = ap.parse_args(argv)

    ticks, rejects = make_rows(args.rows)
    work = batches(ticks, rejects, args.batch)
    n = len(ticks) + len(rejects)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
        f"{n} rows ({len(rejects)} rejects) in batches of ~{args.batch}, "
        f"{args.rounds} rounds, best (median) rows/s"
    )
    times: dict[str, list[float]] = {k: [] for k in WRITE_JOBS + READ_JOBS}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_backup_") as tmp:
        for r in range(args.rounds):
            d = Path(tmp) / f"round{r}"
            for k, v in write_round(d, work, seed=r).items():
                times[k].append(v)
            for k, v in read_round(d, ticks, rejects, seed=r).items():
                times[k].append(v)
            shutil.rmtree(d)

    def rate(k: str) -> tuple[float, float]:
        return n / min(times[k]), n / statistics.median(times[k])

    def row(label: str, k: str, base: str) -> None:
        best, med = rate(k)
        ratio = rate(k)[0] / rate(base)[0]
        print(f"  {label:<28} {best:>12,.0f} ({med:>10,.0f})   {ratio:5.2f}x {base}")

    print("writing backup files")
    row("bare JSONL, fsync/batch", "bare JSONL, fsync", "bare JSONL, fsync")
    row("backup, fsync/batch", "backup, fsync", "bare JSONL, fsync")
    row("bare JSONL, no fsync", "bare JSONL, no fsync", "bare JSONL, no fsync")
    row("backup, no fsync", "backup, no fsync", "bare JSONL, no fsync")
    print("recovery into SQLite")
    row("bare executemany", "bare executemany", "bare executemany")
    row("recover, inline", "recover (inline)", "bare executemany")
    row("recover, reader process", "recover (reader process)", "bare executemany")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
