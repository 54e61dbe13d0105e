"""The dashboard's view model: what it shows, as frozen data, built at a time ``now``.

A ``DashboardView`` is built either from a live collector (a ``LiveCollector``: its immutable
``status()`` and ``health()`` snapshots, recent errors and the breaker
transitions heard by a listener) or from a database written by a collector in
another process. Nothing here touches a widget, so all of it is tested without
a browser or a kernel.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import polars as pl

from robust_collector.health import HealthLevel
from robust_collector.health.report import liveness
from robust_collector.health.store import StoredSnapshot, latest_snapshot
from robust_collector.model import now_us as _wall_us
from robust_collector.secrets import redact
from robust_collector.sources.base import kinds_for
from robust_collector.storage.backup import backlog
from robust_collector.storage.reader import open_reader, reader_errors
from robust_collector.storage.schema import connect

if TYPE_CHECKING:
    from robust_collector.dashboard.live_collector import LiveCollector
    from robust_collector.resilience import BreakerState

STORAGE_ROW = "database"
"""The timeline row of the database's own breaker (named ``storage`` in events)."""

UNKNOWN = "UNKNOWN"
"""The level shown when nothing reports: no health yet, or the collector is not running."""


@dataclass(frozen=True)
class SymbolView:
    """One row of the per-symbol table."""

    symbol: str
    breaker_state: str
    in_state_seconds: float | None
    breaker_reason: str | None
    level: str | None
    last_price: float | None
    stored: int
    rejects: int
    errors: int
    data_age_seconds: float | None
    trades_stored: int | None = None  # None: this symbol collects no trades
    trade_rejects: int = 0


@dataclass(frozen=True)
class StorageView:
    """Where accepted ticks go now, and how much waits in backup files."""

    mode: str
    queue_depth: int | None = None
    queue_capacity: int | None = None
    backup_files: int = 0
    backup_bytes: int = 0
    ticks_to_backup: int = 0
    replayed_rows: int = 0
    held_rows: int = 0
    lost_rows: int = 0
    last_error: str | None = None
    backup_path: str | None = None
    breaker_state: str | None = None
    breaker_since_us: int | None = None


@dataclass(frozen=True)
class ErrorView:
    """One recent error (the message is already redacted, not yet HTML-escaped)."""

    ts_us: int
    component: str
    symbol: str | None
    error_type: str
    message: str


@dataclass(frozen=True)
class BreakerEvent:
    """One breaker transition."""

    ts_us: int
    symbol: str
    old_state: str
    new_state: str
    reason: str = ""


@dataclass(frozen=True)
class DashboardView:
    """Everything the dashboard shows at ``now_us``; ``origin`` is ``live`` or ``database``."""

    now_us: int
    origin: str
    run_id: str | None
    running: bool
    started_us: int | None
    database: str
    level: str
    reasons: tuple[str, ...]
    symbols: tuple[SymbolView, ...]
    storage: StorageView
    errors: tuple[ErrorView, ...]
    breaker_events: tuple[BreakerEvent, ...] = ()
    stored: int = 0
    rejects: int = 0
    error_count: int = 0
    health_us: int | None = None
    trades_stored: int = 0
    trade_rejects: int = 0
    note: str | None = None
    ended_us: int | None = None  # a run that is over: its stop (or last report); None: on

    @property
    def icon(self) -> str:
        """The level's icon (❔ for ``UNKNOWN``)."""
        return HealthLevel[self.level].icon if self.level in HealthLevel.__members__ else "❔"

    @property
    def end_us(self) -> int:
        """Where the run's durations end: ``ended_us`` for a run that is over, else now."""
        return self.now_us if self.ended_us is None else min(self.now_us, self.ended_us)

    @property
    def uptime_seconds(self) -> float | None:
        """Seconds the run ran: since it started until now, or until it stopped (``None``
        before it started)."""
        return None if self.started_us is None else max(0.0, (self.end_us - self.started_us) / 1e6)

    def symbol(self, name: str) -> SymbolView:
        """The row of ``name``; ``KeyError`` if it is not collected."""
        for s in self.symbols:
            if s.symbol == name:
                return s
        raise KeyError(name)


