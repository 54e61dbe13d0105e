"""What the commands share: exit codes, the config and database a command names, option
types, and a label for a database that never shows a password."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from robust_collector.config import DATABASE_URL_ENV, DEFAULT_CONFIG_PATH, Config, load_config
from robust_collector.errors import ConfigError
from robust_collector.secrets import mask_credentials
from robust_collector.storage.backend import is_postgres_url

EXIT_OK = 0
EXIT_USAGE = 2


def config_of(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Config:
    """The config a command runs with: ``--config`` (else the default file if it exists,
    else the built-in defaults), with ``--db`` overriding its storage.

    Every command resolves its database here (``db_target`` too), so they agree: ``--db``
    first; else, with ``ROBUST_COLLECTOR_DATABASE_URL`` set, that PostgreSQL server unless
    the config says ``storage.backend: sqlite`` itself; else the config's storage."""
    path = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    over: dict[str, Any] = {
        k: dict(v) if isinstance(v, dict) else v for k, v in (overrides or {}).items()
    }
    if getattr(args, "db", None):
        storage = over.setdefault("storage", {})
        if is_postgres_url(args.db):
            storage.update(backend="postgresql", url=args.db)
        else:
            storage.update(backend="sqlite", database=args.db)
    config = load_config(path, overrides=over or None)
    from_env = (
        not getattr(args, "db", None)
        and bool(os.environ.get(DATABASE_URL_ENV))
        and config.storage.backend == "sqlite"
        and not _names_backend(path)
    )
    if from_env:  # the documented fleet setup: the variable alone names the server
        over.setdefault("storage", {})["backend"] = "postgresql"
        config = load_config(path, overrides=over)
    if path is None:
        where = f" (database: {DATABASE_URL_ENV})" if from_env else ""
        print(
            f"note: {DEFAULT_CONFIG_PATH} not found; using the built-in defaults{where}",
            file=sys.stderr,
        )
    elif from_env:  # never silently: the file names a SQLite database the variable overrides
        print(
            f"note: the database is {DATABASE_URL_ENV}, not {path}'s storage.database "
            "(storage.backend: sqlite in the file, or --db, keeps SQLite)",
            file=sys.stderr,
        )
    return config


def _names_backend(path: Path | None) -> bool:
    """Whether the config file at ``path`` sets ``storage.backend`` itself (a file that
    only names ``storage.database``, like the default one, leaves the choice open)."""
    if path is None:
        return False
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False  # load_config has read it already; it would have said what is wrong
    storage = raw.get("storage") if isinstance(raw, dict) else None
    return isinstance(storage, dict) and "backend" in storage


def positive_seconds(value: str) -> float:
    """An option's number of seconds: finite and above 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 < x < 1e9:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {value!r}")
    return x


def db_target(args: argparse.Namespace, config: Config | None = None) -> Path | str:
    """The database a command reads: --db (a file or a postgresql:// URL), else the one
    ``config_of`` resolves (``config``, when the command has loaded it already)."""
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
    target = (config if config is not None else config_of(args)).storage.target()
    return target if is_postgres_url(target) else Path(target)


def label(db: Path | str) -> str:
    """A database as shown to people: the file path, or the URL without its password."""
    if isinstance(db, Path):
        return str(db)
    from robust_collector.storage.postgres import redact_url

    return redact_url(db)


def at_least_one(value: str) -> int:
    """An option's whole number, 1 or more."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value!r}")
    return n
