"""The database writer: one thread owns the database connection and writes batches.

The collector hands over batches through a bounded queue; each batch is one
transaction. A failing or slow database sends the batch to the backup files
(when a ``BackupWriter`` is given), the database's own breaker stops the writer
from waiting on a database that is down, and when it is back the backup files
are replayed. Nothing accepted is dropped silently: what cannot be written
anywhere is held in memory within a bound, counted and reported.

Supervision: any exception while writing a batch rolls the transaction back and
sends the batch to backup (a value the driver refuses is first retried cleaned by
``boundary.safe_row``); an unexpected exception anywhere in the writer's loop is
logged with its traceback, counted (``WriterStats.crashes``) and the loop resumes
after a short backoff with a fresh connection; from that crash until the restarted
loop has run one full cycle the writer reports ``restarting`` (health: UNHEALTHY,
CRITICAL when it crash-loops), and a crash series logs its traceback once. A
watchdog thread cuts a database call that runs past ``write_timeout`` plus a grace
(a PostgreSQL server process that stopped answering), so the writer reconnects or
goes to backup.

Ordering guarantee: batches become durable (committed to the database, or written
and fsynced to a backup file) in the order they were submitted; a batch is never
made durable while an earlier one is only in memory, so a crash never leaves a
newer batch saved and an older one lost. How:

- the writer thread takes batches from the queue one at a time under the order
  lock and finishes each (database or backup) before taking the next;
- ``submit`` never waits on I/O: it takes only ``_submit_lock``, held for list and
  queue operations alone. When the queue is full the batch joins an in-memory
  overflow list (and every later batch follows it there, so none overtakes it);
  the spill thread moves the overflow into the queue as room appears. When the
  writer has taken nothing from the queue for ``queue_full_block_ms`` (a slow, locked
  or hung database), or the overflow outgrows ``max_overflow_batches`` (default four
  queues' worth), it takes the order lock (waiting for at most the batch the writer
  has in hand, itself bounded by the write timeout and the watchdog) and writes
  everything queued, then the overflow, to the backup files, in order;
- a replay never holds the order lock: between replay chunks the writer writes the
  queued batches, so a large backlog never fills the queue or stalls collection.

Event rows (errors, health, breaker events) ride along with batches and are not
part of the guarantee.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

from robust_collector.boundary import clean_text, safe_row
from robust_collector.errors import StorageError
from robust_collector.storage.backend import Backend, SQLiteBackend
from robust_collector.storage.tables import INSERT_BREAKER_EVENT, INSERT_ERROR, INSERT_HEALTH

__all__ = [  # the INSERT_* event statements come from storage.tables, kept importable here
    "INSERT_BREAKER_EVENT",
    "INSERT_ERROR",
    "INSERT_HEALTH",
    "Batch",
    "Fallback",
    "Gate",
    "SQLiteWriter",
    "StorageWriter",
    "WriterStats",
]

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one transaction writes: accepted ticks, rejects, event rows, accepted trades
    and trade rejects (the last two added after the others: positional callers still work)."""

    ticks: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    trade_rejects: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        """The data rows (every kind but events): what must never be lost."""
        return len(self.ticks) + len(self.rejects) + len(self.trades) + len(self.trade_rejects)


class Fallback(Protocol):
    """Where batches go while the database fails (the JSONL backup files)."""

    def write_batch(
        self,
        ticks: list[tuple[Any, ...]],
        rejects: list[tuple[Any, ...]],
        trades: list[tuple[Any, ...]] = ...,
        trade_rejects: list[tuple[Any, ...]] = ...,
    ) -> int: ...

    def rotate(self) -> None: ...

    def close(self) -> None: ...


class Gate(Protocol):
    """The database's circuit breaker, as the writer uses it."""

    def before_call(self) -> Any: ...

    def on_success(self, token: Any) -> None: ...

    def on_failure(self, token: Any, exc: BaseException) -> None: ...


