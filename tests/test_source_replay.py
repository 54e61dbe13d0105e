"""The replay source: a recorded file (CSV, Parquet, JSONL) replayed through the real pipeline.

At speed 0 through a real Collector, what is stored, rejected and dropped as a
duplicate matches ``validate_frame`` on the same file, row for row. Pacing at
speed > 0 is shown with an injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from robust_collector import Collector
from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text, ts_in_window
from robust_collector.config import config_from_dict
from robust_collector.errors import ConfigError, PermanentSourceError
from robust_collector.health import HealthLevel
from robust_collector.model import Quote
from robust_collector.resilience import ManualClock
from robust_collector.sources import EndOfData, ReplaySource, ReplaySourceConfig, create_source
from robust_collector.validation import TAQ_COLUMNS, ValidationConfig, validate_frame

NY = "America/New_York"


def taq_frame(n: int = 150, seed: int = 7) -> pl.DataFrame:
    """TAQ-shaped quotes of two symbols (naive New York times), with the usual dirt:
    exact repeats, zero bids, crossed quotes, spikes, wide spreads, a time going back, a null bid."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    t = dt.datetime(2024, 3, 8, 9, 30)
    mids = {"AAA": 150.0, "BBB": 42.0}
    for i in range(n):
        for sym in ("AAA", "BBB"):
            t += dt.timedelta(microseconds=rng.randint(1_000, 400_000))
            mids[sym] += rng.choice((-0.01, 0.0, 0.01))
            bid, ask = round(mids[sym] - 0.01, 2), round(mids[sym] + 0.01, 2)
            row = {"DT": t, "EX": rng.choice("NPQZ"), "BID": bid, "BIDSIZ": 100, "OFR": ask}
            row |= {"OFRSIZ": rng.randint(1, 9) * 100, "SYMBOL": sym}
            k = i % 25
            if k == 3 and rows:
                row = dict(rows[-2])  # an exact repeat of this symbol's previous quote
            elif k == 7:
                row["BID"] = 0.0
            elif k == 11:
                row["BID"], row["OFR"] = ask + 0.05, bid
            elif k == 13:
                row["BID"], row["OFR"] = bid * 1.5, ask * 1.5
            elif k == 17:
                row["OFR"] = ask + 5.0
            elif k == 19:
                row["DT"] = t - dt.timedelta(seconds=5)
            elif k == 23:
                row["BID"] = None
            rows.append(row)
    return pl.DataFrame(rows, schema_overrides={"BID": pl.Float64, "OFR": pl.Float64})


def write(df: pl.DataFrame, folder: Path, fmt: str) -> Path:
    path = folder / f"quotes.{fmt}"
    {"csv": df.write_csv, "parquet": df.write_parquet, "jsonl": df.write_ndjson}[fmt](path)
    return path


def read_back(path: Path) -> pl.DataFrame:
    """The file as polars reads it, times as datetimes (for validate_frame)."""
    if path.suffix == ".csv":
        return pl.read_csv(path, try_parse_dates=True)
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_ndjson(path).with_columns(pl.col("DT").str.to_datetime(time_unit="us"))


def db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def replay_through_collector(make_config, path: Path, symbols: list[str], **source: Any):
    """Replay ``path`` at speed 0 through a real Collector until every row is in."""
    cfg = make_config(
        symbols=symbols,
        source={"type": "replay", "path": str(path), "speed": 0, **source},
        # a tiny interval so this runs fast with or without the collector's self-paced wiring
        realtime_data={"collect_interval_seconds": 0.0005},
    )
    c = Collector(cfg).start()
    src = c.source
    assert isinstance(src, ReplaySource)
    try:
        c.wait_for(
            lambda s: all(s.symbols[x].quotes == src.rows(x) for x in symbols if src.rows(x)),
            timeout=60,
        )
        assert c.running
    finally:
        summary = c.stop()  # counters after the last write
    return c, summary


