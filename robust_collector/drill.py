"""The robustness drill: the seed's five scenarios, run live against the real pipeline.

Each scenario starts a real collector (real threads, a real SQLite file in a
temporary folder, the simulated source with faults injected) using the user's
thresholds with every duration scaled down by one factor, so the whole drill
takes well under a minute. Every checklist line carries the figure it measured,
and durations are also given at the user's own settings.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust_collector.collector import Collector
from robust_collector.config import Config, config_from_dict
from robust_collector.storage.writer import WriterStats

SYMBOLS = ("SPY", "QQQ", "IWM")
TARGET_BREAKER_TIMEOUT = 0.5  # seconds the scaled breaker timeout may take
MIN_INTERVAL = 0.005


@dataclass
class Check:
    """One line of the checklist: passed or not, and what was measured."""

    text: str
    passed: bool
    figure: str = ""

    def line(self) -> str:
        icon = "✅" if self.passed else "❌"
        return f"  {icon} {self.text}" + (f": {self.figure}" if self.figure else "")


@dataclass
class Scenario:
    """One of the seed's five scenarios and its checks."""

    number: int
    title: str
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    def check(self, text: str, passed: bool, figure: str = "") -> bool:
        self.checks.append(Check(text, bool(passed), figure))
        return bool(passed)


@dataclass
class DrillReport:
    """Every scenario's checks, the scale used, and the total time."""

    scenarios: list[Scenario]
    scale: float
    seconds: float

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scenarios)

    def text(self) -> str:
        out = [
            f"Robustness drill: the seed's 5 scenarios against the real pipeline "
            f"(your timings scaled by {self.scale:.4g})",
            "",
        ]
        for s in self.scenarios:
            out.append(f"Test {s.number}: {s.title}")
            out.extend(c.line() for c in s.checks)
            if s.error:
                out.append(f"  ❌ scenario failed to run: {s.error}")
            out.append("")
        if self.passed:
            out.append(f"✅ ALL TESTS PASSED - System is robust! ({self.seconds:.1f}s)")
        else:
            failed = [
                f"Test {s.number}: {c.text}"
                for s in self.scenarios
                for c in s.checks
                if not c.passed
            ]
            failed += [f"Test {s.number}: {s.error}" for s in self.scenarios if s.error]
            out.append(f"❌ {len(failed)} CHECK(S) FAILED ({self.seconds:.1f}s):")
            out.extend(f"  - {f}" for f in failed)
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "scale": self.scale,
            "seconds": round(self.seconds, 2),
            "scenarios": [
                {
                    "number": s.number,
                    "title": s.title,
                    "passed": s.passed,
                    "error": s.error,
                    "checks": [
                        {"check": c.text, "passed": c.passed, "figure": c.figure} for c in s.checks
                    ],
                }
                for s in self.scenarios
            ],
        }


def scale_for(config: Config) -> float:
    """The factor that brings the user's breaker timeout down to half a second."""
    timeout = config.realtime_data.circuit_breaker.timeout_seconds
    return min(1.0, TARGET_BREAKER_TIMEOUT / timeout) if timeout > 0 else 1.0


