"""The ``robust-collector`` command line: run the collector headless, recover backups.

A user mistake (bad config, missing file) prints one line naming what was wrong
and exits 2; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import robust_collector
from robust_collector.boundary import clean_text
from robust_collector.config import DEFAULT_CONFIG_PATH, Config, load_config
from robust_collector.errors import ConfigError, StorageError
from robust_collector.secrets import mask_credentials, redact
from robust_collector.storage.backend import is_postgres_url
from robust_collector.storage.reader import reader_errors

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOURCE_FAILED = 4  # `run`: the source was dead, wrong or refused our credentials

# Signals that mean "stop now" to a headless run: SIGTERM (kill, systemd), SIGHUP (the
# terminal closed), SIGUSR1/SIGUSR2 (their default action would kill the process and lose
# the in-memory buffer). Each flushes everything and exits like SIGTERM. SIGINT (Ctrl-C)
# arrives as KeyboardInterrupt and ends the same way.
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


def _load(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    over: dict[str, Any] = dict(overrides or {})
    if getattr(args, "db", None):
        storage = over.setdefault("storage", {})
        if is_postgres_url(args.db):
            storage.update(backend="postgresql", url=args.db)
        else:
            storage.update(backend="sqlite", database=args.db)
    config = load_config(path, overrides=over or None)
    if path is None:
        print(
            f"note: {DEFAULT_CONFIG_PATH} not found; using the built-in defaults", file=sys.stderr
        )
    return config


def _positive(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < x < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {value!r}")
    return x


def cmd_run(args: argparse.Namespace) -> int:
    """Run the collector until --duration passes, Ctrl-C or SIGTERM; then flush and summarise."""
    from robust_collector.collector import Collector

    config = _load(args)
    if not config.realtime_data.enabled:
        print("robust-collector: realtime_data.enabled is false in the config: nothing to collect")
        return EXIT_OK
    collector = Collector(config)
    stop = threading.Event()
    caught: list[int] = []

    def on_stop_signal(signum: int, frame: Any) -> None:
        caught.append(signum)  # repeated signals while stopping only set the flag again
        stop.set()

    previous = {sig: signal.signal(sig, on_stop_signal) for sig in STOP_SIGNALS}
    try:
        _say(
            f"robust-collector {robust_collector.__version__}: run {collector.run_id}, "
            f"{len(config.symbols)} symbols ({', '.join(config.symbols)}) "
            f"from the {config.source.type} source into {clean_text(_label(collector.db_path))}"
        )
        collector.start()
        started = time.monotonic()
        next_status = started + args.status_interval
        try:
            while not stop.is_set():
                now = time.monotonic()
                if args.duration is not None and now - started >= args.duration:
                    break
                if collector.finished:
                    _say("replay finished: every symbol reached the end of its data")
                    break
                if collector.stream_status() is not None and collector.source_problem():
                    break  # a stream stopped for good (credentials refused): nothing to wait for
                if now >= next_status:
                    _say(f"[{now - started:7.1f}s] {status_line(collector)}")
                    next_status += args.status_interval
                stop.wait(0.1)
        except KeyboardInterrupt:
            _say("\ninterrupted: flushing and stopping...")
        finally:
            if caught:
                _say(f"{signal.Signals(caught[0]).name}: flushing and stopping...")
            summary = collector.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _print_summary(summary, time.monotonic() - started)
    st = summary.storage
    if st is not None and st.ticks_written == 0 and st.db_errors and summary.stored == 0:
        _say(
            f"robust-collector run: nothing reached the database ({clean_text(st.last_error)}); "
            "check --db / storage.database",
            err=True,
        )
        return 1
    verdict = _source_verdict(collector, summary)
    if verdict is not None:
        _say(f"robust-collector run: {verdict}", err=True)
        return EXIT_SOURCE_FAILED
    return EXIT_OK


def _source_verdict(collector: Any, summary: Any) -> str | None:
    """One line when the source failed the run: its credentials were refused (the run
    ended paused, or the stream stopped), or it stored nothing while every request
    failed (a dead, wrong or unreachable API); None for a run that worked."""
    problem = collector.source_problem()
    if problem is not None and (summary.stored == 0 or collector.stream_status() is not None):
        return clean_text(redact(f"the source failed: {problem}"), 2000)
    if summary.stored or summary.rejects or collector.finished:
        return None
    stream = collector.stream_status()
    failed = summary.failed_attempts + (0 if stream is None else stream["connect_failures"])
    if not failed and not summary.errors:
        return None
    last = next(
        (s.last_error for s in summary.symbols.values() if s.last_error),
        None if stream is None else stream["last_error"],
    )
    return clean_text(
        redact(
            f"nothing stored: every request to the source failed ({failed} failed attempts, "
            f"{summary.errors} failed polls); last error: {last or 'unknown'}"
        ),
        2000,
    )


def _say(text: str, *, err: bool = False) -> None:
    """Print one line, surviving a terminal that is gone (SIGHUP closes it: writes fail
    with EIO or EPIPE). The run must still flush and exit with its code, so a failed
    write switches that stream to /dev/null instead of raising."""
    stream = sys.stderr if err else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        devnull = open(os.devnull, "w")  # noqa: SIM115 - replaces the stream until exit
        if err:
            sys.stderr = devnull
        else:
            sys.stdout = devnull


def status_line(collector: Any) -> str:
    """The run loop's status line: the health level evaluated now (not the last stored
    snapshot, which may be a whole ``check_interval_seconds`` old and miss backup mode),
    accepted quotes and the collector's counters; outside text shown escaped."""
    level = collector.health().level.name
    st = collector.status()
    accepted = sum(s.accepted for s in st.symbols.values())
    line = dataclasses.replace(st, health_level=None).line()
    return clean_text(f"{level}  accepted {accepted}  {line}", 100_000)