@dataclass(frozen=True)
class WriterStats:
    """What the writer did so far; ``mode`` is database, backup or failing."""

    mode: str
    queue_depth: int
    queue_capacity: int
    batches_written: int
    ticks_written: int
    rejects_written: int
    batches_to_backup: int
    ticks_to_backup: int
    rejects_to_backup: int
    held_batches: int
    held_rows: int
    queue_full_waits: int
    queue_full_spills: int
    replayed_rows: int
    events_dropped: int
    lost_rows: int
    db_errors: int
    backup_errors: int
    last_error: str | None
    stored_by_symbol: dict[str, int]
    backup_files: int
    crashes: int = 0  # unexpected exceptions the writer's supervision caught
    alive: bool = True  # the writer thread runs (False before start and after stop)
    restarting: bool = False  # its loop crashed and has not yet run a full cycle again
    restarting_since: float | None = None  # wall-clock seconds: the crash that began it
    restarts: int = 0  # times the loop was restarted after a crash
    last_crash: str | None = None  # the last unexpected exception, as text
    overflow_batches: int = 0  # submitted while the queue was full, not yet queued or spilled
    trades_written: int = 0
    trade_rejects_written: int = 0
    trades_to_backup: int = 0
    trade_rejects_to_backup: int = 0
    trades_stored_by_symbol: dict[str, int] = field(default_factory=dict)
    reopened_at: float | None = None  # wall-clock seconds: the database file was reopened
    reopen_reason: str | None = None  # why (deleted, replaced, its folder removed)


_STOP = object()
_CRASH_BACKOFF_MAX = 2.0
_FILE_CHECK_IDLE_S = 0.25  # how often an idle writer checks its database file


