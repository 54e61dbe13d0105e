"""``robust-collector drill``: run the five failure scenarios live against a config and
print the checklist; exit 0 only when every line passes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from robust_collector.cli.common import EXIT_OK, config_of


def cmd_drill(args: argparse.Namespace) -> int:
    """Run the seed's five robustness scenarios live; exit 0 only if every line passes."""
    import json

    from robust_collector.drill import run_drill

    config = config_of(args)
    progress = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    logging.getLogger("robust_collector").setLevel(logging.ERROR)  # the drill causes faults
    report = run_drill(config, progress=progress)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.text())
    return EXIT_OK if report.passed else 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``drill`` subcommand and its options."""
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