def _print_summary(summary: Any, elapsed: float) -> None:
    _say(f"\nstopped after {elapsed:.1f}s; run {clean_text(summary.run_id, 200)}")
    _say(
        f"{'symbol':<8} {'accepted':>8} {'stored':>8} {'rejects':>8} {'errors':>7} "
        f"{'failed req':>10} {'last price':>11}"
    )
    for s in summary.symbols.values():
        price = f"{s.last_price:.2f}" if s.last_price is not None else "-"
        _say(
            f"{clean_text(s.symbol, 40):<8} {s.accepted:>8} {s.stored:>8} {s.rejects:>8} "
            f"{s.errors:>7} {s.failed_attempts:>10} {price:>11}"
        )
    st = summary.storage
    accepted = sum(s.accepted for s in summary.symbols.values())
    _say(f"\ndata went to {clean_text(summary.database)} ({summary.stored} ticks this run)")
    rejects = sum(s.rejects for s in summary.symbols.values())
    _say(f"{accepted} quotes accepted, {rejects} rejected")
    if st is not None and (st.ticks_to_backup or st.rejects_to_backup):
        _say(
            f"{st.ticks_to_backup} ticks went to backup files; "
            "replay them with: robust-collector recover"
        )
    if st is not None and st.lost_rows:
        _say(f"WARNING: {st.lost_rows} rows could be written neither to the database nor to backup")
    shown = repr(summary.database) if "://" not in summary.database else "<the postgresql URL>"
    _say(f"read it in Python: robust_collector.read_ticks({clean_text(shown)})")


def _db_target(args: argparse.Namespace) -> Path | str:
    """The database a command reads: --db (a file or a postgresql:// URL), else the config's."""
    if getattr(args, "db", None):
        if is_postgres_url(args.db):
            return args.db
        if "=" in args.db and mask_credentials(args.db) != args.db:
            raise ConfigError(
                "--db: expected a SQLite file or a postgresql:// URL, got a keyword connection "
                "string with a password (give the URL; the password in "
                "ROBUST_COLLECTOR_DATABASE_URL)"
            )
        return Path(args.db)
    target = _load(args).storage.target()
    return target if is_postgres_url(target) else Path(target)


def _label(db: Path | str) -> str:
    if isinstance(db, Path):
        return str(db)
    from robust_collector.storage.postgres import redact_url

    return redact_url(db)


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value!r}")
    return n


