"""JSONL backup files: format, rotation, fsync, locking, failures and the tolerant reader."""

from __future__ import annotations

import errno
import fcntl
import os
import zlib
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from robust_collector.config import BackupConfig
from robust_collector.storage import backup
from robust_collector.storage.backup import (
    BackupWriter,
    CorruptLine,
    backlog,
    backup_file_name,
    decode_line,
    encode_batch,
    iter_backup_file,
    list_backup_files,
    read_backup_file,
)
from robust_collector.storage.schema import REJECT_COLUMNS, TICK_COLUMNS

RUN = "20260101T000000Z-abcdef12"


def tick(i: int, **over: Any) -> tuple[Any, ...]:
    """A tick row in TICK_COLUMNS order; keyword arguments replace columns."""
    values = {
        "tick_id": f"{RUN}:SPY:{i}",
        "symbol": "SPY",
        "seq": i,
        "ts_us": 1_767_225_600_000_000 + i,
        "recv_us": 1_767_225_600_000_500 + i,
        "bid": 100.0 + i / 7,
        "ask": 100.01 + i / 7,
        "bid_size": 300.0,
        "ask_size": None,
        "last": None if i % 2 else 100.005 + i / 7,
        "source": "simulated",
        "run_id": RUN,
    }
    values.update(over)
    return tuple(values[c] for c in TICK_COLUMNS)


def reject(i: int, **over: Any) -> tuple[Any, ...]:
    """A reject row in REJECT_COLUMNS order."""
    extra = {"rule": "price_range", "reason": f"price {i} out of range", "rejected_us": 7 + i}
    extra.update({k: over.pop(k) for k in list(over) if k in extra})
    return (*tick(i, **over), extra["rule"], extra["reason"], extra["rejected_us"])


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite_line(path: Path, index: int, new: bytes) -> None:
    lines = lines_of(path)
    lines[index] = new
    path.write_bytes(b"".join(lines))


def with_checksum(record: dict[str, Any]) -> bytes:
    """A line for ``record`` with a correct checksum (as a tampering writer would make)."""
    head = orjson.dumps(record)[:-1]
    return head + b',"crc32":%d}\n' % zlib.crc32(head)


# --------------------------------------------------------------------------- format


def test_round_trip_is_exact_for_ticks_and_rejects(tmp_path: Path) -> None:
    awkward = [
        tick(1),
        tick(2, bid=None, ask=None, last=0.1 + 0.2),
        tick(3, bid=5e-324, ask=1.7976931348623157e308, bid_size=-0.0, ask_size=1e-300),
        tick(4, symbol="BRK.B", source='we "quote", then\nnewline ,"crc32":1}', seq=2**62),
        tick(5, tick_id="ünïcode:☃:5", last=123456789.123456789),
    ]
    rejects = [reject(6), reject(7, reason='bid > ask ,"crc32":0}', bid=None)]
    with BackupWriter(tmp_path, RUN) as w:
        assert w.write_batch(awkward, rejects) == 7
    (path,) = list_backup_files(tmp_path)
    got = read_backup_file(path)
    assert got.ticks == awkward
    assert got.rejects == rejects
    assert got.lines == 7
    assert got.problems == []
    for a, b in zip(got.ticks, awkward, strict=True):  # same types, not only equal values
        assert [type(x) for x in a] == [type(x) for x in b]


def test_each_line_is_a_json_object_with_kind_and_verifiable_checksum(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, RUN) as w:
        w.write_batch([tick(1), tick(2)], [reject(3)])
    (path,) = list_backup_files(tmp_path)
    lines = lines_of(path)
    assert all(line.endswith(b"}\n") for line in lines)
    records = [orjson.loads(line) for line in lines]
    assert [r["kind"] for r in records] == ["tick", "tick", "reject"]
    assert list(records[0]) == ["kind", *TICK_COLUMNS, "crc32"]
    assert list(records[2]) == ["kind", *REJECT_COLUMNS, "crc32"]
    for line, record in zip(lines, records, strict=True):
        # The documented scheme: crc32 of the line's bytes before ',"crc32":', which
        # is the record serialized without its checksum, minus the closing brace.
        cut = line.rindex(b',"crc32":')
        assert zlib.crc32(line[:cut]) == record["crc32"]
        without = {k: v for k, v in record.items() if k != "crc32"}
        assert zlib.crc32(orjson.dumps(without)[:-1]) == record["crc32"]
    frame = pl.read_ndjson(path)
    assert frame.height == 3
    assert frame["kind"].to_list() == ["tick", "tick", "reject"]
    assert frame["rule"].to_list() == [None, None, "price_range"]


