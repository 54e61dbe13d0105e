"""Health snapshots and errors as database rows, and read back from any process.

The collector writes one ``health_snapshots`` row per component per check (plus a
``system`` row for the overall level); ``robust-collector health`` and the
notebooks read them back here, so they work against a collector running
elsewhere. Beside a SQLite database it also rewrites a small heartbeat file
(pid, host, when written, how often) so another process can tell a live
collector from a dead one within seconds, even while the database is locked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from robust_collector.boundary import clean_text
from robust_collector.health.levels import ComponentHealth, HealthLevel, HealthSnapshot
from robust_collector.storage.backend import is_postgres_url
from robust_collector.storage.reader import (
    missing_table,
    open_reader,
    query_frame,
    reader_errors,
    with_datetimes,
)
from robust_collector.storage.tables import ERRORS, HEALTH, INSERT_HEALTH

SYSTEM = "system"
_WRITE_LOCK = threading.Lock()


def _jsonable(value: Any) -> Any:
    """A metric value orjson always encodes: NaN as null, text cleaned (a lone surrogate
    in a reason or error text must not kill the health loop)."""
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, str):
        return clean_text(value)
    return value


def _texts(values: Any) -> list[str]:
    return [clean_text(v) for v in values]


def snapshot_rows(snapshot: HealthSnapshot, run_id: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows (as writer events) that record ``snapshot``."""
    ts_us = int(snapshot.ts * 1_000_000)
    rows = [
        (
            INSERT_HEALTH,
            (
                run_id,
                ts_us,
                SYSTEM,
                snapshot.level.name,
                orjson.dumps(_texts(snapshot.reasons)).decode(),
                orjson.dumps({"kind": "system"}).decode(),
            ),
        )
    ]
    for c in snapshot.components:
        metrics = {k: _jsonable(v) for k, v in c.metrics.items()}
        metrics["kind"] = c.kind
        rows.append(
            (
                INSERT_HEALTH,
                (
                    run_id,
                    ts_us,
                    clean_text(c.name),
                    c.level.name,
                    orjson.dumps(_texts(c.reasons)).decode(),
                    orjson.dumps(metrics, option=orjson.OPT_NON_STR_KEYS).decode(),
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot read back from the database or the heartbeat file, with its run.

    ``heartbeat_us`` is the collector's last sign of life when the heartbeat file
    says more than the snapshot's own time (the file is rewritten more often than
    snapshots are stored); ``heartbeat_interval_seconds`` is how often that happens.
    """

    run_id: str
    ts_us: int
    level: HealthLevel
    reasons: tuple[str, ...]
    components: tuple[ComponentHealth, ...]
    run_status: str
    run_stopped_us: int | None
    check_interval_seconds: float
    pid: int | None
    host: str | None
    heartbeat_us: int | None = None
    heartbeat_interval_seconds: float | None = None
    pid_ns: str | None = None
    pid_start: str | None = None

    @property
    def last_seen_us(self) -> int:
        """The newest sign of life: the snapshot or a later heartbeat."""
        return max(self.ts_us, self.heartbeat_us or 0)

    @property
    def beat_interval_seconds(self) -> float:
        """How often a sign of life is due (the heartbeat's, else the snapshots')."""
        return self.heartbeat_interval_seconds or self.check_interval_seconds


def _open(db: str | Path) -> Any:
    return open_reader(db)


def _run_info(conn: Any, run_id: str) -> tuple[str, int | None, float, Any, Any]:
    row = conn.execute(
        "SELECT status, stopped_us, config, pid, host FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    if row is None:
        return "unknown", None, 60.0, None, None
    status, stopped, config, pid, host = row
    try:
        interval = float(
            orjson.loads(config)["realtime_data"]["health_check"]["check_interval_seconds"]
        )
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        interval = 60.0
    return status, stopped, interval, pid, host


def heartbeat_path(db: str | Path) -> Path:
    """The file beside the database where a collector also writes each snapshot."""
    return Path(f"{db}.health.json")


def pid_namespace() -> str | None:
    """This process's PID namespace (Linux), so a reader in another container on the
    same host name does not judge a pid it cannot see."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or ``None`` if unknown.

    Recorded with the pid, it tells a recycled pid from the collector itself."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def write_heartbeat(
    db: str | Path,
    snapshot: HealthSnapshot,
    run_id: str,
    interval: float,
    *,
    heartbeat_interval: float | None = None,
    status: str = "running",
) -> None:
    """Write ``snapshot`` beside the database, atomically: health stays readable while
    the database itself is locked, read-only or gone. Nothing for a PostgreSQL URL
    (no file to put it beside: the fleet view reads the stored snapshots).

    ``interval`` is the run's ``check_interval_seconds``; ``heartbeat_interval`` is
    how often the caller rewrites this file (default: ``interval``), so a reader
    knows when a missing beat means a dead collector. ``status="stopped"`` marks
    the run's end (see ``mark_heartbeat_stopped``)."""
    if is_postgres_url(db) or not sidecar_allowed(db):
        return
    target = heartbeat_path(db)
    pid = os.getpid()
    now = time.time_ns() // 1000
    data = {
        "run_id": clean_text(run_id),
        "ts_us": int(snapshot.ts * 1_000_000),
        "written_us": now,
        "heartbeat_interval_seconds": float(heartbeat_interval or interval),
        "status": status,
        "stopped_us": now if status == "stopped" else None,
        "level": snapshot.level.name,
        "reasons": _texts(snapshot.reasons),
        "check_interval_seconds": interval,
        "pid": pid,
        "host": socket.gethostname(),
        "pid_ns": pid_namespace(),
        "pid_start": process_start(pid),
        "components": [
            {
                "name": clean_text(c.name),
                "kind": c.kind,
                "level": c.level.name,
                "reasons": _texts(c.reasons),
                "metrics": {k: _jsonable(v) for k, v in c.metrics.items()},
            }
            for c in snapshot.components
        ],
    }
    _replace_file(target, orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))


