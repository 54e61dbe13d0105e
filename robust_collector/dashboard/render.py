"""Rendering: a ``DashboardView`` as HTML strings and as plain figure data.

Every text that comes from data (symbols, reasons, error messages, run ids) is
HTML-escaped. Styles are inline, so the HTML looks the same in JupyterLab,
Voila and a plain ``IPython.display.HTML``. Elements carry ``rc-*`` classes
and ``data-*`` attributes so tests (and browsers) can find them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from robust_collector.dashboard.model import (
    DashboardView,
    RateSeries,
    Segment,
    breaker_segments,
)
from robust_collector.palette import BREAKER_COLORS, LEVEL_COLORS

__all__ = [
    "STORAGE_COLORS",
    "fmt_bytes",
    "fmt_clock",
    "fmt_duration",
    "rates_data",
    "render_errors",
    "render_footer",
    "render_status",
    "render_storage",
    "render_symbols",
    "timeline_data",
]

LEVEL_BACKGROUNDS = {
    "HEALTHY": "#e8f5e9",
    "DEGRADED": "#fff8e1",
    "UNHEALTHY": "#fff3e0",
    "CRITICAL": "#ffebee",
    "UNKNOWN": "#f5f5f5",
}
STORAGE_COLORS = {
    "database": "#2e7d32",
    "backup": "#f9a825",
    "failing": "#b71c1c",
}
_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px"
_TABLE = f"border-collapse:collapse;width:100%;{_FONT}"
_TH = "text-align:left;padding:4px 8px;border-bottom:2px solid #ccc;background:#fafafa;white-space:nowrap"
_TD = "padding:3px 8px;border-bottom:1px solid #eee;white-space:nowrap"
_NUM = _TD + ";text-align:right;font-variant-numeric:tabular-nums"


def fmt_duration(seconds: float | None) -> str:
    """``12s``, ``3m 04s``, ``2h 05m``, ``1d 03h``; ``-`` for ``None``."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h"