# -- through the collector ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_replay_at_speed_0_stores_and_rejects_what_validate_frame_says(make_config, tmp_path, fmt):
    df = taq_frame()
    path = write(df, tmp_path, fmt)
    c, st = replay_through_collector(
        make_config, path, ["AAA", "BBB"], columns_preset="taq", timezone=NY
    )
    vf = validate_frame(read_back(path), ValidationConfig(), TAQ_COLUMNS, tz=NY).frame
    for sym in ("AAA", "BBB"):
        mine = vf.filter(pl.col("SYMBOL") == sym)
        status = dict(mine.group_by("status").len().iter_rows())
        s = st.symbols[sym]
        assert s.quotes == mine.height == 150
        assert s.accepted == s.stored == status["accepted"]
        assert s.rejects == status["rejected"] > 0
        assert s.duplicates == status["duplicate"] > 0
        expected_rules = dict(
            mine.filter(pl.col("status") == "rejected").group_by("reject_rule").len().iter_rows()
        )
        stored_rules = dict(
            db_rows(
                c.db_path,
                f"SELECT rule, count(*) FROM rejects WHERE symbol = '{sym}' GROUP BY rule",
            )
        )
        assert stored_rules == expected_rules == dict(s.rejects_by_rule)
        assert {"non_positive", "crossed", "out_of_order"} <= set(stored_rules)
        # the very rows: same times and prices, in order, with seq = row number in the file
        accepted = mine.with_row_index("seq", offset=1).filter(pl.col("status") == "accepted")
        ticks = db_rows(
            c.db_path,
            f"SELECT seq, ts_us, bid, ask, bid_size, ask_size, source FROM ticks "
            f"WHERE symbol = '{sym}' ORDER BY seq",
        )
        want_ts = accepted.select(pl.col("DT").dt.replace_time_zone(NY).dt.epoch("us")).to_series()
        assert [t[0] for t in ticks] == accepted["seq"].to_list()
        assert [t[1] for t in ticks] == want_ts.to_list()
        assert [t[2] for t in ticks] == accepted["BID"].to_list()
        assert [t[3] for t in ticks] == accepted["OFR"].to_list()
        assert {t[6] for t in ticks} == {"replay"}


@pytest.mark.integration
def test_a_symbol_not_in_the_file_is_a_config_error_before_anything_runs(make_config, tmp_path):
    # (it used to fail at run time, retried and breaker-opened, and a replay with it
    # never reported "finished")
    path = write(taq_frame(40), tmp_path, "parquet")
    cfg = make_config(
        symbols=["AAA", "ZZZ"],
        source={"type": "replay", "path": str(path), "speed": 0, "columns_preset": "taq"},
    )
    with pytest.raises(ConfigError) as info:
        Collector(cfg)
    assert str(info.value) == "symbols: ZZZ not in the replayed file (it holds AAA, BBB)"


@pytest.mark.integration
def test_replay_at_speed_10_takes_a_tenth_of_the_recorded_time(make_config, tmp_path):
    t0 = dt.datetime(2024, 3, 8, 14, 30)
    df = pl.DataFrame(
        {
            "time": [t0 + dt.timedelta(milliseconds=100 * i) for i in range(31)],  # 3 s of data
            "price": [100.0 + 0.01 * i for i in range(31)],
        }
    )
    path = write(df, tmp_path, "parquet")
    cfg = make_config(
        symbols=["ONE"],
        source={
            "type": "replay",
            "path": str(path),
            "speed": 10,
            "symbol": "ONE",
            "columns": {"ts_us": "time", "last": "price"},
        },
        realtime_data={"collect_interval_seconds": 0.0005},
    )
    c = Collector(cfg).start()
    try:
        t = time.monotonic()
        c.wait_for(lambda s: s.symbols["ONE"].quotes == 31, timeout=30)
        elapsed = time.monotonic() - t
    finally:
        c.stop()
    assert 0.27 <= elapsed < 1.5  # 3 s of quotes at 10x: 0.3 s
    assert c.status().symbols["ONE"].stored == 31


@pytest.mark.integration
def test_the_taq_sample_replays_exactly_as_validate_frame_judges_it(make_config, taq_dir):
    """131,401 real TAQ quotes (naive UTC) through the live pipeline at speed 0."""
    path = taq_dir / "sampleQDataRaw.parquet"
    cfg = make_config(
        symbols=["XXX"],
        source={"type": "replay", "path": str(path), "speed": 0, "columns_preset": "taq"},
        storage={"queue_max_batches": 1024},
        realtime_data={"collect_interval_seconds": 0.000001, "buffer_size": 5000},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: s.symbols["XXX"].quotes == 131_401, timeout=240)
    finally:
        st = c.stop()
    vf = validate_frame(pl.read_parquet(path), cfg.realtime_data.validation, TAQ_COLUMNS)
    status = dict(vf.frame.group_by("status").len().iter_rows())
    s = st.symbols["XXX"]
    assert (s.stored, s.rejects, s.duplicates) == (
        status["accepted"],
        status["rejected"],
        status["duplicate"],
    )
    want = dict(vf.rejects.group_by("reject_rule").len().iter_rows())
    assert dict(s.rejects_by_rule) == want
    assert db_rows(c.db_path, "SELECT count(*) FROM ticks") == [(status["accepted"],)]