class Feed(Protocol):
    """Where a dashboard gets its views: a live collector or a database."""

    def view(self, now_us: int | None = None) -> DashboardView: ...

    def finished(self, view: DashboardView) -> bool: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- live


class BreakerLog:
    """Breaker transitions heard by a registry listener, kept in a bounded deque.

    The listener runs on whichever thread made the breaker change (usually the
    collector's); it only appends, so it never waits and never touches a widget.
    """

    def __init__(self, maxlen: int = 5000) -> None:
        self._events: deque[BreakerEvent] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def __call__(self, name: str, old: BreakerState, new: BreakerState, reason: str) -> None:
        event = BreakerEvent(_wall_us(), str(name), str(old.value), str(new.value), redact(reason))
        with self._lock:
            self._events.append(event)

    def extend(self, events: Iterable[BreakerEvent]) -> None:
        """Add earlier transitions (e.g. read back from the database)."""
        with self._lock:
            merged = sorted([*events, *self._events], key=lambda e: e.ts_us)
            self._events.clear()
            self._events.extend(merged)

    def events(self, since_us: int | None = None) -> tuple[BreakerEvent, ...]:
        """The transitions at or after ``since_us`` (all when ``None``), oldest first."""
        with self._lock:
            evs = tuple(self._events)
        if since_us is None:
            return evs
        return tuple(e for e in evs if e.ts_us >= since_us)


def _backup_backlog(path: str | None) -> tuple[int, int]:
    if not path:
        return 0, 0
    try:
        return backlog(path)
    except OSError:
        return 0, 0


def view_from_collector(
    collector: LiveCollector,
    *,
    now_us: int | None = None,
    max_errors: int = 20,
    breaker_events: Iterable[BreakerEvent] = (),
) -> DashboardView:
    """The view of a live collector: its ``status()``, ``health()`` and recent errors."""
    breaker_events = tuple(breaker_events)
    st = collector.status()
    health = collector.health()
    now = _wall_us() if now_us is None else now_us
    levels = {c.name: c.level.name for c in health.components}
    rows = []
    for s in st.symbols.values():
        since = s.breaker_since_us if s.breaker_since_us is not None else st.started_us
        rows.append(
            SymbolView(
                symbol=s.symbol,
                breaker_state=s.breaker_state,
                in_state_seconds=None if since is None else max(0.0, (now - since) / 1e6),
                breaker_reason=s.breaker_reason,
                level=levels.get(s.symbol),
                last_price=s.last_price,
                stored=s.stored,
                rejects=s.rejects,
                errors=s.errors,
                data_age_seconds=None
                if s.last_quote_us is None
                else max(0.0, (now - s.last_quote_us) / 1e6),
                trades_stored=s.trades_stored if s.trades else None,
                trade_rejects=s.trade_rejects,
            )
        )
    backup_cfg = collector.config.realtime_data.backup
    backup_path = str(backup_cfg.backup_path) if backup_cfg.enabled else None
    files, size = _backup_backlog(backup_path)
    sb = getattr(collector, "storage_breaker", None)  # the database's breaker, once started
    sb_state = sb_since = None
    if sb is not None:
        stats = sb.stats
        sb_state, sb_since = stats.state.value, now - int(stats.time_in_state * 1e6)
    ws = st.storage
    if ws is None:
        storage = StorageView(
            "not started", backup_files=files, backup_bytes=size, backup_path=backup_path
        )
    else:
        storage = StorageView(
            mode=ws.mode,
            queue_depth=ws.queue_depth,
            queue_capacity=ws.queue_capacity,
            backup_files=max(files, ws.backup_files),
            backup_bytes=size,
            ticks_to_backup=ws.ticks_to_backup,
            replayed_rows=ws.replayed_rows,
            held_rows=ws.held_rows,
            lost_rows=ws.lost_rows,
            last_error=None if ws.last_error is None else redact(ws.last_error),
            backup_path=backup_path,
            breaker_state=sb_state,
            breaker_since_us=sb_since,
        )
    errs = collector.errors(limit=max_errors) if max_errors > 0 else None
    errors: tuple[ErrorView, ...] = ()
    if errs is not None and errs.height:
        ts = errs["ts"]
        micros = ts.dt.epoch("us") if ts.dtype.is_temporal() else (ts * 1e6).cast(pl.Int64)
        errs = errs.with_columns(micros.alias("ts"))
        errors = tuple(
            ErrorView(int(t), comp, sym, et, msg)
            for t, comp, sym, et, msg in reversed(
                errs.select("ts", "component", "symbol", "error_type", "message").rows()
            )
        )
    started = st.started_us is not None
    level, reasons, note = health.level.name, tuple(health.reasons), None
    if not started:
        level, reasons, note = UNKNOWN, ("the collector has not been started",), "not started"
    elif not st.running:
        note = "stopped"
    return DashboardView(
        now_us=now,
        origin="live",
        run_id=st.run_id,
        running=st.running,
        started_us=st.started_us,
        database=st.database,
        level=level,
        reasons=reasons,
        symbols=tuple(rows),
        storage=storage,
        errors=errors,
        breaker_events=breaker_events,
        stored=st.stored,
        rejects=st.rejects,
        error_count=st.errors,
        trades_stored=st.trades_stored,
        trade_rejects=st.trade_rejects,
        health_us=int(health.ts * 1e6),
        note=note,
    )