def drill_config(config: Config, workdir: Path, scale: float) -> Config:
    """The user's config with durations scaled, a temporary database, fast health checks."""
    data = config.as_dict()
    rt = data["realtime_data"]
    rt["collect_interval_seconds"] = max(MIN_INTERVAL, rt["collect_interval_seconds"] * scale)
    rt["buffer_size"] = min(rt["buffer_size"], 20)
    for key in ("retry_delay", "max_delay"):
        rt["retry"][key] = rt["retry"][key] * scale
    if rt["retry"]["deadline_seconds"] is not None:
        rt["retry"]["deadline_seconds"] *= scale
    rt["circuit_breaker"]["timeout_seconds"] *= scale
    rt["health_check"]["check_interval_seconds"] = 0.1
    rt["backup"]["backup_path"] = str(workdir / "backups")
    data["symbols"] = list(SYMBOLS)
    data["source"] = {"type": "simulated", "seed": 7}
    st = data["storage"]
    st.update(
        backend="sqlite",  # the drill's outages are its own: never the user's server
        url="",
        database=str(workdir / "drill.db"),
        flush_interval_seconds=0.05,
        write_timeout_seconds=0.1,
        breaker_timeout_seconds=0.2,
    )
    return config_from_dict(data)


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def _api_fails_temporarily(s: Scenario, config: Config, workdir: Path, scale: float) -> None:
    r = config.realtime_data.retry
    fails = max(0, r.max_retries - 1)
    c = Collector(drill_config(config, workdir, scale)).start()
    try:
        c.wait_for(lambda st: st.symbols["SPY"].stored >= 5, timeout=15)
        before = c.status().symbols["SPY"]
        t0 = time.monotonic()
        c.source.fail_next("SPY", max(1, fails))  # type: ignore[attr-defined]
        ok = _wait(lambda: c.status().symbols["SPY"].accepted > before.accepted + 1, 15)
        gap = time.monotonic() - t0
        after = c.status().symbols["SPY"]
    finally:
        c.stop()
    s.check(
        "Retried after a temporary failure",
        after.retries > before.retries,
        f"{after.retries - before.retries} retries for {max(1, fails)} failed attempt(s)",
    )
    s.check(
        "Succeeded without giving up",
        ok and after.retry_successes > before.retry_successes and after.give_ups == before.give_ups,
        f"{after.retry_successes - before.retry_successes} retry success(es)",
    )
    s.check(
        "Data collected normally afterwards",
        ok and after.errors == before.errors,
        f"gap {gap:.2f}s here, about {gap / scale:.1f}s with your retry settings",
    )


def _api_keeps_failing(s: Scenario, config: Config, workdir: Path, scale: float) -> None:
    cb = config.realtime_data.circuit_breaker
    needed = max(cb.success_threshold, cb.half_open_max_calls)  # trials that close it
    c = Collector(drill_config(config, workdir, scale)).start()
    src = c.source
    try:
        c.wait_for(lambda st: st.symbols["IWM"].stored >= 3, timeout=15)
        t0 = time.monotonic()
        src.fail("IWM")  # type: ignore[attr-defined]
        opened = c.breaker("IWM") is not None and _wait(
            lambda: c.status().symbols["IWM"].breaker_state == "OPEN", 15
        )
        t_open = time.monotonic() - t0
        src.heal("IWM")  # the API recovers while the breaker keeps the symbol dark
        closed = opened and _wait(lambda: c.status().symbols["IWM"].breaker_state == "CLOSED", 15)
        st = c.status().symbols["IWM"]
    finally:
        c.stop()
    conn = sqlite3.connect(c.db_path)
    events = conn.execute(
        "SELECT ts_us, old_state, new_state FROM breaker_events WHERE breaker = 'IWM' ORDER BY id"
    ).fetchall()
    times = {new: ts for ts, _old, new in reversed(events)}  # first time each state was entered

    def calls_between(a: int, b: int) -> int:
        q = "SELECT count(*) FROM {} WHERE symbol = 'IWM' AND {} > ? AND {} < ?"
        ticks = conn.execute(q.format("ticks", "recv_us", "recv_us"), (a, b)).fetchone()[0]
        errors = conn.execute(q.format("errors", "ts_us", "ts_us"), (a, b)).fetchone()[0]
        return ticks + errors

    s.check("Attempts retried with backoff", st.retries > 0, f"{st.retries} retries in all")
    s.check(
        "Circuit breaker opens 🔴",
        opened,
        f"after {cb.failure_threshold} consecutive failures, {t_open:.2f}s"
        if opened
        else "never opened (is circuit_breaker.enabled false?)",
    )
    if "OPEN" in times and "HALF_OPEN" in times:
        dark = (times["HALF_OPEN"] - times["OPEN"]) / 1e6
        during = calls_between(times["OPEN"], times["HALF_OPEN"])
        s.check(
            "Calls stop while open",
            during == 0,
            f"{during} calls in {dark:.2f}s dark ({dark / scale:.0f}s with your timeout of "
            f"{cb.timeout_seconds:g}s)",
        )
        s.check(
            "Half-open after the timeout 🟡",
            dark >= cb.timeout_seconds * scale * 0.9,
            f"{dark:.2f}s",
        )
    else:
        s.check("Calls stop while open", False, "the breaker never opened")
        s.check("Half-open after the timeout 🟡", False, "no HALF_OPEN transition recorded")
    if "HALF_OPEN" in times and "CLOSED" in times and times["CLOSED"] > times["HALF_OPEN"]:
        trials = calls_between(times["HALF_OPEN"] - 1, times["CLOSED"] + 1)
        s.check(
            f"Closes after {needed} successes ✅",
            closed and trials == needed,
            f"{trials} successful trial calls; "
            + " -> ".join(["CLOSED", *[n for _, _, n in events]]),
        )
    else:
        s.check(f"Closes after {needed} successes ✅", False, "never closed again")
    conn.close()