# -- the source alone --------------------------------------------------------------------------


def manual_clock() -> ManualClock:
    """The replay's monotonic clock: its sleeps advance it instead of waiting."""
    return ManualClock(500.0)


def slept(ft: ManualClock) -> list[float]:
    return [round(s, 6) for s in ft.sleeps]


def source(frame: pl.DataFrame, ft: ManualClock | None = None, **cfg: Any) -> ReplaySource:
    ft = ft or manual_clock()
    return ReplaySource(
        ReplaySourceConfig(**cfg),
        frame=frame,
        clock_us=lambda: 1_800_000_000_000_000,
        monotonic=ft,
        sleep=ft.async_sleep,
    )


def drain(src: ReplaySource, order: list[str]) -> list[Quote | Exception]:
    async def go() -> list[Quote | Exception]:
        await src.start("run1")
        out: list[Quote | Exception] = []
        for s in order:
            try:
                out.append(await src.fetch(s))
            except Exception as exc:
                out.append(exc)
        return out

    return asyncio.run(go())


def secs(*offsets: float) -> list[int]:
    base = 1_709_908_200_000_000  # 2024-03-08 14:30 UTC
    return [base + int(o * 1_000_000) for o in offsets]


def test_pacing_follows_the_recorded_times_divided_by_speed():
    df = pl.DataFrame(
        {
            "symbol": ["A", "A", "B", "A"],
            "ts_us": secs(0, 1, 2, 3),
            "last": [1.0, 2.0, 3.0, 4.0],
        }
    )
    ft = manual_clock()
    src = source(df, ft, speed=2.0)
    out = drain(src, ["A", "A", "A", "B"])
    assert [q.last for q in out if isinstance(q, Quote)] == [1.0, 2.0, 4.0, 3.0]
    # A's rows are due 0, 0.5 and 1.5 s after start; B's row (due at 1.0) is already late
    assert slept(ft) == [0.5, 1.0]
    assert ft() == 501.5


def test_speed_0_never_waits_and_the_end_is_reported():
    df = pl.DataFrame({"symbol": ["A"] * 3, "ts_us": secs(0, 60, 3600), "last": [1.0, 2.0, 3.0]})
    ft = manual_clock()
    src = source(df, ft, speed=0)
    out = drain(src, ["A", "A", "A", "A", "A"])
    assert slept(ft) == []
    assert [q.seq for q in out[:3] if isinstance(q, Quote)] == [1, 2, 3]
    assert [q.tick_id for q in out[:3] if isinstance(q, Quote)] == [
        "run1:A:1",
        "run1:A:2",
        "run1:A:3",
    ]
    end = out[3]
    assert isinstance(end, EndOfData) and end.permanent and end.served == 3
    assert str(end) == "replay A: end of data after 3 rows of the replayed frame"
    assert isinstance(out[4], EndOfData)  # and on every later fetch
    assert src.finished() and src.finished("A") and src.progress() == {"A": (3, 3)}


def test_symbols_not_in_the_file_are_permanent_errors():
    df = pl.DataFrame({"symbol": ["A", "B"], "ts_us": secs(0, 1), "last": [1.0, 2.0]})
    (err,) = drain(source(df, speed=0), ["NOPE"])
    assert isinstance(err, PermanentSourceError) and err.symbol == "NOPE"
    assert str(err) == "replay NOPE: symbol not in the replayed frame (it holds A, B)"
    assert not isinstance(err, EndOfData)


def test_a_fetch_cancelled_while_waiting_replays_its_row_later():
    df = pl.DataFrame({"symbol": ["A", "A"], "ts_us": secs(0, 10), "last": [1.0, 2.0]})
    src = ReplaySource(ReplaySourceConfig(speed=1.0), frame=df)

    async def go() -> tuple[int, int]:
        await src.start("r")
        await src.fetch("A")
        task = asyncio.create_task(src.fetch("A"))  # due in 10 s
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return src.served("A"), src.rows("A")

    assert asyncio.run(go()) == (1, 2)