class StorageWriter:
    """Writes batches to a database from its own thread, falling back to backup files.

    ``target`` is a SQLite file path or a ``Backend`` (e.g. ``PostgresBackend``).
    ``queue_full_block_ms`` is how long a full queue may go without the writer taking a
    batch before the waiting batches are spilled to backup (``submit`` itself never
    waits); ``clock`` (monotonic seconds) and ``watchdog_grace`` drive the watchdog.
    """

    def __init__(
        self,
        target: str | Path | Backend,
        *,
        write_timeout: float = 5.0,
        queue_max_batches: int = 64,
        queue_full_block_ms: float = 200.0,
        fallback: Fallback | None = None,
        gate: Gate | None = None,
        replay: Callable[[Any], tuple[int, int]] | None = None,
        backlog: Callable[[], int] | None = None,
        replay_on_start: bool = True,
        on_error: Callable[[str, BaseException], None] | None = None,
        on_written: Callable[[int], None] | None = None,
        max_held_batches: int = 1024,
        max_held_events: int = 10_000,
        max_overflow_batches: int | None = None,
        watchdog_grace: float = 1.0,
        watchdog_poll: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(target, str | Path):
            target = SQLiteBackend(target, timeout=write_timeout)
        self.backend: Backend = target
        self._db_errors = (*target.errors, OSError)
        self._data_errors: tuple[type[BaseException], ...] = getattr(target, "data_errors", ())
        self.write_timeout = write_timeout
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max_batches)
        self._capacity = queue_max_batches
        self._block = queue_full_block_ms / 1000.0
        self._fallback = fallback
        self._gate = gate
        self._replay = replay
        self._backlog = backlog
        # backup files left by earlier runs are replayed after the first good write
        self._replay_due = replay_on_start and replay is not None and self._backup_files() > 0
        self._replay_pending = False
        self._closed = False
        self._stopping = False
        self._on_error = on_error
        self._on_written = on_written
        self._held: deque[Batch] = deque()
        self._max_held = max_held_batches
        self._events: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=max_held_events)
        self._lock = threading.Lock()  # guards the fallback, used by the spill thread too
        # held while one batch is taken from the queue and written, and by a spill:
        # keeps batches durable in the order they were submitted (never across a replay)
        self._order_lock = threading.Lock()
        # held by submit only for in-memory work: the queue and the overflow list
        self._submit_lock = threading.Lock()
        self._overflow: deque[Any] = deque()
        self._overflow_since = 0.0
        self._max_overflow = max_overflow_batches or 4 * queue_max_batches
        self._last_take = time.monotonic()  # when the writer last took a queued batch
        self._spill_wake = threading.Event()
        self._room = threading.Event()
        self._spill_exit = False
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._spill_thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self._watch_exit = threading.Event()
        self._clock = clock
        self._watch_limit = write_timeout + watchdog_grace
        self._watch_poll = watchdog_poll
        self._watch: tuple[int, float] | None = None  # (call id, deadline) of the call running
        self._watch_calls = 0
        self._watch_fired: int | None = None  # the call id the watchdog cut
        self._conn: Any = None
        self._ready = threading.Event()
        self._alive = False
        self._restarting = False  # from a loop crash until a full cycle ran again
        self._restarting_since: float | None = None
        self._restarts = 0
        self.restart_delay = 0.0  # the wait before the last restart (doubles within a series)
        self._stop_requested = threading.Event()  # set by stop(): ends a restart's wait
        self._chunk_done = False  # in a replay step: a chunk before this one committed
        self._reopened: tuple[float, str] | None = None  # the last database file reopen
        self._last_crash: str | None = None
        self._in_replay = False
        self._last_file_check = 0.0
        self._mode = "database"
        self._n = Counter[str]()
        self._stored_by_symbol = Counter[str]()
        self._trades_by_symbol = Counter[str]()
        self._last_error: str | None = None

    # -- producer side -----------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (it opens the database itself), the spill thread and
        the watchdog."""
        self._alive = True
        self._thread = threading.Thread(target=self._run, name="rc-writer", daemon=True)
        self._spill_thread = threading.Thread(
            target=self._spill_loop, name="rc-writer-spill", daemon=True
        )
        self._watch_thread = threading.Thread(
            target=self._watch_loop, name="rc-writer-watchdog", daemon=True
        )
        self._thread.start()
        self._spill_thread.start()
        self._watch_thread.start()
        self._ready.wait(timeout=self.write_timeout + 5)

    def submit(self, batch: Batch) -> None:
        """Queue a batch without ever waiting on I/O (safe on the event loop): a full
        queue hands it to the spill thread, behind every batch submitted before it."""
        with self._submit_lock:
            late = self._closed
            if not late:
                if not self._overflow:
                    try:
                        self._queue.put_nowait(batch)
                    except queue.Full:
                        pass
                    else:
                        self._wakeup.set()
                        return
                if not self._overflow:
                    self._overflow_since = time.monotonic()
                self._overflow.append(batch)
                self._n["queue_full_waits"] += 1
        if late:
            # the writer thread is gone (stop timed out): save it directly, or count it lost
            self._late(batch)
            return
        self._spill_wake.set()

    def has_room(self) -> bool:
        """Whether a batch submitted now would be queued, not overflow (a lock-free peek):
        a self-paced producer (a replay at full speed) waits for room instead of making
        the writer spill a flood of good batches to backup."""
        return not self._overflow and not self._queue.full()

    def request_replay(self) -> None:
        """Replay the backup folder after the next good write (e.g. a file another
        component spilled there and has closed); safe from any thread."""
        if self._replay is not None:
            self._replay_due = True
            self._wakeup.set()

    def _spill_loop(self) -> None:
        """The spill thread: moves the overflow into the queue, or spills it in order."""
        while not self._spill_exit:
            self._spill_wake.wait(0.5)
            self._spill_wake.clear()
            try:
                self._drain_overflow()
            except Exception as exc:  # supervised: never let the spill path die
                self._crashed(exc, where="spill thread")

    def _drain_overflow(self) -> None:
        """Feed the overflow into the queue while the writer makes progress; spill it
        (with the queue) when the writer took nothing for ``queue_full_block_ms`` or the
        overflow outgrows its bound."""
        while not self._spill_exit:
            self._room.clear()  # before looking: a take after this wakes the wait below
            with self._submit_lock:
                while self._overflow:
                    try:
                        self._queue.put_nowait(self._overflow[0])
                    except queue.Full:
                        break
                    self._overflow.popleft()
                    self._wakeup.set()
                if not self._overflow:
                    return
                stalled = time.monotonic() - max(self._last_take, self._overflow_since)
                too_big = len(self._overflow) > self._max_overflow
            if stalled < self._block and not too_big:
                self._room.wait(min(self._block - stalled, 0.05))
                continue
            self._spill()

    def _spill(self) -> None:
        """Send every queued batch, then the overflow, to the backup files, in order.

        Taken under the order lock, so the writer is not halfway through an older
        batch: a crash never leaves a newer batch saved and an older one lost.
        """
        with self._order_lock:
            with self._submit_lock:
                items = []
                while True:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                items.extend(self._overflow)
                self._overflow.clear()
                batches = [item for item in items if item is not _STOP]
                if len(batches) < len(items):  # the stop marker goes back, after them
                    self._queue.put_nowait(_STOP)
            self._room.set()
            self._backup_held()
            for item in batches:
                self._n["queue_full_spills"] += 1
                if self._held:  # an older batch is only in memory: keep the order
                    self._hold(item)
                else:
                    self._to_fallback(item)
        self._wakeup.set()

    def _backup_held(self) -> None:
        """Save held batches (older than anything spilled) to backup first, in order."""
        while self._held:
            if not self._save_to_backup(self._held[0]):
                return
            self._held.popleft()
        if self._mode == "failing":
            self._mode = "backup"

    def stop(self, timeout: float | None = None) -> bool:
        """Write everything queued, then close the database and the backup file.

        Returns False when the writer thread did not finish within ``timeout``;
        batches submitted after that go straight to the backup files (or are
        counted as lost), never into a queue nobody reads.
        """
        if self._thread is None:
            return True
        with self._submit_lock:
            if not self._overflow:
                try:
                    self._queue.put_nowait(_STOP)
                except queue.Full:
                    self._overflow_since = time.monotonic()
                    self._overflow.append(_STOP)
            else:
                self._overflow.append(_STOP)
        self._spill_wake.set()
        self._stop_requested.set()
        self._wakeup.set()
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        with self._submit_lock:
            self._closed = True
            leftovers = []  # the queue's batches are older than the overflow's
            while True:
                try:
                    leftovers.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            leftovers.extend(self._overflow)
            self._overflow.clear()
        self._spill_exit = True
        self._spill_wake.set()
        self._room.set()
        if self._spill_thread is not None:
            # a spill waiting for a stuck writer's batch finishes on its own later
            self._spill_thread.join(timeout if finished else 0.5)
        if not finished:
            log.error("writer: still writing after %ss at stop", timeout)
        else:
            self._thread = None
        # anything left (the writer gave up or never got to it), oldest first
        for item in leftovers:
            if item is not _STOP:
                self._late(item)
        return finished

    def _late(self, batch: Batch) -> None:
        if not len(batch):
            return
        if self._save_to_backup(batch, close=True):
            return
        self._n["lost_rows"] += len(batch)
        log.error("writer stopped: %d rows could not be saved", len(batch))

    # -- writer thread -------------------------------------------------------------

    def _run(self) -> None:
        """The supervised writer loop: an unexpected exception restarts it, never ends it."""
        try:
            try:
                self._open()
            except Exception as exc:
                self._crashed(exc, where="open")
            finally:
                self._ready.set()
            backoff = 0.05
            while True:
                try:
                    self._loop()
                    break
                except Exception as exc:
                    again = self._restarting  # no full cycle since the last crash
                    if not again:  # a new series: the loop ran well since the last one
                        self._restarting_since = time.time()
                        backoff = 0.05
                    self._restarting = True
                    self._restarts += 1
                    self._crashed(exc, where="loop", again=again)
                    self._reset_connection()
                    # paced restarts: only a stop ends the wait early (a new batch sets
                    # _wakeup at the flush rate, which made a crash loop unpaced)
                    self.restart_delay = backoff
                    self._stop_requested.wait(backoff)
                    backoff = min(backoff * 2, _CRASH_BACKOFF_MAX)
            try:
                with self._order_lock:
                    self._retry_held(final=True)
                    self._check_file()  # a file removed after the last write is saved too
                    self._close()
            except Exception as exc:
                self._crashed(exc, where="stop")
        finally:
            self._alive = False
            self._watch_exit.set()

    def _loop(self) -> None:
        while not self._stopping and not self._closed:
            self._wakeup.wait(0.25)
            self._wakeup.clear()
            wrote = self._service_queue()
            if self._stopping or self._closed:
                break
            if self._replay_pending and self._conn is not None:
                self._replay_step()
                self._wakeup.set()  # more files may wait: do not sleep in between
            elif not wrote:
                with self._order_lock:
                    self._idle()
            self._restarting = False  # a full cycle ran: a restart is over
        self._service_queue(drain=True)  # what was queued before and after the stop marker

    def _service_queue(self, *, drain: bool = False) -> bool:
        """Write the queued batches, one at a time under the order lock; True if any.

        While a replay is pending, at most the batches queued when it became so (unless
        ``drain``): a queue that collection keeps full must not starve the backlog, which
        gets its step (or its next chunk) between such rounds."""
        wrote = False
        left: int | None = None
        while True:
            if left is None and not drain and self._replay_pending:
                left = max(1, self._queue.qsize())
            if left is not None and left <= 0:
                return wrote
            with self._order_lock:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return wrote
                self._last_take = time.monotonic()
                self._room.set()
                if left is not None:
                    left -= 1
                if item is _STOP:
                    self._stopping = True
                    drain, left = True, None  # write what was queued before and after it
                    continue
                self._write(item)
                wrote = True

    def _crashed(self, exc: BaseException, *, where: str, again: bool = False) -> None:
        """An unexpected exception: counted, recorded, logged with its traceback (once per
        crash series: ``again`` is a crash before the restarted loop ran a full cycle)."""
        self._n["crashes"] += 1
        self._last_crash = clean_text(f"{type(exc).__name__}: {exc}", 300)
        if again:
            log.error("writer: crashed again in the %s (%s); restarting", where, self._last_crash)
        else:
            log.error("writer: unexpected error in the %s (recovering)", where, exc_info=exc)
        self._record("storage", exc, counter="crashes_recorded")

    def _reset_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self.backend.close(conn)
            except Exception:
                log.exception("writer: closing the connection after a crash failed")

    def _open(self) -> bool:
        if self._conn is not None:
            return True
        try:
            conn = self.backend.connect()
        except self._db_errors as exc:
            self._record("storage", exc, db=True)
            return False
        self._conn = conn
        self._last_file_check = self._clock()
        return True

    def _check_file(self) -> None:
        """Is the open database still the one at its path? Reopen (and say so) if not."""
        ensure = getattr(self.backend, "ensure_file", None)
        if ensure is None or self._conn is None:
            return
        self._last_file_check = self._clock()
        try:
            conn, message = ensure(self._conn)
        except self._db_errors as exc:
            self._reset_connection()
            self._record("storage", exc, db=True)
            return
        self._conn = conn
        if message:
            log.error("writer: %s", message)
            self._reopened = (time.time(), message)
            self._record("storage", StorageError(message), db=True)

    def _drop_broken(self) -> None:
        # a lost server connection is reopened on the next try (the breaker paces it)
        if self._conn is not None and self.backend.broken(self._conn):
            self.backend.close(self._conn)
            self._conn = None

    def _close(self) -> None:
        if self._fallback is not None:
            with self._lock:
                try:
                    self._fallback.close()
                except OSError as exc:
                    self._record("backup", exc)
        if self._conn is not None:
            self.backend.close(self._conn)
            self._conn = None

    def _idle(self) -> None:
        self._retry_held()
        if self._conn is not None and (self._clock() - self._last_file_check >= _FILE_CHECK_IDLE_S):
            self._check_file()
        if self._mode != "database" and self._events:
            self._try_db(Batch())

    def _write(self, batch: Batch) -> None:
        try:
            if self._held:
                self._retry_held()
            if self._held:
                self._hold(batch)
                return
            if self._try_db(batch):
                return
        except Exception as exc:  # whatever happened, the batch in hand is saved below
            self._crashed(exc, where="batch write")
            self._drop_broken()
        self._to_fallback(batch)

    def _is_data_error(self, exc: BaseException) -> bool:
        """True when ``exc`` says "these values cannot be stored", not "the database is out"."""
        if isinstance(exc, self._data_errors):
            return True
        return not isinstance(exc, (*self._db_errors, TimeoutError))

    def _attempt(
        self, batch: Batch, events: list[tuple[str, tuple[Any, ...]]]
    ) -> BaseException | None:
        """One transaction (the batch's rows and ``events``) under the deadline and the
        watchdog; the exception, or None."""
        conn = self._conn
        call = self._watch_arm()
        try:
            self.backend.set_deadline(conn, self.write_timeout)
            self.backend.write(
                conn,
                batch.ticks,
                batch.rejects,
                events,
                trades=batch.trades,
                trade_rejects=batch.trade_rejects,
            )
        except Exception as exc:
            return self._cut_by_watchdog(call, exc)
        finally:
            self._watch_disarm()
        return None

    def _try_db(self, batch: Batch) -> bool:
        """Write ``batch`` (and any held event rows) in one transaction; True if committed."""
        token = None
        if self._gate is not None:
            try:
                token = self._gate.before_call()
            except Exception:  # breaker open: do not wait on the database
                return False
        was_down = self._mode != "database"
        if self._conn is not None:
            self._check_file()
        if not self._open():
            if self._gate is not None:
                self._gate.on_failure(token, RuntimeError("cannot open database"))
            return False
        # event rows and rejects carry outside text and numbers: always bounded (they are
        # few); ticks and trades from the hot path are clean, and are cleaned only if refused
        if batch.events:
            batch.events = [(sql, safe_row(row)) for sql, row in batch.events]
        if batch.rejects:
            batch.rejects = [safe_row(row) for row in batch.rejects]
        if batch.trade_rejects:
            batch.trade_rejects = [safe_row(row) for row in batch.trade_rejects]
        held_events = len(self._events)
        events = [*self._events, *batch.events]
        exc = self._attempt(batch, events)
        if exc is not None and self._is_data_error(exc):
            batch.ticks = [safe_row(row) for row in batch.ticks]
            batch.trades = [safe_row(row) for row in batch.trades]
            exc = self._attempt(batch, events)
            if exc is not None and self._is_data_error(exc) and events:
                without = self._attempt(batch, [])
                if without is None:
                    # the event rows are what cannot be stored: dropped (counted), not re-sent
                    self._n["events_dropped"] += len(events)
                    log.error(
                        "writer: dropped %d event row(s) the database refuses: %s",
                        len(events),
                        clean_text(f"{type(exc).__name__}: {exc}", 300),
                    )
                    for _ in range(held_events):
                        self._events.popleft()
                    held_events = 0
                    batch.events = []
                    self._record("storage", exc, db=True)
                exc = without
        if exc is not None:
            outage = not self._is_data_error(exc)
            if outage:
                self._drop_broken()
            self._record("storage", exc, db=True)
            if self._gate is not None:
                if outage:
                    self._gate.on_failure(token, exc)
                else:  # the database answered: these rows are the problem, not it
                    self._gate.on_success(token)
            self._keep_events(batch)
            return False
        for _ in range(held_events):
            self._events.popleft()
        if self._gate is not None:
            self._gate.on_success(token)
        self._count_written(batch)
        if was_down or self._replay_due:
            self._mode = "database"
            self._replay_due = False
            self._replay_backups()
        return True

    def _count_written(self, batch: Batch) -> None:
        n = self._n
        n["batches_written"] += 1
        n["ticks_written"] += len(batch.ticks)
        n["rejects_written"] += len(batch.rejects)
        self._stored_by_symbol.update(map(itemgetter(1), batch.ticks))
        if batch.trades or batch.trade_rejects:
            n["trades_written"] += len(batch.trades)
            n["trade_rejects_written"] += len(batch.trade_rejects)
            self._trades_by_symbol.update(map(itemgetter(1), batch.trades))
        if self._on_written is not None and len(batch):
            self._on_written(len(batch))

    def _replay_backups(self) -> None:
        """The database works again: close the backup file and replay the backlog, file by file."""
        if self._replay is None:
            return
        if self._fallback is not None:
            with self._lock:
                try:
                    self._fallback.rotate()
                except OSError as exc:
                    self._record("backup", exc)
        self._replay_pending = True

    def _replay_step(self) -> None:
        """Replay one backup file, without the order lock: between its chunks the writer
        writes queued batches (``before_chunk``), so a large file never stalls collection."""
        if not self._replay_pending or self._replay is None or self._conn is None:
            return
        had_guard = hasattr(self.backend, "guard")
        if had_guard:
            self.backend.guard = self
        self._in_replay = True
        self._chunk_done = False
        call = self._watch_arm()
        try:
            inserted, files = self._replay(self._conn)
        except (*self._db_errors, TimeoutError) as exc:
            exc = self._cut_by_watchdog(call, exc)
            self._drop_broken()
            self._record("storage", exc, db=True)
            # a busy database (a reader's checkpoint, another writer) is no outage:
            # try again after the next good write rather than at the next recovery
            self._replay_pending = False
            self._replay_due = True
            return
        except Exception as exc:
            # not the database: it would fail the same way again; wait for a restart
            log.error("writer: replaying the backup files failed", exc_info=exc)
            self._record("storage", exc, counter="replay_errors")
            self._replay_pending = False
            return
        finally:
            self._in_replay = False
            self._watch_disarm()
            if had_guard:
                self.backend.guard = None
        self._n["replayed_rows"] += inserted
        if files == 0:
            self._replay_pending = False

    # the ChunkGuard the backends' replay sinks call around each chunk

    def before_chunk(self) -> None:
        """Between replay chunks: write what collection queued meanwhile, then a fresh
        watchdog deadline for the chunk."""
        if not self._in_replay or threading.current_thread() is not self._thread:
            return
        if self._chunk_done:  # the previous chunk committed: a long replay after a
            self._restarting = False  # crash is progress, not a restart still going on
        self._chunk_done = True
        self._service_queue()
        self._watch_arm()

    def after_chunk(self) -> None:
        """A chunk ended: the deadline now bounds reading the next one."""
        if self._in_replay and threading.current_thread() is self._thread:
            self._watch_arm()

    # -- the watchdog ----------------------------------------------------------------

    def _watch_arm(self) -> int:
        self._watch_calls += 1
        call = self._watch_calls
        self._watch = (call, self._clock() + self._watch_limit)
        return call

    def _watch_disarm(self) -> None:
        self._watch = None

    def _cut_by_watchdog(self, call: int, exc: BaseException) -> BaseException:
        """``exc``, or a clear TimeoutError when the watchdog cut this call (or, for a
        replay, one of the chunks it armed since)."""
        fired = self._watch_fired
        if fired is None or fired < call:
            return exc
        self._watch_fired = None
        self._reset_connection()  # cut: never reuse it
        err = TimeoutError(
            f"the database ({self.backend.describe()}) did not answer within "
            f"{self._watch_limit:g}s; the connection was cut and will be reopened"
        )
        err.__cause__ = exc
        return err

    def _watch_loop(self) -> None:
        """Cuts a database call that outlives ``write_timeout`` + grace (a hung server)."""
        while not self._watch_exit.wait(self._watch_poll):
            try:
                watch = self._watch
                if watch is None or self._clock() <= watch[1] or self._watch_fired == watch[0]:
                    continue
                conn = self._conn
                if conn is None or self._watch is not watch:
                    continue
                self._watch_fired = watch[0]
                self._n["watchdog_cuts"] += 1
                log.error(
                    "writer: a database call has run past %gs; cutting the connection",
                    self._watch_limit,
                )
                interrupt = getattr(self.backend, "interrupt", None)
                if interrupt is not None:
                    interrupt(conn)
            except Exception:  # the watchdog itself must not die
                log.exception("writer watchdog failed")

    # -- the backup side ---------------------------------------------------------------

    def _to_fallback(self, batch: Batch) -> None:
        self._keep_events(batch)
        if not len(batch):
            return
        if not self._save_to_backup(batch):
            self._hold(batch)

    def _save_to_backup(self, batch: Batch, *, close: bool = False) -> bool:
        """Write ``batch`` to the backup files (flushed, fsynced); False if that failed.

        Rows the encoder cannot hold are cleaned (``safe_row``) and written; rows that
        not even that saves are counted as lost (True: nothing to retry).
        """
        if self._fallback is None:
            return False
        with self._lock:
            try:
                try:
                    self._write_fallback(batch)
                except (TypeError, ValueError, OverflowError, UnicodeError):
                    batch.ticks = [safe_row(tuple(r)) for r in batch.ticks]
                    batch.rejects = [safe_row(tuple(r)) for r in batch.rejects]
                    batch.trades = [safe_row(tuple(r)) for r in batch.trades]
                    batch.trade_rejects = [safe_row(tuple(r)) for r in batch.trade_rejects]
                    self._write_fallback(batch)
                if close:
                    self._fallback.close()
            except OSError as exc:
                self._record("backup", exc)
                return False
            except Exception as exc:
                self._record("backup", exc)
                self._n["lost_rows"] += len(batch)
                log.error("writer: %d rows fit neither the database nor backup", len(batch))
                return True
        if self._mode == "database":
            self._mode = "backup"
        self._n["batches_to_backup"] += 1
        self._n["ticks_to_backup"] += len(batch.ticks)
        self._n["rejects_to_backup"] += len(batch.rejects)
        self._n["trades_to_backup"] += len(batch.trades)
        self._n["trade_rejects_to_backup"] += len(batch.trade_rejects)
        if self._on_written is not None:  # saved, if not where it belongs yet
            self._on_written(len(batch))
        return True

    def _write_fallback(self, batch: Batch) -> None:
        assert self._fallback is not None
        self._fallback.write_batch(
            batch.ticks, batch.rejects, trades=batch.trades, trade_rejects=batch.trade_rejects
        )

    def _keep_events(self, batch: Batch) -> None:
        # event rows wait in memory for the database (bounded: the oldest go first)
        overflow = len(self._events) + len(batch.events) - (self._events.maxlen or 0)
        if overflow > 0:
            self._n["events_dropped"] += overflow
        self._events.extend(batch.events)
        batch.events = []

    def _hold(self, batch: Batch) -> None:
        self._mode = "failing"
        if len(self._held) >= self._max_held:
            # Out of every option: keep the newest data the bound allows, and say so.
            dropped = self._held.popleft()
            self._n["lost_rows"] += len(dropped)
            log.error("writer: dropped a held batch of %d rows (memory bound)", len(dropped))
        self._held.append(batch)

    def _retry_held(self, *, final: bool = False) -> None:
        while self._held:
            batch = self._held[0]
            if self._try_db(batch):
                self._held.popleft()
                continue
            if self._save_to_backup(batch):
                self._held.popleft()
                continue
            break
        if not self._held and self._mode == "failing":
            self._mode = "backup"  # everything held is saved; the database is still out
        if final and self._held:
            lost = sum(len(b) for b in self._held)
            self._n["lost_rows"] += lost
            log.error("writer stopped with %d rows neither in the database nor in backup", lost)

    def _record(
        self,
        component: str,
        exc: BaseException,
        *,
        db: bool = False,
        counter: str | None = None,
    ) -> None:
        self._n[counter or ("db_errors" if db else "backup_errors")] += 1
        self._last_error = clean_text(f"{type(exc).__name__}: {exc}", 500)
        if self._on_error is not None:
            try:
                self._on_error(component, exc)
            except Exception:  # an error callback must never stop the writer
                log.exception("writer error callback failed")

    # -- reporting -----------------------------------------------------------------

    def stats(self) -> WriterStats:
        """A snapshot of the writer's counters (safe from any thread)."""
        n = self._n
        held = list(self._held)
        return WriterStats(
            mode=self._mode,
            queue_depth=self._queue.qsize(),
            queue_capacity=self._capacity,
            batches_written=n["batches_written"],
            ticks_written=n["ticks_written"],
            rejects_written=n["rejects_written"],
            batches_to_backup=n["batches_to_backup"],
            ticks_to_backup=n["ticks_to_backup"],
            rejects_to_backup=n["rejects_to_backup"],
            held_batches=len(held),
            held_rows=sum(len(b) for b in held),
            queue_full_waits=n["queue_full_waits"],
            queue_full_spills=n["queue_full_spills"],
            replayed_rows=n["replayed_rows"],
            events_dropped=n["events_dropped"],
            lost_rows=n["lost_rows"],
            db_errors=n["db_errors"],
            backup_errors=n["backup_errors"],
            last_error=self._last_error,
            stored_by_symbol=dict(self._stored_by_symbol),
            backup_files=self._backup_files(),
            crashes=n["crashes"],
            alive=self._alive,
            restarting=self._restarting and self._alive,
            restarting_since=self._restarting_since if self._restarting else None,
            restarts=self._restarts,
            last_crash=self._last_crash,
            overflow_batches=len(self._overflow),
            trades_written=n["trades_written"],
            trade_rejects_written=n["trade_rejects_written"],
            trades_to_backup=n["trades_to_backup"],
            trade_rejects_to_backup=n["trade_rejects_to_backup"],
            trades_stored_by_symbol=dict(self._trades_by_symbol),
            reopened_at=None if self._reopened is None else self._reopened[0],
            reopen_reason=None if self._reopened is None else self._reopened[1],
        )

    def _backup_files(self) -> int:
        if self._backlog is None:
            return 0
        try:
            return self._backlog()
        except OSError:
            return 0


SQLiteWriter = StorageWriter  # the name before other backends existed
