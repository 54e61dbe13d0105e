"""robust-collector recover, run as a user runs it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from robust_collector.storage.backup import BackupWriter

pytestmark = pytest.mark.integration


def rows(n, run="r1", symbol="SPY"):
    return [
        (
            f"{run}:{symbol}:{i}",
            symbol,
            i,
            1_700_000_000_000_000 + i,
            1_700_000_000_000_000 + i,
            100.0,
            100.01,
            100.0,
            200.0,
            None,
            "simulated",
            run,
        )
        for i in range(1, n + 1)
    ]


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_recover_reports_per_file_and_is_idempotent(tmp_path):
    backups = tmp_path / "backups"
    with BackupWriter(backups, "r1", max_file_bytes=4000) as w:
        for k in range(5):
            w.write_batch(rows(10, symbol=f"S{k}"))
    files = sorted(backups.glob("*.jsonl"))
    assert len(files) >= 2
    with files[0].open("ab") as f:
        f.write(b'{"kind":"tick","tick_id":"broken"')  # a torn last line
    db = tmp_path / "out.db"
    p = cli("recover", "--db", str(db), "--backup-path", str(backups), "--dry-run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "would insert 50" in p.stdout and "dry run" in p.stdout
    assert (
        not db.exists()
        or sqlite3.connect(db).execute("SELECT count(*) FROM ticks").fetchone()[0] == 0
    )
    p = cli("recover", "--db", str(db), "--backup-path", str(backups), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "inserted 50" in p.stdout and "torn" in p.stdout
    assert f"{files[0].name} line" in p.stdout
    assert sqlite3.connect(db).execute("SELECT count(*) FROM ticks").fetchone()[0] == 50
    assert not list(backups.glob("*.jsonl")) and len(
        list((backups / "recovered").glob("*.jsonl"))
    ) == len(files)
    p = cli("recover", "--db", str(db), "--backup-path", str(backups), cwd=tmp_path)
    assert p.returncode == 0 and "nothing to recover" in p.stdout
    # putting the files back and recovering again stores nothing twice
    for f in (backups / "recovered").glob("*.jsonl"):
        f.rename(backups / f.name)
    p = cli("recover", "--db", str(db), "--backup-path", str(backups), "--quiet", cwd=tmp_path)
    assert "inserted 0, already present 50" in p.stdout
    assert sqlite3.connect(db).execute("SELECT count(*) FROM ticks").fetchone()[0] == 50


def test_recover_reads_paths_from_the_config(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "storage: {database: data/x.db}\nrealtime_data: {backup: {backup_path: data/bk}}\n"
    )
    with BackupWriter(tmp_path / "data" / "bk", "r2") as w:
        w.write_batch(rows(7, run="r2"))
    p = cli("recover", "--config", "c.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (
        sqlite3.connect(tmp_path / "data" / "x.db")
        .execute("SELECT count(*) FROM ticks")
        .fetchone()[0]
        == 7
    )


def test_recover_without_a_backup_folder_is_a_clear_error(tmp_path):
    p = cli("recover", "--db", "x.db", "--backup-path", "nope", cwd=tmp_path)
    assert (
        p.returncode == 2 and "no backup folder at nope" in p.stderr and "Traceback" not in p.stderr
    )


def test_recover_quarantines_a_line_past_64_bits_and_reaches_later_files(tmp_path):
    """A checksummed line with ts_us >= 2^63 once made recover print a traceback and stop."""
    backups = tmp_path / "backups"
    good = rows(4)
    poisoned = (*good[1][:3], 2**63 + 5, *good[1][4:])
    with BackupWriter(backups, "r1", max_file_bytes=1) as w:
        w.write_batch([good[0], poisoned, good[2]])
        w.write_batch([good[3]])
    db = tmp_path / "out.db"
    p = cli("recover", "--db", str(db), "--backup-path", str(backups), "--quiet", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "1 line(s) the database refused were quarantined" in p.stdout
    assert sqlite3.connect(db).execute("SELECT count(*) FROM ticks").fetchone()[0] == 3
    (quarantined,) = (backups / "quarantine").glob("*.jsonl")
    assert "outside the 64-bit range" in quarantined.read_text()
    assert len(list((backups / "recovered").glob("*.jsonl"))) == 2


def test_recover_after_a_clean_run_says_nothing_to_recover(tmp_path):
    """No backup folder yet is the normal state (it is made by the first failed write):
    the configured folder missing is not an error; a folder typed on the command line
    that does not exist still is (the test above)."""
    p = cli("recover", "--db", "x.db", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == (
        f"nothing to recover: no backup folder at {tmp_path / 'data' / 'tick_backups'} yet "
        "(it is made when a database write fails)"
    )
    assert "Traceback" not in p.stderr and not (tmp_path / "x.db").exists()


def test_recover_progress_bar_counts_whole_lines(tmp_path):
    backups = tmp_path / "backups"
    with BackupWriter(backups, "r1") as w:
        w.write_batch(rows(81))
    p = cli("recover", "--db", "out.db", "--backup-path", str(backups), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    bar = p.stderr.replace("\r", "\n").splitlines()[-1]
    assert bar.startswith("recover: 100%") and " 81/81 " in bar, bar
    assert ".0/" not in p.stderr and "kline/s" not in p.stderr, p.stderr
