"""Plotly figures of the loaders' frames: prices with rejects, rejects over time, breaker
timelines, health levels and gaps by cause (plotly is imported only when a figure is made)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from robust_collector.analysis.gap_causes import CAUSES
from robust_collector.health import HealthLevel
from robust_collector.palette import BREAKER_COLORS

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _utc_naive(series: pl.Series) -> list[Any]:
    # plotly.js has no time zones: hand it naive UTC datetimes, and say "UTC" on the axis
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_zone is not None:
        series = series.dt.replace_time_zone(None)
    return series.to_list()


def plot_prices(
    ticks: pl.DataFrame, rejects: pl.DataFrame | None = None, *, title: str = "Stored prices"
) -> go.Figure:
    """Accepted prices per symbol (one panel each) with rejected quotes overlaid as red
    crosses, clipped into the panel so a 100× spike does not flatten the line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    symbols = sorted(
        set(ticks["symbol"].to_list())
        | (set(rejects["symbol"].to_list()) if rejects is not None else set())
    )
    n = max(1, len(symbols))
    fig = make_subplots(
        rows=n, cols=1, shared_xaxes=True, subplot_titles=symbols, vertical_spacing=0.06
    )
    for i, sym in enumerate(symbols, start=1):
        t = ticks.filter(pl.col("symbol") == sym)
        fig.add_trace(
            go.Scatter(
                x=_utc_naive(t["ts"]),
                y=t["price"].to_list(),
                mode="lines",
                name="accepted price",
                line={"width": 1.2, "color": "#1565c0"},
                legendgroup="price",
                showlegend=i == 1,
            ),
            row=i,
            col=1,
        )
        if rejects is None:
            continue
        r = rejects.filter(pl.col("symbol") == sym)
        if r.height == 0:
            continue
        lo = t["price"].min() if t.height else None
        hi = t["price"].max() if t.height else None
        price = r["price"].fill_nan(None)
        if lo is not None and hi is not None:
            pad = max((hi - lo) * 0.15, abs(hi) * 0.001)
            y = price.clip(lo - pad, hi + pad).fill_null(hi + pad)
        else:
            y = price
        text = [
            f"{rule}: {reason}<br>bid {b} ask {a}"
            for rule, reason, b, a in r.select("rule", "reason", "bid", "ask").rows()
        ]
        fig.add_trace(
            go.Scatter(
                x=_utc_naive(r["ts"]),
                y=y.to_list(),
                mode="markers",
                name="rejected",
                marker={"symbol": "x", "color": BREAKER_COLORS["OPEN"], "size": 8},
                text=text,
                hovertemplate="%{x}<br>%{text}<extra></extra>",
                legendgroup="rejected",
                showlegend=i == 1,
            ),
            row=i,
            col=1,
        )
    fig.update_layout(title=title, height=220 * n + 80, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    fig.update_xaxes(title_text="time (UTC)", row=n, col=1)
    return fig


def plot_rejects(
    rejects: pl.DataFrame, every: str = "10s", *, title: str = "Rejects over time"
) -> go.Figure:
    """Rejects per time bucket, stacked by rule."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if rejects.height:
        counts = (
            rejects.sort("ts")
            .group_by_dynamic("ts", every=every, group_by="rule")
            .agg(pl.len().alias("count"))
            .sort("rule", "ts")
        )
        for (rule,), g in counts.group_by(["rule"], maintain_order=True):
            fig.add_trace(go.Bar(x=_utc_naive(g["ts"]), y=g["count"].to_list(), name=str(rule)))
    fig.update_layout(
        barmode="stack",
        title=title,
        xaxis_title="time (UTC)",
        yaxis_title=f"rejects per {every}",
        height=320,
    )
    return fig


def plot_breaker_timeline(intervals: pl.DataFrame, *, title: str = "Circuit breakers") -> go.Figure:
    """One row per symbol, coloured by breaker state over time (from ``breaker_intervals``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for state in ("CLOSED", "HALF_OPEN", "OPEN"):
        part = intervals.filter(pl.col("state") == state)
        fig.add_trace(
            go.Bar(
                y=part["symbol"].to_list(),
                base=_utc_naive(part["start"]),
                x=((part["end_us"] - part["start_us"]) / 1000).to_list(),
                orientation="h",
                name=state,
                marker={"color": BREAKER_COLORS[state]},
                text=part["reason"].to_list(),
                textposition="none",
                hovertemplate="%{y} "
                + state
                + "<br>%{base} for %{x:.0f} ms<br>%{text}<extra></extra>",
            )
        )
    symbols = sorted(set(intervals["symbol"].to_list()))
    fig.update_layout(
        barmode="overlay",
        title=title,
        height=120 + 40 * max(1, len(symbols)),
        xaxis={"type": "date", "title": "time (UTC)"},
        yaxis={"categoryorder": "array", "categoryarray": symbols[::-1]},
    )
    return fig


def plot_health(history: pl.DataFrame, *, title: str = "Health over time") -> go.Figure:
    """Each component's level over time as a step line (0 HEALTHY .. 3 CRITICAL)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (comp,), g in history.sort("ts_us").group_by(["component"], maintain_order=True):
        fig.add_trace(
            go.Scatter(
                x=_utc_naive(g["ts"]),
                y=g["level_value"].to_list(),
                name=str(comp),
                mode="lines",
                line={"shape": "hv", "width": 3 if comp == "system" else 1.5},
            )
        )
    names = [lvl.name for lvl in HealthLevel]
    fig.update_layout(
        title=title,
        height=320,
        xaxis_title="time (UTC)",
        yaxis={
            "tickvals": list(range(len(names))),
            "ticktext": names,
            "range": [-0.3, len(names) - 0.7],
        },
    )
    return fig


GAP_COLORS: dict[str, str] = {
    "not_running": "#757575",
    "outside_session": "#9e9e9e",
    "storage_outage": "#6a1b9a",
    "breaker_open": BREAKER_COLORS["OPEN"],
    "stream_down": "#c62828",
    "symbol_silent": "#ff8f00",
    "source_errors": "#e65100",
    "rejects": "#f9a825",
    "unknown": "#000000",
}


def plot_gaps(gap_frame: pl.DataFrame, *, title: str = "Gaps by cause") -> go.Figure:
    """The holes of ``gaps()`` on a timeline, one row per symbol, coloured by cause."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cause in CAUSES:
        part = gap_frame.filter(pl.col("cause") == cause)
        if part.height == 0:
            continue
        fig.add_trace(
            go.Bar(
                y=part["symbol"].to_list(),
                base=_utc_naive(part["start"]),
                x=((part["end_us"] - part["start_us"]) / 1000).to_list(),
                orientation="h",
                name=cause,
                marker={"color": GAP_COLORS[cause]},
                text=part["detail"].to_list(),
                textposition="none",
                hovertemplate="%{y}: %{base} for %{x:.0f} ms<br>%{text}<extra></extra>",
            )
        )
    n = gap_frame["symbol"].n_unique() if gap_frame.height else 1
    fig.update_layout(
        barmode="overlay",
        title=title,
        height=120 + 40 * n,
        xaxis={"type": "date", "title": "time (UTC)"},
    )
    return fig