def test_values_are_kept_exactly_null_stays_none_nan_stays_nan():
    df = pl.DataFrame(
        {
            "symbol": ["A"] * 3,
            "ts_us": secs(0, 1, 2),
            "bid": [1.5, None, math.nan],
            "ask": [1.6, 1.7, 1.8],
            "bid_size": [100, 200, None],
        }
    )
    q1, q2, q3 = drain(source(df, speed=0), ["A", "A", "A"])
    assert isinstance(q1, Quote) and isinstance(q2, Quote) and isinstance(q3, Quote)
    assert (q1.bid, q1.ask, q1.bid_size, q1.ask_size, q1.last) == (1.5, 1.6, 100.0, None, None)
    assert q2.bid is None and q3.bid is not None and math.isnan(q3.bid) and q3.bid_size is None
    assert q1.ts_us == secs(0)[0] and q1.recv_us == 1_800_000_000_000_000  # our clock


def test_naive_times_are_read_in_the_configured_time_zone():
    df = pl.DataFrame(
        {"SYMBOL": ["X"], "DT": [dt.datetime(2024, 3, 8, 9, 30)], "BID": [1.0], "OFR": [1.1]}
    )
    df = df.with_columns(BIDSIZ=pl.lit(1), OFRSIZ=pl.lit(1))
    (ny,) = drain(source(df, speed=0, columns_preset="taq", timezone=NY), ["X"])
    (utc,) = drain(source(df, speed=0, columns_preset="taq"), ["X"])
    assert isinstance(ny, Quote) and isinstance(utc, Quote)
    assert ny.ts_us == secs(0)[0]  # 09:30 New York (EST) = 14:30 UTC
    assert ny.ts_us - utc.ts_us == 5 * 3600 * 1_000_000


def test_integer_epoch_times_a_recv_column_and_a_fixed_symbol():
    df = pl.DataFrame(
        {
            "t_ms": [1_709_908_200_000, 1_709_908_200_250],
            "seen_ms": [1_709_908_200_010, 1_709_908_200_260],
            "px": [10.0, 10.5],
        }
    )
    src = source(
        df,
        speed=0,
        symbol="ONE",
        time_unit="ms",
        columns={"ts_us": "t_ms", "recv_us": "seen_ms", "last": "px"},
    )
    q1, q2 = drain(src, ["ONE", "ONE"])
    assert isinstance(q1, Quote) and isinstance(q2, Quote)
    assert (q1.ts_us, q1.recv_us, q2.ts_us) == (
        1_709_908_200_000_000,
        1_709_908_200_010_000,
        1_709_908_200_250_000,
    )
    assert src.symbols == ("ONE",)


def test_create_source_from_config(tmp_path):
    path = write(taq_frame(5), tmp_path, "csv")
    cfg = config_from_dict(
        {"source": {"type": "replay", "path": str(path), "columns_preset": "taq", "speed": 60}}
    )
    src = create_source(cfg.source)
    assert isinstance(src, ReplaySource) and src.self_paced
    assert src.symbols == ("AAA", "BBB") and src.rows("AAA") == 5
    assert cfg.as_dict()["source"]["speed"] == 60.0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "source.path: required key is missing"),
        ({"path": "x.csv", "speed": -1}, "source.speed: expected a number >= 0"),
        ({"path": "x.csv", "timezone": "Mars/Base"}, "source.timezone: expected an IANA"),
        ({"path": "x.csv", "columns": {"price": "p"}}, "source.columns.price: unknown quote field"),
        ({"path": "x.csv", "format": "xlsx"}, "source.format: expected one of"),
    ],
)
def test_config_errors_name_the_key(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"source": {"type": "replay", **section}})


def test_file_problems_are_config_errors(tmp_path):
    def make(**section: Any) -> None:
        cfg = config_from_dict({"source": {"type": "replay", **section}})
        create_source(cfg.source)

    with pytest.raises(ConfigError, match=re.escape("source.path: file not found")):
        make(path=str(tmp_path / "missing.parquet"))
    (tmp_path / "q.txt").write_text("x")
    with pytest.raises(ConfigError, match=re.escape("cannot tell the format of q.txt")):
        make(path=str(tmp_path / "q.txt"))
    path = write(taq_frame(3), tmp_path, "parquet")
    with pytest.raises(ConfigError, match=re.escape("source.columns: ['NOPE'] not in the file")):
        make(path=str(path), columns={"ts_us": "DT", "bid": "NOPE"})
    with pytest.raises(
        ConfigError,
        match=r"source\.columns\.bid: column 'EX' of \S+ is not numeric, first at row 1 \(value '\w'\)",
    ):
        make(path=str(path), columns_preset="taq", columns={"bid": "EX"})
    (tmp_path / "sub").mkdir()
    no_sym = write(pl.DataFrame({"ts_us": secs(0), "last": [1.0]}), tmp_path / "sub", "jsonl")
    with pytest.raises(
        ConfigError, match=re.escape("source.symbol: the file has no symbol column")
    ):
        make(path=str(no_sym))


