"""The health dashboard notebook served by Voila, seen in a real (headless) Chromium.

Starts ``voila notebooks/02_health_dashboard.ipynb`` on 127.0.0.1 with a free port
and ``RC_SERVE=1`` (the collector keeps running and the fault story repeats),
opens the page with playwright driving Debian's ``/usr/bin/chromium`` (never a
downloaded browser), and checks that the status banner and the breaker table
are there, that the stored-tick count rises, that both charts draw points read
from the page (plotly's graph divs) and keep updating, and that a breaker opens
on screen. Skips with a reason when voila, playwright or chromium is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_health_dashboard.ipynb"
CHROMIUM = Path(os.environ.get("RC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require() -> None:
    if importlib.util.find_spec("voila") is None:
        pytest.skip("voila is not installed (pip install voila)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright; no browser download)")
    if not CHROMIUM.exists():
        pytest.skip(
            f"chromium not found at {CHROMIUM} (apt-get install chromium, or set RC_CHROMIUM)"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    # a TCP connect, not a GET of the page: every page load starts a kernel
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"voila did not listen within {timeout}s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


@pytest.fixture
def voila_url(tmp_path: Path) -> Iterator[str]:
    _require()
    port = _free_port()
    log = tmp_path / "voila.log"
    env = {**os.environ, "RC_SERVE": "1", "RC_DATA": str(tmp_path / "data")}
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(NOTEBOOK),
        "--no-browser",
        f"--port={port}",
        "--Voila.ip=127.0.0.1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_listening(port, proc, log, timeout=60)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # voila shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group started for this voila only
            proc.wait(timeout=10)


# What each chart draws, read from the page: plotly.js keeps a graph's traces on its div
# (``gd.data``). Per chart (keyed by its title): the points drawn (non-null x of the
# visible traces) and the latest x (a date string), or null before anything is drawn.
CHARTS_JS = """() => Object.fromEntries(
  [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
    const title = String(((gd.layout || {}).title || {}).text || '');
    const traces = (gd.data || []).filter(t => t.visible !== false);
    const xs = traces.flatMap(t => Array.from(t.x || []).filter(v => v !== null));
    return [title.split(',')[0], {points: xs.length, last: xs.length ? xs.map(String).sort().at(-1) : null}];
  }))"""
RATES = "Ticks and rejects per second"
TIMELINE = "Breaker state"


def _charts(page: Any) -> dict[str, dict[str, Any]]:
    return page.evaluate(CHARTS_JS)


def _assert_charts_draw_and_update(page: Any) -> None:
    """Both charts hold points within 10 s of the dashboard appearing, and update: the
    rates chart gains points (one per refresh), the breaker chart's current stretch
    grows (its latest x moves on)."""
    try:
        page.wait_for_function(
            f"() => {{ const c = ({CHARTS_JS})();"
            f" return c[{RATES!r}]?.points > 0 && c[{TIMELINE!r}]?.points > 0; }}",
            timeout=10_000,
        )
    except Exception as exc:
        raise AssertionError(f"a chart stays blank on the page: {_charts(page)}") from exc
    first = _charts(page)
    try:
        page.wait_for_function(
            f"f => {{ const c = ({CHARTS_JS})();"
            f" return c[{RATES!r}].points > f[{RATES!r}].points"
            f" && c[{TIMELINE!r}].last > f[{TIMELINE!r}].last; }}",
            arg=first,
            timeout=15_000,
        )
    except Exception as exc:
        raise AssertionError(f"charts stopped updating: {first} -> {_charts(page)}") from exc


def test_voila_page_shows_the_live_dashboard(voila_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        try:
            page.goto(voila_url, timeout=120_000)
            status = page.wait_for_selector(".rc-status", timeout=120_000)
            assert status is not None
            _assert_charts_draw_and_update(page)
            level = status.get_attribute("data-level")
            assert level in {"HEALTHY", "DEGRADED", "UNHEALTHY", "CRITICAL", "UNKNOWN"}
            page.wait_for_selector("table.rc-symbols tr.rc-symbol", timeout=60_000)
            symbols = page.eval_on_selector_all(
                "table.rc-symbols tr.rc-symbol", "rows => rows.map(r => r.dataset.symbol)"
            )
            assert symbols == ["SPY", "QQQ", "IWM"]
            first = int(page.inner_text(".rc-stored"))
            page.wait_for_function(
                "n => Number(document.querySelector('.rc-stored').textContent) > n + 10",
                arg=first,
                timeout=60_000,
            )
            # the fault story opens IWM's breaker: the table shows it, live
            page.wait_for_selector(
                'table.rc-symbols tr.rc-symbol[data-breaker="OPEN"]', timeout=90_000
            )
            assert set(_charts(page)) == {RATES, TIMELINE}
            assert "running" in page.inner_text(".rc-running")
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
