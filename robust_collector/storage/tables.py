"""Every table the collector stores, defined once as data.

Each ``Table`` lists its columns in order with their SQLite type, PostgreSQL type,
polars dtype and constraints, and its indexes. The SQLite and PostgreSQL DDL, the
INSERT statements and the polars schemas are all derived from these definitions,
so the backends, the writer and the readers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

__all__ = [
    "BREAKER_EVENTS",
    "ERRORS",
    "GAPS",
    "HEALTH",
    "INSERT_BREAKER_EVENT",
    "INSERT_ERROR",
    "INSERT_GAP",
    "INSERT_HEALTH",
    "INSERT_REJECTS",
    "INSERT_RUN",
    "INSERT_TICKS",
    "INSERT_TRADES",
    "INSERT_TRADE_REJECTS",
    "PG_SCHEMA",
    "QUOTE_COLUMNS",
    "QUOTE_POLARS_SCHEMA",
    "REJECTS",
    "REJECT_COLUMNS",
    "RUNS",
    "SCHEMA_VERSION",
    "SQLITE_DDL",
    "STOP_RUN",
    "TABLES",
    "TABLE_NAMES",
    "TICKS",
    "TICK_COLUMNS",
    "TRADES",
    "TRADE_COLUMNS",
    "TRADE_FIELDS",
    "TRADE_REJECTS",
    "TRADE_REJECT_COLUMNS",
    "Column",
    "FoundTable",
    "Index",
    "Problem",
    "SqlType",
    "Table",
    "postgres_ddl",
    "postgres_migrations",
    "schema_problems",
]

SCHEMA_VERSION = 4
"""The schema's version (SQLite ``user_version``, PostgreSQL ``rc_schema``); 2 added
``runs.instance``, 3 the ``trades`` and ``trade_rejects`` tables, 4 the
``health_snapshots (run_id, component, ts_us)`` index (the fleet view's lookup). A
column's ``added_in`` says which version brought it; a table's and an index's likewise."""

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class SqlType:
    """One column type as each backend and polars spell it."""

    sqlite: str
    postgres: str
    polars: Any


TEXT = SqlType("TEXT", "TEXT", pl.String)
INTEGER = SqlType("INTEGER", "BIGINT", pl.Int64)
REAL = SqlType("REAL", "DOUBLE PRECISION", pl.Float64)
ROW_ID = SqlType("INTEGER", "BIGSERIAL", pl.Int64)
"""A key the database assigns (SQLite's rowid alias, a PostgreSQL sequence); never inserted."""
VERSION = SqlType("INTEGER", "INTEGER", pl.Int32)


@dataclass(frozen=True)
class Column:
    """One column; ``added_in`` > 1 marks a column older databases lack and get by migration."""

    name: str
    type: SqlType
    not_null: bool = False
    primary_key: bool = False
    added_in: int = 1

    @property
    def generated(self) -> bool:
        """True when the database assigns the value (an ``INTEGER PRIMARY KEY`` id)."""
        return self.type is ROW_ID

    def sql(self, dialect: Dialect, *, primary_key: bool | None = None) -> str:
        """The column's type and constraints (without its name) in ``dialect``."""
        pk = self.primary_key if primary_key is None else primary_key
        parts = [self.type.sqlite if dialect == "sqlite" else self.type.postgres]
        if pk:
            parts.append("PRIMARY KEY")
        elif self.not_null or self.primary_key:  # a key moved to a table constraint
            parts.append("NOT NULL")
        return " ".join(parts)


@dataclass(frozen=True)
class Index:
    """An index; one with ``using`` (a PostgreSQL access method like brin) is PostgreSQL's only.
    ``added_in``: the schema version that brought it (older databases get it by migration:
    the DDL's ``CREATE INDEX IF NOT EXISTS``, and verification creates any index missing)."""

    name: str
    columns: tuple[str, ...]
    using: str | None = None
    added_in: int = 1

    def sql(self, table: str) -> str:
        cols = ", ".join(self.columns)
        if self.using is None:
            return f"CREATE INDEX IF NOT EXISTS {self.name} ON {table}({cols});"
        return f"CREATE INDEX IF NOT EXISTS {self.name} ON {table} USING {self.using} ({cols});"


@dataclass(frozen=True)
class Table:
    """A table: its columns in order, its indexes, and how rows go in.

    ``or_ignore``: inserts skip a row whose key is already stored (replaying a backup
    twice stores nothing twice). ``hypertable_key``: the primary key a TimescaleDB
    hypertable uses instead (its unique keys must hold the time column). ``added_in``:
    the schema version that brought the table (older databases get it by migration).
    """

    name: str
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    or_ignore: bool = False
    hypertable_key: tuple[str, ...] = ()
    added_in: int = 1

    @property
    def names(self) -> tuple[str, ...]:
        """Every column name, in order."""
        return tuple(c.name for c in self.columns)

    @property
    def writable(self) -> tuple[str, ...]:
        """The columns an insert supplies (all but a database-assigned id)."""
        return tuple(c.name for c in self.columns if not c.generated)

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key's columns (``()`` when it has none)."""
        return tuple(c.name for c in self.columns if c.primary_key)

    @property
    def dedup_keys(self) -> tuple[tuple[str, ...], ...]:
        """The unique keys any one of which makes this table's inserts idempotent (an
        ``or_ignore`` table: its primary key, or its hypertable key); ``()`` for others."""
        if not self.or_ignore:
            return ()
        return tuple(k for k in (self.key, self.hypertable_key) if k)

    def column(self, name: str) -> Column:
        """The column called ``name`` (``KeyError`` if there is none)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name}")

    @property
    def polars_schema(self) -> dict[str, Any]:
        """``{column: polars dtype}`` for every column, in order (a fresh dict)."""
        return {c.name: c.type.polars for c in self.columns}

    def polars_subset(self, names: Iterable[str]) -> dict[str, Any]:
        """``{column: polars dtype}`` for ``names``, in that order."""
        return {n: self.column(n).type.polars for n in names}

    def ddl(self, dialect: Dialect, *, timescale: bool = False) -> str:
        """``CREATE TABLE IF NOT EXISTS`` and its indexes (those of ``dialect``)."""
        hyper = timescale and dialect == "postgresql" and bool(self.hypertable_key)
        width = max(len(c.name) for c in self.columns) + 2
        lines = [
            f"    {c.name.ljust(width)}{c.sql(dialect, primary_key=False if hyper else None)}"
            for c in self.columns
        ]
        if hyper:
            lines.append(f"    PRIMARY KEY ({', '.join(self.hypertable_key)})")
        body = ",\n".join(lines)
        out = [f"CREATE TABLE IF NOT EXISTS {self.name} (\n{body}\n);"]
        out += [i.sql(self.name) for i in self.indexes if i.using is None]
        return "\n".join(out)

    def insert(
        self,
        columns: Iterable[str] | None = None,
        *,
        fixed: Mapping[str, str] | None = None,
        dialect: Dialect = "sqlite",
    ) -> str:
        """An INSERT of ``columns`` (default: ``writable``), one placeholder each except
        the SQL literals in ``fixed``; ``or_ignore`` tables skip rows already stored."""
        names = self.writable if columns is None else tuple(columns)
        for n in names:
            self.column(n)
        fixed = fixed or {}
        mark = "?" if dialect == "sqlite" else "%s"
        values = ", ".join(fixed.get(n, mark) for n in names)
        head = "INSERT OR IGNORE INTO" if self.or_ignore and dialect == "sqlite" else "INSERT INTO"
        sql = f"{head} {self.name} ({', '.join(names)}) VALUES ({values})"
        if self.or_ignore and dialect == "postgresql":
            sql += " ON CONFLICT DO NOTHING"
        return sql

    def update(self, columns: Iterable[str], *, key: str, fixed: Mapping[str, str]) -> str:
        """An UPDATE setting ``columns`` (placeholders, or literals from ``fixed``) by ``key``."""
        names = tuple(columns)
        for n in (*names, key):
            self.column(n)
        sets = ", ".join(f"{n} = {fixed.get(n, '?')}" for n in names)
        return f"UPDATE {self.name} SET {sets} WHERE {key} = ?"


# -- the tables -------------------------------------------------------------------------

_QUOTE: tuple[Column, ...] = (
    Column("tick_id", TEXT, primary_key=True),
    Column("symbol", TEXT, not_null=True),
    Column("seq", INTEGER, not_null=True),
    Column("ts_us", INTEGER, not_null=True),
    Column("recv_us", INTEGER, not_null=True),
    Column("bid", REAL),
    Column("ask", REAL),
    Column("bid_size", REAL),
    Column("ask_size", REAL),
    Column("last", REAL),
    Column("source", TEXT, not_null=True),
)
_TRADE: tuple[Column, ...] = (
    Column("trade_id", TEXT, primary_key=True),
    Column("symbol", TEXT, not_null=True),
    Column("seq", INTEGER, not_null=True),
    Column("ts_us", INTEGER, not_null=True),
    Column("recv_us", INTEGER, not_null=True),
    Column("price", REAL),
    Column("size", REAL),
    Column("venue", TEXT),
    Column("conditions", TEXT),
    Column("correction", INTEGER),
    Column("provider_id", TEXT),
    Column("tape", TEXT),
    Column("source", TEXT, not_null=True),
)
_RUN_ID = Column("run_id", TEXT, not_null=True)
_ID = Column("id", ROW_ID, primary_key=True)
_TS = Column("ts_us", INTEGER, not_null=True)

TICKS = Table(
    "ticks",
    (*_QUOTE, _RUN_ID),
    indexes=(
        Index("ticks_symbol_ts", ("symbol", "ts_us")),
        Index("ticks_ts", ("ts_us",), using="brin"),
    ),
    or_ignore=True,
    hypertable_key=("tick_id", "ts_us"),
)
REJECTS = Table(
    "rejects",
    (
        *_QUOTE,
        _RUN_ID,
        Column("rule", TEXT, not_null=True),
        Column("reason", TEXT, not_null=True),
        Column("rejected_us", INTEGER, not_null=True),
    ),
    indexes=(Index("rejects_symbol_ts", ("symbol", "ts_us")),),
    or_ignore=True,
)
TRADES = Table(
    "trades",
    (*_TRADE, _RUN_ID),
    indexes=(Index("trades_symbol_ts", ("symbol", "ts_us")),),
    or_ignore=True,
    hypertable_key=("trade_id", "ts_us"),
    added_in=3,
)
TRADE_REJECTS = Table(
    "trade_rejects",
    (
        *_TRADE,
        _RUN_ID,
        Column("rule", TEXT, not_null=True),
        Column("reason", TEXT, not_null=True),
        Column("rejected_us", INTEGER, not_null=True),
    ),
    indexes=(Index("trade_rejects_symbol_ts", ("symbol", "ts_us")),),
    or_ignore=True,
    added_in=3,
)
ERRORS = Table(
    "errors",
    (
        _ID,
        _RUN_ID,
        _TS,
        Column("component", TEXT, not_null=True),
        Column("symbol", TEXT),
        Column("error_type", TEXT, not_null=True),
        Column("message", TEXT, not_null=True),
    ),
    indexes=(Index("errors_ts", ("ts_us",)),),
)
HEALTH = Table(
    "health_snapshots",
    (
        _ID,
        _RUN_ID,
        _TS,
        Column("component", TEXT, not_null=True),
        Column("level", TEXT, not_null=True),
        Column("reasons", TEXT, not_null=True),
        Column("metrics", TEXT, not_null=True),
    ),
    indexes=(
        Index("health_ts", ("ts_us",)),
        # the fleet view's newest snapshot per run and component (without it, 1.5M
        # snapshots of 41 instances took 41 s to show; 2 s with it)
        Index("health_run_component_ts", ("run_id", "component", "ts_us"), added_in=4),
    ),
)
BREAKER_EVENTS = Table(
    "breaker_events",
    (
        _ID,
        _RUN_ID,
        _TS,
        Column("breaker", TEXT, not_null=True),
        Column("old_state", TEXT, not_null=True),
        Column("new_state", TEXT, not_null=True),
        Column("reason", TEXT, not_null=True),
    ),
)
RUNS = Table(
    "runs",
    (
        Column("run_id", TEXT, primary_key=True),
        Column("started_us", INTEGER, not_null=True),
        Column("stopped_us", INTEGER),
        Column("status", TEXT, not_null=True),
        Column("pid", INTEGER),
        Column("host", TEXT),
        Column("instance", TEXT, added_in=2),  # which collector of a fleet
        Column("symbols", TEXT, not_null=True),
        Column("config", TEXT, not_null=True),
        Column("summary", TEXT),
    ),
    or_ignore=True,
)
GAPS = Table(  # a stream's outages and silences (cause: stream_down | symbol_silent)
    "gaps",
    (
        _ID,
        _RUN_ID,
        Column("symbol", TEXT, not_null=True),
        Column("start_us", INTEGER, not_null=True),
        Column("end_us", INTEGER, not_null=True),
        Column("cause", TEXT, not_null=True),
        Column("detail", TEXT, not_null=True),
    ),
    indexes=(Index("gaps_symbol_start", ("symbol", "start_us")),),
)
PG_SCHEMA = Table("rc_schema", (Column("version", VERSION, not_null=True),))
"""PostgreSQL only: the schema version (SQLite keeps it in ``PRAGMA user_version``)."""

TABLES: tuple[Table, ...] = (
    TICKS,
    REJECTS,
    ERRORS,
    HEALTH,
    BREAKER_EVENTS,
    RUNS,
    GAPS,
    TRADES,
    TRADE_REJECTS,
)
"""The collector's tables, in creation order (both backends)."""
TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in TABLES)