def test_decode_line_accepts_good_lines_and_names_problems() -> None:
    line = encode_batch([tick(1)])
    assert decode_line(line) == ("tick", tick(1))
    assert decode_line(line.rstrip(b"\n")) == ("tick", tick(1))
    with pytest.raises(CorruptLine, match="checksum mismatch"):
        decode_line(line.replace(b'"SPY"', b'"SPX"'))
    with pytest.raises(CorruptLine, match="bad JSON"):
        decode_line(line[:40])
    with pytest.raises(CorruptLine, match="empty line"):
        decode_line(b"\n")


def test_encode_refuses_bad_rows_before_writing(tmp_path: Path) -> None:
    w = BackupWriter(tmp_path, RUN)
    w.write_batch([tick(1)], [])
    path = w.active_path
    assert path is not None
    size = path.stat().st_size
    with pytest.raises(ValueError, match="needs 12 values"):
        w.write_batch([tick(2), tick(3)[:-1]], [])
    with pytest.raises(TypeError):
        w.write_batch([tick(4, bid=object())], [])
    assert path.stat().st_size == size
    w.write_batch([tick(5)], [])
    w.close()
    assert [r[0] for r in read_backup_file(path).ticks] == [tick(1)[0], tick(5)[0]]


def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    w = BackupWriter(tmp_path / "b", RUN)
    assert w.write_batch([], []) == 0
    assert w.active_path is None
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- files


def test_rotation_by_size_names_and_order(tmp_path: Path) -> None:
    batches = [
        [tick(100 + b * 10 + i, bid=1.5, ask=2.5, last=None) for i in range(10)] for b in range(7)
    ]
    limit = 2 * max(len(encode_batch(b)) for b in batches)  # two batches fit, three do not
    w = BackupWriter(tmp_path, RUN, max_file_bytes=limit)
    for b in batches:
        w.write_batch(b, [])
    w.close()
    files = list_backup_files(tmp_path)
    assert [p.name for p in files] == [backup_file_name(RUN, s) for s in (1, 2, 3, 4)]
    assert files[0].name == f"ticks-{RUN}-000001.jsonl"
    assert sorted(p.name for p in files) == [p.name for p in files]
    seqs = [row[2] for p in files for row in read_backup_file(p).ticks]
    assert seqs == list(range(100, 170))  # write order across files
    assert [len(read_backup_file(p).ticks) for p in files] == [20, 20, 20, 10]
    assert all(p.stat().st_size <= limit for p in files)


def test_a_batch_larger_than_the_limit_gets_a_file_of_its_own(tmp_path: Path) -> None:
    w = BackupWriter(tmp_path, RUN, max_file_bytes=100)
    w.write_batch([tick(i) for i in range(5)], [])
    w.write_batch([tick(i) for i in range(5, 10)], [])
    w.close()
    files = list_backup_files(tmp_path)
    assert [len(read_backup_file(p).ticks) for p in files] == [5, 5]


def test_sequence_continues_after_existing_and_recovered_files(tmp_path: Path) -> None:
    (tmp_path / "recovered").mkdir()
    (tmp_path / "recovered" / backup_file_name(RUN, 7)).write_bytes(b"")
    (tmp_path / backup_file_name(RUN, 3)).write_bytes(b"")
    (tmp_path / backup_file_name(RUN + "-other", 50)).write_bytes(b"")  # another run
    with BackupWriter(tmp_path, RUN) as w:
        w.write_batch([tick(1)], [])
        assert w.active_path == tmp_path / backup_file_name(RUN, 8)