def cmd_health(args: argparse.Namespace) -> int:
    """Report stored health (the seed's system_health.py); exit code by level."""
    import json

    from robust_collector.health import report as hr
    from robust_collector.health.store import (
        health_history,
        heartbeat_path,
        latest_snapshot,
        recent_errors,
    )
    from robust_collector.model import now_us

    db = _db_target(args)
    if isinstance(db, str) and args.mode in ("single", "continuous"):
        return _fleet_health(args, db)
    # a collector whose database was deleted still writes its heartbeat: single reports use it
    beat_only = args.mode in ("single", "continuous") and heartbeat_path(db).exists()
    if isinstance(db, Path) and not db.exists() and not beat_only:
        msg = f"❔ UNKNOWN: no database at {clean_text(db)}"
        print(json.dumps({"level": "UNKNOWN", "error": msg}) if args.json else msg)
        return hr.EXIT_UNKNOWN
    if args.mode in ("history", "errors"):
        if args.mode == "history":
            df = health_history(db, component=args.component, limit=args.count or 50)
        else:
            df = recent_errors(db, component=args.component, limit=args.count or 50)
        now = now_us()
        if args.json:
            rows = df.drop("ts").to_dicts()
            for row in rows:  # every row says how old it is
                row["age_seconds"] = round((now - row["ts_us"]) / 1e6, 3)
            print(json.dumps(rows, indent=2, default=str))
        elif args.mode == "history":
            print(hr.render_history(df, now_us=now))
        else:
            print(hr.render_errors(df, args.component, now_us=now))
        if args.mode == "history" and df.is_empty():
            return hr.EXIT_UNKNOWN
        return EXIT_OK

    def once() -> int:
        now = now_us()
        snap = latest_snapshot(db)
        live = None if snap is None else hr.liveness(snap, now)
        running = live is not None and live.running
        if snap is None or live is None:
            code = hr.EXIT_UNKNOWN
        elif running:
            code = hr.exit_code(snap.level)
        else:  # died or went silent without being stopped: CRITICAL; stopped: unknown
            code = hr.EXIT_CRITICAL if live.failed else hr.EXIT_UNKNOWN
        if args.json:
            if snap is None:
                data: dict[str, Any] = {"level": "UNKNOWN", "running": False, "state": "unknown"}
            else:
                data = hr.snapshot_json(snap, running, now_us=now, live=live)
            if snap is not None and live is not None and not running:
                data["level_when_last_seen"] = data.pop("level")
                data["level"] = "CRITICAL" if live.failed else "UNKNOWN"
            # continuous: one JSON document per line (JSON Lines) so scripts can stream it
            indent = None if args.mode == "continuous" else 2
            print(json.dumps(data, indent=indent, default=str), flush=True)
        elif running and snap is not None:
            print(hr.render_single(snap, component=args.component, now_us=now), flush=True)
        else:
            print(hr.render_not_running(snap, live, str(db), now_us=now), flush=True)
        return code

    return _repeat(args, once)


def _repeat(args: argparse.Namespace, once: Callable[[], int]) -> int:
    """Run ``once`` (print a report, return its exit code); in continuous mode again every
    ``--interval`` seconds until ``--count`` reports or Ctrl-C."""
    shown = 0
    while True:
        code = once()
        shown += 1
        if args.mode != "continuous" or (args.count and shown >= args.count):
            return code
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return code
        if not args.json:
            print()


def _fleet_health(args: argparse.Namespace, db: str) -> int:
    """Every instance writing into a shared server: level, last heartbeat, symbols."""
    import json

    from robust_collector.health.fleet import fleet_exit_code, fleet_status, render_fleet

    def once() -> int:
        instances = fleet_status(db)
        if args.component:  # one instance of the fleet
            instances = [i for i in instances if i.instance == args.component]
            if not instances and not args.json:
                name = clean_text(args.component, 200)
                print(f"❔ UNKNOWN: no instance {name!r} in {_label(db)}", flush=True)
                return 3
        if args.json:
            data = {"database": _label(db), "instances": [i.as_dict() for i in instances]}
            print(json.dumps(data, indent=None if args.mode == "continuous" else 2), flush=True)
        else:
            print(render_fleet(instances, _label(db)), flush=True)
        return fleet_exit_code(instances)

    return _repeat(args, once)


def cmd_db_init(args: argparse.Namespace) -> int:
    """Create or migrate the database schema (idempotent; safe while collectors run)."""
    db = _db_target(args)
    if isinstance(db, Path):
        from robust_collector.storage.schema import SCHEMA_VERSION, open_database

        open_database(db).close()
        print(f"SQLite database {db}: schema version {SCHEMA_VERSION}, ready")
        return EXIT_OK
    from robust_collector.storage.postgres import connect_postgres, init_postgres

    conn = connect_postgres(db, init=False)
    try:
        done = init_postgres(conn)
    finally:
        conn.close()
    if done["from_version"] == done["version"] and not done["created"]:
        what = "already up to date"
    elif done["from_version"] == 0:
        what = f"created tables {', '.join(done['created'])}"
    else:
        what = f"migrated from version {done['from_version']}"
        if done["created"]:
            what += f", created {', '.join(done['created'])}"
    kind = "TimescaleDB hypertable for ticks" if done["timescale"] else "plain tables"
    print(f"PostgreSQL {_label(db)}: schema version {done['version']} ({kind}): {what}")
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    """Replay every backup file into the database and print a per-file report."""
    from robust_collector.storage.recovery import recover

    config = _load(args) if (args.config or not (args.db and args.backup_path)) else None
    db = _db_target(args)
    backup_path = (
        Path(args.backup_path)
        if args.backup_path
        else Path(config.realtime_data.backup.backup_path)  # type: ignore[union-attr]
    )
    after = config.realtime_data.backup.after_recovery if config is not None else "move"
    if not backup_path.is_dir():
        print(f"robust-collector: no backup folder at {backup_path}", file=sys.stderr)
        return EXIT_USAGE
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


