"""Replay JSONL backup files into the database, idempotently, and report what happened.

``recover`` is what ``robust-collector recover`` runs: it opens (or creates) the
database and replays every waiting backup file, oldest first. ``replay_backlog``
does the same on a connection the caller owns (the writer thread, when the
database comes back), and ``replay_file`` replays one file. A connection is a
SQLite connection or any backend's ``RowSink``. Rows (ticks, rejects, trades, trade
rejects) go in ignoring those whose unique id (``tick_id``, ``trade_id``) is stored
already, so replaying twice stores nothing twice; a file is moved to ``recovered/`` (or deleted) only after all of its good
lines are committed. A good line whose row the database refuses (an integer past
64 bits, text that is not UTF-8) is quarantined: appended with its reason to
``quarantine/<file name>`` in the backup folder and counted, and the rest of the
file goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import polars as pl

from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text
from robust_collector.errors import StorageError
from robust_collector.storage.backend import RowSink, SQLiteSink, is_postgres_url
from robust_collector.storage.backup import (
    RECOVERED_DIR,
    BackupChunk,
    Problem,
    iter_backup_chunks,
    list_backup_files,
    open_regular,
)
from robust_collector.storage.schema import connect, init_db, open_database
from robust_collector.storage.tables import (
    REJECT_COLUMNS,
    TICK_COLUMNS,
    TRADE_COLUMNS,
    TRADE_REJECT_COLUMNS,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FILE_REPORT_SCHEMA",
    "PROBLEM_SCHEMA",
    "QUARANTINE_DIR",
    "READER_PROCESS_MIN_BYTES",
    "FileResult",
    "RecoveryReport",
    "recover",
    "replay_backlog",
    "replay_file",
]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 10_000
READER_PROCESS_MIN_BYTES = 64 * 1024 * 1024
QUARANTINE_DIR = "quarantine"
After = Literal["move", "delete"]

FILE_REPORT_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "lines": pl.Int64,
    "ticks": pl.Int64,
    "rejects": pl.Int64,
    "trades": pl.Int64,
    "trade_rejects": pl.Int64,
    "inserted": pl.Int64,
    "already_present": pl.Int64,
    "torn": pl.Int64,
    "corrupt": pl.Int64,
    "quarantined": pl.Int64,
    "status": pl.String,
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "line": pl.Int64,
    "kind": pl.String,
    "detail": pl.String,
}
_COUNTS = (
    "lines",
    "ticks",
    "rejects",
    "trades",
    "trade_rejects",
    "inserted",
    "already_present",
    "torn",
    "corrupt",
    "quarantined",
)


@dataclass
class FileResult:
    """What replaying one backup file did.

    ``status`` is ``"recovered"``, ``"dry-run"``, ``"in use"`` (a live writer or
    another recovery holds the file), ``"gone"`` (another recovery took it since it
    was listed) or ``"failed: <reason>"``; in a dry run ``inserted`` counts the rows
    that would be inserted. ``error`` keeps the exception behind a failure.
    ``quarantined`` counts good lines the database refused (saved with their reason
    to ``quarantine_file``; in a dry run only counted).
    """

    path: Path
    lines: int = 0
    ticks: int = 0
    rejects: int = 0
    inserted: int = 0
    already_present: int = 0
    torn: int = 0
    corrupt: int = 0
    quarantined: int = 0
    status: str = ""
    problems: list[Problem] = field(default_factory=list)
    moved_to: Path | None = None
    quarantine_file: Path | None = None
    error: BaseException | None = field(default=None, repr=False)
    trades: int = 0  # after the fields of before: positional callers keep working
    trade_rejects: int = 0

    @property
    def file(self) -> str:
        """The file's name (the report's ``file`` column)."""
        return self.path.name

    def as_row(self) -> dict[str, Any]:
        """The file's row of the report frame."""
        return {"file": self.file, **{k: getattr(self, k) for k in _COUNTS}, "status": self.status}


