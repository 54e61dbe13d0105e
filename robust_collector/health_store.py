"""Health snapshots and errors as database rows, and read back from any process.

The collector writes one ``health_snapshots`` row per component per check (plus a
``system`` row for the overall level); ``robust-collector health`` and the
notebooks read them back here, so they work against a collector running
elsewhere.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from robust_collector.health import ComponentHealth, HealthLevel, HealthSnapshot
from robust_collector.storage.backend import is_postgres_url
from robust_collector.storage.reader import (
    missing_table,
    open_reader,
    query_frame,
    reader_errors,
    with_datetimes,
)
from robust_collector.storage.writer import INSERT_HEALTH

SYSTEM = "system"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


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
                orjson.dumps(list(snapshot.reasons)).decode(),
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
                    c.name,
                    c.level.name,
                    orjson.dumps(list(c.reasons)).decode(),
                    orjson.dumps(metrics, option=orjson.OPT_NON_STR_KEYS).decode(),
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot read back from the database, with the run it belongs to."""

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


def write_heartbeat(db: str | Path, snapshot: HealthSnapshot, run_id: str, interval: float) -> None:
    """Write ``snapshot`` beside the database, atomically: health stays readable while
    the database itself is locked, read-only or gone. Nothing for a PostgreSQL URL
    (no file to put it beside: the fleet view reads the stored snapshots)."""
    if is_postgres_url(db):
        return
    target = heartbeat_path(db)
    data = {
        "run_id": run_id,
        "ts_us": int(snapshot.ts * 1_000_000),
        "level": snapshot.level.name,
        "reasons": list(snapshot.reasons),
        "check_interval_seconds": interval,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "components": [
            {
                "name": c.name,
                "kind": c.kind,
                "level": c.level.name,
                "reasons": list(c.reasons),
                "metrics": {k: _jsonable(v) for k, v in c.metrics.items()},
            }
            for c in snapshot.components
        ],
    }
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS))
    os.replace(tmp, target)


def _read_heartbeat(db: str | Path) -> StoredSnapshot | None:
    try:
        data = orjson.loads(heartbeat_path(db).read_bytes())
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
        return StoredSnapshot(
            data["run_id"],
            int(data["ts_us"]),
            HealthLevel.parse(data["level"]),
            tuple(data["reasons"]),
            comps,
            "running",
            None,
            float(data["check_interval_seconds"]),
            data.get("pid"),
            data.get("host"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no heartbeat, or one from another version: the database decides


def latest_snapshot(db: str | Path) -> StoredSnapshot | None:
    """The newest snapshot of the database or of the heartbeat file beside it.

    The heartbeat wins when it is newer: during a database outage the collector
    keeps writing it, so ``robust-collector health`` still shows the truth.
    """
    beat = None if is_postgres_url(db) else _read_heartbeat(db)
    try:
        stored = _latest_in_database(db)
    except reader_errors():
        if beat is None:
            raise
        stored = None  # the database cannot be read right now; the heartbeat can
    if beat is None:
        return stored
    if stored is None or beat.ts_us > stored.ts_us:
        if stored is not None and stored.run_id == beat.run_id and stored.run_status == "stopped":
            return stored  # the run ended after its last heartbeat
        return beat
    return stored


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
    df = query_frame(
        db,
        sql,
        params,
        {
            "run_id": pl.String,
            "ts_us": pl.Int64,
            "component": pl.String,
            "level": pl.String,
            "reasons": pl.String,
            "metrics": pl.String,
        },
    )
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
    df = query_frame(
        db,
        sql,
        params,
        {
            "run_id": pl.String,
            "ts_us": pl.Int64,
            "component": pl.String,
            "symbol": pl.String,
            "error_type": pl.String,
            "message": pl.String,
        },
    )
    return with_datetimes(df.reverse(), {"ts_us": "ts"})