def cmd_drill(args: argparse.Namespace) -> int:
    """Run the seed's five robustness scenarios live; exit 0 only if every line passes."""
    import json

    from robust_collector.drill import run_drill

    config = _load(args)
    progress = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    logging.getLogger("robust_collector").setLevel(logging.ERROR)  # the drill causes faults
    report = run_drill(config, progress=progress)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.text())
    return EXIT_OK if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test to list every command)."""
    parser = argparse.ArgumentParser(
        prog="robust-collector",
        description=(
            "A fault-tolerant market-data collector: per-symbol circuit breakers, retry with "
            "backoff, validation, health monitoring and JSONL backup when the database fails."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {robust_collector.__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the collector (Ctrl-C, SIGTERM, SIGHUP, SIGUSR1/2 stop it cleanly)",
        description=(
            "Start the collector with the given config, print a status line every few seconds, "
            "and on --duration, Ctrl-C, SIGTERM, SIGHUP, SIGUSR1 or SIGUSR2 flush everything "
            "and print a summary."
        ),
    )
    run.add_argument(
        "--config",
        type=Path,
        help=f"YAML config file (default: {DEFAULT_CONFIG_PATH} if it exists, else built-in defaults)",
    )
    run.add_argument("--duration", type=_positive, help="stop after this many seconds")
    run.add_argument(
        "--db", help="SQLite database file or postgresql:// URL (overrides the config's storage)"
    )
    run.add_argument(
        "--status-interval",
        type=_positive,
        default=5.0,
        help="seconds between status lines (default: 5)",
    )
    run.set_defaults(func=cmd_run)

    health = sub.add_parser(
        "health",
        help="show the health of a collector (also one running in another process)",
        description=(
            "Read the health snapshots and errors a collector writes to its database and print "
            "them, with the snapshot's age. Exit code: 0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY or "
            "CRITICAL (also: the collector died or stopped reporting without being stopped), "
            "3 unknown (no database, no snapshot, or the run was stopped)."
        ),
    )
    where = health.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="read the database named in this config")
    where.add_argument(
        "--db",
        help="read this SQLite database, or a postgresql:// URL: the fleet view of every instance",
    )
    health.add_argument(
        "--mode",
        choices=("single", "continuous", "history", "errors"),
        default="single",
        help="single report (default), continuous reports, level history, or recent errors",
    )
    health.add_argument(
        "--component",
        help="only this component (a symbol, storage, source, ...); in the fleet view, one instance",
    )
    health.add_argument(
        "--interval",
        type=_positive,
        default=30.0,
        help="seconds between continuous reports (default: 30)",
    )
    health.add_argument(
        "--count",
        type=_count,
        help="continuous: stop after N reports; history/errors: rows to show (default 50)",
    )
    health.add_argument("--json", action="store_true", help="print JSON for scripts")
    health.set_defaults(func=cmd_health)

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

    drill = sub.add_parser(
        "drill",
        help="prove robustness: run the five failure scenarios live against your config",
        description=(
            "Run the seed's five scenarios (API fails temporarily, API keeps failing, bad data, "
            "database failing, one symbol fails) against the real pipeline in a temporary folder, "
            "with your config's thresholds and its durations scaled down, and print the checklist "
            "with what was measured. Exit code 0 only when every line passes."
        ),
    )
    drill.add_argument("--config", type=Path, help="config whose thresholds to drill")
    drill.add_argument("--json", action="store_true", help="print the checklist as JSON")
    drill.set_defaults(func=cmd_drill)

    db = sub.add_parser(
        "db",
        help="manage the database schema (init creates or migrates it)",
        description=(
            "Create the tables and indexes, or migrate an older schema, in the SQLite file or "
            "PostgreSQL database named by --db or the config. On PostgreSQL with the TimescaleDB "
            "extension, ticks become a hypertable. Idempotent: running it again changes nothing."
        ),
    )
    db.set_defaults(func=lambda _args: (db.print_help(), EXIT_USAGE)[1])
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    init = db_sub.add_parser("init", help="create or migrate the schema")
    where = init.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="the database named in this config")
    where.add_argument("--db", help="SQLite database file or postgresql:// URL")
    init.set_defaults(func=cmd_db_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``robust-collector`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"robust-collector: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"robust-collector: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (*reader_errors(), StorageError, OSError, RuntimeError) as exc:
        # a database or file that is not what the command needs: one line, no traceback
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = clean_text(redact(text))
        print(f"robust-collector {args.command}: {text}", file=sys.stderr)
        return 3 if args.command == "health" else EXIT_USAGE
    except KeyboardInterrupt:
        return 130