@dataclass
class RecoveryReport:
    """Per-file results of a replay, with frames for notebooks and totals for the CLI."""

    backup_path: Path
    results: list[FileResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def files(self) -> pl.DataFrame:
        """One row per file: file, lines, ticks, rejects, trades, trade_rejects, inserted,
        already_present, torn, corrupt, quarantined, status."""
        return pl.DataFrame([r.as_row() for r in self.results], schema=FILE_REPORT_SCHEMA)

    @property
    def problems(self) -> pl.DataFrame:
        """One row per bad line of every file: file, line, kind (torn/corrupt), detail."""
        rows = [
            {"file": p.file, "line": p.line, "kind": p.kind, "detail": p.detail}
            for r in self.results
            for p in r.problems
        ]
        return pl.DataFrame(rows, schema=PROBLEM_SCHEMA)

    @property
    def totals(self) -> dict[str, int]:
        """Summed counts, plus how many files were recovered, in use, gone or failed."""
        out = {"files": len(self.results)}
        for k in _COUNTS:
            out[k] = sum(getattr(r, k) for r in self.results)
        out["recovered"] = sum(r.status in ("recovered", "dry-run") for r in self.results)
        out["in_use"] = sum(r.status == "in use" for r in self.results)
        out["gone"] = sum(r.status == "gone" for r in self.results)
        out["failed"] = sum(r.status.startswith("failed") for r in self.results)
        return out

    @property
    def inserted(self) -> int:
        """Rows inserted (or, in a dry run, that would be inserted)."""
        return sum(r.inserted for r in self.results)

    @property
    def ok(self) -> bool:
        """True when no file failed (files in use and bad lines do not count as failures)."""
        return not any(r.status.startswith("failed") for r in self.results)

    @property
    def errors(self) -> list[BaseException]:
        """The exceptions behind failed files, in file order."""
        return [r.error for r in self.results if r.error is not None]

    def raise_for_errors(self) -> RecoveryReport:
        """Raise the first failure's exception (a database error or ``OSError``), else
        return ``self``."""
        errors = self.errors
        if errors:
            raise errors[0]
        return self

    def summary(self) -> str:
        """A few human lines: what was replayed, and what needs a look."""
        t = self.totals
        verb = "would insert" if self.dry_run else "inserted"
        lines = [
            f"{t['files']} backup file(s) in {self.backup_path}: {t['recovered']} "
            f"{'checked' if self.dry_run else 'recovered'}, {t['in_use']} in use, "
            f"{t['gone']} gone, {t['failed']} failed",
            f"{t['lines']} lines: {t['ticks']} ticks, {t['rejects']} rejects"
            + (
                f", {t['trades']} trades, {t['trade_rejects']} trade rejects"
                if t["trades"] or t["trade_rejects"]
                else ""
            )
            + f"; {verb} {t['inserted']}, already present {t['already_present']}",
        ]
        if t["torn"] or t["corrupt"]:
            lines.append(
                f"{t['torn']} torn and {t['corrupt']} corrupt line(s) skipped "
                "(see .problems; the files are kept in recovered/)"
            )
        if t["quarantined"]:
            where = sorted({str(r.quarantine_file) for r in self.results if r.quarantine_file})
            lines.append(
                f"{t['quarantined']} line(s) the database refused were quarantined with their "
                f"reason{' to ' + ', '.join(where) if where else ' (dry run: not written)'}"
            )
        lines.extend(f"{r.file}: {r.status}" for r in self.results if r.status.startswith("failed"))
        return "\n".join(lines)


def _describe(exc: BaseException) -> str:
    return clean_text(f"{type(exc).__name__}: {exc}", 500)


_ChunkSource = Callable[[IO[bytes], Path, int, list[Problem]], Iterator[BackupChunk]]


def _read_inline(
    f: IO[bytes], path: Path, size: int, problems: list[Problem]
) -> Iterator[BackupChunk]:
    return iter_backup_chunks(f, name=path.name, size=size, problems=problems)


class _ReaderProcess:
    """Parses backup files in a helper process while this one inserts.

    Checking and decoding a line costs about as much Python time as SQLite takes
    to insert it, and threads cannot overlap the two (the GIL); a process can.
    Rows come back pickled, about three times cheaper to load than the JSON. The
    helper is a plain ``python -c`` subprocess (not ``multiprocessing``), so the
    caller's ``__main__`` is never re-imported.
    """

    def __init__(self) -> None:
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        package = str(Path(__file__).resolve().parents[1])
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _READER_CODE, str(req_r), str(res_w), package],
                pass_fds=(req_r, res_w),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            os.close(req_w)
            os.close(res_r)
            raise
        finally:
            os.close(req_r)  # the child has its own copies
            os.close(res_w)
        self._requests = Connection(req_w, readable=False)
        self._results = Connection(res_r, writable=False)
        self.broken = False

    def __call__(
        self, f: IO[bytes], path: Path, size: int, problems: list[Problem]
    ) -> Iterator[BackupChunk]:
        if self.broken:
            yield from _read_inline(f, path, size, problems)
            return
        done = False
        started = False
        try:
            try:
                self._requests.send((str(path), path.name, size))
                msg = pickle.loads(self._results.recv_bytes())
            except (EOFError, OSError) as exc:
                # The helper never got going: read this file (and the rest) here.
                log.warning("recovery: reader process unavailable (%r); parsing inline", exc)
                self.close()
                yield from _read_inline(f, path, size, problems)
                done = True
                return
            while True:
                if msg[0] == "chunk":
                    _, ticks, rejects, lines, new_problems, trades, trade_rejects = msg
                    problems.extend(new_problems)
                    started = True
                    yield BackupChunk(ticks, rejects, lines, trades, trade_rejects)
                elif msg[0] == "end":
                    done = True
                    return
                else:
                    done = True  # it reported the error and waits for more work
                    raise OSError(msg[1])
                try:
                    msg = pickle.loads(self._results.recv_bytes())
                except (EOFError, OSError) as exc:
                    what = "after" if started else "before"
                    raise OSError(
                        f"the reader process stopped {what} sending rows: {exc!r}"
                    ) from exc
        finally:
            if not done:  # abandoned mid-file: its remaining messages are stale
                self.close()

    def close(self) -> None:
        """Stop the helper (it may be blocked sending a chunk nobody reads)."""
        if self.broken:
            return
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            self._requests.send(None)
        for conn in (self._requests, self._results):
            with contextlib.suppress(OSError):
                conn.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# The helper imports only the backup module and what it needs, not the package
