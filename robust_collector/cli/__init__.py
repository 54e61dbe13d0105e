"""The ``robust-collector`` command line: run the collector headless, report its health,
recover backups, drill the failure scenarios, manage the database schema.

A user mistake (bad config, missing file) prints one line naming what was wrong
and exits 2; never a traceback. Each command lives in its own module (``run``,
``health``, ``recover``, ``drill``, ``db``) with its options; this one wires them
into one parser and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import robust_collector
from robust_collector.boundary import clean_text
from robust_collector.cli import db, drill, health, recover, run
from robust_collector.cli.common import EXIT_USAGE
from robust_collector.cli.run import status_line
from robust_collector.errors import ConfigError, StorageError
from robust_collector.secrets import install_handler_filter, redact
from robust_collector.storage.reader import reader_errors

__all__ = ["build_parser", "main", "status_line"]


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
    for command in (run, health, recover, drill, db):  # the order --help lists them in
        command.add_parser(sub)
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
    install_handler_filter()  # every record, from any logger: secrets masked, one clean line
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