class LiveFeed:
    """Views of a collector in this process; listens to its breakers while open."""

    def __init__(
        self, collector: LiveCollector, *, max_errors: int = 20, window_seconds: float = 300.0
    ) -> None:
        self.collector = collector
        self.max_errors = max_errors
        self.window_seconds = window_seconds
        self.log = BreakerLog()
        self._registry = collector.breakers
        self._storage_breaker: Any = None
        attached = _wall_us()
        if self._registry is not None:
            self._registry.add_listener(self.log)
        self._attach_storage()
        self.log.extend(_stored_events(collector.db_path, collector.run_id, before_us=attached))

    def _attach_storage(self) -> None:
        # the database's breaker exists once the collector has started
        sb = getattr(self.collector, "storage_breaker", None)
        if sb is not None and self._storage_breaker is None:
            sb.add_listener(self.log)
            self._storage_breaker = sb

    def view(self, now_us: int | None = None) -> DashboardView:
        """The collector's view now, with the breaker transitions of the last window."""
        self._attach_storage()
        now = _wall_us() if now_us is None else now_us
        since = now - int(self.window_seconds * 1e6)
        return view_from_collector(
            self.collector,
            now_us=now,
            max_errors=self.max_errors,
            breaker_events=self.log.events(since),
        )

    def finished(self, view: DashboardView) -> bool:
        """True once the collector has started and stopped again."""
        return view.started_us is not None and not view.running

    def close(self) -> None:
        """Stop listening to the breakers."""
        if self._registry is not None:
            self._registry.remove_listener(self.log)
            self._registry = None
        if self._storage_breaker is not None:
            self._storage_breaker.remove_listener(self.log)
            self._storage_breaker = None


def _stored_events(db: Path | str, run_id: str, *, before_us: int) -> list[BreakerEvent]:
    """Transitions of ``run_id`` already in the database (a dashboard opened mid-run);
    ``db`` is a SQLite file or a PostgreSQL URL."""
    try:
        conn = open_reader(db)
    except (*reader_errors(), OSError):  # no database yet, or the server is down
        return []
    try:
        rows = conn.execute(
            "SELECT ts_us, breaker, old_state, new_state, reason FROM breaker_events "
            "WHERE run_id = ? AND ts_us < ? ORDER BY ts_us, id",
            (run_id, before_us),
        ).fetchall()
    except reader_errors():
        return []
    finally:
        conn.close()
    return [BreakerEvent(*r) for r in rows]


# --------------------------------------------------------------------------- database


