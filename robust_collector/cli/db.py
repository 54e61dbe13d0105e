"""``robust-collector db init``: create or migrate the schema of a SQLite file or a
PostgreSQL database (idempotent)."""

from __future__ import annotations

import argparse
from pathlib import Path

from robust_collector.cli.common import EXIT_OK, EXIT_USAGE, db_target, label


def cmd_db_init(args: argparse.Namespace) -> int:
    """Create or migrate the database schema (idempotent; safe while collectors run)."""
    db = db_target(args)
    if isinstance(db, Path):
        from robust_collector.storage.schema import SCHEMA_VERSION, open_database

        open_database(db).close()
        print(
            f"SQLite database {db}: schema version {SCHEMA_VERSION}, ready "
            "(tables, columns, keys and indexes verified)"
        )
        return EXIT_OK
    from robust_collector.storage.postgres import connect_postgres, init_postgres

    conn = connect_postgres(db, init=False)
    try:
        done = init_postgres(conn)
    finally:
        conn.close()
    made = []
    if done["created"]:
        made.append(f"created tables {', '.join(done['created'])}")
    if done["columns_added"]:
        made.append(f"added columns {', '.join(done['columns_added'])}")
    if done["indexes_created"]:  # on tables that were there (a new table brings its own)
        made.append(f"created indexes {', '.join(done['indexes_created'])}")
    if done["from_version"] == 0:
        what = "; ".join(made) or "created"
    elif done["from_version"] != done["version"]:
        what = "; ".join([f"migrated from version {done['from_version']}", *made])
    elif made:
        what = "repaired: " + "; ".join(made)
    else:
        what = "already up to date (tables, columns, keys and indexes verified)"
    kind = "TimescaleDB hypertable for ticks" if done["timescale"] else "plain tables"
    print(f"PostgreSQL {label(db)}: schema version {done['version']} ({kind}): {what}")
    for warning in done["warnings"]:
        print(f"warning: {warning}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``db`` subcommand and its ``init`` action."""
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
