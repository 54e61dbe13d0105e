"""JSONL backup files: where accepted ticks, trades and rejects go while the database fails.

One record per line, each a self-contained JSON object carrying its kind, every
column of its row and a CRC-32 of its own bytes, so a reader can tell a good line
from a torn or corrupt one and keep every good line. The format is described in
``docs/backup_and_recovery.md``; in short::

    {"kind":"tick","tick_id":"...",...,"run_id":"...","crc32":1234567890}

with the kinds ``tick``, ``reject``, ``trade`` and ``trade_reject`` (a file written
before trades existed holds only the first two, and reads as it always did);

where ``crc32`` is ``zlib.crc32`` of the line's bytes before ``,"crc32":`` (the
record serialized by ``orjson`` without its checksum, minus the closing brace),
so it covers every other field and a reader checks it without re-serializing
anything. The writer appends whole batches, fsyncs them, holds an exclusive
``flock`` on the file it appends to, and rotates by size.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import pickle
import re
import stat
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from robust_collector.boundary import clean_text, safe_row
from robust_collector.storage.tables import (
    REJECT_COLUMNS,
    TICK_COLUMNS,
    TRADE_COLUMNS,
    TRADE_REJECT_COLUMNS,
)

if TYPE_CHECKING:
    from robust_collector.config import BackupConfig

log = logging.getLogger(__name__)

__all__ = [
    "CHECKSUM_KEY",
    "DEFAULT_MAX_FILE_BYTES",
    "FILE_PREFIX",
    "FILE_SUFFIX",
    "KINDS",
    "KIND_KEY",
    "RECOVERED_DIR",
    "BackupChunk",
    "BackupContents",
    "BackupRecord",
    "BackupWriter",
    "CorruptLine",
    "Problem",
    "backlog",
    "backup_file_name",
    "decode_line",
    "encode_batch",
    "iter_backup_chunks",
    "iter_backup_file",
    "list_backup_files",
    "read_backup_file",
]

FILE_PREFIX = "ticks-"
FILE_SUFFIX = ".jsonl"
RECOVERED_DIR = "recovered"
KIND_KEY = "kind"
CHECKSUM_KEY = "crc32"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

RecordKind = Literal["tick", "reject", "trade", "trade_reject"]
ProblemKind = Literal["torn", "corrupt"]
FsyncMode = Literal["batch", "never"]

_CRC_MARK = b',"crc32":'
_NEWLINE = ord("\n")
_NAME_RE = re.compile(r"^ticks-(?P<run>.+)-(?P<seq>\d+)\.jsonl$")
_UNSAFE_RUN_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

# Python types each column may hold after JSON decoding; float columns also take
# ints (SQLite's REAL affinity stores them as reals) and None (a missing price).
_STR, _INT, _NONE = str, int, type(None)
_NUMBER_OR_NONE = (float, int, _NONE)
_STR_OR_NONE = (_STR, _NONE)
_EXPECTED_TYPES: dict[str, tuple[type, ...]] = {
    "tick_id": (_STR,),
    "trade_id": (_STR,),
    "price": _NUMBER_OR_NONE,
    "size": _NUMBER_OR_NONE,
    "venue": _STR_OR_NONE,
    "conditions": _STR_OR_NONE,
    "correction": (_INT, _NONE),
    "provider_id": _STR_OR_NONE,
    "tape": _STR_OR_NONE,
    "symbol": (_STR,),
    "seq": (_INT,),
    "ts_us": (_INT,),
    "recv_us": (_INT,),
    "bid": _NUMBER_OR_NONE,
    "ask": _NUMBER_OR_NONE,
    "bid_size": _NUMBER_OR_NONE,
    "ask_size": _NUMBER_OR_NONE,
    "last": _NUMBER_OR_NONE,
    "source": (_STR,),
    "run_id": (_STR,),
    "rule": (_STR,),
    "reason": (_STR,),
    "rejected_us": (_INT,),
}


def _signatures(columns: Sequence[str]) -> frozenset[tuple[type, ...]]:
    # Every allowed tuple of value types: one hash lookup checks a whole row.
    return frozenset(itertools.product(*(_EXPECTED_TYPES[c] for c in columns)))


_TICK_SIGNATURES = _signatures(TICK_COLUMNS)
_REJECT_SIGNATURES = _signatures(REJECT_COLUMNS)
_TRADE_SIGNATURES = _signatures(TRADE_COLUMNS)
_TRADE_REJECT_SIGNATURES = _signatures(TRADE_REJECT_COLUMNS)
_TICK_GETTER = itemgetter(*TICK_COLUMNS)
_REJECT_GETTER = itemgetter(*REJECT_COLUMNS)
_KINDS: dict[str, tuple[tuple[str, ...], frozenset[tuple[type, ...]]]] = {
    "tick": (TICK_COLUMNS, _TICK_SIGNATURES),
    "reject": (REJECT_COLUMNS, _REJECT_SIGNATURES),
    "trade": (TRADE_COLUMNS, _TRADE_SIGNATURES),
    "trade_reject": (TRADE_REJECT_COLUMNS, _TRADE_REJECT_SIGNATURES),
}
KINDS: tuple[RecordKind, ...] = ("tick", "reject", "trade", "trade_reject")
"""Every kind of line, in the order of a batch's row lists (and ``BackupChunk``'s)."""
# the rarer kinds, checked by one dict lookup on the fast path: (position, getter, signatures)
_OTHER_KINDS: dict[str, tuple[int, Any, frozenset[tuple[type, ...]]]] = {
    kind: (KINDS.index(kind), itemgetter(*_KINDS[kind][0]), _KINDS[kind][1])
    for kind in ("trade", "trade_reject")
}

# Indirections the tests replace to simulate a failing disk.
_os_write = os.write
_os_fsync = getattr(os, "fdatasync", os.fsync)


# --------------------------------------------------------------------------- encoding


def _json_default(value: Any) -> Any:
    # numpy/polars scalars expose .item(); Decimal and friends become floats.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if hasattr(value, "__float__"):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} to a backup file")


def encode_batch(
    ticks: Iterable[Sequence[Any]] = (),
    rejects: Iterable[Sequence[Any]] = (),
    trades: Iterable[Sequence[Any]] = (),
    trade_rejects: Iterable[Sequence[Any]] = (),
) -> bytes:
    """The JSONL bytes of a batch: one checksummed line per tick, reject, trade and
    trade reject; the quote lines first, then the trade lines.

    Ticks keep their order; each reject goes just before the first tick of its symbol
    with a higher sequence number (else at the end). A write torn by a kill (Linux cuts
    a large write short at a fatal signal) then loses only the newest rows of each
    symbol, never an older reject while a newer tick of the same symbol survives.
    Trades and trade rejects are ordered alike among themselves (trades number their
    own sequence); a tear in the quote lines loses this batch's trades, which are all
    newer than the trades of earlier batches, so each kind still loses only its newest.

    Rows are sequences in ``TICK_COLUMNS`` / ``REJECT_COLUMNS`` / ``TRADE_COLUMNS`` /
    ``TRADE_REJECT_COLUMNS`` order. A row JSON cannot hold as it is (an integer past 64
    bits, a lone surrogate) is written as ``boundary.safe_row`` makes it (clamped,
    cleaned): saved, never refused. Raises ``ValueError`` for a row of the wrong length
    and ``TypeError`` for a value of a type JSON cannot hold at all, before anything is
    written.
    """
    quotes = _encode_ordered("tick", TICK_COLUMNS, ticks, "reject", REJECT_COLUMNS, rejects)
    trade_part = _encode_ordered(
        "trade", TRADE_COLUMNS, trades, "trade_reject", TRADE_REJECT_COLUMNS, trade_rejects
    )
    return quotes + trade_part


def _encode_ordered(
    kind: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    reject_kind: str,
    reject_columns: Sequence[str],
    rejects: Iterable[Sequence[Any]],
) -> bytes:
    """Accepted rows in their order, each reject just before the first accepted row of
    its symbol with a higher sequence number (else at the end)."""
    tick_rows = list(rows)
    reject_rows = list(rejects)
    tick_lines = _encode_rows(kind, columns, tick_rows)
    reject_lines = _encode_rows(reject_kind, reject_columns, reject_rows)
    if not reject_lines or not tick_lines:
        return b"".join(tick_lines) + b"".join(reject_lines)
    # per symbol: the running maximum of its ticks' seqs, and where each tick stands
    seen: dict[str, tuple[list[int], list[int]]] = {}
    for pos, row in enumerate(tick_rows):
        sym, seq = _order_key(row)
        highs, where = seen.setdefault(sym, ([], []))
        highs.append(max(seq, highs[-1]) if highs else seq)
        where.append(pos)
    before: dict[int, list[bytes]] = {}
    tail: list[bytes] = []
    for row, line in zip(reject_rows, reject_lines, strict=True):
        sym, seq = _order_key(row)
        highs, where = seen.get(sym, ((), ()))
        k = bisect.bisect_right(highs, seq)  # the first tick of the symbol past this seq
        if k < len(where):
            before.setdefault(where[k], []).append(line)
        else:
            tail.append(line)
    out: list[bytes] = []
    for pos, line in enumerate(tick_lines):
        out.extend(before.get(pos, ()))
        out.append(line)
    out.extend(tail)
    return b"".join(out)


def _encode_rows(kind: str, columns: Sequence[str], rows: list[Sequence[Any]]) -> list[bytes]:
    dumps = orjson.dumps
    crc = zlib.crc32
    opt = orjson.OPT_SERIALIZE_NUMPY
    default = _json_default
    out: list[bytes] = []
    append = out.append
    width = len(columns)
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a {kind} row needs {width} values, got {len(row)}: {row!r}")
        record = {KIND_KEY: kind}
        record.update(zip(columns, row, strict=False))
        try:
            head = dumps(record, default=default, option=opt)[:-1]  # without the "}"
        except TypeError:  # orjson.JSONEncodeError too
            record.update(zip(columns, safe_row(tuple(row)), strict=False))
            head = dumps(record, default=default, option=opt)[:-1]
        append(b'%s,"crc32":%d}\n' % (head, crc(head)))
    return out


def _order_key(row: Sequence[Any]) -> tuple[str, int]:
    """(symbol, seq) of a row of any kind: each starts with its id, symbol, seq."""
    seq = row[2]
    return str(row[1]), seq if type(seq) is int else 0


class CorruptLine(ValueError):
    """A backup line that cannot be trusted; the message says why."""


def decode_line(line: bytes) -> tuple[RecordKind, tuple[Any, ...]]:
    """Check one line (with or without its newline) and return ``(kind, row)``.

    Raises ``CorruptLine`` naming the first problem found: bad JSON, a missing or
    wrong checksum, an unknown kind, missing fields or a value of the wrong type.
    """
    raw = line[:-1] if line.endswith(b"\n") else line
    if not raw.strip():
        raise CorruptLine("empty line")
    try:
        whole = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptLine(f"bad JSON: {_short(str(exc))}") from None
    if not isinstance(whole, dict):
        raise CorruptLine(f"not a JSON object but {type(whole).__name__}")
    if CHECKSUM_KEY not in whole:
        raise CorruptLine(f"missing checksum field {CHECKSUM_KEY!r}")
    stored = whole[CHECKSUM_KEY]
    at = raw.rfind(_CRC_MARK)
    if at <= 0 or type(stored) is not int:
        raise CorruptLine(f"checksum field {CHECKSUM_KEY!r} is not an integer member")
    computed = zlib.crc32(raw[:at])
    if computed != stored:
        raise CorruptLine(f"checksum mismatch: stored {stored}, computed {computed}")
    record = whole
    kind = record.get(KIND_KEY)
    if type(kind) is not str or kind not in _KINDS:  # a list or an object is unhashable
        expected = ", ".join(repr(k) for k in KINDS)
        shown = _short(clean_text(repr(kind), 200), 80)  # outside text, of any length
        raise CorruptLine(f"unknown {KIND_KEY} {shown} (expected one of {expected})")
    columns, signatures = _KINDS[kind]
    missing = [c for c in columns if c not in record]
    if missing:
        raise CorruptLine(f"{kind} record missing field(s): {', '.join(missing)}")
    row = tuple(record[c] for c in columns)
    if tuple(map(type, row)) not in signatures:
        wrong = [
            f"{c} is {type(v).__name__}"
            for c, v in zip(columns, row, strict=True)
            if type(v) not in _EXPECTED_TYPES[c]
        ]
        raise CorruptLine(f"{kind} record has wrong type(s): {', '.join(wrong)}")
    return kind, row


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Problem:
    """A line of a backup file that was not (fully) trusted: where, which kind, why.

    ``kind`` is ``"torn"`` for a last line without its newline (a write cut short)
    and ``"corrupt"`` for any other bad line; ``line`` counts from 1.
    """

    file: str
    line: int
    kind: ProblemKind
    detail: str


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One good line of a backup file: its kind, its line number and its row tuple."""

    kind: RecordKind
    line: int
    row: tuple[Any, ...]


