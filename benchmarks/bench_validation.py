"""Cost of validation: the streaming Validator per quote, validate_frame in quotes/s.

Run: ``python -m benchmarks.bench_validation [--rounds 7] [--quotes 100000] [--taq DIR]``

Both engines run over the same quotes, next to bare loops over those quotes, in
one process: each round times every candidate once, in a shuffled order, so
machine noise hits all of them alike. The quotes are the real TAQ sample when it
is found (``--taq``, ``RC_TAQ_DIR`` or ``../shared/data/taq_sample``), else a
seeded synthetic stream of three symbols with 2 % bad ticks. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from robust_collector.model import Quote
from robust_collector.validation import (
    TAQ_COLUMNS,
    ValidationConfig,
    Validator,
    quotes_frame,
    validate_frame,
)

REPO = Path(__file__).resolve().parents[1]


def synthetic(n: int, seed: int = 7) -> list[Quote]:
    """A seeded random walk over three symbols with spikes, crossed and zero quotes."""
    rng = random.Random(seed)
    level = {"SPY": 470.0, "QQQ": 400.0, "IWM": 200.0}
    t = 1_700_000_000_000_000
    out = []
    for i in range(n):
        sym = rng.choice(("SPY", "QQQ", "IWM"))
        t += rng.randint(0, 2000)
        level[sym] = round(level[sym] * (1 + rng.gauss(0, 0.0002)), 2)
        px, half = level[sym], rng.choice((0.01, 0.01, 0.02))
        bid, ask = round(px - half, 2), round(px + half, 2)
        bad = rng.random()
        if bad < 0.005:
            bid, ask = ask, bid  # crossed
        elif bad < 0.01:
            bid = 0.0
        elif bad < 0.02:
            bid, ask = round(px * 1.2, 2), round(px * 1.2 + 0.02, 2)  # spike
        out.append(Quote(f"b:{i}", sym, i, t, t + 50, bid, ask, 1.0, 2.0, None, "bench"))
    return out


def taq_quotes(folder: Path) -> tuple[list[Quote], pl.DataFrame]:
    """The TAQ sample as quotes (naive UTC times) and as the raw frame."""
    df = pl.read_parquet(folder / "sampleQDataRaw.parquet")
    ts = df["DT"].dt.replace_time_zone("UTC").dt.epoch("us").to_list()
    cols = zip(ts, df["BID"], df["OFR"], df["BIDSIZ"], df["OFRSIZ"], df["SYMBOL"], strict=True)
    quotes = [
        Quote(f"taq:{i}", s, i, t, t, b, a, bs, az, None, "taq")
        for i, (t, b, a, bs, az, s) in enumerate(cols)
    ]
    return quotes, df


def find_taq(arg: str | None) -> Path | None:
    for cand in (arg, os.environ.get("RC_TAQ_DIR"), str(REPO.parent / "shared/data/taq_sample")):
        if cand and (Path(cand) / "sampleQDataRaw.parquet").exists():
            return Path(cand)
    return None


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quotes", type=int, default=100_000, help="synthetic quotes")
    parser.add_argument("--taq", default=None, help="folder of sampleQDataRaw.parquet")
    parser.add_argument("--synthetic", action="store_true", help="ignore the TAQ sample")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # rejection warnings are not what we time

    folder = None if args.synthetic else find_taq(args.taq)
    config = ValidationConfig()
    if folder is not None:
        quotes, frame = taq_quotes(folder)
        source = f"TAQ sample ({folder})"

        def run_frame() -> object:
            return validate_frame(frame, config, TAQ_COLUMNS, tz="UTC")

    else:
        quotes = synthetic(args.quotes)
        frame = quotes_frame(quotes)
        source = "synthetic (3 symbols, 2 % bad ticks)"

        def run_frame() -> object:
            return validate_frame(frame, config)

    n = len(quotes)
    col_lists = [frame.get_column(c).to_list() for c in frame.columns]

    def sink(q: Quote) -> None:
        return None

    def bare_loop() -> object:
        for q in quotes:
            sink(q)
        return None

    def streaming() -> object:
        check = Validator(config).check
        for q in quotes:
            check(q)
        return None

    def bare_rows() -> object:
        for row in zip(*col_lists, strict=True):
            sink(row)  # type: ignore[arg-type]
        return None

    def bare_frame_rows() -> object:
        # What any per-row pass over the frame pays: columns to lists, then the loop.
        lists = [frame.get_column(c).to_list() for c in frame.columns]
        for row in zip(*lists, strict=True):
            sink(row)  # type: ignore[arg-type]
        return None

    candidates: dict[str, Callable[[], object]] = {
        "bare loop over Quote objects (a call each)": bare_loop,
        "Validator.check per quote": streaming,
        "bare loop over frame rows (lists ready)": bare_rows,
        "bare row pass over the frame (to_list + loop)": bare_frame_rows,
        "validate_frame": run_frame,
    }
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    order = list(candidates)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            samples[name].append(timed(candidates[name]))

    print(f"python {platform.python_version()} on {platform.machine()}, polars {pl.__version__}")
    print(f"quotes: {n:,} from {source}; {args.rounds} interleaved rounds\n")
    print(f"{'candidate':48} {'best ns/q':>10} {'median ns/q':>12} {'quotes/s (best)':>16}")
    best = {k: min(v) / n for k, v in samples.items()}
    for name, vals in samples.items():
        med = statistics.median(vals) / n
        print(f"{name:48} {best[name]:10.0f} {med:12.0f} {1e9 / best[name]:16,.0f}")
    print()
    print(
        "streaming / bare Quote loop:      "
        f"{best['Validator.check per quote'] / best['bare loop over Quote objects (a call each)']:.1f}x"
    )
    print(
        "validate_frame / bare row pass:   "
        f"{best['validate_frame'] / best['bare row pass over the frame (to_list + loop)']:.1f}x"
    )
    print(
        "validate_frame / streaming:       "
        f"{best['validate_frame'] / best['Validator.check per quote']:.2f}x"
    )
    print(
        f"validate_frame wall time (best):  {min(samples['validate_frame']) / 1e9:.3f} s "
        f"for {n:,} quotes"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