def test_unsafe_run_id_characters_are_replaced(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, "run/with:odd chars") as w:
        w.write_batch([tick(1)], [])
        assert w.active_path is not None
        assert w.active_path.name == "ticks-run_with_odd_chars-000001.jsonl"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_rotate_and_close_start_new_files(tmp_path: Path) -> None:
    w = BackupWriter(tmp_path, RUN)
    w.write_batch([tick(1)], [])
    first = w.active_path
    w.rotate()
    assert w.active_path is None
    w.write_batch([tick(2)], [])
    second = w.active_path
    w.close()
    w.close()  # twice is fine
    w.write_batch([tick(3)], [])  # a write after close opens a new file
    third = w.active_path
    w.close()
    assert len({first, second, third}) == 3
    assert len(list_backup_files(tmp_path)) == 3


def test_from_config_reads_the_backup_section(tmp_path: Path) -> None:
    cfg = BackupConfig(backup_path=str(tmp_path / "bk"), fsync="never", max_file_mb=0.5)
    w = BackupWriter.from_config(cfg, RUN)
    assert w.backup_path == tmp_path / "bk"
    assert w.fsync == "never"
    assert w.max_file_bytes == 512 * 1024


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        BackupWriter(tmp_path, RUN, fsync="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_file_bytes"):
        BackupWriter(tmp_path, RUN, max_file_bytes=0)
    with pytest.raises(ValueError, match="run_id"):
        BackupWriter(tmp_path, "")


def test_backlog_counts_waiting_files_and_bytes(tmp_path: Path) -> None:
    assert backlog(tmp_path / "missing") == (0, 0)
    w = BackupWriter(tmp_path, RUN, max_file_bytes=1)
    w.write_batch([tick(1)], [])
    w.write_batch([tick(2)], [])
    w.close()
    (tmp_path / "recovered").mkdir()
    (tmp_path / "recovered" / "ticks-old-000001.jsonl").write_bytes(b"x" * 999)
    (tmp_path / "notes.txt").write_text("not a backup")
    files = list_backup_files(tmp_path)
    assert backlog(tmp_path) == (2, sum(p.stat().st_size for p in files))


# --------------------------------------------------------------------------- fsync


@pytest.mark.parametrize(("mode", "calls"), [("batch", 3), ("never", 0)])
def test_fsync_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: backup.FsyncMode, calls: int
) -> None:
    synced: list[int] = []
    real = backup._os_fsync
    monkeypatch.setattr(backup, "_os_fsync", lambda fd: (synced.append(fd), real(fd)))
    with BackupWriter(tmp_path, RUN, fsync=mode) as w:
        for i in range(3):
            w.write_batch([tick(i)], [])
    assert len(synced) == calls


# --------------------------------------------------------------------------- locking