@pytest.mark.integration
def test_the_end_of_a_replay_is_reported_not_counted_as_failure(make_config, tmp_path):
    path = write(taq_frame(30), tmp_path, "parquet")
    cfg = make_config(
        symbols=["AAA", "BBB"],
        source={
            "type": "replay",
            "path": str(path),
            "speed": 0,
            "columns_preset": "taq",
            "timezone": NY,
        },
        realtime_data={"health_check": {"check_interval_seconds": 0.05, "max_stale_seconds": 0.2}},
    )
    c = Collector(cfg).start()
    try:
        c.wait_for(lambda s: c.finished, timeout=60)
        snap = c.wait_for(lambda s: s.uptime_seconds > 0.5, timeout=10) and c.health()
    finally:
        summary = c.stop()
    assert summary.errors == 0
    assert db_rows(c.db_path, "SELECT count(*) FROM errors")[0][0] == 0
    assert {s.breaker_state for s in summary.symbols.values()} == {"CLOSED"}
    # finished symbols are not "stale" and the system is not "producing no data"
    assert snap.level is not HealthLevel.CRITICAL, snap.reasons
    assert not any("no data" in r for r in snap.reasons), snap.reasons


def test_fetch_batch_takes_only_rows_that_are_due_and_at_most_the_limit():
    df = pl.DataFrame(
        {"symbol": ["A"] * 6, "ts_us": secs(0, 0, 0, 5, 5, 9), "last": [1.0, 2, 3, 4, 5, 6]}
    )
    ft = manual_clock()
    src = source(df, ft, speed=1.0)

    async def go():
        await src.start("run1")
        first = await src.fetch_batch("A", 2)  # limit: 2 of the 3 rows due at once
        second = await src.fetch_batch("A", 100)  # the third row due now, not the later ones
        third = await src.fetch_batch("A", 100)  # waits until t=5, takes both rows due then
        return first, second, third

    first, second, third = asyncio.run(go())
    assert [q.last for q in first] == [1.0, 2.0]
    assert [q.last for q in second] == [3.0]
    assert [q.last for q in third] == [4.0, 5.0]  # the row at t=9 is not due yet
    assert [q.seq for q in first + second + third] == [1, 2, 3, 4, 5]
    assert slept(ft) == [5.0]
    src0 = source(df, manual_clock(), speed=0)

    async def all_at_speed_0():
        await src0.start("r")
        got = await src0.fetch_batch("A", 100)
        with pytest.raises(EndOfData):
            await src0.fetch_batch("A", 100)
        return got

    assert [q.seq for q in asyncio.run(all_at_speed_0())] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("with_recv", [False, True])
