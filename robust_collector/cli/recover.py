"""``robust-collector recover``: replay JSONL backup files into the database and print a
per-file report; exit 1 when a file could not be recovered."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robust_collector.boundary import clean_text
from robust_collector.cli.common import EXIT_OK, EXIT_USAGE, config_of, db_target


def cmd_recover(args: argparse.Namespace) -> int:
    """Replay every backup file into the database and print a per-file report."""
    from robust_collector.storage.recovery import recover

    config = config_of(args) if (args.config or not (args.db and args.backup_path)) else None
    db = db_target(args, config)
    backup_path = (
        Path(args.backup_path)
        if args.backup_path
        else Path(config.realtime_data.backup.backup_path)  # type: ignore[union-attr]
    )
    after = config.realtime_data.backup.after_recovery if config is not None else "move"
    if not backup_path.is_dir():
        shown = clean_text(backup_path, 500)
        if args.backup_path:  # a folder the user typed: a typo is worth an error
            print(f"robust-collector recover: no backup folder at {shown}", file=sys.stderr)
            return EXIT_USAGE
        # the configured folder is made by the first failed write: none yet is the normal state
        print(
            f"nothing to recover: no backup folder at {shown} yet "
            "(it is made when a database write fails)"
        )
        return EXIT_OK
    from robust_collector.storage.backup import unsafe_backup_entries

    for entry in unsafe_backup_entries(backup_path):  # symlinks, FIFOs: never read or moved
        print(f"left alone: {clean_text(entry.name, 200)}: not a regular file", file=sys.stderr)
    report = recover(db, backup_path, dry_run=args.dry_run, after=after, progress=not args.quiet)
    files = report.files
    if files.is_empty():
        print(f"no backup files in {backup_path}: nothing to recover")
        return EXIT_OK
    with_names = files.with_columns(
        files["file"].map_elements(lambda f: Path(f).name, return_dtype=str)
    )
    cols = [
        "file",
        "lines",
        "inserted",
        "already_present",
        "torn",
        "corrupt",
        "quarantined",
        "status",
    ]
    widths = {c: max(len(c), *(len(str(v)) for v in with_names[c].to_list())) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for row in with_names.select(cols).iter_rows():
        print("  ".join(str(v).ljust(widths[c]) for c, v in zip(cols, row, strict=True)))
    print(report.summary())
    for p in report.problems.iter_rows(named=True):
        print(f"  {p['kind']}: {Path(p['file']).name} line {p['line']}: {p['detail']}")
    if args.dry_run:
        print("dry run: nothing was written or moved")
    return EXIT_OK if report.ok else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``recover`` subcommand and its options."""
    rec = sub.add_parser(
        "recover",
        help="replay JSONL backup files into the database (idempotent)",
        description=(
            "Replay every backup file (oldest first) into the database, with a progress bar and "
            "a per-file report (lines, inserted, already present, torn, corrupt). Files still "
            "being written by a running collector are skipped as 'in use'. Running it twice "
            "inserts nothing the second time. Exit code 1 when a file could not be recovered."
        ),
    )
    rec.add_argument(
        "--config", type=Path, help="read the database and backup folder from this config"
    )
    rec.add_argument("--backup-path", help="backup folder (overrides backup.backup_path)")
    rec.add_argument(
        "--db", help="SQLite database file or postgresql:// URL (overrides the config's storage)"
    )
    rec.add_argument(
        "--dry-run", action="store_true", help="count what would be inserted; change nothing"
    )
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=cmd_recover)