@dataclass
class _RunCursor:
    """What a ``DatabaseFeed`` has counted so far for one run (read incrementally)."""

    run_id: str
    started_us: int
    symbols: tuple[str, ...]
    config: Mapping[str, Any]
    tick_rowid: int = -1
    reject_rowid: int = -1
    trade_rowid: int = -1
    trade_reject_rowid: int = -1
    error_id: int = -1
    event_id: int = 0
    ticks: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    trades: Counter[str] = field(default_factory=Counter)
    trade_rejects: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_total: int = 0
    recent_errors: deque[ErrorView] = field(default_factory=lambda: deque(maxlen=200))
    events: deque[BreakerEvent] = field(default_factory=lambda: deque(maxlen=5000))
    last_event: dict[str, BreakerEvent] = field(default_factory=dict)

    def setting(self, *keys: str, default: Any = None) -> Any:
        node: Any = self.config
        for k in keys:
            if not isinstance(node, Mapping) or k not in node:
                return default
            node = node[k]
        return node

    def collects_trades(self, symbol: str) -> bool:
        """True when the run's config has ``symbol`` collect trades (``source.data`` or
        ``source.data_by_symbol``)."""
        source = self.setting("source", default=None)
        return "trades" in kinds_for(source if isinstance(source, Mapping) else {}, symbol)


# rows of a run may carry exchange times a little older than the run's start
_TS_MARGIN_US = 3600 * 1_000_000