class BackupChunk(NamedTuple):
    """Up to ``size`` consecutive lines of a file, split into the good rows of each kind
    (trades after ``lines``: the fields of before keep their places)."""

    ticks: list[tuple[Any, ...]]
    rejects: list[tuple[Any, ...]]
    lines: int
    trades: list[tuple[Any, ...]]
    trade_rejects: list[tuple[Any, ...]]


def iter_backup_chunks(
    file: IO[bytes],
    *,
    name: str,
    size: int = 10_000,
    problems: list[Problem] | None = None,
) -> Iterator[BackupChunk]:
    """Read an open binary file in chunks of ``size`` lines, never raising on bad lines.

    Bad lines are appended to ``problems`` (file ``name``, line number, kind,
    detail) and left out of the chunk; a torn last line whose record is intact is
    kept and still reported as torn.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if problems is None:
        problems = []
    crc = zlib.crc32
    loads = orjson.loads
    tick_get, reject_get = _TICK_GETTER, _REJECT_GETTER
    tick_sigs, reject_sigs = _TICK_SIGNATURES, _REJECT_SIGNATURES
    others = _OTHER_KINDS
    ticks: list[tuple[Any, ...]] = []
    rejects: list[tuple[Any, ...]] = []
    rows: tuple[list[tuple[Any, ...]], ...] = (ticks, rejects, [], [])
    start = 0  # the line number before this chunk's first line
    n = 0
    for n, line in enumerate(file, 1):
        # Fast path: a complete line whose checksum and types are right.
        if line[-1] == _NEWLINE:
            at = line.rfind(_CRC_MARK)
            if at > 0:
                try:
                    record = loads(line)
                    if crc(line[:at]) == record[CHECKSUM_KEY]:
                        kind = record[KIND_KEY]
                        good = False
                        if kind == "tick":
                            row = tick_get(record)
                            if tuple(map(type, row)) in tick_sigs:
                                ticks.append(row)
                                good = True
                        elif kind == "reject":
                            row = reject_get(record)
                            if tuple(map(type, row)) in reject_sigs:
                                rejects.append(row)
                                good = True
                        elif kind in others:
                            at_kind, get, sigs = others[kind]
                            row = get(record)
                            if tuple(map(type, row)) in sigs:
                                rows[at_kind].append(row)
                                good = True
                        if good:
                            if n - start >= size:
                                yield BackupChunk(ticks, rejects, n - start, rows[2], rows[3])
                                ticks, rejects, start = [], [], n
                                rows = (ticks, rejects, [], [])
                            continue
                except (ValueError, KeyError, TypeError):
                    pass
        # Slow path: say exactly what is wrong (or keep an intact unterminated record).
        terminated = line[-1] == _NEWLINE
        try:
            kind, row = decode_line(line)
        except CorruptLine as exc:
            if terminated:
                problems.append(Problem(name, n, "corrupt", str(exc)))
            else:
                detail = f"last line cut short ({len(line)} bytes, no newline): {exc}"
                problems.append(Problem(name, n, "torn", detail))
        else:
            rows[KINDS.index(kind)].append(row)
            if not terminated:
                detail = "last line has no newline but its record is intact (kept)"
                problems.append(Problem(name, n, "torn", detail))
        if n - start >= size:
            yield BackupChunk(ticks, rejects, n - start, rows[2], rows[3])
            ticks, rejects, start = [], [], n
            rows = (ticks, rejects, [], [])
    if n > start:
        yield BackupChunk(ticks, rejects, n - start, rows[2], rows[3])


@dataclass
class BackupContents:
    """Everything one backup file holds: good rows, line count and the problems found."""

    path: Path
    ticks: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    trade_rejects: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def torn(self) -> int:
        """How many lines were torn (0 or 1: only the last line can be)."""
        return sum(p.kind == "torn" for p in self.problems)

    @property
    def corrupt(self) -> int:
        """How many lines were corrupt and left out."""
        return sum(p.kind == "corrupt" for p in self.problems)


def open_regular(path: str | Path) -> IO[bytes]:
    """``path`` opened for reading only if it is a regular file: a symlink planted in the
    backup folder is not followed (``O_NOFOLLOW``) and a FIFO does not block (``O_NONBLOCK``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_backup_file(path: str | Path) -> BackupContents:
    """Read a whole backup file into memory, skipping and reporting bad lines."""
    p = Path(path)
    out = BackupContents(p)
    with open_regular(p) as f:
        for chunk in iter_backup_chunks(f, name=str(p), size=65_536, problems=out.problems):
            out.ticks.extend(chunk.ticks)
            out.rejects.extend(chunk.rejects)
            out.trades.extend(chunk.trades)
            out.trade_rejects.extend(chunk.trade_rejects)
            out.lines += chunk.lines
    return out


def iter_backup_file(
    path: str | Path, *, problems: list[Problem] | None = None
) -> Iterator[BackupRecord]:
    """Yield each good record of a file in line order; bad lines go to ``problems``."""
    p = Path(path)
    name = str(p)
    sink = problems if problems is not None else []
    with open_regular(p) as f:
        for n, line in enumerate(f, start=1):
            try:
                kind, row = decode_line(line)
            except CorruptLine as exc:
                if line.endswith(b"\n"):
                    sink.append(Problem(name, n, "corrupt", str(exc)))
                else:
                    detail = f"last line cut short ({len(line)} bytes, no newline): {exc}"
                    sink.append(Problem(name, n, "torn", detail))
                continue
            if not line.endswith(b"\n"):
                detail = "last line has no newline but its record is intact (kept)"
                sink.append(Problem(name, n, "torn", detail))
            yield BackupRecord(kind, n, row)


def _serve_chunk_requests(request_fd: int, result_fd: int) -> None:
    """Body of the recovery's reader process: parse each requested file, send its chunks.

    Requests are ``(path, name, size)`` tuples (``None`` stops); replies are pickled
    ``("chunk", ticks, rejects, lines, new_problems, trades, trade_rejects)`` messages,
    then ``("end",)`` or ``("error", message)``.
    """
    requests = Connection(request_fd, writable=False)
    results = Connection(result_fd, readable=False)
    while True:
        try:
            request = requests.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        path, name, size = request
        problems: list[Problem] = []
        try:
            with open_regular(path) as f:
                sent = 0
                for chunk in iter_backup_chunks(f, name=name, size=size, problems=problems):
                    msg = (
                        "chunk",
                        chunk.ticks,
                        chunk.rejects,
                        chunk.lines,
                        problems[sent:],
                        chunk.trades,
                        chunk.trade_rejects,
                    )
                    sent = len(problems)
                    results.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
            results.send_bytes(pickle.dumps(("end",)))
        except BrokenPipeError:
            return
        except OSError as exc:
            try:
                results.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
            except OSError:
                return


# --------------------------------------------------------------------------- the folder


def _sort_key(path: Path) -> tuple[str, int, str]:
    m = _NAME_RE.match(path.name)
    if m is None:
        return (path.name, -1, path.name)
    return (m["run"], int(m["seq"]), path.name)


def list_backup_files(backup_path: str | Path) -> list[Path]:
    """The backup files waiting in ``backup_path`` (not ``recovered/``), oldest first.

    Oldest first means by run id, then by sequence number (run ids made by the
    collector start with the UTC time, so they sort by age).
    """
    d = Path(backup_path)
    if not d.is_dir():
        return []
    files = []
    for p in d.iterdir():
        if not (p.name.startswith(FILE_PREFIX) and p.name.endswith(FILE_SUFFIX)):
            continue
        try:
            mode = p.lstat().st_mode  # a symlink is judged itself, never its target
        except OSError:  # recovered or removed meanwhile
            continue
        if stat.S_ISREG(mode):
            files.append(p)
        elif not stat.S_ISDIR(mode):
            _report_not_regular(p, mode)
    return sorted(files, key=_sort_key)


_reported: set[str] = set()


def _report_not_regular(path: Path, mode: int) -> None:
    """Say once per path that a backup-named entry is left alone: a symlink (to
    ``/etc/passwd``, say) would otherwise be read and moved, a FIFO would block."""
    if str(path) in _reported:
        return
    _reported.add(str(path))
    kind = (
        "a symlink"
        if stat.S_ISLNK(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "not a regular file"
    )
    log.warning("backup folder: %s is %s: not read, not moved", clean_text(path), kind)


def unsafe_backup_entries(backup_path: str | Path) -> list[Path]:
    """Backup-named entries of ``backup_path`` that are not regular files (left alone)."""
    d = Path(backup_path)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        if p.name.startswith(FILE_PREFIX) and p.name.endswith(FILE_SUFFIX):
            with contextlib.suppress(OSError):
                mode = p.lstat().st_mode
                if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
                    out.append(p)
    return sorted(out)


def backlog(backup_path: str | Path) -> tuple[int, int]:
    """How much waits to be replayed: ``(files, bytes)``, including a file being written."""
    files = 0
    size = 0
    for p in list_backup_files(backup_path):
        try:
            size += p.stat().st_size
        except FileNotFoundError:  # recovered meanwhile
            continue
        files += 1
    return files, size


def backup_file_name(run_id: str, seq: int) -> str:
    """The name of a run's ``seq``-th backup file: ``ticks-<run_id>-<seq:06d>.jsonl``."""
    return f"{FILE_PREFIX}{_UNSAFE_RUN_CHARS.sub('_', run_id)}-{seq:06d}{FILE_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writing


class BackupWriter:
    """Appends batches to size-rotated JSONL files, each batch flushed before it counts.

    The file being appended to is held under an exclusive ``flock`` (so a recovery
    in another process skips it as "in use"); ``rotate()`` and ``close()`` release
    it and the next write opens a new file. Thread-safe.
    """

    def __init__(
        self,
        backup_path: str | Path,
        run_id: str,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        fsync: FsyncMode = "batch",
    ) -> None:
        if fsync not in ("batch", "never"):
            raise ValueError(f"fsync must be 'batch' or 'never', got {fsync!r}")
        if max_file_bytes < 1:
            raise ValueError(f"max_file_bytes must be >= 1, got {max_file_bytes}")
        if not run_id:
            raise ValueError("run_id must not be empty")
        self.backup_path = Path(backup_path)
        self.run_id = run_id
        self.max_file_bytes = int(max_file_bytes)
        self.fsync = fsync
        self.batches_written = 0
        self.rows_written = 0
        self.bytes_written = 0
        self.files_opened = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._offset = 0
        self._next_seq: int | None = None

    @classmethod
    def from_config(cls, config: BackupConfig, run_id: str) -> BackupWriter:
        """A writer set up from the ``realtime_data.backup`` config section."""
        return cls(
            config.backup_path,
            run_id,
            max_file_bytes=int(config.max_file_mb * 1024 * 1024),
            fsync=config.fsync,
        )

    @property
    def active_path(self) -> Path | None:
        """The file the next batch is appended to, or ``None`` before the first write."""
        return self._path

    def write_batch(
        self,
        ticks: Sequence[Sequence[Any]],
        rejects: Sequence[Sequence[Any]] = (),
        trades: Sequence[Sequence[Any]] = (),
        trade_rejects: Sequence[Sequence[Any]] = (),
    ) -> int:
        """Append a batch (rows in ``TICK_COLUMNS`` / ``REJECT_COLUMNS`` / ``TRADE_COLUMNS``
        / ``TRADE_REJECT_COLUMNS`` order); return its rows.

        The batch is saved once this returns (written, and fsynced in ``"batch"``
        mode). On ``OSError`` the file is cut back to the end of the previous batch
        (best effort) and closed, so earlier batches stay readable; the error is raised.
        """
        rows = len(ticks) + len(rejects) + len(trades) + len(trade_rejects)
        if not rows:
            return 0
        blob = encode_batch(ticks, rejects, trades, trade_rejects)
        with self._lock:
            if (
                self._fd is not None
                and self._offset > 0
                and self._offset + len(blob) > self.max_file_bytes
            ):
                self._close_current()
            if self._fd is None:
                try:
                    self._open_new()
                except OSError:
                    self.errors += 1
                    raise
            assert self._fd is not None
            fd = self._fd
            start = self._offset
            try:
                _write_all(fd, blob)
                if self.fsync == "batch":
                    _os_fsync(fd)
            except OSError:
                self.errors += 1
                self._abandon(start)
                raise
            self._offset = start + len(blob)
            self.batches_written += 1
            self.rows_written += rows
            self.bytes_written += len(blob)
        return rows

    def rotate(self) -> None:
        """Close the current file (releasing its lock); the next write opens a new one."""
        with self._lock:
            self._close_current()

    def close(self) -> None:
        """Release the current file; safe to call twice, and a later write just opens a new file."""
        self.rotate()

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals (called with the lock held)

    def _open_new(self) -> None:
        d = self.backup_path
        d.mkdir(parents=True, exist_ok=True)
        if self._next_seq is None:
            self._next_seq = self._highest_seq() + 1
        while True:
            seq = self._next_seq
            self._next_seq += 1
            final = d / backup_file_name(self.run_id, seq)
            if final.exists() or (d / RECOVERED_DIR / final.name).exists():
                continue
            # Create under a hidden name, lock, then link to the public name: a
            # recovery never sees the file before it is locked.
            tmp = d / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    os.close(fd)
                    tmp.unlink()
                    continue
                except OSError:  # a filesystem without hard links
                    if final.exists():
                        os.close(fd)
                        tmp.unlink()
                        continue
                    os.rename(tmp, final)
                else:
                    tmp.unlink()
                if self.fsync == "batch":
                    _fsync_dir(d)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            self._fd = fd
            self._path = final
            self._offset = 0
            self.files_opened += 1
            return

    def _highest_seq(self) -> int:
        run = _UNSAFE_RUN_CHARS.sub("_", self.run_id)
        best = 0
        for folder in (self.backup_path, self.backup_path / RECOVERED_DIR):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = _NAME_RE.match(p.name)
                if m and m["run"] == run:
                    best = max(best, int(m["seq"]))
        return best

    def _abandon(self, good_offset: int) -> None:
        # Cut a partial batch off (best effort) and stop appending to this file.
        fd, path = self._fd, self._path
        try:
            assert fd is not None
            os.ftruncate(fd, good_offset)
            if good_offset == 0 and path is not None:
                path.unlink()  # nothing saved in it: do not leave an empty file behind
        except OSError as exc:
            log.warning("backup: could not cut %s back to %d bytes: %s", path, good_offset, exc)
        self._close_current()

    def _close_current(self) -> None:
        fd = self._fd
        self._fd = None
        self._path = None
        self._offset = 0
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _os_write(fd, view)
        view = view[n:]