def _bad_data(s: Scenario, config: Config, workdir: Path, scale: float) -> None:
    c = Collector(drill_config(config, workdir, scale)).start()
    try:
        c.wait_for(lambda st: st.stored >= 15, timeout=15)
        src = c.source
        src.inject(bad_tick_rate=0.5)  # type: ignore[attr-defined]
        _wait(lambda: sum(len(src.bad_ticks(x)) for x in SYMBOLS) >= 20, 15)  # type: ignore[attr-defined]
        got = _wait(lambda: c.status().rejects >= 20, 2)
        c.source.inject(bad_tick_rate=0.0)  # type: ignore[attr-defined]
        stored = c.status().stored
        cont = _wait(lambda: c.status().stored >= stored + 15, 15)
    finally:
        c.stop()
    conn = sqlite3.connect(c.db_path)
    rules = dict(conn.execute("SELECT rule, count(*) FROM rejects GROUP BY rule").fetchall())
    sample = conn.execute("SELECT reason FROM rejects ORDER BY rejected_us LIMIT 1").fetchone()
    v = config.realtime_data.validation
    dirty = conn.execute(
        "SELECT count(*) FROM ticks WHERE bid IS NULL OR ask IS NULL OR bid > ask "
        "OR bid <= 0 OR (bid + ask) / 2 < ? OR (bid + ask) / 2 > ?",
        (v.min_price, v.max_price),
    ).fetchone()[0]
    conn.close()
    s.check(
        "Invalid data rejected with its rule",
        got and bool(rules),
        ", ".join(f"{k} {n}" for k, n in sorted(rules.items())) or "nothing rejected",
    )
    s.check("Reason logged", sample is not None, sample[0] if sample else "no reason stored")
    s.check("Collection continues", cont, f"{c.status().stored - stored} ticks stored after")
    s.check("Ticks table stays clean", got and dirty == 0, f"{dirty} bad rows in ticks")


def _replayed(ws: WriterStats | None) -> bool:
    """The database is back, its backlog replayed, nothing held in memory."""
    return (
        ws is not None
        and ws.mode == "database"
        and ws.backup_files == 0
        and ws.held_rows == 0
        and ws.replayed_rows > 0
    )