class DatabaseFeed:
    """Views of the newest run (or ``run_id``) in a database another process writes.

    Counts are read incrementally (by rowid), so a refresh stays cheap on a large
    database; breaker states come from the ``breaker_events`` table (written every
    flush); levels, reasons and storage state from the newest health snapshot of the
    run: the heartbeat file beside the database (rewritten every second, even while
    the database is locked) when it is newer than the stored rows (written every
    ``check_interval_seconds``).
    """

    def __init__(
        self,
        db: str | Path,
        *,
        run_id: str | None = None,
        max_errors: int = 20,
        window_seconds: float = 300.0,
    ) -> None:
        self.db = Path(db)
        self.pinned_run = run_id
        self.max_errors = max_errors
        self.window_seconds = window_seconds
        self._cursor: _RunCursor | None = None

    def finished(self, view: DashboardView) -> bool:
        """Never: a watcher keeps watching (a new run may start); close it to stop."""
        return False

    def close(self) -> None:
        """Nothing to release (each refresh opens and closes its own connection)."""

    def view(self, now_us: int | None = None) -> DashboardView:
        """The database's view now (a read-only snapshot, consistent across tables)."""
        now = _wall_us() if now_us is None else now_us
        if not self.db.exists():
            return _empty_view(now, str(self.db), f"no database at {self.db}")
        conn = connect(self.db, readonly=True)
        try:
            conn.execute("BEGIN")  # one WAL snapshot for every query below
            try:
                return self._read(conn, now)
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return _empty_view(now, str(self.db), "not a collector database (no tables)")
                raise
        finally:
            conn.close()

    def _latest(self, run_id: str) -> StoredSnapshot | None:
        """The newest snapshot of ``run_id``, the heartbeat's or the database's (``None``:
        none of this run, or nothing readable right now)."""
        try:
            snap = latest_snapshot(self.db)
        except Exception:  # no heartbeat, and the database is unreadable right now
            return None
        return snap if snap is not None and snap.run_id == run_id else None

    def _run(self, conn: sqlite3.Connection) -> _RunCursor | None:
        if self.pinned_run is not None:
            row = conn.execute(
                "SELECT run_id, started_us, symbols, config FROM runs WHERE run_id = ?",
                (self.pinned_run,),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT run_id, started_us, symbols, config FROM runs "
                "ORDER BY started_us DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        if self._cursor is None or self._cursor.run_id != row[0]:
            try:
                config = orjson.loads(row[3])
            except orjson.JSONDecodeError:
                config = {}
            self._cursor = _RunCursor(row[0], row[1], tuple(orjson.loads(row[2])), config)
        return self._cursor

    def _read(self, conn: sqlite3.Connection, now: int) -> DashboardView:
        cur = self._run(conn)
        if cur is None:
            return _empty_view(now, str(self.db), "no collector run recorded yet")
        self._count(conn, cur, "ticks", "tick_rowid", cur.ticks)
        self._count(conn, cur, "rejects", "reject_rowid", cur.rejects)
        if any(cur.collects_trades(sym) for sym in cur.symbols):
            self._count(conn, cur, "trades", "trade_rowid", cur.trades)
            self._count(conn, cur, "trade_rejects", "trade_reject_rowid", cur.trade_rejects)
        self._read_errors(conn, cur)
        self._read_events(conn, cur)
        status, stopped_us = conn.execute(
            "SELECT status, stopped_us FROM runs WHERE run_id = ?", (cur.run_id,)
        ).fetchone()
        snap_ts, snap = _snapshot(conn, cur.run_id)
        latest = self._latest(cur.run_id) if status == "running" else None
        if latest is not None and latest.ts_us > (snap_ts or 0):
            # the heartbeat's snapshot is seconds old; the stored one may be a minute old
            snap_ts, snap = latest.ts_us, _components(latest)

        last: dict[str, tuple[int, float | None]] = {}
        for sym in cur.symbols:
            row = conn.execute(
                "SELECT recv_us, bid, ask, last FROM ticks WHERE symbol = ? AND run_id = ? "
                "ORDER BY ts_us DESC LIMIT 1",
                (sym, cur.run_id),
            ).fetchone()
            if row is not None:
                recv, bid, ask, lastp = row
                price = (
                    lastp
                    if lastp is not None
                    else ((bid + ask) / 2 if bid is not None and ask is not None else None)
                )
                last[sym] = (recv, price)

        interval = float(
            cur.setting("realtime_data", "health_check", "check_interval_seconds", default=60.0)
        )
        poll = float(cur.setting("realtime_data", "collect_interval_seconds", default=1.0))
        activity = max(
            [cur.started_us, snap_ts or 0]
            + [t for t, _ in last.values()]
            + [e.ts_us for e in cur.last_event.values()]
            + [e.ts_us for e in list(cur.recent_errors)[-1:]]
        )
        quiet_limit = max(2.5 * interval, 5 * poll, 10.0)
        running = status == "running" and (now - activity) / 1e6 <= quiet_limit
        if latest is not None:
            # the heartbeat (every second, with the pid) says better than activity
            running = liveness(latest, now).running
        # a run that is over stops its clocks: at its recorded stop, else its last report
        ended = None
        if not running:
            ended = stopped_us if status == "stopped" and stopped_us else activity
        end = now if ended is None else min(now, ended)

        comps = {name: (lvl, reasons, metrics) for name, lvl, reasons, metrics in snap}
        rows = []
        for sym in cur.symbols:
            ev = cur.last_event.get(sym)
            metrics = comps.get(sym, (None, (), {}))[2]
            if ev is not None:
                state, since, reason = ev.new_state, ev.ts_us, ev.reason
            else:
                state = metrics.get("breaker_state") or "CLOSED"
                since, reason = cur.started_us, None
            recv, price = last.get(sym, (None, None))
            rows.append(
                SymbolView(
                    symbol=sym,
                    breaker_state=state,
                    in_state_seconds=max(0.0, (end - since) / 1e6),
                    breaker_reason=reason,
                    level=comps.get(sym, (None,))[0],
                    last_price=price,
                    stored=cur.ticks[sym],
                    rejects=cur.rejects[sym],
                    errors=cur.errors[sym],
                    data_age_seconds=None if recv is None else max(0.0, (now - recv) / 1e6),
                    trades_stored=cur.trades[sym] if cur.collects_trades(sym) else None,
                    trade_rejects=cur.trade_rejects[sym],
                )
            )

        backup_path = cur.setting("realtime_data", "backup", "backup_path")
        if not cur.setting("realtime_data", "backup", "enabled", default=True):
            backup_path = None
        files, size = _backup_backlog(backup_path)
        sm = comps.get("storage", (None, (), {}))[2]
        sb = cur.last_event.get("storage")
        storage = StorageView(
            mode=str(sm.get("storage_mode") or "unknown"),
            queue_depth=sm.get("queue_depth"),
            queue_capacity=None,
            backup_files=files,
            backup_bytes=size,
            ticks_to_backup=int(sm.get("ticks_to_backup") or 0),
            held_rows=int(sm.get("held_rows") or 0),
            lost_rows=int(sm.get("lost_rows") or 0),
            last_error=sm.get("last_error"),
            backup_path=backup_path,
            breaker_state="CLOSED" if sb is None else sb.new_state,
            breaker_since_us=cur.started_us if sb is None else sb.ts_us,
        )

        level, reasons, note = UNKNOWN, (), None
        system = comps.get("system")
        if not running:
            when = ended if ended is not None else activity
            last_level = system[0] if system else None
            reasons = (
                f"the collector is not running (run {cur.run_id}; last report at "
                f"{_clock(when)} UTC" + (f"; last level {last_level})" if last_level else ")"),
            )
            note = "not running"
        elif system is None:
            reasons = (f"no health snapshot yet (one every {interval:g}s)",)
        else:
            level, reasons = system[0], tuple(system[1])
            newer = [
                e
                for e in cur.last_event.values()
                if e.new_state in ("OPEN", "HALF_OPEN")
                and snap_ts is not None
                and e.ts_us > snap_ts
            ]
            if newer and HealthLevel[level] < HealthLevel.DEGRADED:
                level = HealthLevel.DEGRADED.name
            reasons += tuple(
                f"{e.symbol}: breaker {e.new_state} since {_clock(e.ts_us)} ({e.reason}) "
                "[newer than the last health check]"
                for e in newer
            )
        since = now - int(self.window_seconds * 1e6)
        return DashboardView(
            now_us=now,
            origin="database",
            run_id=cur.run_id,
            running=running,
            started_us=cur.started_us,
            database=str(self.db),
            level=level,
            reasons=reasons,
            symbols=tuple(rows),
            storage=storage,
            errors=tuple(reversed(list(cur.recent_errors)[-self.max_errors :]))
            if self.max_errors > 0
            else (),
            breaker_events=tuple(e for e in cur.events if e.ts_us >= since),
            stored=sum(cur.ticks.values()),
            rejects=sum(cur.rejects.values()),
            error_count=cur.error_total,
            trades_stored=sum(cur.trades.values()),
            trade_rejects=sum(cur.trade_rejects.values()),
            health_us=snap_ts,
            note=note,
            ended_us=ended,
        )

    @staticmethod
    def _count(
        conn: sqlite3.Connection, cur: _RunCursor, table: str, attr: str, counts: Counter[str]
    ) -> None:
        hi = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
        lo = getattr(cur, attr)
        if lo < 0:  # first read: the (symbol, ts_us) index narrows it to this run's time
            marks = ",".join("?" * len(cur.symbols)) or "''"
            rows = conn.execute(
                f"SELECT symbol, count(*) FROM {table} WHERE symbol IN ({marks}) "
                "AND ts_us >= ? AND run_id = ? AND rowid <= ? GROUP BY symbol",
                (*cur.symbols, cur.started_us - _TS_MARGIN_US, cur.run_id, hi),
            ).fetchall()
        elif hi > lo:
            rows = conn.execute(
                f"SELECT symbol, count(*) FROM {table} WHERE rowid > ? AND rowid <= ? "
                "AND run_id = ? GROUP BY symbol",
                (lo, hi, cur.run_id),
            ).fetchall()
        else:
            rows = []
        for sym, n in rows:
            counts[sym] += n
        setattr(cur, attr, hi)

    def _read_errors(self, conn: sqlite3.Connection, cur: _RunCursor) -> None:
        hi = conn.execute("SELECT max(id) FROM errors").fetchone()[0] or 0
        if cur.error_id < 0:
            lo_ts = cur.started_us - _TS_MARGIN_US
            for sym, n in conn.execute(
                "SELECT symbol, count(*) FROM errors WHERE ts_us >= ? AND run_id = ? AND id <= ? "
                "GROUP BY symbol",
                (lo_ts, cur.run_id, hi),
            ):
                cur.errors[sym or ""] += n
                cur.error_total += n
            rows = conn.execute(
                "SELECT ts_us, component, symbol, error_type, message FROM errors "
                "WHERE ts_us >= ? AND run_id = ? AND id <= ? ORDER BY id DESC LIMIT ?",
                (lo_ts, cur.run_id, hi, cur.recent_errors.maxlen),
            ).fetchall()
            cur.recent_errors.extend(ErrorView(*r) for r in reversed(rows))
        elif hi > cur.error_id:
            for r in conn.execute(
                "SELECT ts_us, component, symbol, error_type, message FROM errors "
                "WHERE id > ? AND id <= ? AND run_id = ? ORDER BY id",
                (cur.error_id, hi, cur.run_id),
            ):
                cur.errors[r[2] or ""] += 1
                cur.error_total += 1
                cur.recent_errors.append(ErrorView(*r))
        cur.error_id = hi

    @staticmethod
    def _read_events(conn: sqlite3.Connection, cur: _RunCursor) -> None:
        for i, ts, name, old, new, reason in conn.execute(
            "SELECT id, ts_us, breaker, old_state, new_state, reason FROM breaker_events "
            "WHERE id > ? AND run_id = ? ORDER BY id",
            (cur.event_id, cur.run_id),
        ):
            ev = BreakerEvent(ts, name, old, new, reason)
            cur.events.append(ev)
            cur.last_event[name] = ev
            cur.event_id = i


def _snapshot(
    conn: sqlite3.Connection, run_id: str
) -> tuple[int | None, list[tuple[str, str, list[str], dict[str, Any]]]]:
    head = conn.execute(
        "SELECT ts_us FROM health_snapshots WHERE component = 'system' AND run_id = ? "
        "ORDER BY ts_us DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    if head is None:
        return None, []
    rows = conn.execute(
        "SELECT component, level, reasons, metrics FROM health_snapshots "
        "WHERE run_id = ? AND ts_us = ? ORDER BY id",
        (run_id, head[0]),
    ).fetchall()
    return head[0], [(c, lvl, orjson.loads(r), orjson.loads(m)) for c, lvl, r, m in rows]


def _components(
    snap: StoredSnapshot,
) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """``snap`` as the rows ``_snapshot`` reads: the system row, then each component's."""
    rows = [("system", snap.level.name, list(snap.reasons), {"kind": "system"})]
    rows += [(c.name, c.level.name, list(c.reasons), dict(c.metrics)) for c in snap.components]
    return rows


def _clock(us: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%H:%M:%S")


def _empty_view(now: int, database: str, reason: str) -> DashboardView:
    return DashboardView(
        now_us=now,
        origin="database",
        run_id=None,
        running=False,
        started_us=None,
        database=database,
        level=UNKNOWN,
        reasons=(reason,),
        symbols=(),
        storage=StorageView("unknown"),
        errors=(),
        note="no data",
    )


def view_from_database(
    db: str | Path, *, now_us: int | None = None, run_id: str | None = None, max_errors: int = 20
) -> DashboardView:
    """One view of the newest run (or ``run_id``) in ``db``, read from scratch."""
    return DatabaseFeed(db, run_id=run_id, max_errors=max_errors).view(now_us)


# --------------------------------------------------------------------------- rates, timeline


@dataclass(frozen=True)
class RateSeries:
    """Ticks, rejects, trades and trade rejects per second between successive samples
    (one point per sample)."""

    times_us: tuple[int, ...]
    ticks_per_second: tuple[float, ...]
    rejects_per_second: tuple[float, ...]
    trades_per_second: tuple[float, ...] = ()
    trade_rejects_per_second: tuple[float, ...] = ()


class RateHistory:
    """A bounded deque of ``(time, stored, rejects, trades, trade rejects)`` samples; rates
    are their differences."""

    def __init__(self, window_seconds: float = 300.0, maxlen: int = 4096) -> None:
        self.window_us = int(window_seconds * 1e6)
        self._samples: deque[tuple[int, int, int, int, int]] = deque(maxlen=maxlen)

    def add(self, view: DashboardView) -> None:
        """Add the view's totals as a sample."""
        self.add_sample(
            view.now_us, view.stored, view.rejects, view.trades_stored, view.trade_rejects
        )

    def add_sample(
        self, t_us: int, stored: int, rejects: int, trades: int = 0, trade_rejects: int = 0
    ) -> None:
        """Add a sample; an older time is ignored, falling totals (a new run) restart."""
        s = self._samples
        sample = (t_us, stored, rejects, trades, trade_rejects)
        if s and t_us <= s[-1][0]:
            return
        if s and any(a < b for a, b in zip(sample[1:], s[-1][1:], strict=True)):
            s.clear()
        s.append(sample)
        cutoff = t_us - self.window_us
        while len(s) > 2 and s[1][0] < cutoff:
            s.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def series(self, smooth_seconds: float = 0.0) -> RateSeries:
        """Rates at each sample's time: the change since the previous sample, or, with
        ``smooth_seconds``, since the oldest sample at least that long before (batched
        writes make successive differences jumpy)."""
        s = list(self._samples)
        span = int(smooth_seconds * 1e6)
        times: list[int] = []
        rates: tuple[list[float], ...] = ([], [], [], [])
        j = 0
        for i in range(1, len(s)):
            t1 = s[i][0]
            while j + 1 < i and s[j + 1][0] <= t1 - span:
                j += 1
            before = s[j] if span else s[i - 1]
            dt = (t1 - before[0]) / 1e6
            times.append(t1)
            for k, out in enumerate(rates, start=1):
                out.append((s[i][k] - before[k]) / dt)
        return RateSeries(tuple(times), *(tuple(r) for r in rates))


@dataclass(frozen=True)
class Segment:
    """One stretch of one breaker in one state (for the timeline)."""

    symbol: str
    state: str
    start_us: int
    end_us: int
    reason: str = ""


def breaker_segments(view: DashboardView, window_seconds: float = 300.0) -> tuple[Segment, ...]:
    """Each symbol's breaker states over the last ``window_seconds`` before ``view.now_us``."""
    now = view.now_us
    end = view.end_us  # times in state end here (a stopped run's stop)
    start = now - int(window_seconds * 1e6)
    if view.started_us is not None:
        start = max(start, view.started_us)
    by_symbol: dict[str, list[BreakerEvent]] = {}
    for e in sorted(view.breaker_events, key=lambda e: e.ts_us):
        if start <= e.ts_us <= now:
            by_symbol.setdefault(e.symbol, []).append(e)
    rows = [(r.symbol, r.breaker_state, r.in_state_seconds, r.breaker_reason) for r in view.symbols]
    st = view.storage
    if st.breaker_state is not None:
        since = st.breaker_since_us
        rows.append(
            (STORAGE_ROW, st.breaker_state, None if since is None else (end - since) / 1e6, None)
        )
        by_symbol[STORAGE_ROW] = by_symbol.pop("storage", [])
    out: list[Segment] = []
    for name, current, in_state, current_reason in rows:
        evs = by_symbol.get(name, [])
        if evs:
            state = evs[0].old_state
        elif in_state is not None and end - in_state * 1e6 > start:
            state = "CLOSED"  # breakers start closed; the change to this state went unheard
        else:
            state = current
        t, reason = start, ""
        for e in evs:
            if e.ts_us > t:
                out.append(Segment(name, state, t, e.ts_us, reason))
            state, t, reason = e.new_state, e.ts_us, e.reason
        if state != current and in_state is not None:
            # a transition we did not hear: trust the snapshot from its "since"
            since = max(t, end - int(in_state * 1e6))
            if since > t:
                out.append(Segment(name, state, t, since, reason))
            state, t, reason = current, since, current_reason or ""
        if now > t:
            out.append(Segment(name, state, t, now, reason))
    return tuple(out)
