"""The database writer: one thread owns the database connection and writes batches.

The collector hands over batches through a bounded queue; each batch is one
transaction. A failing or slow database sends the batch to the backup files
(when a ``BackupWriter`` is given), the database's own breaker stops the writer
from waiting on a database that is down, and when it is back the backup files
are replayed first. Nothing accepted is dropped silently: what cannot be written
anywhere is held in memory within a bound, counted and reported.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

from robust_collector.storage.backend import Backend, SQLiteBackend

log = logging.getLogger(__name__)

INSERT_ERROR = (
    "INSERT INTO errors (run_id, ts_us, component, symbol, error_type, message) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_BREAKER_EVENT = (
    "INSERT INTO breaker_events (run_id, ts_us, breaker, old_state, new_state, reason) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_HEALTH = (
    "INSERT INTO health_snapshots (run_id, ts_us, component, level, reasons, metrics) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass
class Batch:
    """What one transaction writes: accepted ticks, rejects, and event rows."""

    ticks: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ticks) + len(self.rejects)


class Fallback(Protocol):
    """Where batches go while the database fails (the JSONL backup files)."""

    def write_batch(self, ticks: list[tuple[Any, ...]], rejects: list[tuple[Any, ...]]) -> int: ...

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


_STOP = object()


class StorageWriter:
    """Writes batches to a database from its own thread, falling back to backup files.

    ``target`` is a SQLite file path or a ``Backend`` (e.g. ``PostgresBackend``).
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
    ) -> None:
        if isinstance(target, str | Path):
            target = SQLiteBackend(target, timeout=write_timeout)
        self.backend: Backend = target
        self._db_errors = (*target.errors, OSError)
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
        self._on_error = on_error
        self._on_written = on_written
        self._held: deque[Batch] = deque()
        self._max_held = max_held_batches
        self._events: deque[tuple[str, tuple[Any, ...]]] = deque(maxlen=max_held_events)
        self._lock = threading.Lock()  # guards the fallback, used by producer spills too
        # held while a batch is taken from the queue and written, and by a spill:
        # keeps batches durable in the order they were submitted
        self._order_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._ready = threading.Event()
        self._mode = "database"
        self._n = Counter[str]()
        self._stored_by_symbol = Counter[str]()
        self._last_error: str | None = None

    # -- producer side -----------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (it opens the database itself)."""
        self._thread = threading.Thread(target=self._run, name="rc-writer", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=self.write_timeout + 5)

    def submit(self, batch: Batch) -> None:
        """Queue a batch; a full queue blocks at most ``queue_full_block_ms``, then spills."""
        if self._closed:
            # the writer thread is gone (stop timed out): save it directly, or count it lost
            self._late(batch)
            return
        try:
            self._queue.put_nowait(batch)
            self._wakeup.set()
            return
        except queue.Full:
            self._n["queue_full_waits"] += 1
        try:
            self._queue.put(batch, timeout=self._block)
            self._wakeup.set()
        except queue.Full:
            self._spill(batch)

    def request_replay(self) -> None:
        """Replay the backup folder after the next good write (e.g. a file another
        component spilled there and has closed); safe from any thread."""
        if self._replay is not None:
            self._replay_due = True
            self._wakeup.set()

    def _spill(self, batch: Batch) -> None:
        """Send every queued batch, then ``batch``, to the backup files, in order.

        Taken under the order lock, so the writer is not halfway through an older
        batch: a crash never leaves a newer batch saved and an older one lost.
        """
        with self._order_lock:
            queued = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:  # keep the stop marker for the writer thread
                    self._queue.put_nowait(item)
                    break
                queued.append(item)
            for item in (*queued, batch):
                self._n["queue_full_spills"] += 1
                self._to_fallback(item)
        self._wakeup.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Write everything queued, then close the database and the backup file.

        Returns False when the writer thread did not finish within ``timeout``;
        batches submitted after that go straight to the backup files (or are
        counted as lost), never into a queue nobody reads.
        """
        if self._thread is None:
            return True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.error("writer: queue still full at stop; its batches go to backup")
        self._wakeup.set()
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        self._closed = True
        if not finished:
            log.error("writer: still writing after %ss at stop", timeout)
        else:
            self._thread = None
        # anything left in the queue (the writer gave up or never got to it)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._late(item)
        return finished

    def _late(self, batch: Batch) -> None:
        if not batch.ticks and not batch.rejects:
            return
        if self._save_to_backup(batch, close=True):
            return
        self._n["lost_rows"] += len(batch)
        log.error("writer stopped: %d rows could not be saved", len(batch))

    # -- writer thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
        finally:
            self._ready.set()
        stopping = False
        while not stopping:
            self._wakeup.wait(0.25)
            self._wakeup.clear()
            wrote = False
            while True:
                # one batch at a time under the order lock: a spill waits for it
                with self._order_lock:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        continue  # write what was queued before and after the marker
                    self._write(item)
                    wrote = True
                    if self._replay_pending:
                        self._replay_step()
            if not wrote and not stopping:
                with self._order_lock:
                    self._idle()
                    if self._replay_pending:
                        self._replay_step()
                        self._wakeup.set()  # more files may wait: do not sleep in between
        with self._order_lock:
            self._retry_held(final=True)
            self._close()

    def _open(self) -> bool:
        if self._conn is not None:
            return True
        try:
            conn = self.backend.connect()
        except self._db_errors as exc:
            self._record("storage", exc, db=True)
            return False
        self._conn = conn
        return True

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
        if self._mode != "database" and self._events:
            self._try_db(Batch())

    def _write(self, batch: Batch) -> None:
        if self._held:
            self._retry_held()
        if self._held:
            self._hold(batch)
            return
        if not self._try_db(batch):
            self._to_fallback(batch)

    def _try_db(self, batch: Batch) -> bool:
        """Write ``batch`` (and any held event rows) in one transaction; True if committed."""
        token = None
        if self._gate is not None:
            try:
                token = self._gate.before_call()
            except Exception:  # breaker open: do not wait on the database
                return False
        was_down = self._mode != "database"
        if not self._open():
            if self._gate is not None:
                self._gate.on_failure(token, RuntimeError("cannot open database"))
            return False
        conn = self._conn
        assert conn is not None
        held_events = len(self._events)
        events = [*self._events, *batch.events]
        try:
            self.backend.set_deadline(conn, self.write_timeout)
            self.backend.write(conn, batch.ticks, batch.rejects, events)
        except (*self._db_errors, TimeoutError) as exc:
            self._drop_broken()
            self._record("storage", exc, db=True)
            if self._gate is not None:
                self._gate.on_failure(token, exc)
            if not batch.ticks and not batch.rejects:
                return False
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
        if self._on_written is not None and (batch.ticks or batch.rejects):
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
        """Replay one backup file; new batches are written between files, so a large
        backlog never stalls collection (or a spill waiting for the writer)."""
        if not self._replay_pending or self._replay is None or self._conn is None:
            return
        try:
            with self._lock:
                inserted, files = self._replay(self._conn)
        except self._db_errors as exc:
            self._drop_broken()
            self._record("storage", exc, db=True)
            # a busy database (a reader's checkpoint, another writer) is no outage:
            # try again after the next good write rather than at the next recovery
            self._replay_pending = False
            self._replay_due = True
            return
        self._n["replayed_rows"] += inserted
        if files == 0:
            self._replay_pending = False

    def _to_fallback(self, batch: Batch) -> None:
        self._keep_events(batch)
        if not batch.ticks and not batch.rejects:
            return
        if not self._save_to_backup(batch):
            self._hold(batch)

    def _save_to_backup(self, batch: Batch, *, close: bool = False) -> bool:
        """Write ``batch`` to the backup files (flushed, fsynced); False if that failed."""
        if self._fallback is None:
            return False
        with self._lock:
            try:
                self._fallback.write_batch(batch.ticks, batch.rejects)
                if close:
                    self._fallback.close()
            except OSError as exc:
                self._record("backup", exc)
                return False
        if self._mode == "database":
            self._mode = "backup"
        self._n["batches_to_backup"] += 1
        self._n["ticks_to_backup"] += len(batch.ticks)
        self._n["rejects_to_backup"] += len(batch.rejects)
        if self._on_written is not None:  # saved, if not where it belongs yet
            self._on_written(len(batch))
        return True

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

    def _record(self, component: str, exc: BaseException, *, db: bool = False) -> None:
        self._n["db_errors" if db else "backup_errors"] += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
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
        )

    def _backup_files(self) -> int:
        if self._backlog is None:
            return 0
        try:
            return self._backlog()
        except OSError:
            return 0


SQLiteWriter = StorageWriter  # the name before other backends existed