def sidecar_allowed(db: str | Path) -> bool:
    """True when a file may be put beside ``db``: the database is a regular file, or does
    not exist yet in a real folder (never ``/dev/null.health.json`` or ``/tmp.health.json``)."""
    p = Path(db)
    try:
        return stat.S_ISREG(p.stat().st_mode)
    except FileNotFoundError:
        return p.parent.is_dir()
    except OSError:
        return False


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _replace_file(target: Path, data: bytes) -> None:
    """Write ``target`` atomically; the lock keeps two threads (health loop, heartbeat
    timer, stop) from moving each other's half-written temp file into place. The temp
    file is created new (``O_EXCL | O_NOFOLLOW``): a symlink planted at its name is
    removed, never followed, and a target that is not a regular file is left alone."""
    tmp = target.with_name(target.name + ".tmp")
    with _WRITE_LOCK:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(target.lstat().st_mode):
                raise OSError(errno.EEXIST, "not a regular file: left alone", str(target))
        try:
            fd = os.open(tmp, _NEW_FILE, 0o644)
        except FileExistsError:  # a stale temp file, or something planted: unlink, never follow
            os.unlink(tmp)
            fd = os.open(tmp, _NEW_FILE, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


HEARTBEAT_MAX_BYTES = 16 << 20  # far above a real one (1000 symbols: about 1 MB)
_WARNED: set[str] = set()


def _heartbeat_bytes(target: Path) -> bytes | None:
    """The heartbeat file's bytes, or ``None`` when there is none to read.

    Opened ``O_NOFOLLOW | O_NONBLOCK`` and checked to be a regular file, and read up to
    ``HEARTBEAT_MAX_BYTES``: a symlink, FIFO or device planted at its name is never
    followed, never blocks and never fills memory; it counts as no heartbeat, with one
    warning per path per process (the database then decides)."""
    from robust_collector.storage.backup import open_regular

    try:
        with open_regular(target) as f:
            raw = f.read(HEARTBEAT_MAX_BYTES + 1)
        if len(raw) <= HEARTBEAT_MAX_BYTES:
            return raw
        why = f"larger than {HEARTBEAT_MAX_BYTES >> 20} MB"
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL):
            why = "not a regular file (a symlink, FIFO or device is never read)"
        else:
            why = exc.strerror or type(exc).__name__
    key = str(target)
    if key not in _WARNED:
        _WARNED.add(key)
        logging.getLogger(__name__).warning(
            "heartbeat file %s ignored: %s; health comes from the database", clean_text(key), why
        )
    return None