# -- what the rest of the package uses -----------------------------------------------------

QUOTE_COLUMNS: tuple[str, ...] = tuple(c.name for c in _QUOTE)
"""A quote's stored fields (``model.QUOTE_FIELDS``): a tick row without its ``run_id``."""
QUOTE_POLARS_SCHEMA: dict[str, Any] = TICKS.polars_subset(QUOTE_COLUMNS)
TICK_COLUMNS: tuple[str, ...] = TICKS.names
REJECT_COLUMNS: tuple[str, ...] = REJECTS.names
TRADE_FIELDS: tuple[str, ...] = tuple(c.name for c in _TRADE)
"""A trade's stored fields (``model.TRADE_FIELDS``): a trades row without its ``run_id``."""
TRADE_COLUMNS: tuple[str, ...] = TRADES.names
TRADE_REJECT_COLUMNS: tuple[str, ...] = TRADE_REJECTS.names

INSERT_TICKS = TICKS.insert()
INSERT_REJECTS = REJECTS.insert()
INSERT_TRADES = TRADES.insert()
INSERT_TRADE_REJECTS = TRADE_REJECTS.insert()
INSERT_ERROR = ERRORS.insert()
INSERT_HEALTH = HEALTH.insert()
INSERT_BREAKER_EVENT = BREAKER_EVENTS.insert()
INSERT_GAP = GAPS.insert()
INSERT_RUN = RUNS.insert(
    ("run_id", "started_us", "status", "pid", "host", "instance", "symbols", "config"),
    fixed={"status": "'running'"},
)
STOP_RUN = RUNS.update(
    ("stopped_us", "status", "summary"), key="run_id", fixed={"status": "'stopped'"}
)