@pytest.mark.parametrize("limit", [1, 2, 7, 256])
def test_fetch_batch_builds_the_quotes_fetch_builds_row_by_row(with_recv, limit):
    """The batch is built column by column; it must be the very quotes ``fetch`` gives:
    nulls as None, NaN kept, tick ids and sequence numbers, the recv column or our clock."""
    rng = random.Random(3)
    n = 40
    cols: dict[str, Any] = {
        "symbol": [rng.choice("AB") for _ in range(n)],
        "ts_us": secs(*range(n)),
        "bid": [rng.choice([1.0, 2.5, None, math.nan]) for _ in range(n)],
        "ask": [rng.choice([1.1, 2.6, 3.0]) for _ in range(n)],
        "bid_size": [rng.choice([100.0, None]) for _ in range(n)],
        "last": [None] * (n - 1) + [4.0],
    }
    extra: dict[str, Any] = {}
    if with_recv:
        cols["seen"] = [t + 5 for t in cols["ts_us"]]
        extra["columns"] = {"recv_us": "seen"}
    df = pl.DataFrame(cols)
    ticks = iter(range(10**6))
    clock = lambda: 1_800_000_000_000_000 + next(ticks)  # noqa: E731

    def build() -> ReplaySource:
        return ReplaySource(ReplaySourceConfig(speed=0, **extra), frame=df, clock_us=clock)

    one, batched = build(), build()

    async def go() -> tuple[list[Quote], list[Quote]]:
        await one.start("run1")
        await batched.start("run1")
        a: list[Quote] = []
        b: list[Quote] = []
        for s in ("A", "B"):
            while one.served(s) < one.rows(s):
                a.append(await one.fetch(s))
            while batched.served(s) < batched.rows(s):
                got = await batched.fetch_batch(s, limit)
                assert 1 <= len(got) <= limit
                b.extend(got)
        return a, b

    a, b = asyncio.run(go())
    assert len(a) == len(b) == n
    for x, y in zip(a, b, strict=True):
        assert type(y) is Quote
        rx, ry = x.as_row(), y.as_row()
        same = [u == v or (u != u and v != v) for u, v in zip(rx, ry, strict=True)]
        # recv_us is our clock when fetched: a later reading for the second source
        if not with_recv:
            same[4] = ry[4] >= 1_800_000_000_000_000
        assert all(same), (rx, ry)


@pytest.mark.parametrize(
    ("name", "content"),
    [("q.parquet", b"not parquet at all"), ("q.jsonl", b'{"a": 1}\n{broken\n'), ("q.csv", b"")],
)
def test_unreadable_files_are_one_line_config_errors(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        create_source(ReplaySourceConfig(path=str(p)))
    assert str(info.value).startswith(f"source.path: cannot read {p} as ")
    assert "\n" not in str(info.value)


# -- the boundary: hostile values in the file ---------------------------------------------------


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("u64.csv", "symbol,t,last\nA,{ok},1.0\nA,18446744073709551615,2.0\nA,{ok},3.0\n"),
        ("i64.csv", "symbol,t,last\nA,{ok},1.0\nA,9223372036854775807,2.0\nA,{ok},3.0\n"),
        ("big.csv", "symbol,t,last\nA,{ok},1.0\nA,-99999999999999999999,2.0\nA,{ok},3.0\n"),
        (
            "big.jsonl",
            '{{"symbol":"A","t":{ok},"last":1.0}}\n'
            '{{"symbol":"A","t":18446744073709551616,"last":2.0}}\n'
            '{{"symbol":"A","t":{ok},"last":3.0}}\n',
        ),
    ],
)
def test_integer_times_beyond_int64_are_clamped_not_wrapped_or_refused(tmp_path, name, body, unit):
    """An integer time past int64 (or past it once scaled to µs) made polars refuse the
    file with a traceback (UInt64/Int128 cast) or wrap around silently (i64 max × 10^6 =
    -10^6); it is clamped into int64 so the validator rejects that one row."""
    ok = {"s": 1_709_908_200, "ms": 1_709_908_200_000, "us": 1_709_908_200_000_000}
    ok["ns"] = ok["us"] * 1000
    p = tmp_path / name
    p.write_text(body.format(ok=ok[unit]))
    cfg = ReplaySourceConfig(path=str(p), columns={"ts_us": "t"}, time_unit=unit, speed=0)
    src = create_source(cfg)
    out = drain(src, ["A"] * 3)
    assert [q.last for q in out if isinstance(q, Quote)] == [1.0, 2.0, 3.0]
    good, bad, good2 = out
    assert isinstance(good, Quote) and isinstance(bad, Quote) and isinstance(good2, Quote)
    assert good.ts_us == good2.ts_us == 1_709_908_200_000_000
    assert bad.ts_us in (INT64_MAX, INT64_MIN) or not ts_in_window(bad.ts_us)
    assert INT64_MIN <= bad.ts_us <= INT64_MAX


