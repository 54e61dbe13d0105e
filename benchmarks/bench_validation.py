"""Cost of validation: the streaming engines per quote and per trade, the frame engines per row.

Run: ``python -m benchmarks.bench_validation [--rounds 7] [--quotes 100000] [--taq DIR]
[--only quotes|trades]``

Each section runs both engines over the same rows, next to bare loops over those
rows, in one process: each round times every candidate once, in a shuffled order,
so machine noise hits all of them alike. The rows are the real TAQ sample when it
is found (``--taq``, ``RC_TAQ_DIR`` or ``../shared/data/taq_sample``), else seeded
synthetic streams of three symbols with a few bad rows. The trade section times
the default rules and the BNHLS rules (exchange N, T1-T4 against the cleaned
quotes, which the streaming engine is given with ``note_quote``). Nothing is asserted.
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

from robust_collector.model import Quote, Trade
from robust_collector.validation import (
    TAQ_COLUMNS,
    TRADE_TAQ_COLUMNS,
    TradeRuleSwitches,
    TradeValidationConfig,
    TradeValidator,
    ValidationConfig,
    Validator,
    quotes_frame,
    trades_frame,
    validate_frame,
    validate_trade_frame,
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


def synthetic_trades(n: int, seed: int = 7) -> tuple[list[Trade], pl.DataFrame]:
    """A seeded random walk of trades over three symbols with ties, repeats and bad prints,
    and a quote per ten trades around the walk (for the band rule)."""
    rng = random.Random(seed)
    level = {"SPY": 470.0, "QQQ": 400.0, "IWM": 200.0}
    t = 1_709_908_200_000_000  # 2024-03-08 09:30 New York: inside the session
    trades: list[Trade] = []
    quotes = []
    for i in range(n):
        sym = rng.choice(("SPY", "QQQ", "IWM"))
        t += rng.choice((0, 0, 1, 500, 2000))
        level[sym] = round(level[sym] * (1 + rng.gauss(0, 0.0002)), 2)
        if i % 10 == 0:
            quotes.append((sym, t, level[sym] - 0.01, level[sym] + 0.01))
        bad = rng.random()
        if bad < 0.02 and trades:
            trades.append(trades[-1])  # an exact repeat
            continue
        px = level[sym] * 1.2 if bad < 0.03 else level[sym]
        size = 0.0 if bad < 0.035 else float(rng.choice((1, 100, 100, 200, 500)))
        venue = rng.choice(("N", "P", "D", "T"))
        cond = rng.choice((None, "@", "F I", "T"))
        trades.append(Trade(f"b:t{i}", sym, i, t, t + 50, px, size, venue, cond, 0))
    qdf = pl.DataFrame(
        quotes,
        schema={"SYMBOL": pl.String, "DT": pl.Int64, "BID": pl.Float64, "OFR": pl.Float64},
        orient="row",
    )
    return trades, qdf


def taq_trades(folder: Path) -> tuple[list[Trade], pl.DataFrame, pl.DataFrame]:
    """The TAQ trade sample as trades (naive UTC times), the raw frame, and the cleaned quotes."""
    df = pl.read_parquet(folder / "sampleTDataRaw.parquet")
    ts = df["DT"].dt.replace_time_zone("UTC").dt.epoch("us").to_list()
    cols = zip(
        ts, df["SYMBOL"], df["PRICE"], df["SIZE"], df["EX"], df["COND"], df["CORR"], strict=True
    )
    trades = [
        Trade(f"taq:t{i}", s, i, t, t, p, float(z), ex, c, corr, None, None, "taq")
        for i, (t, s, p, z, ex, c, corr) in enumerate(cols)
    ]
    return trades, df, pl.read_parquet(folder / "sampleQData.parquet")


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


def race(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time every candidate once per round, in a shuffled order; ns per run."""
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    order = list(candidates)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            samples[name].append(timed(candidates[name]))
    return samples


def report(samples: dict[str, list[float]], n: int, unit: str) -> dict[str, float]:
    """Print best and median ns per row; return the best per candidate."""
    print(f"{'candidate':52} {'best ns/' + unit:>11} {'median':>8} {unit + 's/s (best)':>16}")
    best = {k: min(v) / n for k, v in samples.items()}
    for name, vals in samples.items():
        med = statistics.median(vals) / n
        print(f"{name:52} {best[name]:11.0f} {med:8.0f} {1e9 / best[name]:16,.0f}")
    print()
    return best


def sink(row: object) -> None:
    return None


def quote_section(args: argparse.Namespace, folder: Path | None) -> None:
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
            sink(row)
        return None

    def bare_frame_rows() -> object:
        # What any per-row pass over the frame pays: columns to lists, then the loop.
        lists = [frame.get_column(c).to_list() for c in frame.columns]
        for row in zip(*lists, strict=True):
            sink(row)
        return None

    candidates: dict[str, Callable[[], object]] = {
        "bare loop over Quote objects (a call each)": bare_loop,
        "Validator.check per quote": streaming,
        "bare loop over frame rows (lists ready)": bare_rows,
        "bare row pass over the frame (to_list + loop)": bare_frame_rows,
        "validate_frame": run_frame,
    }
    samples = race(candidates, args.rounds)
    print(f"-- quotes: {n:,} from {source}; {args.rounds} interleaved rounds\n")
    best = report(samples, n, "q")
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
        f"for {n:,} quotes\n"
    )


