"""``robust-collector health``: the stored health of a collector (or of every instance
writing into a PostgreSQL server) as text or JSON; the exit code says the level."""

from __future__ import annotations

import argparse
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from robust_collector.boundary import clean_text
from robust_collector.cli.common import (
    EXIT_OK,
    at_least_one,
    db_target,
    label,
    positive_seconds,
)


def _is_regular(path: Path) -> bool:
    """True when ``path`` itself is a regular file (a symlink or FIFO there is not)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


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

    db = db_target(args)
    if isinstance(db, str) and args.mode in ("single", "continuous"):
        return _fleet_health(args, db)
    # a collector whose database was deleted still writes its heartbeat: single reports use it
    beat_only = args.mode in ("single", "continuous") and _is_regular(heartbeat_path(db))
    if isinstance(db, Path) and not db.exists() and not beat_only:
        msg = f"❔ UNKNOWN: no database at {clean_text(db)}"
        print(json.dumps({"level": "UNKNOWN", "error": msg}) if args.json else msg)
        return hr.EXIT_UNKNOWN
    if args.mode in ("history", "errors"):
        if args.mode == "history":
            df = health_history(db, component=args.component, limit=args.count or 50)
        else:
            df = recent_errors(db, component=args.component, limit=args.count or 50)
            if isinstance(db, str):  # a server many instances write into: say whose error
                df = _with_instance(db, df)
        now = now_us()
        if args.json:
            rows = df.drop("ts").to_dicts()
            for row in rows:  # every row says how old it is
                row["age_seconds"] = round((now - row["ts_us"]) / 1e6, 3)
                for key, empty in (("reasons", []), ("metrics", {})):
                    if key in row:  # stored as JSON text: nested as data, not as a string
                        row[key] = _json_value(row[key], empty)
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
        chosen = None if snap is None else _component(snap, args.component)
        if snap is None or live is None:
            code = hr.EXIT_UNKNOWN
        elif running:  # with --component, that component's level decides
            code = hr.exit_code(snap.level if chosen is None else chosen.level)
        else:  # died or went silent without being stopped: CRITICAL; stopped: unknown
            code = hr.EXIT_CRITICAL if live.failed else hr.EXIT_UNKNOWN
        if args.json:
            if snap is None:
                data: dict[str, Any] = {"level": "UNKNOWN", "running": False, "state": "unknown"}
            else:
                data = hr.snapshot_json(snap, running, now_us=now, live=live)
                if chosen is not None:  # only that component (the level stays the overall one)
                    data["component"] = chosen.name
                    data["components"] = [c for c in data["components"] if c["name"] == chosen.name]
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

    try:
        return _repeat(args, once)
    except _UnknownName as exc:
        return _unknown_name(args, str(exc))


class _UnknownName(LookupError):
    """``--component`` names nothing that exists: one line listing what does, exit 3."""


def _unknown_name(args: argparse.Namespace, message: str) -> int:
    import json

    from robust_collector.health import report as hr

    if args.json:  # scripts still get JSON
        print(json.dumps({"level": "UNKNOWN", "error": message}), flush=True)
    else:  # a monitoring plugin's one status line, like the other UNKNOWN answers
        print(f"❔ UNKNOWN: {message}", flush=True)
    return hr.EXIT_UNKNOWN


def _component(snap: Any, name: str | None) -> Any:
    """The component ``--component`` names in ``snap`` (``None`` when none was asked for);
    a name it does not have raises ``_UnknownName`` listing the known ones."""
    if name is None:
        return None
    for c in snap.components:
        if c.name == name:
            return c
    known = ", ".join(clean_text(c.name, 200) for c in snap.components) or "none"
    raise _UnknownName(f"no component named {clean_text(name, 200)!r}; known: {known}")


def _json_value(text: Any, empty: Any) -> Any:
    """A column stored as JSON text, parsed (``empty`` for none; unparsable text as is)."""
    import json

    if text is None or text == "":
        return empty
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _with_instance(db: str, df: Any) -> Any:
    """``df`` (rows with a ``run_id``) with the ``instance`` of each row's run, from ``runs``
    (``None`` for a run not recorded there), placed after ``run_id``."""
    import polars as pl

    from robust_collector.storage.reader import query_frame

    runs = query_frame(
        db, "SELECT run_id, instance FROM runs", (), {"run_id": pl.String, "instance": pl.String}
    ).unique("run_id")
    joined = (  # the rows' own order (oldest first) kept whatever the join does
        df.with_row_index("_row").join(runs, on="run_id", how="left").sort("_row").drop("_row")
    )
    cols = list(df.columns)
    return joined.select(
        [*cols[: cols.index("run_id") + 1], "instance", *cols[cols.index("run_id") + 1 :]]
    )


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
            chosen = [i for i in instances if i.instance == args.component]
            if not chosen:
                name = clean_text(args.component, 200)
                known = ", ".join(clean_text(i.instance, 200) for i in instances) or "none"
                raise _UnknownName(f"no instance {name!r} in {label(db)}; known: {known}")
            instances = chosen
        if args.json:
            data = {"database": label(db), "instances": [i.as_dict() for i in instances]}
            print(json.dumps(data, indent=None if args.mode == "continuous" else 2), flush=True)
        else:
            print(render_fleet(instances, label(db)), flush=True)
        return fleet_exit_code(instances)

    try:
        return _repeat(args, once)
    except _UnknownName as exc:
        return _unknown_name(args, str(exc))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``health`` subcommand and its options."""
    health = sub.add_parser(
        "health",
        help="show the health of a collector (also one running in another process)",
        description=(
            "Read the health snapshots and errors a collector writes to its database and print "
            "them, with the snapshot's age. Exit code: 0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY or "
            "CRITICAL (also: the collector died or stopped reporting without being stopped), "
            "3 unknown (no database, no snapshot, the run was stopped, or --component names "
            "nothing). With --component, the exit code is that component's level."
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
        help="only this component (a symbol, storage, source, ...), whose level sets the exit "
        "code; in the fleet view, one instance",
    )
    health.add_argument(
        "--interval",
        type=positive_seconds,
        default=30.0,
        help="seconds between continuous reports (default: 30)",
    )
    health.add_argument(
        "--count",
        type=at_least_one,
        help="continuous: stop after N reports; history/errors: rows to show (default 50)",
    )
    health.add_argument("--json", action="store_true", help="print JSON for scripts")
    health.set_defaults(func=cmd_health)