SQLITE_DDL = "\n".join(t.ddl("sqlite") for t in TABLES) + "\n"


def postgres_ddl(*, timescale: bool = False) -> str:
    """Every table and index in PostgreSQL types, then the PostgreSQL-only indexes (a BRIN
    time index on ticks) and ``rc_schema``.

    With TimescaleDB, ticks' key is ``(tick_id, ts_us)`` and trades' ``(trade_id, ts_us)``:
    a hypertable's unique keys must hold its time column (an id fixes its time, so it is
    as unique).
    """
    parts = [t.ddl("postgresql", timescale=timescale) for t in TABLES]
    parts += [i.sql(t.name) for t in TABLES for i in t.indexes if i.using is not None]
    parts.append(PG_SCHEMA.ddl("postgresql"))
    return "\n".join(parts) + "\n"


def postgres_migrations() -> dict[int, tuple[str, ...]]:
    """``{version: statements}`` adding the columns each schema version brought (the tables
    a version brought, like ``trades`` in 3, are made by ``postgres_ddl``'s CREATE IF NOT
    EXISTS, which ``init_postgres`` runs first)."""
    out: dict[int, list[str]] = {}
    for t in TABLES:
        for c in t.columns:
            if c.added_in > 1:
                out.setdefault(c.added_in, []).append(
                    f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {c.name} {c.sql('postgresql')}"
                )
    return {v: tuple(s) for v, s in sorted(out.items())}


