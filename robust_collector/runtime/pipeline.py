"""The pipeline every quote takes, from any driver: validate, count, buffer, flush.

Polling tasks and the stream's processor hand quotes here; accepted ones become tick
rows, the others reject rows or counted duplicates, and error, event and health rows
wait beside them. ``flush`` hands one batch to the writer thread. Everything runs on
the collector's event loop except ``event``, which any thread may call.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from robust_collector.health import HealthChecker, SystemHealthMonitor
from robust_collector.model import Quote, Trade, now_us
from robust_collector.runtime.status import SymbolCounters
from robust_collector.secrets import scrub
from robust_collector.storage.tables import INSERT_ERROR
from robust_collector.storage.writer import Batch, StorageWriter
from robust_collector.validation import TradeValidator, Validator
from robust_collector.validation.streaming import ACCEPTED
from robust_collector.validation.trade_rules import NOTICE_CORRECTIONS

__all__ = ["COLLECTOR_COMPONENT", "Pipeline"]

log = logging.getLogger("robust_collector.collector")

COLLECTOR_COMPONENT = "RobustDataCollector"

Row = tuple[Any, ...]
_RECHECK_ROWS = 64  # a batch buffered past a full writer looks for room again this often


class Pipeline:
    """Validates quotes into buffered tick and reject rows, counts them, flushes batches."""

    def __init__(
        self,
        run_id: str,
        symbols: tuple[str, ...],
        validator: Validator,
        monitor: SystemHealthMonitor,
        buffer_size: int,
        trade_validator: Any = None,
    ) -> None:
        self.run_id = run_id
        self.symbols = symbols
        self.validator = validator
        self.monitor = monitor
        self.buffer_size = buffer_size
        self.counters = {s: SymbolCounters() for s in symbols}
        self.ticks: list[Row] = []
        self.rejects: list[Row] = []
        # event rows may come from any thread (a breaker turns HALF_OPEN when read)
        self.events: deque[tuple[str, Row]] = deque()
        self.latest: dict[str, Quote] = {}
        # trades (issue 19): their own validator, buffers and latest print
        self.trade_validator = trade_validator
        self.trades: list[Row] = []
        self.trade_rejects: list[Row] = []
        self.latest_trade: dict[str, Trade] = {}
        tcfg = getattr(trade_validator, "config", None)
        # the band rule needs every accepted quote; otherwise quotes never reach it
        self._band_quotes = bool(tcfg and tcfg.enabled and tcfg.rules.outside_quote_band)
        self.writer: StorageWriter | None = None
        self.collector_health = monitor.checker(COLLECTOR_COMPONENT, "collector")
        self.source_health = monitor.checker("source", "source")
        self.storage_health = monitor.checker("storage", "storage")
        self.symbol_health: dict[str, HealthChecker] = {
            s: monitor.checker(s, "symbol") for s in symbols
        }

    # -- quotes in --------------------------------------------------------------------

    def full(self) -> bool:
        """True when the buffers hold a batch's worth of rows."""
        return (
            len(self.ticks) + len(self.rejects) + len(self.trades) + len(self.trade_rejects)
            >= self.buffer_size
        )

    def judge(self, quote: Quote, c: SymbolCounters) -> bool:
        """Buffer ``quote`` by the validator's verdict; True when it was accepted."""
        c.quotes += 1
        verdict = self.validator.check(quote)
        if verdict.status == "accepted":
            c.accepted += 1
            c.last_price = quote.price
            c.last_quote_us = quote.recv_us
            c.last_error = None
            self.latest[quote.symbol] = quote
            self.ticks.append(quote.tick_row(self.run_id))
            if verdict.reason:  # a re-anchor: worth a line in the log
                log.info("%s: %s", quote.symbol, verdict.reason)
            if self._band_quotes:  # the prevailing quote for the trades' band rule
                self.trade_validator.note_quote(quote.symbol, quote.bid, quote.ask, quote.ts_us)
            return True
        if verdict.status == "duplicate":
            c.duplicates += 1
        else:
            c.rejects += 1
            self.rejects.append(
                (*quote.as_row(), self.run_id, verdict.rule, verdict.reason, now_us())
            )
        return False

    def judge_trade(self, trade: Trade, c: SymbolCounters) -> bool:
        """Buffer ``trade`` by the trade validator's verdict; True when it was accepted."""
        c.trades += 1
        if self.trade_validator is None:  # a source sent trades nobody configured: judge them
            self.trade_validator = TradeValidator()
        verdict = self.trade_validator.check(trade)
        if verdict.status == "accepted":
            c.trades_accepted += 1
            c.last_error = None
            if trade.correction not in NOTICE_CORRECTIONS:  # a cancel is no last price
                c.last_trade_price = trade.price
                c.last_trade_us = trade.recv_us
                self.latest_trade[trade.symbol] = trade
            self.trades.append(trade.trade_row(self.run_id))
            if verdict.reason:  # a re-anchor: worth a line in the log
                log.info("%s trades: %s", trade.symbol, verdict.reason)
            return True
        if verdict.status == "duplicate":
            c.trade_duplicates += 1
        else:
            c.trade_rejects += 1
            self.trade_rejects.append(
                (*trade.as_row(), self.run_id, verdict.rule, verdict.reason, now_us())
            )
        return False

    def receive(self, quote: Quote | Trade) -> None:
        """Validate one polled quote or trade and buffer it (a row or a reject); health
        counts it."""
        c = self.counters[quote.symbol]
        if type(quote) is Trade:
            try:
                fresh = self.judge_trade(quote, c)
            except Exception:  # a bug: the trade is counted lost, the supervisor restarts us
                c.trades -= 1
                c.trades_lost += 1
                raise
            self.symbol_health[quote.symbol].record_success(fresh=fresh)
            self.collector_health.record_success(fresh=fresh)
            if self.full():
                self.flush()
            return
        try:
            fresh = self.judge(quote, c)  # type: ignore[arg-type]
        except Exception:  # a bug: the quote is counted lost, the supervisor restarts us
            c.lost += 1
            raise
        self.symbol_health[quote.symbol].record_success(fresh=fresh)
        self.collector_health.record_success(fresh=fresh)
        if self.full():
            self.flush()

    def receive_batch(self, symbol: str, quotes: list[Quote | Trade]) -> None:
        """Validate a run of quotes (and trades) from one call; health counts them once.

        What ``judge`` does per quote, with the accepted path inlined: the symbol's
        counters and latest quote are settled before each flush and at the end, so
        a reader never sees more rows handed to the writer than quotes accepted. A
        full buffer is flushed only while the writer has room: a self-paced source is
        paced by the database (its driver waits for room), never spilled to backup.
        Trades (a replay of a trades file) take ``judge_trade``.
        """
        c = self.counters[symbol]
        check = self.validator.check
        run_id = self.run_id
        ticks = self.ticks
        band = self._band_quotes
        room = self.buffer_size - len(ticks) - len(self.rejects)
        room -= len(self.trades) + len(self.trade_rejects)
        fresh = False
        seen = accepted = 0
        last: Quote | None = None
        i = 0
        try:
            for i, q in enumerate(quotes):  # noqa: B007 (i is read after a failure)
                if type(q) is Trade:
                    fresh = self.judge_trade(q, c) or fresh
                    room -= 1
                else:
                    seen += 1
                    v = check(q)
                    if v is ACCEPTED or v.status == "accepted":
                        ticks.append(q.tick_row(run_id))
                        room -= 1
                        accepted += 1
                        last = q
                        if v.reason:  # a re-anchor: worth a line in the log
                            log.info("%s: %s", q.symbol, v.reason)
                        if band:
                            self.trade_validator.note_quote(q.symbol, q.bid, q.ask, q.ts_us)
                    elif v.status == "duplicate":
                        c.duplicates += 1
                    else:
                        c.rejects += 1
                        self.rejects.append((*q.as_row(), run_id, v.rule, v.reason, now_us()))
                        room -= 1
                if room <= 0:
                    c.quotes += seen
                    seen = 0
                    if last is not None:
                        self._settle(c, last, accepted)
                        fresh = True
                        accepted = 0
                        last = None
                    if self.has_room():
                        self.flush()
                        ticks = self.ticks
                        room = self.buffer_size - len(ticks) - len(self.rejects)
                        room -= len(self.trades) + len(self.trade_rejects)
                    else:  # the writer is behind: buffer on, the driver waits for room
                        room = _RECHECK_ROWS
        except Exception:
            # a bug met mid-batch: what was judged counts; the item that raised and the
            # rest of the batch are counted lost, each by its kind (the supervisor
            # restarts the task)
            failed = quotes[i]
            if type(failed) is Trade:
                c.trades -= 1  # judge_trade counted it before it raised
            else:
                seen -= 1
            c.quotes += seen
            c.accepted += accepted
            rest = quotes[i:]
            lost_trades = sum(1 for x in rest if type(x) is Trade)
            c.trades_lost += lost_trades
            c.lost += len(rest) - lost_trades
            raise
        c.quotes += seen
        if last is not None:
            self._settle(c, last, accepted)
            fresh = True
        n = len(quotes)
        self.symbol_health[symbol].record_success(fresh=fresh, count=n)
        self.collector_health.record_success(fresh=fresh, count=n)

    def _settle(self, c: SymbolCounters, last: Quote, accepted: int) -> None:
        c.accepted += accepted
        c.last_price = last.price
        c.last_quote_us = last.recv_us
        c.last_error = None
        self.latest[last.symbol] = last

    # -- rows beside the quotes ---------------------------------------------------------

    def event(self, sql: str, row: Row) -> None:
        """An event row (breaker change, gap, health, run) written with the next batch."""
        self.events.append((sql, row))

    def error(
        self,
        component: str,
        error: BaseException | str,
        *,
        symbol: str | None = None,
        error_type: str | None = None,
        checker: HealthChecker | None = None,
        message: str | None = None,
    ) -> str:
        """One error: a failed operation of ``checker``, a recent error, an error row (its
        text ``message`` when given); returns the row's scrubbed message."""
        if isinstance(error, BaseException):
            etype, text = error_type or type(error).__name__, scrub(error)
        else:
            etype, text = error_type or "Error", scrub(error)
        message = text if message is None else scrub(message)
        if checker is not None:
            checker.record_failure(error)
        self.monitor.record_error(component, error, symbol=symbol)
        self.event(INSERT_ERROR, (self.run_id, now_us(), component, symbol, etype, message))
        return message

    # -- out to the writer --------------------------------------------------------------

    def take_batch(self) -> Batch | None:
        """Everything buffered as one batch (the buffers start empty again), or None."""
        if self.writer is None or not (
            self.ticks or self.rejects or self.events or self.trades or self.trade_rejects
        ):
            return None
        events = []
        while self.events:
            events.append(self.events.popleft())
        batch = Batch(
            self.ticks,
            self.rejects,
            events,
            trades=self.trades,
            trade_rejects=self.trade_rejects,
        )
        self.ticks, self.rejects = [], []
        self.trades, self.trade_rejects = [], []
        return batch

    def flush(self) -> None:
        """Hand what is buffered to the writer (its queue never blocks for long)."""
        batch = self.take_batch()
        if batch is not None:
            assert self.writer is not None
            self.writer.submit(batch)

    def has_room(self) -> bool:
        """False while the writer's queue is full (backpressure for a self-paced source)."""
        return self.writer is None or self.writer.has_room()
