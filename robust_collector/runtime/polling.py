"""The polling driver: one task per symbol, each on its own schedule, through the guards.

Every fetch goes retry( breaker( source.fetch ) ), the resilience4j order; a symbol's
slow answer or open breaker never delays another. Refused credentials pause the whole
source (one probe at a time); a self-paced source (a replay) hands over batches as fast
as the writer takes them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from robust_collector.errors import (
    CircuitOpenError,
    EndOfData,
    PermanentSourceError,
    PoolWaitError,
    format_seconds,
)
from robust_collector.model import Trade, now_us
from robust_collector.runtime.guards import Guards
from robust_collector.runtime.pipeline import Pipeline
from robust_collector.runtime.status import SymbolCounters
from robust_collector.secrets import scrub
from robust_collector.sources import Source, traits_of

__all__ = ["REPLAY_BATCH", "Poller"]

log = logging.getLogger("robust_collector.collector")

REPLAY_BATCH = 256  # quotes a self-paced source may hand over per call
_QUOTES = frozenset({"quotes"})


@dataclass
class _SourcePause:
    """The whole source paused (its credentials were refused): one probe at a time."""

    reason: str
    since_us: int
    probe_at: float  # event-loop time of the next probe
    probing: bool = False


class Poller:
    """Polls every symbol of a request/response source into the pipeline."""

    def __init__(
        self,
        source: Source,
        pipeline: Pipeline,
        guards: Guards,
        interval: float,
        flush_every: float,
        kinds: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.source = source
        self.traits = traits_of(source)
        # what each symbol collects (quotes, trades or both); a trade poll asks fetch_trade
        self.kinds = dict(kinds or {})
        self._fetch_trade: Callable[[str], Awaitable[Trade]] | None = self.traits.fetch_trade
        self.pipeline = pipeline
        self.guards = guards
        self.interval = interval
        self.flush_every = flush_every
        self.finished: set[str] = set()
        self.pause: _SourcePause | None = None
        self._pause_cond: asyncio.Condition | None = None

    def units(self) -> list[tuple[str, Callable[[], Any]]]:
        """One polling task per symbol still to poll, and the flusher, for the supervisor."""
        self._pause_cond = asyncio.Condition()
        units: list[tuple[str, Callable[[], Any]]] = []
        for sym in self.pipeline.symbols:
            if sym in self.finished:
                continue
            kinds = self.kinds.get(sym, _QUOTES)
            if self.traits.fetch_batch is not None or "quotes" in kinds:
                units.append((f"poll-{sym}", functools.partial(self.poll, sym)))
            if self.traits.fetch_batch is None and "trades" in kinds:
                units.append((f"poll-{sym}-trades", functools.partial(self.poll, sym, "trades")))
        units.append(("flusher", self.flusher))
        return units

    @property
    def all_finished(self) -> bool:
        """True when every symbol's source has ended (a replay reached the end of its file)."""
        return len(self.finished) == len(self.pipeline.symbols)

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def flush(self) -> None:
        """A timed flush. A self-paced source's rows wait while the writer is full (its
        tasks wait for room too); a live source's go now (the writer spills if it must)."""
        if self.traits.self_paced and not self.pipeline.has_room():
            return
        self.pipeline.flush()

    async def poll(self, symbol: str, kind: str = "quotes") -> None:
        """The symbol's task (one per kind it collects): fetch, judge, sleep to the next
        slot; a crash is supervised. A replay's batches mix quotes and trades."""
        loop = asyncio.get_running_loop()
        p = self.pipeline
        c = p.counters[symbol]
        interval = self.interval
        self_paced = self.traits.self_paced  # a replay paces itself
        batched = self.traits.fetch_batch is not None
        next_at = loop.time()
        while True:
            probe = self.pause is not None and await self._wait_pause()
            c.fetches += 1
            failed_before = c.failed_attempts
            try:
                if batched:
                    p.receive_batch(symbol, await self._fetch(symbol, batch=True))
                    await asyncio.sleep(0)  # one yield per batch lets the other tasks run
                    await self._writer_room()
                    if p.full():
                        p.flush()
                    continue
                quote = await self._fetch(symbol, kind=kind)
            except asyncio.CancelledError:
                if probe:
                    await self._probe_done()
                raise
            except EndOfData as exc:
                if kind == "quotes":
                    self._symbol_finished(symbol, exc)
                else:  # this kind has ended; the symbol's other task goes on
                    log.info("%s %s: %s", symbol, kind, exc)
                return
            except CircuitOpenError as exc:
                # the symbol stays dark until its breaker lets a trial call through
                next_at = max(next_at, loop.time() + exc.retry_after - interval)
                failed = c.failed_attempts - failed_before
                if failed and c.last_attempt_error is not None:
                    # the breaker opened during this poll's retries: a failed poll all the same
                    self._fetch_failed(symbol, c, c.last_attempt_error, attempts=failed)
                if probe:
                    await self._probe_done()
            except Exception as exc:
                self._fetch_failed(symbol, c, exc, attempts=c.failed_attempts - failed_before)
                if getattr(exc, "source_wide", False):
                    await self._pause_source(exc)
                elif probe:
                    await self._probe_done()
            else:
                p.receive(quote)
                if probe:
                    await self._probe_done()
            if self_paced:
                # no polling interval; yield to the other tasks every so often (a yield
                # per quote would cost more than the quote itself)
                if c.fetches % 64 == 0:
                    await asyncio.sleep(0)
                continue
            next_at += interval
            now = loop.time()
            if next_at < now:
                # the fetch overran its slot (a slow answer, a wait on the rate-limit gate):
                # skip the missed slots and start again one interval from now, so a symbol
                # never sends two requests back to back when the gate reopens
                c.overruns += 1
                next_at = now + interval
            await asyncio.sleep(next_at - now)

    # -- one fetch ------------------------------------------------------------------------

    async def _fetch(self, symbol: str, batch: bool = False, kind: str = "quotes") -> Any:
        """One fetch through retry( breaker( source.fetch ) ), the resilience4j order. A
        symbol's trades have their own breaker (``SYM:trades``): one failing endpoint
        does not darken the other."""
        breaker = self.guards.breaker(symbol if kind == "quotes" else f"{symbol}:{kind}")
        retry = self.guards.retries[symbol]
        if breaker is not None:
            return await retry.call_async(breaker.call_async, self._attempt, symbol, batch, kind)
        return await retry.call_async(self._attempt, symbol, batch, kind)

    async def _attempt(self, symbol: str, batch: bool = False, kind: str = "quotes") -> Any:
        """One call to the source; every failed attempt is recorded here, exactly once."""
        try:
            if batch:
                assert self.traits.fetch_batch is not None
                quote = await self.traits.fetch_batch(symbol, REPLAY_BATCH)
            elif kind == "trades":
                if self._fetch_trade is None:
                    raise PermanentSourceError(
                        f"{self.traits.name}: this source serves no trades ({symbol})",
                        symbol=symbol,
                    )
                quote = await self._fetch_trade(symbol)
            else:
                quote = await self.source.fetch(symbol)
        except (asyncio.CancelledError, EndOfData):
            raise
        except Exception as exc:
            self._attempt_failed(symbol, exc)
            raise
        self.pipeline.source_health.record_success()
        return quote

    def _attempt_failed(self, symbol: str, exc: BaseException) -> None:
        """Every failed attempt: an error row, and the source's health. A wait for a free
        connection is the pool's fault (component ``pool``): the API was not asked, so
        the source's health is not charged with it."""
        p = self.pipeline
        c = p.counters.get(symbol)
        if c is not None:
            c.failed_attempts += 1
            c.last_attempt_error = exc
        if isinstance(exc, PoolWaitError):
            p.error("pool", exc, symbol=symbol)
        else:
            p.error("source", exc, symbol=symbol, checker=p.source_health)

    def _fetch_failed(
        self, symbol: str, c: SymbolCounters, exc: BaseException, attempts: int = 1
    ) -> None:
        """A fetch that failed after its retries (the last attempt's error); the symbol's
        health counts each failed attempt, so an always-500 symbol (three attempts a poll,
        then an open breaker) reads as badly as an always-404 one."""
        c.errors += 1
        c.last_error = f"{type(exc).__name__}: {scrub(exc)}"
        health = self.pipeline.symbol_health[symbol]
        for _ in range(max(1, attempts)):
            health.record_failure(exc)
        self.pipeline.collector_health.record_failure(exc)

    def _symbol_finished(self, symbol: str, exc: EndOfData) -> None:
        """A replayed symbol ran out of rows: stop polling it, and say so once all are done."""
        p = self.pipeline
        self.finished.add(symbol)
        more = len(self.finished) < len(p.symbols)
        p.symbol_health[symbol].facts.expects_data = False
        p.collector_health.facts.expects_data = more
        p.source_health.facts.expects_data = more
        log.info("%s: %s", symbol, exc)
        if self.all_finished:
            log.info("replay finished: every symbol has reached the end of its data")
            p.flush()

    async def _writer_room(self) -> None:
        """Backpressure for a self-paced source: wait (on the loop, never blocking it) while
        the writer's queue is full, so a replay at full speed is paced by the database
        instead of spilling good batches to backup. A live source never waits here."""
        while not self.pipeline.has_room():
            await asyncio.sleep(0.002)

    # -- the whole source paused (credentials refused) -------------------------------------

    async def _wait_pause(self) -> bool:
        """Wait while the source is paused; True when this task is to make the probe."""
        loop = asyncio.get_running_loop()
        cond = self._pause_cond
        assert cond is not None
        async with cond:
            while (p := self.pause) is not None:
                now = loop.time()
                if not p.probing and now >= p.probe_at:
                    p.probing = True
                    return True
                try:
                    async with asyncio.timeout(None if p.probing else p.probe_at - now):
                        await cond.wait()
                except TimeoutError:
                    pass
        return False

    async def _pause_source(self, exc: BaseException) -> None:
        """Credentials refused: pause every symbol; one clear error the first time."""
        loop = asyncio.get_running_loop()
        retry = self.traits.auth_retry_seconds
        p = self.pause
        if p is None:
            reason = (
                f"credentials refused, every symbol paused ({scrub(exc)}); "
                f"probing again every {format_seconds(retry)}"
            )
            self.pause = _SourcePause(reason, now_us(), loop.time() + retry)
            self.pipeline.source_health.facts.paused = reason
            log.error("%s", reason)
        else:
            p.probing = False
            p.probe_at = loop.time() + retry
            log.info("credentials still refused; next probe in %s", format_seconds(retry))
        await self._notify_pause()

    async def _probe_done(self) -> None:
        """The probe was not refused for its credentials: every symbol resumes."""
        if self.pause is not None and self.pause.probing:
            self.pause = None
            self.pipeline.source_health.facts.paused = None
            log.warning("credentials accepted again: every symbol resumes")
        await self._notify_pause()

    async def _notify_pause(self) -> None:
        cond = self._pause_cond
        if cond is not None:
            async with cond:
                cond.notify_all()
