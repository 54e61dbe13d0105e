"""A replay at full speed is paced by the database, not spilled to backup.

``submit`` never blocks the event loop (issue 14, finding 7), so without
backpressure a self-paced source outran the writer and the spill thread sent most
good batches to backup (170,000 of 200,000 in the end-to-end benchmark).
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from robust_collector import Collector

pytestmark = pytest.mark.integration


def quote_file(path: Path, n: int) -> None:
    rng = random.Random(7)
    t0 = 1_767_225_600_000_000
    mids = {"SPY": 520.0, "QQQ": 450.0}
    rows = []
    for i in range(n):
        sym = "SPY" if i % 2 else "QQQ"
        mids[sym] *= 1 + rng.gauss(0, 0.0001)
        rows.append((sym, t0 + i * 1000, round(mids[sym] - 0.01, 2), round(mids[sym] + 0.01, 2)))
    pl.DataFrame(rows, schema=["symbol", "ts_us", "bid", "ask"], orient="row").write_parquet(path)


def test_a_full_speed_replay_waits_for_the_writer_instead_of_spilling(
    make_config, tmp_path
) -> None:
    data = tmp_path / "q.parquet"
    quote_file(data, 60_000)
    cfg = make_config(
        symbols=["SPY", "QQQ"],
        source={"type": "replay", "path": str(data), "speed": 0, "time_unit": "us"},
        storage={"queue_max_batches": 2, "queue_full_block_ms": 20},
        realtime_data={"buffer_size": 200, "validation": {"rules": {"duplicate": False}}},
    )
    c = Collector(cfg).start()
    c.wait_for(lambda s: c.finished, timeout=120)
    summary = c.stop()
    ws = summary.storage
    assert ws is not None
    assert ws.queue_full_spills == 0 and ws.ticks_to_backup == 0, ws
    assert summary.stored + summary.rejects == 60_000