# -- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundTable:
    """What a database holds for one table, as its catalog says (each backend reads it).

    ``columns``: ``{name: declared type}`` (upper case); ``unique``: the column sets of
    its primary key and of every full (not partial, not expression) unique index;
    ``indexes``: the names of its indexes."""

    columns: Mapping[str, str]
    unique: tuple[frozenset[str], ...]
    indexes: frozenset[str]


@dataclass(frozen=True)
class Problem:
    """One way a database differs from the tables' definitions.

    ``kind``: ``table`` (missing), ``column`` (missing), ``type`` (declared otherwise),
    ``key`` (no unique key a replay relies on) or ``index`` (missing)."""

    kind: Literal["table", "column", "type", "key", "index"]
    table: str
    name: str | None
    text: str
    fixable: bool
    """Created by the schema setup (a table, an index, a column a later version added)."""

    @property
    def refused(self) -> bool:
        """The database cannot be written safely: a column it always had is missing, or a
        key replay dedups on (rows would be stored twice)."""
        return self.kind == "key" or (self.kind == "column" and not self.fixable)


def _type_name(column: Column, dialect: Dialect) -> str:
    if dialect == "sqlite":
        return column.type.sqlite
    return "BIGINT" if column.type is ROW_ID else column.type.postgres


def schema_problems(
    found: Mapping[str, FoundTable], dialect: Dialect, tables: Iterable[Table] = TABLES
) -> list[Problem]:
    """How the tables in ``found`` differ from their definitions, table by table: a missing
    table; then each missing column, column of another type, missing unique key (of a table
    replay dedups on) and missing index. Extra columns and indexes are fine."""
    out: list[Problem] = []
    for table in tables:
        have = found.get(table.name)
        if have is None:
            text = f"table {table.name} is missing"
            out.append(Problem("table", table.name, None, text, fixable=True))
            continue
        for col in table.columns:
            declared = have.columns.get(col.name)
            want = _type_name(col, dialect)
            if declared is None:
                text = f"table {table.name} has no column {col.name}"
                out.append(Problem("column", table.name, col.name, text, col.added_in > 1))
            elif declared != want:
                text = f"column {table.name}.{col.name} is {declared or 'untyped'}, not {want}"
                out.append(Problem("type", table.name, col.name, text, fixable=False))
        keys = table.dedup_keys
        if keys and not any(frozenset(k) in have.unique for k in keys):
            text = (
                f"table {table.name} has no unique key on {', '.join(keys[0])} "
                "(a replayed backup would be stored twice)"
            )
            out.append(Problem("key", table.name, ", ".join(keys[0]), text, fixable=False))
        for index in table.indexes:
            if index.using is not None and dialect == "sqlite":
                continue
            if index.name not in have.indexes:
                text = f"table {table.name} has no index {index.name}"
                out.append(Problem("index", table.name, index.name, text, fixable=True))
    return out