def test_the_active_file_is_locked_until_rotate(tmp_path: Path) -> None:
    w = BackupWriter(tmp_path, RUN)
    w.write_batch([tick(1)], [])
    path = w.active_path
    assert path is not None
    # flock locks belong to an open file description: a second open() conflicts.
    with open(path, "rb") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        w.rotate()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
        fcntl.flock(other, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- failures


class FailingWrite:
    """Stands in for os.write: passes ``ok`` calls, then writes part of the data and fails."""

    def __init__(self, ok: int, partial: int = 100, err: int = errno.ENOSPC) -> None:
        self.ok = ok
        self.partial = partial
        self.err = err

    def __call__(self, fd: int, data: Any) -> int:
        if self.ok > 0:
            self.ok -= 1
            return os.write(fd, data)
        os.write(fd, bytes(data[: self.partial]))
        raise OSError(self.err, os.strerror(self.err))


def test_disk_failure_mid_write_leaves_earlier_batches_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = BackupWriter(tmp_path, RUN)
    w.write_batch([tick(1), tick(2)], [])
    path = w.active_path
    assert path is not None
    size = path.stat().st_size
    monkeypatch.setattr(backup, "_os_write", FailingWrite(ok=0))
    with pytest.raises(OSError, match="No space left"):
        w.write_batch([tick(3), tick(4)], [reject(5)])
    assert w.errors == 1
    assert w.active_path is None  # the failed file is released
    assert path.stat().st_size == size  # the partial batch was cut off
    got = read_backup_file(path)
    assert [r[2] for r in got.ticks] == [1, 2]
    assert got.problems == []
    monkeypatch.undo()
    w.write_batch([tick(3)], [])  # the disk is back: a new file
    assert w.active_path is not None and w.active_path != path
    w.close()


def test_failed_cut_back_leaves_a_torn_tail_the_reader_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = BackupWriter(tmp_path, RUN)
    w.write_batch([tick(1)], [])
    path = w.active_path
    assert path is not None

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(backup, "_os_write", FailingWrite(ok=0, partial=50))
    monkeypatch.setattr(backup.os, "ftruncate", no_truncate)
    with pytest.raises(OSError):
        w.write_batch([tick(2)], [])
    monkeypatch.undo()
    got = read_backup_file(path)
    assert [r[2] for r in got.ticks] == [1]
    assert [(p.line, p.kind) for p in got.problems] == [(2, "torn")]


def test_failed_fsync_cuts_the_batch_and_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = BackupWriter(tmp_path, RUN)
    w.write_batch([tick(1)], [])
    path = w.active_path
    assert path is not None

    def bad_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(backup, "_os_fsync", bad_fsync)
    with pytest.raises(OSError, match="I/O error"):
        w.write_batch([tick(2)], [])
    monkeypatch.undo()
    assert [r[2] for r in read_backup_file(path).ticks] == [1]


def test_failure_on_a_new_file_leaves_no_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = BackupWriter(tmp_path, RUN)
    monkeypatch.setattr(backup, "_os_write", FailingWrite(ok=0, partial=0))
    with pytest.raises(OSError):
        w.write_batch([tick(1)], [])
    assert list_backup_files(tmp_path) == []
    assert backlog(tmp_path) == (0, 0)


def test_missing_folder_that_cannot_be_created_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    w = BackupWriter(blocker / "backups", RUN)
    with pytest.raises(OSError):
        w.write_batch([tick(1)], [])
    assert w.errors == 1


# --------------------------------------------------------------------------- the reader


def write_file(tmp_path: Path, n: int = 5) -> Path:
    with BackupWriter(tmp_path, RUN) as w:
        w.write_batch([tick(i) for i in range(1, n + 1)], [])
        path = w.active_path
    assert path is not None
    return path


def test_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    path = write_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # a crash in the middle of the last line
    got = read_backup_file(path)
    assert [r[2] for r in got.ticks] == [1, 2, 3, 4]
    assert got.lines == 5
    assert got.torn == 1 and got.corrupt == 0
    (problem,) = got.problems
    assert (problem.file, problem.line, problem.kind) == (str(path), 5, "torn")
    assert "cut short" in problem.detail


def test_intact_record_without_newline_is_kept_but_reported_torn(tmp_path: Path) -> None:
    path = write_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-1])
    got = read_backup_file(path)
    assert [r[2] for r in got.ticks] == [1, 2, 3, 4, 5]
    assert [(p.line, p.kind) for p in got.problems] == [(5, "torn")]
    assert "intact" in got.problems[0].detail


def test_corrupt_lines_are_skipped_and_reported_with_line_numbers(tmp_path: Path) -> None:
    path = write_file(tmp_path, n=9)
    good = lines_of(path)
    flipped = bytearray(good[1])
    flipped[30] ^= 0x01  # one bit of the tick id
    missing = dict(orjson.loads(good[3]))
    del missing["crc32"], missing["bid"]
    wrong_type = dict(orjson.loads(good[4]))
    del wrong_type["crc32"]
    wrong_type["seq"] = "five"
    unknown = dict(orjson.loads(good[5]))
    del unknown["crc32"]
    unknown["kind"] = "quote"
    no_crc = orjson.dumps({k: v for k, v in orjson.loads(good[6]).items() if k != "crc32"})
    rewrite_line(path, 1, bytes(flipped))
    rewrite_line(path, 2, b'{"kind":"tick","tick_id": oops}\n')
    rewrite_line(path, 3, with_checksum(missing))
    rewrite_line(path, 4, with_checksum(wrong_type))
    rewrite_line(path, 5, with_checksum(unknown))
    rewrite_line(path, 6, no_crc + b"\n")
    rewrite_line(path, 7, b"\n")
    got = read_backup_file(path)
    assert [r[2] for r in got.ticks] == [1, 9]
    assert got.corrupt == 7 and got.torn == 0
    details = {p.line: p.detail for p in got.problems}
    assert all(p.file == str(path) and p.kind == "corrupt" for p in got.problems)
    assert "checksum mismatch" in details[2]
    assert "bad JSON" in details[3]
    assert "missing field(s): bid" in details[4]
    assert "seq is str" in details[5]
    assert "unknown kind 'quote'" in details[6]
    assert "missing checksum" in details[7]
    assert "empty line" in details[8]


