"""A small plotly chart widget whose synced state is the whole figure.

Why not plotly's ``FigureWidget``: it syncs its traces once, at construction, and
sends every later change as a transient message (``_py2js_restyle`` set, then
``None``). A front end whose view attaches after those messages (a Voila page,
which connects once the notebook has run) can miss them for good: measured on
notebook 02 served by Voila, one of the two charts stayed blank in 5 of 6 loads.
It also stores the whole plotly.js bundle (4.8 MB) in each widget's state, so an
executed notebook with two of them weighs ~10 MB.

``PlotlyChart`` syncs ``figure`` (``{"data": [...], "layout": {...}}``, plain JSON)
as ordinary widget state, and its view draws whatever the state holds with
``Plotly.react`` on every change: a view attaching late draws the current figure.
plotly.js is the copy plotly's Python package ships (never a CDN), sent over the
widget's comm as a custom message (not state, so never saved in a notebook) and
evaluated once per page: the first chart asks for it (again every 3 s until it
arrives), and the kernel also pushes it once, unasked, shortly after the chart is
created, for a front end whose requests wait behind a running cell (JupyterLab
running the next cell).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import anywidget
import plotly
import plotly.io as pio
import traitlets

__all__ = ["PlotlyChart", "figure_json", "plotly_js"]

log = logging.getLogger(__name__)

PUSH_EVERY_S = 15.0  # a chart sends plotly.js (4.8 MB) at most this often when asked

_ESM = r"""
const KEY = Symbol.for("robust_collector.plotly.js");
const RETRY_MS = 3000;

function shared() {
  // one per page: every chart of every kernel waits on the same promise
  let st = globalThis[KEY];
  if (!st) {
    let resolve;
    const promise = new Promise((res) => { resolve = res; });
    st = globalThis[KEY] = { promise, resolve, loaded: false, askedAt: 0 };
  }
  return st;
}

function load(st, buffer) {
  if (st.loaded) return;
  const code = new TextDecoder().decode(buffer);
  const module = { exports: {} };
  // plotly.min.js is UMD: given a CommonJS ``module`` it exports Plotly there
  new Function("module", "exports", "define", code)(module, module.exports, undefined);
  st.loaded = true;
  st.resolve(module.exports);
}

function ask(st, model) {
  if (st.loaded || Date.now() - st.askedAt < RETRY_MS) return;
  st.askedAt = Date.now();
  model.send({ type: "plotly.js?" });
}

export default {
  initialize({ model }) {
    const st = shared();
    const onMessage = (msg, buffers) => {
      if (msg && msg.type === "plotly.js" && buffers && buffers.length) {
        try { load(st, buffers[0]); } catch (e) { console.error("plotly.js failed to load", e); }
      }
    };
    model.on("msg:custom", onMessage);
    ask(st, model);
    const timer = setInterval(() => (st.loaded ? clearInterval(timer) : ask(st, model)), RETRY_MS);
    return () => { clearInterval(timer); model.off("msg:custom", onMessage); };
  },
  render({ model, el }) {
    const gd = document.createElement("div");
    gd.className = "rc-chart";
    gd.textContent = "loading plotly.js ...";
    el.appendChild(gd);
    let alive = true;
    let Plotly = null;
    const draw = () => {
      if (!alive || !Plotly) return;
      const fig = model.get("figure") || {};
      Plotly.react(gd, fig.data || [], fig.layout || {}, fig.config || {});
    };
    shared().promise.then((P) => { Plotly = P; if (alive) { gd.textContent = ""; draw(); } });
    model.on("change:figure", draw);
    return () => {
      alive = false;
      model.off("change:figure", draw);
      if (Plotly) Plotly.purge(gd);
    };
  },
};
"""


@functools.cache
def plotly_js() -> bytes:
    """The plotly.js bundle shipped in plotly's Python package (read once)."""
    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def figure_json(fig: Any) -> dict[str, Any]:
    """A plotly figure as plain JSON (dates as ISO strings), as plotly.js takes it."""
    return json.loads(pio.to_json(fig, validate=False, engine="json"))


class PlotlyChart(anywidget.AnyWidget):
    """One plotly.js chart; assign ``figure`` (plain JSON: ``data``, ``layout``,
    optionally ``config``) to redraw it in every view."""

    _esm = _ESM
    figure = traitlets.Dict().tag(sync=True)

    def __init__(self, figure: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(figure=figure or {}, **kwargs)
        self._rc_pushed_at: float | None = None
        self.on_msg(self._rc_on_msg)

    def _rc_on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "plotly.js?":
            # a page asks every 3 s until the bundle arrives: on a slow link, or one that
            # cannot load it, answering each ask would queue 4.8 MB copies without end
            now = time.monotonic()
            if self._rc_pushed_at is not None and now - self._rc_pushed_at < PUSH_EVERY_S:
                return
            self._rc_pushed_at = now
            self.push_plotly_js()

    def push_plotly_js(self) -> None:
        """Send plotly.js to the front ends (a custom message: never saved as state)."""
        with contextlib.suppress(Exception):  # closed meanwhile, or no front end at all
            self.send({"type": "plotly.js"}, buffers=[plotly_js()])
