"""Hostile files are never followed (issue 16): the notebooks' temp folder, the heartbeat
file and the backup folder each meet a planted symlink (or FIFO) and leave its target alone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import robust_collector.analysis.paths as A
from robust_collector.cli import main
from robust_collector.health import ComponentHealth, HealthLevel, HealthSnapshot
from robust_collector.health.store import heartbeat_path, write_heartbeat
from robust_collector.storage.backup import (
    backup_file_name,
    list_backup_files,
    unsafe_backup_entries,
)
from robust_collector.storage.recovery import recover


def snap() -> HealthSnapshot:
    comp = ComponentHealth("SPY", "symbol", HealthLevel.HEALTHY, (), {"operations": 1})
    return HealthSnapshot(time.time(), HealthLevel.HEALTHY, (), (comp,))


def victim_folder(tmp_path: Path) -> Path:
    """Another user's folder with an old subfolder: what a planted link points at."""
    victim = tmp_path / "victim"
    (victim / "old-work").mkdir(parents=True)
    (victim / "old-work" / "thesis.tex").write_text("precious")
    os.utime(victim / "old-work", (0, 0))
    return victim


# -- the notebooks' temp folder -----------------------------------------------------------


def test_temp_parent_is_per_user_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert str(os.getuid()) in A.TEMP_PARENT.name
    parent = tmp_path / "nb-parent"
    monkeypatch.setattr(A, "TEMP_PARENT", parent)
    out = A._fresh_temp_dir("nb")
    assert out.parent == parent
    assert stat.S_IMODE(parent.stat().st_mode) == 0o700


def test_a_symlink_planted_as_the_temp_parent_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    victim = victim_folder(tmp_path)
    parent = tmp_path / "nb-parent"
    parent.symlink_to(victim)
    monkeypatch.setattr(A, "TEMP_PARENT", parent)
    with pytest.raises(RuntimeError, match="not a folder"):
        A._fresh_temp_dir("nb")
    assert (victim / "old-work" / "thesis.tex").read_text() == "precious"


def test_a_symlink_inside_the_temp_parent_is_not_removed_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    victim = victim_folder(tmp_path)
    parent = tmp_path / "nb-parent"
    parent.mkdir(mode=0o700)
    link = parent / "old-link"
    link.symlink_to(victim / "old-work")
    os.utime(link, (0, 0), follow_symlinks=False)
    monkeypatch.setattr(A, "TEMP_PARENT", parent)
    A._fresh_temp_dir("nb")
    assert (victim / "old-work" / "thesis.tex").read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_a_temp_parent_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    parent = victim_folder(tmp_path)
    os.chown(parent, 65534, 65534)
    monkeypatch.setattr(A, "TEMP_PARENT", parent)
    with pytest.raises(RuntimeError, match="another user"):
        A._fresh_temp_dir("nb")
    assert (parent / "old-work" / "thesis.tex").read_text() == "precious"


# -- the heartbeat file ---------------------------------------------------------------------


def test_a_symlink_planted_at_the_heartbeat_temp_file_is_not_followed(tmp_path: Path):
    db = tmp_path / "m.db"
    db.write_bytes(b"")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    tmp = heartbeat_path(db).with_name(heartbeat_path(db).name + ".tmp")
    tmp.symlink_to(victim)
    write_heartbeat(db, snap(), "r1", 60.0)
    assert victim.read_text() == "precious"
    beat = heartbeat_path(db)
    assert stat.S_ISREG(beat.lstat().st_mode) and b'"run_id":"r1"' in beat.read_bytes()
    assert not tmp.exists() and not tmp.is_symlink()


def test_a_symlink_planted_as_the_heartbeat_file_is_left_alone(tmp_path: Path):
    db = tmp_path / "m.db"
    db.write_bytes(b"")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    heartbeat_path(db).symlink_to(victim)
    with pytest.raises(OSError):
        write_heartbeat(db, snap(), "r1", 60.0)
    assert victim.read_text() == "precious" and heartbeat_path(db).is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_no_heartbeat_beside_a_database_that_is_not_a_regular_file(tmp_path: Path, kind: str):
    db = tmp_path / "odd"
    if kind == "fifo":
        os.mkfifo(db)
    else:
        db.mkdir()
    write_heartbeat(db, snap(), "r1", 60.0)
    assert not heartbeat_path(db).exists()


