"""``robust-collector run``: collect until --duration, Ctrl-C or a stop signal, then flush
and print a summary; exit 4 when the source failed the run."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import robust_collector
from robust_collector.boundary import clean_text
from robust_collector.cli.common import (
    EXIT_OK,
    config_of,
    label,
    positive_seconds,
)
from robust_collector.config import DATABASE_URL_ENV, DEFAULT_CONFIG_PATH
from robust_collector.secrets import redact

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


def cmd_run(args: argparse.Namespace) -> int:
    """Run the collector until --duration passes, Ctrl-C or SIGTERM; then flush and summarise."""
    from robust_collector.collector import Collector

    config = config_of(args)
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
            f"from the {config.source.type} source into {clean_text(label(collector.db_path))}"
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
            + (
                f"check --db / storage.url / {DATABASE_URL_ENV}"
                if config.storage.backend == "postgresql"
                else "check --db / storage.database"
            ),
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
    line = dataclasses.replace(collector.status(), health_level=level).line(accepted=True)
    return clean_text(line, 100_000)


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
    if any(s.trades for s in summary.symbols.values()):
        dup = sum(s.trade_duplicates for s in summary.symbols.values())
        _say(
            f"{summary.trades_stored} trades stored, {summary.trade_rejects} rejected, "
            f"{dup} exact repeats dropped"
        )
    if st is not None and (st.ticks_to_backup or st.rejects_to_backup or st.trades_to_backup):
        trades = f" and {st.trades_to_backup} trades" if st.trades_to_backup else ""
        if st.backup_files:  # still in the backup folder: the database never took them back
            _say(
                f"{st.ticks_to_backup} ticks{trades} went to backup files; {st.backup_files} "
                "file(s) remain; replay them with: robust-collector recover"
            )
        else:
            _say(
                f"{st.ticks_to_backup} ticks{trades} went to backup files, all replayed into "
                "the database since"
            )
    if st is not None and st.lost_rows:
        _say(f"WARNING: {st.lost_rows} rows could be written neither to the database nor to backup")
    shown = repr(summary.database) if "://" not in summary.database else "<the postgresql URL>"
    _say(f"read it in Python: robust_collector.read_ticks({clean_text(shown)})")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``run`` subcommand and its options."""
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
    run.add_argument("--duration", type=positive_seconds, help="stop after this many seconds")
    run.add_argument(
        "--db", help="SQLite database file or postgresql:// URL (overrides the config's storage)"
    )
    run.add_argument(
        "--status-interval",
        type=positive_seconds,
        default=5.0,
        help="seconds between status lines (default: 5)",
    )
    run.set_defaults(func=cmd_run)
