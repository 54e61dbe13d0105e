"""Supervision of every long-lived task and thread: no unit dies silently.

A unit is a coroutine factory (a polling task, the flusher, the health loop, the
stream's reader and processor) or a thread body. When it raises, the supervisor
logs the traceback once, tells ``on_crash`` (which records an error row and a
health reason), marks the unit ``restarting`` and starts it again after a backoff
that doubles on each crash in a row and resets once the unit has run stably.
``status()`` is an immutable view that health and ``Collector.status()`` read.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from robust_collector.health.facts import TroubledUnit
from robust_collector.resilience.backoff import Backoff
from robust_collector.secrets import scrub

__all__ = ["Supervisor", "UnitStatus"]

log = logging.getLogger("robust_collector.runtime.supervisor")

CRASH_WINDOW_SECONDS = 60.0  # crashes counted for health over this window
CRASH_LOOP = 5  # crashes in the window that make a unit CRITICAL


@dataclass(frozen=True)
class UnitStatus:
    """One supervised unit as of the snapshot."""

    name: str
    kind: str  # "task" or "thread"
    state: str  # running, restarting, done, stopped
    restarts: int
    recent_crashes: int  # inside CRASH_WINDOW_SECONDS
    last_error: str | None
    last_crash: float | None  # wall-clock seconds
    retry_in: float | None  # seconds until the restart, while restarting


class _Unit:
    __slots__ = ("crashes", "kind", "last_crash", "last_error", "name", "restart_at", "restarts")

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.restarts = 0
        self.crashes: deque[float] = deque(maxlen=64)
        self.last_error: str | None = None
        self.last_crash: float | None = None
        self.restart_at: float | None = None  # monotonic time of the pending restart


class Supervisor:
    """Runs units, restarts them with backoff after a crash, and reports their states."""

    def __init__(
        self,
        *,
        on_crash: Callable[[str, BaseException], None] | None = None,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        stable_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._on_crash = on_crash
        self.base_delay = base_delay
        self.max_delay = max_delay
        # one backoff for the whole package (resilience/backoff.py): 0.1, 0.2, ... 5 s, no
        # jitter (a restart is not a herd); the 2**30 limit keeps the old growth bound
        self.backoff = Backoff(
            initial=base_delay,
            multiplier=2.0,
            cap=min(max_delay, base_delay * 2**30),
            jitter="none",
        )
        self.stable_after = stable_after
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._units: dict[str, _Unit] = {}
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- running units -------------------------------------------------------------

    def delay(self, in_a_row: int) -> float:
        """The wait before restart number ``in_a_row`` of a crash series (doubling, capped)."""
        return self.backoff.delay(max(in_a_row, 1))

    async def run(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Await ``factory()`` until it returns; restart it after each crash.

        Cancellation (the collector stopping) ends the unit at once, as it should."""
        unit = self._register(name, "task")
        in_a_row = 0
        while True:
            started = self._clock()
            self._set(name, "running")
            try:
                await factory()
            except asyncio.CancelledError:
                self._set(name, "stopped")
                raise
            except Exception as exc:
                in_a_row = 1 if self._clock() - started > self.stable_after else in_a_row + 1
                wait = self._crashed(unit, exc, in_a_row)
                try:
                    await self._sleep(wait)
                except asyncio.CancelledError:
                    self._set(name, "stopped")
                    raise
                continue
            self._set(name, "done")
            return

    def thread(
        self, name: str, target: Callable[[], None], *, daemon: bool = True
    ) -> threading.Thread:
        """Start ``target`` in a daemon thread that is restarted after each crash until
        ``stop()``; returns the thread."""
        unit = self._register(name, "thread")

        def body() -> None:
            in_a_row = 0
            while not self._stopping.is_set():
                started = self._clock()
                self._set(name, "running")
                try:
                    target()
                except Exception as exc:
                    in_a_row = 1 if self._clock() - started > self.stable_after else in_a_row + 1
                    wait = self._crashed(unit, exc, in_a_row)
                    if self._stopping.wait(wait):
                        break
                    continue
                break
            self._set(name, "stopped" if self._stopping.is_set() else "done")

        t = threading.Thread(target=body, name=name, daemon=daemon)
        t.start()
        return t

    def stop(self) -> None:
        """Stop restarting threads (their bodies end on their own stop signals)."""
        self._stopping.set()

    def _register(self, name: str, kind: str) -> _Unit:
        with self._lock:
            unit = self._units.get(name)
            if unit is None:
                unit = self._units[name] = _Unit(name, kind)
            return unit

    def _set(self, name: str, state: str) -> None:
        with self._lock:
            self._states[name] = state
            if state != "restarting":
                self._units[name].restart_at = None

    def record_crash(self, name: str, kind: str, exc: BaseException, in_a_row: int) -> float:
        """Record a crash of a unit run by its owner (e.g. the loop thread); returns the
        backoff before its restart. The owner calls ``mark_running`` once it runs again."""
        return self._crashed(self._register(name, kind), exc, in_a_row)

    def mark_running(self, name: str, kind: str = "thread") -> None:
        """An owner-run unit is running (again)."""
        self._register(name, kind)
        self._set(name, "running")

    def _crashed(self, unit: _Unit, exc: BaseException, in_a_row: int) -> float:
        """Record one crash; returns the backoff before the restart."""
        wait = self.delay(in_a_row)
        text = scrub(f"{type(exc).__name__}: {scrub(exc)}", 300)
        # the traceback once per crash series: a crash loop logs one line per restart
        if in_a_row == 1:
            log.error("%s crashed; restarting in %.1fs", unit.name, wait, exc_info=exc)
        else:
            log.error("%s crashed again (%s); restarting in %.1fs", unit.name, text, wait)
        with self._lock:
            unit.restarts += 1
            unit.crashes.append(self._clock())
            unit.last_error = text
            unit.last_crash = self._wall()
            unit.restart_at = self._clock() + wait
            self._states[unit.name] = "restarting"
        if self._on_crash is not None:
            try:
                self._on_crash(unit.name, exc)
            except Exception:  # reporting a crash must never crash the supervisor
                log.exception("recording the crash of %s failed", unit.name)
        return wait

    # -- reporting -----------------------------------------------------------------

    def status(self) -> dict[str, UnitStatus]:
        """Every unit's state now (an immutable snapshot; safe from any thread)."""
        now = self._clock()
        out = {}
        with self._lock:
            for name, u in self._units.items():
                recent = sum(1 for t in u.crashes if now - t <= CRASH_WINDOW_SECONDS)
                retry_in = None if u.restart_at is None else max(0.0, u.restart_at - now)
                out[name] = UnitStatus(
                    name,
                    u.kind,
                    self._states.get(name, "running"),
                    u.restarts,
                    recent,
                    u.last_error,
                    u.last_crash,
                    retry_in,
                )
        return out

    def troubled(self) -> tuple[TroubledUnit, ...]:
        """The units health judges: those restarting or crashed in the window."""
        return tuple(
            TroubledUnit(u.name, u.state, u.restarts, u.recent_crashes, u.last_error)
            for u in self.status().values()
            if u.state == "restarting" or u.recent_crashes
        )
