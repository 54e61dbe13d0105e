"""The dashboard widget and its refresher thread.

One daemon thread per dashboard builds a view from its feed about once a
second and writes it into ``HTML`` widgets (inside ``hold_sync()``) and two plotly
figures (plain ``go.Figure``s, inside ``batch_update()``) whose JSON it assigns to
``PlotlyChart`` widgets (``robust_collector.dashboard.chart``: the figure is widget state, so a view
that attaches late still draws it); it never uses ``with output:``.
The collector's own threads never touch a widget. The refresher stops when the
collector stops (after drawing the final state) or when the widget is closed;
a failure never ends it: each is counted, shown in the footer and logged (the first
time with its traceback), and the next refresh comes as usual.
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from robust_collector.boundary import clean_text
from robust_collector.dashboard.chart import PlotlyChart, figure_json
from robust_collector.dashboard.model import STORAGE_ROW, DashboardView, Feed, RateHistory
from robust_collector.dashboard.render import (
    rates_data,
    render_errors,
    render_footer,
    render_status,
    render_storage,
    render_symbols,
    timeline_data,
)
from robust_collector.palette import BREAKER_COLORS

log = logging.getLogger(__name__)

_FIG_MARGIN = {"l": 56, "r": 16, "t": 40, "b": 44}
_MAX_LOGGED = 50  # distinct failure texts remembered (so each is logged once)
FIGURE_WIDTH = 600
"""Pixels: plotly sizes a figure before its box is laid out, so the width is fixed."""


def _layout(title: str, **extra: Any) -> go.Layout:
    return go.Layout(
        title={"text": title, "font": {"size": 13}, "x": 0.02},
        width=FIGURE_WIDTH,
        height=270,
        margin=_FIG_MARGIN,
        xaxis={"type": "date"},
        legend={"orientation": "h", "x": 0, "y": -0.24},
        template="plotly_white",
        showlegend=True,
        **extra,
    )


def _rates_figure(window_seconds: float) -> go.Figure:
    line = {"width": 2}
    return go.Figure(
        data=[
            go.Scatter(x=[], y=[], name="ticks/s", mode="lines", line={**line, "color": "#1565c0"}),
            go.Scatter(
                x=[], y=[], name="rejects/s", mode="lines", line={**line, "color": "#c62828"}
            ),
            # shown once a symbol collects trades (source.data)
            go.Scatter(
                x=[],
                y=[],
                name="trades/s",
                mode="lines",
                visible=False,
                line={**line, "color": "#2e7d32"},
            ),
            go.Scatter(
                x=[],
                y=[],
                name="trade rejects/s",
                mode="lines",
                visible=False,
                line={**line, "color": "#ef6c00", "dash": "dot"},
            ),
        ],
        layout=_layout(
            f"Ticks and rejects per second, last {window_seconds / 60:g} min (UTC)",
            yaxis={"rangemode": "tozero"},
        ),
    )


def _timeline_figure(window_seconds: float) -> go.Figure:
    # thick line segments, not bars: a bar's date ``base`` does not survive restyles here
    return go.Figure(
        data=[
            go.Scatter(
                x=[],
                y=[],
                mode="lines",
                name=state,
                line={"color": BREAKER_COLORS[state], "width": 16},
                hovertemplate="%{y}: %{text}<extra></extra>",
                connectgaps=False,
            )
            for state in ("CLOSED", "HALF_OPEN", "OPEN")
        ],
        layout=_layout(
            f"Breaker state, last {window_seconds / 60:g} min (UTC)",
            yaxis={"type": "category", "autorange": "reversed"},
        ),
    )


class Dashboard(widgets.VBox):
    """A live dashboard widget: status, per-symbol breakers, storage, rates, errors.

    Build it with ``live(collector)`` or ``watch(db_path)``. ``refresh()`` draws
    once; ``start()``/``stop()`` run and stop the refresher; ``close()`` stops it
    and closes the widgets. ``view`` is the last view drawn.
    """

    def __init__(
        self,
        feed: Feed,
        *,
        interval: float = 1.0,
        window_seconds: float = 300.0,
        max_errors: int = 20,
        rate_smoothing: float = 5.0,
        autostart: bool = True,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.status_html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.symbols_html = widgets.HTML(layout=widgets.Layout(flex="3 1 0", min_width="420px"))
        self.storage_html = widgets.HTML(layout=widgets.Layout(flex="2 1 0", min_width="260px"))
        self.errors_html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.footer_html = widgets.HTML()
        self.rates_fig = _rates_figure(window_seconds)
        self.timeline_fig = _timeline_figure(window_seconds)
        # what the page draws: each figure's JSON, assigned after every paint
        self.rates_chart = PlotlyChart(figure_json(self.rates_fig))
        self.timeline_chart = PlotlyChart(figure_json(self.timeline_fig))
        grid = widgets.Layout(width="100%", flex_flow="row wrap", grid_gap="12px")

        def fig_box() -> widgets.Layout:
            return widgets.Layout(flex="0 0 auto", width=f"{FIGURE_WIDTH}px", overflow="hidden")

        super().__init__(
            children=[
                self.status_html,
                widgets.HBox([self.symbols_html, self.storage_html], layout=grid),
                widgets.HBox(
                    [
                        widgets.Box([self.rates_chart], layout=fig_box()),
                        widgets.Box([self.timeline_chart], layout=fig_box()),
                    ],
                    layout=grid,
                ),
                self.errors_html,
                self.footer_html,
            ],
            layout=widgets.Layout(width="100%", grid_gap="8px"),
        )
        self.feed = feed
        self.interval = float(interval)
        self.window_seconds = float(window_seconds)
        self.max_errors = int(max_errors)
        self.rate_smoothing = float(rate_smoothing)
        self.history = RateHistory(window_seconds)
        self.view: DashboardView | None = None
        self.refreshes = 0
        self.refresh_failures = 0  # every failed refresh (or finished()), counted
        self.last_error: str | None = None
        self._rc_logged: set[str] = set()  # failures already logged with their traceback
        self._rc_lock = threading.Lock()
        self._rc_stop = threading.Event()
        self._rc_thread: threading.Thread | None = None
        self._rc_closed = False
        self.refresh()
        if autostart:
            self.start()

    # -- refresher -------------------------------------------------------------------

    @property
    def refreshing(self) -> bool:
        """True while the refresher thread runs."""
        return self._rc_thread is not None and self._rc_thread.is_alive()

    def start(self) -> Dashboard:
        """Start the daemon refresher (no-op if it runs or the widget is closed)."""
        if self.refreshing or self._rc_closed:
            return self
        self._rc_stop.clear()
        self._rc_thread = threading.Thread(target=self._rc_run, name="rc-dashboard", daemon=True)
        self._rc_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the refresher, keeping the widget and its last state on screen."""
        self._rc_stop.set()
        t = self._rc_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _rc_run(self) -> None:
        """The refresher: every failure is caught, counted, shown and logged; it goes on
        until stopped, closed or its feed is finished."""
        try:
            pushed = False
            while not self._rc_stop.wait(self.interval):
                if not pushed:  # a front end whose requests wait behind a running cell
                    pushed = True
                    self.rates_chart.push_plotly_js()
                try:
                    view = self.refresh()
                except Exception:  # refresh() counted, logged and showed it: keep going
                    continue
                try:
                    done = self.feed.finished(view)
                except Exception as exc:
                    with self._rc_lock:
                        self._rc_failed(exc, "finished()")
                    continue
                if done:
                    break
        except BaseException as exc:  # not an Exception: say so before the thread ends
            with self._rc_lock:
                self._rc_failed(exc, "the refresher")
            raise
        finally:
            self._rc_stop.set()
            with contextlib.suppress(Exception):  # the widget may be closed meanwhile
                self._paint_footer()

    def refresh(self) -> DashboardView:
        """Build a view now and draw it (serialised with the refresher); returns the view.

        A failure is counted (``refresh_failures``), logged (with its traceback the first
        time that error is seen), shown in the footer, and raised."""
        with self._rc_lock:
            try:
                view = self.feed.view()
                self.last_error = None
                self.history.add(view)
                self.view = view
                if not self._rc_closed:
                    self._paint(view)
            except Exception as exc:
                self._rc_failed(exc, "view()")
                raise
            self.refreshes += 1
            return view

    def _rc_failed(self, exc: BaseException, where: str) -> None:
        """One failure (the caller holds ``_rc_lock``): counted, shown in the footer, and
        logged with its traceback the first time this error is seen."""
        self.refresh_failures += 1
        text = clean_text(f"{type(exc).__name__}: {exc}", 300)
        self.last_error = f"{text} (in {where}; {self.refresh_failures} failed so far)"
        if text not in self._rc_logged:  # the same failure again is counted, not re-logged
            if len(self._rc_logged) < _MAX_LOGGED:
                self._rc_logged.add(text)
            log.error("dashboard refresh failed in %s: %s", where, text, exc_info=exc)
        if not self._rc_closed:
            with contextlib.suppress(Exception):  # the footer is the last place to say it
                self._paint_footer()

    # -- drawing ---------------------------------------------------------------------

    def _paint(self, view: DashboardView) -> None:
        html = {
            self.status_html: render_status(view),
            self.symbols_html: render_symbols(view),
            self.storage_html: render_storage(view),
            self.errors_html: render_errors(view, self.max_errors),
        }
        with contextlib.ExitStack() as stack:
            for w in html:
                stack.enter_context(w.hold_sync())
            for w, value in html.items():
                if w.value != value:
                    w.value = value
        rates = rates_data(self.history.series(self.rate_smoothing))
        trades = any(s.trades_stored is not None for s in view.symbols)
        with self.rates_fig.batch_update():
            for trace, key in zip(
                self.rates_fig.data, ("ticks", "rejects", "trades", "trade_rejects"), strict=True
            ):
                if key.startswith("trade") and trace.visible != trades:
                    trace.visible = trades
                trace.x = rates["x"]
                trace.y = rates[key]
        timeline = timeline_data(view, self.window_seconds)
        with self.timeline_fig.batch_update():
            for trace in self.timeline_fig.data:
                d = timeline.get(trace.name, {"x": [], "y": [], "text": []})
                trace.x = d["x"]
                trace.y = d["y"]
                trace.text = d["text"]
            symbols = [s.symbol for s in view.symbols]
            if view.storage.breaker_state is not None:
                symbols.append(STORAGE_ROW)
            self.timeline_fig.layout.yaxis.categoryarray = symbols
            self.timeline_fig.layout.yaxis.categoryorder = "array"
        for chart, fig in (
            (self.rates_chart, self.rates_fig),
            (self.timeline_chart, self.timeline_fig),
        ):
            value = figure_json(fig)
            if chart.figure != value:
                chart.figure = value
        self._paint_footer()

    def _paint_footer(self) -> None:
        stopped = self._rc_stop.is_set() or not self.refreshing
        if self.view is None:  # nothing drawn yet: the footer still says what failed
            value = (
                '<div class="rc-footer" style="color:#b71c1c;font-size:11px">'
                f"refresh failed: {html.escape(self.last_error)}</div>"
                if self.last_error
                else ""
            )
        else:
            value = render_footer(self.view, self.interval, stopped=stopped, error=self.last_error)
        if self.footer_html.value != value:
            self.footer_html.value = value

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the refresher, release the feed and close every child widget."""
        if self._rc_closed:
            return
        self.stop()
        with self._rc_lock:
            self._rc_closed = True
        with contextlib.suppress(Exception):
            self.feed.close()
        for w in self._rc_all_children():
            with contextlib.suppress(Exception):
                w.close()
        super().close()

    def _rc_all_children(self) -> list[Any]:
        out: list[Any] = []
        stack = list(self.children)
        while stack:
            w = stack.pop()
            out.append(w)
            stack.extend(getattr(w, "children", ()) if isinstance(w, widgets.Box) else ())
        return out
