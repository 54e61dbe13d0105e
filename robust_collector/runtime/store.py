"""The collector's side of storage: the writer (backup, breaker, replay) and its runs row."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from robust_collector.config import Config
from robust_collector.model import now_us
from robust_collector.resilience import BreakerState, CircuitBreaker
from robust_collector.runtime.pipeline import Pipeline
from robust_collector.runtime.status import CollectorStatus
from robust_collector.secrets import redact, scrub
from robust_collector.storage.backend import Backend, execute_once
from robust_collector.storage.backup import BackupWriter, backlog
from robust_collector.storage.postgres import redact_url
from robust_collector.storage.recovery import replay_backlog
from robust_collector.storage.tables import INSERT_RUN, STOP_RUN
from robust_collector.storage.writer import StorageWriter

__all__ = [
    "make_writer",
    "new_run_id",
    "record_run_start",
    "record_run_stop",
    "redacted_config",
]

log = logging.getLogger("robust_collector.collector")


def redacted_config(config: Config) -> dict[str, Any]:
    """``config`` as plain data with any database password masked (stored with each run)."""
    data = config.as_dict()
    url = data.get("storage", {}).get("url")
    if url:
        data["storage"]["url"] = redact_url(url)
    return data


def new_run_id() -> str:
    """A short, sortable, unique run id: UTC time plus random hex."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def make_writer(
    config: Config,
    backend: Backend,
    pipeline: Pipeline,
    on_breaker: Callable[[str, BreakerState, BreakerState, str], None],
) -> tuple[StorageWriter, CircuitBreaker]:
    """The writer thread, with JSONL backup, the database's breaker and replay."""
    st = config.storage
    bcfg = config.realtime_data.backup
    fallback = replay = backlog_files = None
    if bcfg.active:
        path = Path(bcfg.backup_path)
        fallback = BackupWriter.from_config(bcfg, pipeline.run_id)

        def replay(conn: Any) -> tuple[int, int]:
            # one file per call: the writer writes new batches between files
            sink = backend.sink(conn)
            report = replay_backlog(sink, path, after=bcfg.after_recovery, max_files=1)
            report.raise_for_errors()
            quarantined = report.totals.get("quarantined", 0)
            if quarantined:
                log.warning(
                    "backup replay: %d line(s) the database refused were quarantined "
                    "with their reason in %s",
                    quarantined,
                    path / "quarantine",
                )
            done = report.files.filter(report.files["status"] == "recovered").height
            return report.inserted, done

        def backlog_files() -> int:
            return backlog(path)[0]

    breaker = CircuitBreaker(
        "storage",
        failure_threshold=st.breaker_failure_threshold,
        timeout_seconds=st.breaker_timeout_seconds,
        success_threshold=1,
    )
    breaker.add_listener(on_breaker)

    def on_error(component: str, exc: BaseException) -> None:
        # called on the writer thread: the checker and the event deque are thread-safe
        log.warning("%s error: %s: %s", component, type(exc).__name__, scrub(exc))
        pipeline.error(component, exc, checker=pipeline.storage_health)

    def on_written(rows: int) -> None:
        pipeline.storage_health.record_success()

    writer = StorageWriter(
        backend,
        write_timeout=st.write_timeout_seconds,
        queue_max_batches=st.queue_max_batches,
        queue_full_block_ms=st.queue_full_block_ms,
        fallback=fallback,
        gate=breaker,
        replay=replay,
        backlog=backlog_files,
        replay_on_start=st.replay_on_start,
        on_error=on_error,
        on_written=on_written,
    )
    return writer, breaker


def record_run_start(config: Config, backend: Backend, pipeline: Pipeline, instance: str) -> None:
    """The run's row; while the database is down it waits in the pipeline for the writer."""
    row = (
        pipeline.run_id,
        now_us(),
        os.getpid(),
        socket.gethostname(),
        instance,
        orjson.dumps(list(pipeline.symbols)).decode(),
        orjson.dumps(redacted_config(config)).decode(),
    )
    try:
        execute_once(backend, INSERT_RUN, row)
    except (*backend.errors, OSError) as exc:
        # the database is down at start: collect anyway; the writer falls back to
        # backup files and writes this row once the database takes writes again
        log.warning("storage error: %s: %s", type(exc).__name__, scrub(exc))
        pipeline.error("storage", exc, checker=pipeline.storage_health)
        pipeline.event(INSERT_RUN, row)


def record_run_stop(backend: Backend, run_id: str, summary: CollectorStatus) -> None:
    """The run's end and per-symbol totals; a failure only leaves the row stale."""
    data = {
        s.symbol: {"stored": s.stored, "rejects": s.rejects, "errors": s.errors}
        for s in summary.symbols.values()
    }
    try:
        execute_once(backend, STOP_RUN, (now_us(), orjson.dumps(data).decode(), run_id))
    except Exception as exc:  # the run's data is safe; only its bookkeeping row is stale
        log.warning("could not record the end of run %s: %s", run_id, redact(str(exc)))