def test_garbage_file_never_crashes_the_reader(tmp_path: Path) -> None:
    path = tmp_path / backup_file_name(RUN, 1)
    path.write_bytes(b"\x00\x00\x00\n\xff\xfe{]\n[1,2]\n" + os.urandom(500) + b"\n" + b"\x00" * 64)
    got = read_backup_file(path)
    assert got.ticks == [] and got.rejects == []
    assert got.lines == len(got.problems)
    assert got.problems[-1].kind == "torn"


def test_iter_backup_file_yields_records_with_line_numbers(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, RUN) as w:
        w.write_batch([tick(1), tick(2)], [reject(3)])
        path = w.active_path
    assert path is not None
    rewrite_line(path, 1, b"nonsense\n")
    problems: list[backup.Problem] = []
    records = list(iter_backup_file(path, problems=problems))
    assert [(r.kind, r.line, r.row[2]) for r in records] == [("tick", 1, 1), ("reject", 3, 3)]
    assert [(p.line, p.kind) for p in problems] == [(2, "corrupt")]


def test_chunks_split_lines_and_count_them(tmp_path: Path) -> None:
    with BackupWriter(tmp_path, RUN) as w:
        w.write_batch([tick(i) for i in range(7)], [reject(i) for i in range(7, 10)])
        path = w.active_path
    assert path is not None
    with open(path, "rb") as f:
        chunks = list(backup.iter_backup_chunks(f, name="x", size=4))
    assert [c.lines for c in chunks] == [4, 4, 2]
    assert [(len(c.ticks), len(c.rejects)) for c in chunks] == [(4, 0), (3, 1), (0, 2)]
    with pytest.raises(ValueError):
        list(backup.iter_backup_chunks(open(path, "rb"), name="x", size=0))  # noqa: SIM115


def test_non_finite_floats_become_null_as_documented() -> None:
    line = encode_batch([tick(1, bid=float("nan"), ask=float("inf"))])
    assert decode_line(line) == ("tick", tick(1, bid=None, ask=None))


def test_the_example_lines_in_the_docs_are_valid() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "backup_and_recovery.md").read_text()
    block = doc.split("```json\n", 1)[1].split("```", 1)[0]
    decoded = [decode_line(line.encode()) for line in block.splitlines()]
    assert [kind for kind, _ in decoded] == ["tick", "reject", "trade", "trade_reject"]
    # and each is byte for byte what the writer writes for its row
    by_kind = {kind: row for kind, row in decoded}
    lines = encode_batch(
        [by_kind["tick"]], [by_kind["reject"]], [by_kind["trade"]], [by_kind["trade_reject"]]
    )
    assert sorted(lines.decode().splitlines()) == sorted(block.splitlines())


def test_a_batch_torn_anywhere_leaves_each_symbol_a_prefix_of_its_series(tmp_path: Path) -> None:
    """A SIGKILL can cut a large write short (Linux checks for a fatal signal between
    pages). Whatever prefix of the batch reached the file, every symbol's recovered rows,
    ticks and rejects together, must be 1..n: no older reject lost beside a newer tick
    (the CI failure in test_crash: S5 168 recovered, the reject 167 before it lost)."""
    ticks, rejects = [], []
    for i in range(1, 61):
        for sym in ("SPY", "QQQ"):
            row_of = reject if i % 7 == 0 else tick
            row = row_of(i, symbol=sym, tick_id=f"{RUN}:{sym}:{i}")
            (rejects if i % 7 == 0 else ticks).append(row)
    blob = encode_batch(ticks, rejects)
    cuts = sorted(
        {0, len(blob), *range(1, len(blob), 97)}
        | {m + 1 for m in range(len(blob)) if blob[m : m + 1] == b"\n"}
    )
    for cut in cuts:
        path = tmp_path / backup_file_name(RUN, cut + 1)
        path.write_bytes(blob[:cut])
        got = read_backup_file(path)
        for sym in ("SPY", "QQQ"):
            seqs = sorted(r[2] for r in got.ticks + got.rejects if r[1] == sym)
            assert seqs == list(range(1, len(seqs) + 1)), (cut, sym, seqs[-5:])
        path.unlink()