BNHLS = TradeValidationConfig(
    exchanges=("N",),
    rules=TradeRuleSwitches(
        outside_session=True, correction=True, abnormal_condition=True, outside_quote_band=True
    ),
)


def trade_section(args: argparse.Namespace, folder: Path | None) -> None:
    default = TradeValidationConfig()
    if folder is not None:
        trades, frame, qframe = taq_trades(folder)
        columns, tz = dict(TRADE_TAQ_COLUMNS), "UTC"
        source = f"TAQ trade sample ({folder}), quotes sampleQData"
    else:
        trades, qframe = synthetic_trades(args.quotes)
        frame = trades_frame(trades)
        columns, tz = None, "UTC"
        source = "synthetic (3 symbols, a few bad prints and repeats)"
    n = len(trades)
    qtimes = qframe["DT"].to_list()
    if qframe.schema["DT"] != pl.Int64:
        qtimes = qframe["DT"].dt.replace_time_zone("UTC").dt.epoch("us").to_list()
    qrows = list(zip(qtimes, qframe["SYMBOL"], qframe["BID"], qframe["OFR"], strict=True))
    col_lists = [frame.get_column(c).to_list() for c in frame.columns]

    def bare_loop() -> object:
        for t in trades:
            sink(t)
        return None

    def streaming() -> object:
        check = TradeValidator(default).check
        for t in trades:
            check(t)
        return None

    def streaming_bnhls() -> object:
        v = TradeValidator(BNHLS)
        check, note = v.check, v.note_quote
        j, m = 0, len(qrows)
        for t in trades:
            while j < m and qrows[j][0] <= t.ts_us:
                qt, s, bid, ask = qrows[j]
                note(s, bid, ask, qt)
                j += 1
            check(t)
        return None

    def bare_frame_rows() -> object:
        lists = [frame.get_column(c).to_list() for c in frame.columns]
        for row in zip(*lists, strict=True):
            sink(row)
        return None

    def bare_rows() -> object:
        for row in zip(*col_lists, strict=True):
            sink(row)
        return None

    def run_frame() -> object:
        return validate_trade_frame(frame, default, columns=columns, tz=tz)

    def run_frame_bnhls() -> object:
        return validate_trade_frame(
            frame, BNHLS, qframe, columns=columns, quote_columns=TAQ_COLUMNS, tz=tz
        )

    candidates: dict[str, Callable[[], object]] = {
        "bare loop over Trade objects (a call each)": bare_loop,
        "TradeValidator.check per trade": streaming,
        "TradeValidator.check, BNHLS rules (+ note_quote)": streaming_bnhls,
        "bare loop over frame rows (lists ready)": bare_rows,
        "bare row pass over the frame (to_list + loop)": bare_frame_rows,
        "validate_trade_frame": run_frame,
        "validate_trade_frame, BNHLS rules (+ as-of join)": run_frame_bnhls,
    }
    samples = race(candidates, args.rounds)
    print(f"-- trades: {n:,} from {source}; {args.rounds} interleaved rounds\n")
    best = report(samples, n, "t")
    bare = best["bare loop over Trade objects (a call each)"]
    bare_pass = best["bare row pass over the frame (to_list + loop)"]
    for label, name, base in (
        ("streaming / bare Trade loop:           ", "TradeValidator.check per trade", bare),
        (
            "streaming BNHLS / bare Trade loop:     ",
            "TradeValidator.check, BNHLS rules (+ note_quote)",
            bare,
        ),
        ("validate_trade_frame / bare row pass:  ", "validate_trade_frame", bare_pass),
        (
            "frame BNHLS / bare row pass:           ",
            "validate_trade_frame, BNHLS rules (+ as-of join)",
            bare_pass,
        ),
    ):
        print(f"{label}{best[name] / base:.1f}x")
    print(
        "validate_trade_frame / streaming:      "
        f"{best['validate_trade_frame'] / best['TradeValidator.check per trade']:.2f}x"
    )
    print(
        f"validate_trade_frame wall time (best): {min(samples['validate_trade_frame']) / 1e9:.3f} s "
        f"for {n:,} trades"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quotes", type=int, default=100_000, help="synthetic rows per section")
    parser.add_argument("--taq", default=None, help="folder of the TAQ sample parquet files")
    parser.add_argument("--synthetic", action="store_true", help="ignore the TAQ sample")
    parser.add_argument("--only", choices=("quotes", "trades"), default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # rejection warnings are not what we time

    folder = None if args.synthetic else find_taq(args.taq)
    print(f"python {platform.python_version()} on {platform.machine()}, polars {pl.__version__}\n")
    if args.only in (None, "quotes"):
        quote_section(args, folder)
    if args.only in (None, "trades"):
        trade_section(args, folder)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