def test_no_heartbeat_in_a_folder_that_does_not_exist(tmp_path: Path):
    write_heartbeat(tmp_path / "gone" / "m.db", snap(), "r1", 60.0)
    assert not (tmp_path / "gone").exists()


# -- the backup folder ----------------------------------------------------------------------


def test_backup_entries_that_are_not_regular_files_are_reported_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    backups = tmp_path / "backups"
    backups.mkdir()
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    link = backups / backup_file_name("20200101T000000Z-aaaa", 1)
    link.symlink_to(victim)
    fifo = backups / backup_file_name("20200101T000000Z-aaaa", 2)
    os.mkfifo(fifo)
    assert list_backup_files(backups) == []
    assert unsafe_backup_entries(backups) == sorted([link, fifo])
    assert "is a symlink: not read, not moved" in caplog.text
    report = recover(tmp_path / "m.db", backups)  # would block on the FIFO if it opened it
    assert report.files.is_empty()
    code = main(["recover", "--db", str(tmp_path / "m.db"), "--backup-path", str(backups)])
    assert code == 0
    err = capsys.readouterr().err
    assert f"left alone: {link.name}: not a regular file" in err
    assert f"left alone: {fifo.name}: not a regular file" in err
    assert link.is_symlink() and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert victim.read_text().startswith("root:x:0:0")
    assert not (backups / "recovered").exists()


def test_reading_a_backup_file_never_follows_a_symlink(tmp_path: Path):
    from robust_collector.storage.backup import read_backup_file

    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    link = tmp_path / "ticks-x-000001.jsonl"
    link.symlink_to(victim)
    with pytest.raises(OSError):
        read_backup_file(link)


# -- a heartbeat file that is not a regular file: run and health finish and say so ---------------

FAST = "symbols: [SPY]\nrealtime_data: {collect_interval_seconds: 0.05}\n"
IGNORED = "heartbeat file {} ignored: not a regular file"


def plant_heartbeat(beat: Path, kind: str, victim: Path) -> None:
    if kind == "fifo":
        os.mkfifo(beat)
    elif kind == "devzero":
        beat.symlink_to("/dev/zero")
    else:
        beat.symlink_to(victim)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; a hang on the planted file fails by timeout."""
    return subprocess.run(
        [sys.executable, "-m", "robust_collector.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["fifo", "devzero", "link-to-file"])
def test_run_and_health_finish_beside_a_heartbeat_that_is_not_a_regular_file(
    tmp_path: Path, kind: str
):
    (tmp_path / "c.yaml").write_text(FAST)
    db = tmp_path / "m.db"
    beat = heartbeat_path(db)
    victim = tmp_path / "victim.json"
    victim.write_text('{"precious": true}')
    plant_heartbeat(beat, kind, victim)

    run = cli("run", "--config", "c.yaml", "--db", str(db), "--duration", "0.3", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "stopped after" in run.stdout
    assert run.stderr.count(IGNORED.format(beat)) == 1, run.stderr  # one warning, at stop
    assert "Traceback" not in run.stderr

    health = cli("health", "--db", str(db), cwd=tmp_path)
    assert health.returncode == 3, health.stdout + health.stderr  # stopped: UNKNOWN
    assert "was stopped" in health.stdout, health.stdout  # the database's word
    assert health.stderr.count(IGNORED.format(beat)) == 1, health.stderr
    assert "Traceback" not in health.stderr and "MemoryError" not in health.stderr

    assert victim.read_text() == '{"precious": true}'
    assert stat.S_ISFIFO(beat.lstat().st_mode) if kind == "fifo" else beat.is_symlink()


def test_a_heartbeat_file_past_the_size_cap_is_no_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import robust_collector.health.store as store

    db = tmp_path / "m.db"
    db.write_bytes(b"")
    write_heartbeat(db, snap(), "r1", 60.0)
    assert store._read_heartbeat(db) is not None
    monkeypatch.setattr(store, "HEARTBEAT_MAX_BYTES", heartbeat_path(db).stat().st_size - 1)
    assert store._read_heartbeat(db) is None
    assert store.mark_heartbeat_stopped(db, "r1") is False
    assert caplog.text.count("ignored: larger than") == 1