def _database_fails(s: Scenario, config: Config, workdir: Path, scale: float) -> None:
    c = Collector(drill_config(config, workdir, scale)).start()
    try:
        c.wait_for(lambda st: st.stored >= 15, timeout=15)
        blocker = sqlite3.connect(c.db_path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            _wait(
                lambda: (
                    c.status().storage.ticks_to_backup >= 30  # type: ignore[union-attr]
                    or c.status().storage.held_rows >= 30
                ),  # type: ignore[union-attr]
                15,
            )
            to_backup = c.status().storage.ticks_to_backup >= 30  # type: ignore[union-attr]
            mode = c.status().storage.mode  # type: ignore[union-attr]
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # one snapshot per look: the writer moves a replayed file before it adds the
        # file's rows to replayed_rows, so separate reads can see neither. With backup
        # off there is nothing to replay: no point waiting for it.
        backup_on = c.config.realtime_data.backup.enabled
        replayed = backup_on and _wait(lambda: _replayed(c.status().storage), 15)
    finally:
        summary = c.stop()
    ws = summary.storage
    conn = sqlite3.connect(c.db_path)
    lost = []
    total_emitted = 0
    for sym, emitted in c.source.emitted.items():  # type: ignore[attr-defined]
        total_emitted += emitted
        n = conn.execute(
            "SELECT (SELECT count(*) FROM ticks WHERE symbol = ? AND run_id = ?)"
            " + (SELECT count(*) FROM rejects WHERE symbol = ? AND run_id = ?)",
            (sym, c.run_id, sym, c.run_id),
        ).fetchone()[0]
        dups = summary.symbols[sym].duplicates
        if n + dups != emitted:
            lost.append(f"{sym}: {emitted - n - dups}")
    conn.close()
    s.check(
        "Batches written to backup files instead",
        to_backup,
        f"{ws.ticks_to_backup} ticks while the database was locked ({mode} mode)" if ws else "",
    )
    s.check(
        "Replayed when the database returned",
        replayed,
        "backup is off: nothing to replay"
        if not backup_on
        else f"{ws.replayed_rows} rows replayed"
        if ws
        else "",
    )
    s.check(
        "No data lost (the count reconciles)",
        not lost and ws is not None and ws.lost_rows == 0,
        f"{total_emitted} emitted = stored + rejected + duplicates"
        if not lost
        else "missing " + ", ".join(lost),
    )


def _one_symbol_fails(s: Scenario, config: Config, workdir: Path, scale: float) -> None:
    c = Collector(drill_config(config, workdir, scale)).start()
    try:
        c.wait_for(lambda st: st.stored >= 30, timeout=15)

        def rate(seconds: float) -> dict[str, float]:
            a = c.status()
            t0 = time.monotonic()
            time.sleep(seconds)  # measuring a rate needs a fixed window
            b = c.status()
            dt = time.monotonic() - t0
            return {k: (b.symbols[k].quotes - a.symbols[k].quotes) / dt for k in SYMBOLS}

        window = max(0.5, 40 * c.config.realtime_data.collect_interval_seconds)
        base = rate(window)
        c.source.fail("IWM")  # type: ignore[attr-defined]
        _wait(lambda: c.status().symbols["IWM"].errors > 0, 15)
        during = rate(window)
    finally:
        c.stop()
    for sym in ("SPY", "QQQ"):
        ratio = during[sym] / base[sym] if base[sym] else 0.0
        s.check(
            f"{sym}: success, full rate kept",
            ratio >= 0.8,
            f"{during[sym]:.0f}/s vs {base[sym]:.0f}/s before ({ratio:.0%})",
        )
    s.check("IWM: failed, isolated", during["IWM"] < base["IWM"] * 0.5, f"{during['IWM']:.0f}/s")
    s.check("System keeps running", c.status().stored > 0, f"{c.status().stored} ticks stored")


SCENARIOS: tuple[tuple[str, Callable[[Scenario, Config, Path, float], None]], ...] = (
    ("API fails temporarily", _api_fails_temporarily),
    ("API keeps failing", _api_keeps_failing),
    ("Bad data received", _bad_data),
    ("Database slow or failing", _database_fails),
    ("One symbol fails", _one_symbol_fails),
)


def run_drill(config: Config, *, progress: Callable[[str], None] | None = None) -> DrillReport:
    """Run the five scenarios with ``config``'s thresholds; returns the checklist."""
    scale = scale_for(config)
    t0 = time.monotonic()
    scenarios = []
    for i, (title, fn) in enumerate(SCENARIOS, start=1):
        s = Scenario(i, title)
        if progress is not None:
            progress(f"running test {i}: {title}...")
        with tempfile.TemporaryDirectory(prefix="rc-drill-") as d:
            try:
                fn(s, config, Path(d), scale)
            except Exception as exc:  # a scenario that breaks is a failed line, not a crash
                s.error = f"{type(exc).__name__}: {exc}"
        scenarios.append(s)
    return DrillReport(scenarios, scale, time.monotonic() - t0)