def mark_heartbeat_stopped(db: str | Path, run_id: str) -> bool:
    """Mark the heartbeat file of ``run_id`` as a cleanly stopped run (its last level kept).

    For the collector's ``stop()``: if the database cannot record the stop (locked,
    gone), ``health`` still reads "stopped" rather than "died". Returns whether a
    file of that run was marked."""
    if is_postgres_url(db) or not sidecar_allowed(db):
        return False
    target = heartbeat_path(db)
    raw = _heartbeat_bytes(target)
    if raw is None:
        return False
    try:
        data = orjson.loads(raw)
        if data.get("run_id") != run_id:
            return False
        now = time.time_ns() // 1000
        data.update(status="stopped", stopped_us=now, written_us=now)
        _replace_file(target, orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
        return True
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(value: Any) -> str | None:
    return None if value is None else clean_text(value, 200)


def _read_heartbeat(db: str | Path) -> StoredSnapshot | None:
    raw = _heartbeat_bytes(heartbeat_path(db))
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        comps = tuple(
            ComponentHealth(
                c["name"],
                c["kind"],
                HealthLevel.parse(c["level"]),
                tuple(c["reasons"]),
                c["metrics"],
            )
            for c in data["components"]
        )
        stopped = data.get("status") == "stopped"
        beat_interval = data.get("heartbeat_interval_seconds")
        return StoredSnapshot(
            data["run_id"],
            int(data["ts_us"]),
            HealthLevel.parse(data["level"]),
            tuple(data["reasons"]),
            comps,
            "stopped" if stopped else "running",
            _opt_int(data.get("stopped_us")) if stopped else None,
            float(data["check_interval_seconds"]),
            _opt_int(data.get("pid")),
            _opt_str(data.get("host")),
            heartbeat_us=_opt_int(data.get("written_us")),
            heartbeat_interval_seconds=None if beat_interval is None else float(beat_interval),
            pid_ns=_opt_str(data.get("pid_ns")),
            pid_start=_opt_str(data.get("pid_start")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no heartbeat, or one from another version: the database decides


def latest_snapshot(db: str | Path) -> StoredSnapshot | None:
    """The newest snapshot of the database or of the heartbeat file beside it.

    The heartbeat wins when it is newer: during a database outage the collector
    keeps writing it, so ``robust-collector health`` still shows the truth.
    """
    beat = None if is_postgres_url(db) else _read_heartbeat(db)
    try:
        stored = _latest_in_database(db)
    except (*reader_errors(), FileNotFoundError):
        if beat is None:
            raise
        stored = None  # the database cannot be read right now (or is gone); the heartbeat can
    if beat is None:
        return stored
    if stored is None or beat.ts_us > stored.ts_us:
        if stored is not None and stored.run_id == beat.run_id:
            if stored.run_status == "stopped":
                return stored  # the run ended after its last heartbeat
        elif beat.run_status != "stopped" and _run_stopped(db, beat.run_id):
            return replace(beat, run_status="stopped", run_stopped_us=beat.last_seen_us)
        return beat
    if stored.run_id == beat.run_id:
        # the database holds the newer snapshot; the heartbeat may still be the newer beat
        return replace(
            stored,
            heartbeat_us=beat.heartbeat_us,
            heartbeat_interval_seconds=beat.heartbeat_interval_seconds,
            pid_ns=beat.pid_ns,
            pid_start=beat.pid_start,
            run_status="stopped" if beat.run_status == "stopped" else stored.run_status,
            run_stopped_us=stored.run_stopped_us or beat.run_stopped_us,
        )
    return stored


def _run_stopped(db: str | Path, run_id: str) -> bool:
    """Whether the ``runs`` table records ``run_id`` as stopped (``False`` if unreadable)."""
    try:
        conn = _open(db)
    except (*reader_errors(), FileNotFoundError):
        return False
    try:
        return _run_info(conn, run_id)[0] == "stopped"
    except reader_errors():
        return False
    finally:
        conn.close()


def _latest_in_database(db: str | Path) -> StoredSnapshot | None:
    conn = _open(db)
    try:
        try:
            head = conn.execute(
                "SELECT run_id, ts_us FROM health_snapshots WHERE component = ? "
                "ORDER BY ts_us DESC, id DESC LIMIT 1",
                (SYSTEM,),
            ).fetchone()
        except reader_errors() as exc:
            if missing_table(exc):
                return None  # not a collector database (no such table)
            raise
        if head is None:
            return None
        return _load_snapshot(conn, head[0], head[1])
    finally:
        conn.close()


def _load_snapshot(conn: Any, run_id: str, ts_us: int) -> StoredSnapshot:
    rows = conn.execute(
        "SELECT component, level, reasons, metrics FROM health_snapshots "
        "WHERE run_id = ? AND ts_us = ? ORDER BY id",
        (run_id, ts_us),
    ).fetchall()
    level, reasons, comps = HealthLevel.HEALTHY, (), []
    for name, lvl, rs, ms in rows:
        metrics = orjson.loads(ms)
        if name == SYSTEM:
            level, reasons = HealthLevel.parse(lvl), tuple(orjson.loads(rs))
            continue
        comps.append(
            ComponentHealth(
                name,
                metrics.get("kind", "component"),
                HealthLevel.parse(lvl),
                tuple(orjson.loads(rs)),
                metrics,
            )
        )
    status, stopped, interval, pid, host = _run_info(conn, run_id)
    return StoredSnapshot(
        run_id, ts_us, level, reasons, tuple(comps), status, stopped, interval, pid, host
    )


def health_history(
    db: str | Path, *, component: str | None = None, limit: int | None = None
) -> pl.DataFrame:
    """Levels over time: one row per component per snapshot, newest last."""
    sql = "SELECT run_id, ts_us, component, level, reasons, metrics FROM health_snapshots"
    params: tuple[Any, ...] = ()
    if component is not None:
        sql += " WHERE component = ?"
        params = (component,)
    sql += " ORDER BY ts_us DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    names = ("run_id", "ts_us", "component", "level", "reasons", "metrics")
    df = query_frame(db, sql, params, HEALTH.polars_subset(names))
    return with_datetimes(df.reverse(), {"ts_us": "ts"})


def recent_errors(db: str | Path, *, component: str | None = None, limit: int = 50) -> pl.DataFrame:
    """The newest errors (oldest first in the frame), optionally of one component."""
    sql = "SELECT run_id, ts_us, component, symbol, error_type, message FROM errors"
    params: tuple[Any, ...] = ()
    if component == "RobustDataCollector":
        component = None  # the collector as a whole: every error it recorded
    if component is not None:
        sql += " WHERE component = ? OR symbol = ?"
        params = (component, component)
    sql += f" ORDER BY ts_us DESC, id DESC LIMIT {int(limit)}"
    names = ("run_id", "ts_us", "component", "symbol", "error_type", "message")
    df = query_frame(db, sql, params, ERRORS.polars_subset(names))
    return with_datetimes(df.reverse(), {"ts_us": "ts"})