def test_an_absurd_time_is_not_waited_for_at_speed_above_0():
    """Paced replay: a row with a clamped time is due in centuries; it is served at once
    (for the validator to reject) and the replay clock's origin ignores it."""
    df = pl.DataFrame(
        {
            "symbol": ["A", "A", "A"],
            "ts_us": [INT64_MAX, *secs(0, 1)],
            "last": [1.0, 2.0, 3.0],
        }
    )
    ft = manual_clock()
    src = source(df, ft, speed=1.0)
    out = drain(src, ["A"] * 3)
    assert [q.last for q in out if isinstance(q, Quote)] == [1.0, 2.0, 3.0]
    assert src.t0_us == secs(0)[0]
    assert slept(ft) == [1.0]


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ("symbol,t,last\nA,2024-03-08T09:30:00,1.0\nA,not a time,2.0\n", "have no time"),
        ("symbol,t,last\nA,2024-03-08T09:30:00,1.0\nA,99999999999999999999,2.0\n", "no time"),
        ("symbol,t,last\nA,2024-03-08T09:30:00,abc\n", "not numeric"),
    ],
)
def test_unparseable_values_are_one_line_config_errors(tmp_path, body, what):
    p = tmp_path / "q.csv"
    p.write_text(body)
    with pytest.raises(ConfigError) as info:
        create_source(ReplaySourceConfig(path=str(p), columns={"ts_us": "t"}))
    assert what in str(info.value)
    assert "\n" not in str(info.value) and clean_text(str(info.value)) == str(info.value)


# -- issue 16: odd times are one line or clamped, never a traceback or a wrapped value ------
# One case per line: (file name, body, replay settings, the expected message or None = loads).
# fmt: off
ODD_TIMES = [
    ("gap.csv", "symbol,t,last\nA,2024-03-08 09:30:00,1.0\nA,2024-03-10 02:30:00,2.0\n", {"timezone": "America/New_York"}, "source.columns.ts_us: 1 rows of gap.csv have no time, first at row 2 (value 2024-03-10 02:30:00)"),
    ("zones.csv", "symbol,t,last\nA,2024-03-08T09:30:00Z,1.0\nA,2024-03-08T09:30:00,2.0\n", {}, "have no time"),
    ("zones.jsonl", '{"symbol":"A","t":"2024-03-08T09:30:00Z","last":1.0}\n{"symbol":"A","t":1709908200,"last":2.0}\n', {}, "have no time"),
    ("s13f.csv", "symbol,t,last\nA,1709908200.0,1.0\nA,1e13,2.0\n", {"time_unit": "s"}, "source.columns: column 't' is Float64"),
    ("bad.csv", "symbol,t,last\nA,2024-03-08T09:30:00,1.0\nA,yesterday,2.0\n", {}, "have no time, first at row 2 (value 'yesterday')"),
    ("s13.csv", "symbol,t,last\nA,1709908200,1.0\nA,10000000000000,2.0\n", {"time_unit": "s"}, None),
    ("offsets.csv", "symbol,t,last\nA,2024-03-08T09:30:00+00:00,1.0\nA,2024-03-08T09:30:00-05:00,2.0\n", {}, None),
]
# fmt: on


@pytest.mark.parametrize(
    ("name", "body", "settings", "message"), ODD_TIMES, ids=[c[0] for c in ODD_TIMES]
)
def test_odd_times_are_one_line_errors_or_clamped_never_wrapped(
    tmp_path, name, body, settings, message
):
    p = tmp_path / name
    p.write_text(body)
    cfg = ReplaySourceConfig(path=str(p), columns={"ts_us": "t"}, speed=0, **settings)
    if message is not None:
        with pytest.raises(ConfigError) as info:
            create_source(cfg)
        text = str(info.value)
        assert message in text and "\n" not in text and len(text) < 300, text
        return
    out = drain(create_source(cfg), ["A"] * 2)
    assert all(isinstance(q, Quote) for q in out)
    for q in out:  # a time past int64 once scaled is clamped (the validator rejects it)
        assert ts_in_window(q.ts_us) or q.ts_us in (INT64_MAX, INT64_MIN)
        assert q.ts_us >= 0 or q.ts_us == INT64_MIN


def test_a_missing_symbol_names_at_most_ten_of_a_files_symbols(make_config, tmp_path):
    """A file of 25 symbols: the error lists ten and says how many more (not all 25)."""
    rows = [
        {"symbol": f"S{i:02d}", "ts_us": 1_767_225_600_000_000 + i, "bid": 10.0, "ask": 10.1}
        for i in range(25)
    ]
    path = tmp_path / "many.csv"
    pl.DataFrame(rows).write_csv(path)
    cfg = make_config(
        symbols=["ZZZ"],
        source={"type": "replay", "path": str(path), "speed": 0},
    )
    with pytest.raises(ConfigError) as info:
        Collector(cfg)
    held = ", ".join(f"S{i:02d}" for i in range(10))
    assert str(info.value) == (
        f"symbols: ZZZ not in the replayed file (it holds {held} and 15 more)"
    )
