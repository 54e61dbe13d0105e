"""Counts over frames: rejects by rule (or any columns) and rows per time bucket."""

from __future__ import annotations

from datetime import timedelta

import polars as pl


def rejects_by(rejects: pl.DataFrame, *by: str) -> pl.DataFrame:
    """Reject counts grouped by columns (default ``rule``), largest first, with their share."""
    keys = list(by) or ["rule"]
    total = max(rejects.height, 1)
    return (
        rejects.group_by(keys)
        .agg(pl.len().alias("count"))
        .with_columns((pl.col("count") / total).alias("share"))
        .sort(["count", *keys], descending=[True, *([False] * len(keys))])
    )


def tick_rates(
    frame: pl.DataFrame, every: str = "1s", *, by: str | None = "symbol"
) -> pl.DataFrame:
    """Rows per time bucket (``every``, a polars duration like ``"1s"`` or ``"1m"``) of a
    frame with a ``ts`` column, per ``by`` group, with ``per_second``."""
    seconds = timedelta(**_duration_kwargs(every)).total_seconds()
    keys = [by] if by else []
    out = (
        frame.sort("ts")
        .group_by_dynamic("ts", every=every, group_by=keys or None)
        .agg(pl.len().alias("count"))
    )
    return out.with_columns((pl.col("count") / seconds).alias("per_second")).sort([*keys, "ts"])


def _duration_kwargs(every: str) -> dict[str, int]:
    units = {
        "us": "microseconds",
        "ms": "milliseconds",
        "s": "seconds",
        "m": "minutes",
        "h": "hours",
        "d": "days",
    }
    for suffix in ("us", "ms", "s", "m", "h", "d"):
        if every.endswith(suffix) and every[: -len(suffix)].isdigit():
            return {units[suffix]: int(every[: -len(suffix)])}
    raise ValueError(f"every: expected e.g. '500ms', '1s', '5m', got {every!r}")