# (whose __init__ pulls in polars and the collector): ~0.1 s to start instead of ~0.3 s.
_READER_CODE = """
import sys, types
root = sys.argv[3]
for name, sub in (("robust_collector", ""), ("robust_collector.storage", "/storage")):
    module = types.ModuleType(name)
    module.__path__ = [root + sub]
    sys.modules[name] = module
from robust_collector.storage.backup import _serve_chunk_requests
_serve_chunk_requests(int(sys.argv[1]), int(sys.argv[2]))
"""


def _start_reader(use: bool | None, files: list[Path]) -> _ReaderProcess | None:
    if use is None:
        size = 0
        for p in files:
            with contextlib.suppress(OSError):
                size += p.stat().st_size
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        use = size >= READER_PROCESS_MIN_BYTES and (cpus or 1) >= 2
    if not use:
        return None
    try:
        return _ReaderProcess()
    except Exception as exc:  # e.g. inside a daemonic process: parse inline instead
        log.warning("recovery: no reader process (%s); parsing inline", exc)
        return None


class _Quarantine:
    """Rows of one backup file the database refused, saved with their reason (JSONL)."""

    def __init__(self, path: Path, *, write: bool) -> None:
        self.path = path.parent / QUARANTINE_DIR / path.name
        self.source = path.name
        self.write = write
        self.count = 0
        self._fd: int | None = None

    def add(self, kind: str, row: tuple[Any, ...], reason: str) -> None:
        """Keep one refused row (appended to the quarantine file unless a dry run)."""
        self.count += 1
        if not self.write:
            return
        columns = _COLUMNS[kind]
        record = {
            "file": self.source,
            "kind": kind,
            "reason": clean_text(reason, 500),
            "row": {c: _jsonable(v) for c, v in zip(columns, row, strict=False)},
        }
        if self._fd is None:
            _own_folder(self.path.parent)
            # never through a link planted at the quarantine file's name
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                self._fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                if os.path.islink(self.path):
                    raise OSError(
                        f"{self.path} is a symbolic link, not a quarantine file: left alone"
                    ) from exc
                raise
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                os.close(self._fd)
                self._fd = None
                raise OSError(f"{self.path} is not a regular file: left alone")
        os.write(self._fd, orjson.dumps(record) + b"\n")

    def close(self) -> None:
        """Flush what was quarantined to disk (before the source file is moved)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


_COLUMNS: dict[str, tuple[str, ...]] = {
    "tick": TICK_COLUMNS,
    "reject": REJECT_COLUMNS,
    "trade": TRADE_COLUMNS,
    "trade_reject": TRADE_REJECT_COLUMNS,
}
_KINDS = tuple(_COLUMNS)  # in the order of a sink's arguments


def _jsonable(value: Any) -> Any:
    # a quarantined value is kept as evidence: exact, even where JSON numbers cannot be
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return str(value)
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    return value


def _unstorable(row: tuple[Any, ...]) -> str | None:
    """Why no database can store ``row`` as it is (checked only once a chunk failed)."""
    for value in row:
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            return f"integer {value} is outside the 64-bit range"
        if type(value) is str:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"text {_jsonable(value)!r} is not valid UTF-8 (a lone surrogate)"
    return None


def _row_problem(sink: RowSink, exc: BaseException) -> bool:
    """True when ``exc`` says "a row cannot be stored", not "the database is out"."""
    if isinstance(exc, getattr(sink, "data_errors", ())):
        return True
    return not isinstance(exc, (*sink.errors, OSError))


Rows = list[tuple[Any, ...]]
_Store = Callable[[Rows, Rows, Rows, Rows], int]


def _store_chunk(
    store: _Store,
    sink: RowSink,
    chunk: BackupChunk,
    quarantine: _Quarantine,
    *,
    screen: bool = False,
) -> int:
    """``store`` a chunk; if a row is refused, quarantine the rows that cannot be stored
    (screened, then found by halving) and store the rest. ``screen`` checks every row
    first (a dry run, whose count would not notice a value out of range)."""
    kinds = (chunk.ticks, chunk.rejects, chunk.trades, chunk.trade_rejects)
    if not screen:
        try:
            return store(*kinds)
        except Exception as exc:
            if not _row_problem(sink, exc):
                raise
    stored = 0
    for kind, rows in zip(_KINDS, kinds, strict=True):
        keep = []
        for row in rows:
            reason = _unstorable(row)
            if reason is None:
                keep.append(row)
            else:
                quarantine.add(kind, row, reason)
        stored += _store_halving(store, sink, kind, keep, quarantine)
    return stored


def _store_halving(
    store: _Store,
    sink: RowSink,
    kind: str,
    rows: Rows,
    quarantine: _Quarantine,
) -> int:
    if not rows:
        return 0
    args: list[Rows] = [[], [], [], []]
    args[_KINDS.index(kind)] = rows
    try:
        return store(*args)
    except Exception as exc:
        if not _row_problem(sink, exc):
            raise
        if len(rows) == 1:
            quarantine.add(kind, rows[0], f"{type(exc).__name__}: {exc}")
            return 0
    mid = len(rows) // 2
    return _store_halving(store, sink, kind, rows[:mid], quarantine) + _store_halving(
        store, sink, kind, rows[mid:], quarantine
    )


def replay_file(
    conn: sqlite3.Connection | RowSink,
    path: str | Path,
    *,
    dry_run: bool = False,
    after: After = "move",
    batch_size: int | None = None,
    on_lines: Callable[[int], object] | None = None,
) -> FileResult:
    """Replay one backup file on ``conn`` (no open transaction), ``batch_size`` rows per
    transaction, then move it to ``recovered/`` or delete it.

    Never raises for file or database trouble: a file locked by a live writer is
    ``"in use"``, anything else is ``"failed: <reason>"`` with ``error`` set and the
    file left in place (rows committed before the failure stay; a later replay
    skips them). ``on_lines(n)`` is called after each chunk of ``n`` lines.
    """
    sink = as_sink(conn)
    batch_size = _chunk_rows(sink, batch_size)
    _check_args(after, batch_size)
    sink.check_idle()
    sync = contextlib.nullcontext() if dry_run else sink.durable()
    try:
        with sync:
            return _replay_file(
                sink,
                Path(path),
                dry_run=dry_run,
                after=after,
                batch_size=batch_size,
                on_lines=on_lines,
            )
    finally:
        if dry_run:
            sink.close_dry_run()


def as_sink(conn: sqlite3.Connection | RowSink) -> RowSink:
    """A SQLite connection wrapped as a ``RowSink``; a sink as it is."""
    if isinstance(conn, sqlite3.Connection):
        return SQLiteSink(conn)
    return conn


def _replay_file(
    sink: RowSink,
    path: Path,
    *,
    dry_run: bool,
    after: After,
    batch_size: int,
    on_lines: Callable[[int], object] | None,
    reader: _ChunkSource | None = None,
) -> FileResult:
    result = FileResult(path)
    read = reader if reader is not None else _read_inline
    try:
        # held open (and locked) until moved; a symlink swapped in is never followed
        f = open_regular(path)
    except FileNotFoundError:
        result.status = "gone"  # recovered by someone else since it was listed
        return result
    except OSError as exc:
        result.status = f"failed: cannot open: {_describe(exc)}"
        result.error = exc
        return result
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            result.status = "in use"
            return result
        except OSError as exc:
            result.status = f"failed: cannot lock: {_describe(exc)}"
            result.error = exc
            return result
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # moved or deleted by another recovery while we waited
            result.status = "gone"
            return result
        stage = "read"
        quarantine = _Quarantine(path, write=not dry_run)
        store = sink.new_rows if dry_run else sink.insert
        try:
            for chunk in read(f, path, batch_size, result.problems):
                stage = "database"
                if dry_run or chunk.ticks or chunk.rejects or chunk.trades or chunk.trade_rejects:
                    added = _store_chunk(store, sink, chunk, quarantine, screen=dry_run)
                    result.inserted += added
                    result.quarantined = quarantine.count
                # counted once committed, so a failed file reports what went in
                result.lines += chunk.lines
                result.ticks += len(chunk.ticks)
                result.rejects += len(chunk.rejects)
                result.trades += len(chunk.trades)
                result.trade_rejects += len(chunk.trade_rejects)
                stage = "read"
                if on_lines is not None:
                    on_lines(chunk.lines)
            _settle(result, quarantine)
            if dry_run:
                result.status = "dry-run"
                return result
            stage = "after"
            quarantine.close()  # the refused rows are on disk before the file moves
            result.moved_to = _dispose(path, after)
            result.status = "recovered"
        except Exception as exc:  # any failure ends this file only: later files go on
            with contextlib.suppress(OSError):
                quarantine.close()
            _settle(result, quarantine)
            what = {"read": "reading", "database": "database", "after": after}[stage]
            if not isinstance(exc, (*sink.errors, OSError)):
                what = f"unexpected ({what})"
                log.error("recovery: replaying %s failed", path, exc_info=exc)
            result.status = f"failed: {what}: {_describe(exc)}"
            result.error = exc
    return result


def _settle(result: FileResult, quarantine: _Quarantine) -> None:
    result.quarantined = quarantine.count
    if quarantine.count and quarantine.write:
        result.quarantine_file = quarantine.path
    rows = result.ticks + result.rejects + result.trades + result.trade_rejects
    result.already_present = rows - result.inserted - result.quarantined
    result.torn = sum(p.kind == "torn" for p in result.problems)
    result.corrupt = len(result.problems) - result.torn


def _own_folder(folder: Path) -> None:
    """Make ``folder`` (``quarantine/``, ``recovered/``) or check it is a real folder:
    a symbolic link planted there would take our files elsewhere."""
    folder.mkdir(exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise OSError(f"{folder} is {what}: move it aside (nothing is written through it)")


def _dispose(path: Path, after: After) -> Path | None:
    # Called with the file's lock held, after every good line is committed.
    if after == "delete":
        path.unlink()
        return None
    folder = path.parent / RECOVERED_DIR
    _own_folder(folder)
    target = folder / path.name
    n = 1
    while target.exists():  # never overwrite an earlier recovered file
        target = folder / f"{path.stem}.dup{n}{path.suffix}"
        n += 1
    os.rename(path, target)
    return target


def _chunk_rows(sink: RowSink, batch_size: int | None) -> int:
    """``batch_size``, or by default the sink's preference: the writer's in-run replay
    parses and commits small chunks, so collection keeps the interpreter between them."""
    if batch_size is not None:
        return batch_size
    return getattr(sink, "preferred_chunk_rows", None) or DEFAULT_BATCH_SIZE


def _check_args(after: str, batch_size: int) -> None:
    if after not in ("move", "delete"):
        raise ValueError(f"after must be 'move' or 'delete', got {after!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def replay_backlog(
    conn: sqlite3.Connection | RowSink,
    backup_path: str | Path,
    *,
    dry_run: bool = False,
    after: After = "move",
    batch_size: int | None = None,
    progress: bool = False,
    max_files: int | None = None,
    reader_process: bool | None = False,
) -> RecoveryReport:
    """Replay every waiting backup file (oldest first) on a connection the caller owns.

    After a database error the remaining files are not attempted (they are reported
    as failed); ``report.raise_for_errors()`` re-raises it for callers that want an
    exception. ``max_files`` bounds one call's work (e.g. on the writer thread).
    ``reader_process`` parses files in a helper process, overlapping parsing with
    inserting (``None``: when the backlog is at least ``READER_PROCESS_MIN_BYTES``
    and two CPUs are free to use; off by default here, on the writer thread).
    """
    sink = as_sink(conn)
    batch_size = _chunk_rows(sink, batch_size)
    _check_args(after, batch_size)
    sink.check_idle()
    report = RecoveryReport(Path(backup_path), dry_run=dry_run)
    files = list_backup_files(backup_path)
    if max_files is not None:
        files = files[:max_files]
    if not files:
        return report
    bar = _progress_bar(files) if progress else None
    sync = contextlib.nullcontext() if dry_run else sink.durable()
    db_error: BaseException | None = None
    reader = _start_reader(reader_process, files)
    try:
        with sync:
            for path in files:
                if db_error is not None:
                    skipped = FileResult(
                        path, status="failed: not attempted after a database error"
                    )
                    report.results.append(skipped)
                    continue
                result = _replay_file(
                    sink,
                    path,
                    dry_run=dry_run,
                    after=after,
                    batch_size=batch_size,
                    on_lines=bar.update if bar is not None else None,
                    reader=reader,
                )
                report.results.append(result)
                if isinstance(result.error, sink.errors):
                    db_error = result.error
    finally:
        if reader is not None:
            reader.close()
        if dry_run:
            sink.close_dry_run()
        if bar is not None:
            bar.close()
    return report


def _progress_bar(files: list[Path]) -> Any:
    from tqdm.auto import tqdm

    total = 0
    for p in files:
        with contextlib.suppress(OSError), open(p, "rb") as f:
            while block := f.read(1 << 20):
                total += block.count(b"\n")
    # no unit_scale: it shows small counts as floats ("81.0/81.0"); lines are whole numbers
    return tqdm(total=total, unit="line", desc="recover")


def recover(
    db_path: str | Path,
    backup_path: str | Path,
    *,
    dry_run: bool = False,
    after: After = "move",
    progress: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    reader_process: bool | None = None,
) -> RecoveryReport:
    """Replay every backup file in ``backup_path`` into the database at ``db_path``.

    The database is created if missing, except in a dry run, which writes and
    moves nothing and counts how many rows would be inserted. ``progress`` shows a
    tqdm bar over lines; ``reader_process`` is as in ``replay_backlog`` (automatic
    here). Raises ``StorageError`` only if the database cannot be opened; per-file
    trouble is in the report.
    """
    _check_args(after, batch_size)
    if is_postgres_url(db_path):
        return _recover_postgres(
            str(db_path),
            backup_path,
            dry_run=dry_run,
            after=after,
            progress=progress,
            batch_size=batch_size,
            reader_process=reader_process,
        )
    try:
        conn = _open_for(db_path, dry_run=dry_run)
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"cannot open database {db_path}: {_describe(exc)}") from exc
    try:
        return replay_backlog(
            conn,
            backup_path,
            dry_run=dry_run,
            after=after,
            batch_size=batch_size,
            progress=progress,
            reader_process=reader_process,
        )
    finally:
        conn.close()


def _open_for(db_path: str | Path, *, dry_run: bool) -> sqlite3.Connection:
    if not dry_run:
        return open_database(db_path)
    if not Path(db_path).exists():
        # Nothing is stored yet: an empty in-memory twin answers "what is new".
        conn = sqlite3.connect(":memory:", isolation_level=None)
        init_db(conn)
        return conn
    conn = connect(db_path, readonly=True)
    conn.isolation_level = None
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # is it a database?
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _recover_postgres(url: str, backup_path: str | Path, **kwargs: Any) -> RecoveryReport:
    from robust_collector.storage.postgres import PostgresSink, connect_postgres, redact_url

    try:
        conn = connect_postgres(url, init=not kwargs.get("dry_run"))
    except Exception as exc:  # psycopg's errors, without importing it where it is absent
        raise StorageError(f"cannot open database {redact_url(url)}: {_describe(exc)}") from exc
    try:
        return replay_backlog(PostgresSink(conn), backup_path, **kwargs)
    finally:
        conn.close()