def fmt_bytes(n: int | None) -> str:
    """``512 B``, ``1.5 KB``, ``3.2 MB``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def fmt_clock(us: int | None) -> str:
    """``HH:MM:SS`` (UTC) of epoch microseconds."""
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%H:%M:%S")


def _fmt_price(p: float | None) -> str:
    if p is None or p != p:
        return "-"
    return f"{p:,.2f}"


def _pill(text: str, color: str, cls: str = "") -> str:
    return (
        f'<span class="{cls}" style="display:inline-block;padding:1px 8px;border-radius:10px;'
        f'background:{color};color:#fff;font-weight:600;font-size:12px">{escape(text)}</span>'
    )


def render_status(view: DashboardView) -> str:
    """The banner: level with colour and icon, run facts and totals, reasons when not healthy."""
    color = LEVEL_COLORS.get(view.level, LEVEL_COLORS["UNKNOWN"])
    bg = LEVEL_BACKGROUNDS.get(view.level, LEVEL_BACKGROUNDS["UNKNOWN"])
    state = "running" if view.running else (view.note or "not running")
    facts = [
        f"run <code>{escape(view.run_id or '-')}</code>",
        f'<span class="rc-running" data-running="{str(view.running).lower()}">{escape(state)}</span>',
        f"uptime {fmt_duration(view.uptime_seconds)}",
        f'stored <b class="rc-stored">{view.stored}</b>',
        f'rejects <b class="rc-rejects">{view.rejects}</b>',
        f'errors <b class="rc-errors">{view.error_count}</b>',
    ]
    source = "this kernel" if view.origin == "live" else "database"
    head = (
        f'<div class="rc-level" style="font-size:20px;font-weight:700;color:{color}">'
        f"{view.icon} {escape(view.level)}</div>"
    )
    reasons = ""
    if view.reasons and view.level != "HEALTHY":
        items = "".join(f"<li>{escape(r)}</li>" for r in view.reasons[:12])
        more = len(view.reasons) - 12
        if more > 0:
            items += f"<li>… and {more} more</li>"
        reasons = f'<ul class="rc-reasons" style="margin:4px 0 0 0;padding-left:20px">{items}</ul>'
    where = (
        f'<div style="color:#666;font-size:11px">{escape(source)}: '
        f"{escape(view.database)} · at {fmt_clock(view.now_us)} UTC</div>"
    )
    return (
        f'<div class="rc-status" data-level="{escape(view.level)}" style="{_FONT};'
        f"background:{bg};border-left:6px solid {color};padding:8px 12px;"
        f'border-radius:4px">{head}<div>{" · ".join(facts)}</div>{reasons}{where}</div>'
    )


def _age_color(age: float | None, level: str | None) -> str:
    if level in ("UNHEALTHY", "CRITICAL"):
        return LEVEL_COLORS["CRITICAL"]
    if age is None:
        return "#999"
    return "inherit"


def render_symbols(view: DashboardView) -> str:
    """The per-symbol table: breaker state (coloured), time in state, last price, ticks
    stored, rejects, errors, data age; trades stored and rejected when any are collected."""
    trades = any(s.trades_stored is not None for s in view.symbols)
    heads = ["Symbol", "Breaker", "In state", "Last price", "Stored", "Rejects"]
    if trades:
        heads += ["Trades", "Trade rejects"]
    heads += ["Errors", "Data age"]
    head = "".join(f'<th style="{_TH}">{h}</th>' for h in heads)
    body = []
    for s in view.symbols:
        trade_cells = ""
        if trades:
            shown = "-" if s.trades_stored is None else str(s.trades_stored)
            trade_cells = (
                f'<td style="{_NUM}" class="rc-symbol-trades">{shown}</td>'
                f'<td style="{_NUM}">{s.trade_rejects}</td>'
            )
        color = BREAKER_COLORS.get(s.breaker_state, BREAKER_COLORS["DISABLED"])
        title = f' title="{escape(s.breaker_reason)}"' if s.breaker_reason else ""
        dot = LEVEL_COLORS.get(s.level or "UNKNOWN", LEVEL_COLORS["UNKNOWN"])
        body.append(
            f'<tr class="rc-symbol" data-symbol="{escape(s.symbol)}" '
            f'data-breaker="{escape(s.breaker_state)}">'
            f'<td style="{_TD};font-weight:600"><span style="color:{dot}">●</span> '
            f"{escape(s.symbol)}</td>"
            f'<td style="{_TD}"{title}>{_pill(s.breaker_state, color, "rc-breaker")}</td>'
            f'<td style="{_NUM}">{fmt_duration(s.in_state_seconds)}</td>'
            f'<td style="{_NUM}">{_fmt_price(s.last_price)}</td>'
            f'<td style="{_NUM}" class="rc-symbol-stored">{s.stored}</td>'
            f'<td style="{_NUM}">{s.rejects}</td>'
            f"{trade_cells}"
            f'<td style="{_NUM}">{s.errors}</td>'
            f'<td style="{_NUM};color:{_age_color(s.data_age_seconds, s.level)}">'
            f"{fmt_duration(s.data_age_seconds)}</td></tr>"
        )
    if not body:
        body.append(
            f'<tr><td style="{_TD};color:#999" colspan="{len(heads)}">no symbols yet</td></tr>'
        )
    return (
        f'<table class="rc-symbols" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_storage(view: DashboardView) -> str:
    """Storage: database or backup mode, queue depth, backup backlog (files and bytes)."""
    st = view.storage
    color = STORAGE_COLORS.get(st.mode, "#757575")
    queue = "-" if st.queue_depth is None else str(st.queue_depth)
    if st.queue_capacity:
        queue += f" / {st.queue_capacity}"
    rows = [
        ("Mode", _pill(st.mode.upper(), color, "rc-storage-mode")),
        ("Write queue", f"{escape(queue)} batches"),
    ]
    if st.breaker_state is not None:
        since = (
            ""
            if st.breaker_since_us is None
            else f" for {fmt_duration(max(0, view.end_us - st.breaker_since_us) / 1e6)}"
        )
        db_color = BREAKER_COLORS.get(st.breaker_state, BREAKER_COLORS["DISABLED"])
        rows.append(
            ("Database breaker", _pill(st.breaker_state, db_color, "rc-storage-breaker") + since)
        )
    rows += [
        (
            "Backup backlog",
            f'<span class="rc-backlog">{st.backup_files}</span> file(s), {fmt_bytes(st.backup_bytes)}',
        ),
        ("Ticks sent to backup", str(st.ticks_to_backup)),
    ]
    if st.replayed_rows:
        rows.append(("Rows replayed", str(st.replayed_rows)))
    if st.held_rows:
        rows.append(("Held in memory", f'<b style="color:#b71c1c">{st.held_rows}</b> rows'))
    if st.lost_rows:
        rows.append(("Lost", f'<b style="color:#b71c1c">{st.lost_rows}</b> rows'))
    if st.last_error and st.mode != "database":
        rows.append(("Last error", f'<span style="color:#b71c1c">{escape(st.last_error)}</span>'))
    if st.backup_path:
        rows.append(
            ("Backup folder", f'<code style="font-size:11px">{escape(st.backup_path)}</code>')
        )
    body = "".join(
        f'<tr><th style="{_TD};text-align:left;color:#555;font-weight:500">{k}</th>'
        f'<td style="{_TD}">{v}</td></tr>'
        for k, v in rows
    )
    return (
        f'<table class="rc-storage" data-mode="{escape(st.mode)}" style="{_TABLE}">'
        f'<thead><tr><th style="{_TH}" colspan="2">Storage</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def render_errors(view: DashboardView, limit: int = 20) -> str:
    """Recent errors, newest first, at most ``limit`` rows; every message escaped."""
    errors = view.errors[:limit]
    head = "".join(
        f'<th style="{_TH}">{h}</th>'
        for h in ("Time (UTC)", "Component", "Symbol", "Error", "Message")
    )
    rows = [
        f'<tr class="rc-error"><td style="{_TD}">{fmt_clock(e.ts_us)}</td>'
        f'<td style="{_TD}">{escape(e.component)}</td>'
        f'<td style="{_TD}">{escape(e.symbol or "")}</td>'
        f'<td style="{_TD}">{escape(e.error_type)}</td>'
        f'<td style="{_TD};white-space:normal;word-break:break-word">{escape(e.message)}</td></tr>'
        for e in errors
    ]
    if not rows:
        rows.append(f'<tr><td style="{_TD};color:#999" colspan="5">no errors</td></tr>')
    title = f"Recent errors ({len(errors)}, newest first)" if errors else "Recent errors"
    return (
        f'<div style="{_FONT};font-weight:600;margin:4px 0">{escape(title)}</div>'
        f'<table class="rc-errors" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def render_footer(view: DashboardView, interval: float, *, stopped: bool, error: str | None) -> str:
    """A small line: when it was updated, how often, and whether the refresher stopped."""
    parts = [f"updated {fmt_clock(view.now_us)} UTC", f"every {interval:g}s"]
    if stopped:
        parts.append("refresher stopped")
    if error:
        parts.append(f'<span style="color:#b71c1c">refresh failed: {escape(error)}</span>')
    return f'<div class="rc-footer" style="{_FONT};color:#888;font-size:11px">{" · ".join(parts)}</div>'


def _naive(us: int) -> datetime:
    # plotly.js has no time zones: naive UTC datetimes, and axes say "UTC"
    return datetime.fromtimestamp(us / 1e6, tz=UTC).replace(tzinfo=None)


def rates_data(series: RateSeries) -> dict[str, list[Any]]:
    """x (naive UTC datetimes), ticks, rejects, trades and trade rejects per second, for
    the rates figure."""
    return {
        "x": [_naive(t) for t in series.times_us],
        "ticks": [round(v, 3) for v in series.ticks_per_second],
        "rejects": [round(v, 3) for v in series.rejects_per_second],
        "trades": [round(v, 3) for v in series.trades_per_second],
        "trade_rejects": [round(v, 3) for v in series.trade_rejects_per_second],
    }


def timeline_data(
    view: DashboardView, window_seconds: float = 300.0
) -> dict[str, dict[str, list[Any]]]:
    """Per breaker state, one thick line per stretch: ``x`` (naive UTC start, end, ``None``),
    ``y`` (symbol, symbol, ``None``) and hover ``text``; ``None`` breaks the line."""
    segments: tuple[Segment, ...] = breaker_segments(view, window_seconds)
    out: dict[str, dict[str, list[Any]]] = {
        s: {"x": [], "y": [], "text": []} for s in ("CLOSED", "HALF_OPEN", "OPEN")
    }
    for seg in segments:
        d = out.setdefault(seg.state, {"x": [], "y": [], "text": []})
        label = f"{seg.state} for {fmt_duration((seg.end_us - seg.start_us) / 1e6)}"
        if seg.reason:
            label += f": {seg.reason}"
        d["x"] += [_naive(seg.start_us), _naive(seg.end_us), None]
        d["y"] += [seg.symbol, seg.symbol, None]
        d["text"] += [label, label, None]
    return out
