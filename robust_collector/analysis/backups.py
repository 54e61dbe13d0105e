"""What waits in JSONL backup files: per file, per record and per bad line, and whether
each record is already in the database (what a recovery would insert)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from robust_collector.analysis.paths import Pathish
from robust_collector.storage.backend import is_postgres_url
from robust_collector.storage.backup import RECOVERED_DIR, list_backup_files, read_backup_file
from robust_collector.storage.reader import missing_table, open_reader, with_datetimes
from robust_collector.storage.tables import TICK_COLUMNS, TRADE_COLUMNS

TICK_RUN_ID = TICK_COLUMNS.index("run_id")  # where a tick (or reject) row holds its run
TRADE_RUN_ID = TRADE_COLUMNS.index("run_id")

_SCAN_FILE_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "folder": pl.String,
    "bytes": pl.Int64,
    "lines": pl.Int64,
    "ticks": pl.Int64,
    "rejects": pl.Int64,
    "trades": pl.Int64,
    "trade_rejects": pl.Int64,
    "symbols": pl.List(pl.String),
    "first_us": pl.Int64,
    "last_us": pl.Int64,
    "torn": pl.Int64,
    "corrupt": pl.Int64,
    "in_db": pl.Int64,
    "not_in_db": pl.Int64,
}
_SCAN_RECORD_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "kind": pl.String,
    "tick_id": pl.String,
    "symbol": pl.String,
    "seq": pl.Int64,
    "ts_us": pl.Int64,
    "run_id": pl.String,
    "in_db": pl.Boolean,
}
_SCAN_PROBLEM_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "line": pl.Int64,
    "kind": pl.String,
    "detail": pl.String,
}


@dataclass(frozen=True)
class BackupScan:
    """What ``scan_backups`` found: one row per file, per record and per bad line.

    ``files``: file, folder (``waiting`` or ``recovered``), bytes, lines, ticks,
    rejects, trades, trade_rejects, symbols, first/last (record times), torn, corrupt,
    in_db, not_in_db. ``records``: file, kind (tick/reject/trade/trade_reject),
    tick_id (the record's id: a trade's is its trade id), symbol, seq, ts, run_id,
    in_db (null without a database). ``problems``: file, line, kind (torn/corrupt),
    detail.
    """

    path: Path
    files: pl.DataFrame
    records: pl.DataFrame
    problems: pl.DataFrame

    @property
    def missing(self) -> pl.DataFrame:
        """Records not (yet) in the database: what a recovery would insert."""
        return self.records.filter(~pl.col("in_db"))

    @property
    def totals(self) -> dict[str, int]:
        """Files, lines, ticks, rejects, torn, corrupt, in_db and not_in_db, summed."""
        f = self.files
        out = {"files": f.height}
        cols = ("lines", "ticks", "rejects", "trades", "trade_rejects", "torn", "corrupt")
        for col in (*cols, "in_db", "not_in_db"):
            out[col] = int(f[col].sum()) if f.height else 0
        return out

    def pending(self) -> pl.DataFrame:
        """Per symbol and kind: records not in the database, with their time range."""
        return (
            self.missing.group_by("symbol", "kind")
            .agg(
                pl.len().alias("records"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
            )
            .sort("symbol", "kind")
        )


def _present(conn: Any, table: str, ids: list[str], key: str = "tick_id") -> set[str]:
    if conn is None or not ids:
        return set()
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        try:
            cur = conn.execute(f"SELECT {key} FROM {table} WHERE {key} IN ({marks})", chunk)
        except Exception as exc:  # a database from before trades has no such table
            if missing_table(exc):
                return set()
            raise
        found.update(r[0] for r in cur)
    return found


def scan_backups(
    path: Pathish, db: Pathish | None = None, *, include_recovered: bool = False
) -> BackupScan:
    """Read every JSONL backup file in ``path`` (and ``recovered/`` if asked): files,
    lines, symbols, time ranges, torn or corrupt lines, and for each record whether
    its tick id is already in the database ``db`` (when given)."""
    folder = Path(path)
    files = [("waiting", p) for p in list_backup_files(folder)]
    if include_recovered:
        files += [("recovered", p) for p in list_backup_files(folder / RECOVERED_DIR)]
    conn = None
    if db is not None and (is_postgres_url(db) or Path(db).exists()):
        conn = open_reader(db)
    file_rows: list[dict[str, Any]] = []
    records: list[tuple[Any, ...]] = []
    problems: list[tuple[Any, ...]] = []
    try:
        for where, p in files:
            try:
                contents = read_backup_file(p)
                size = p.stat().st_size
            except FileNotFoundError:  # recovered meanwhile
                continue
            tick_ids = [r[0] for r in contents.ticks]
            reject_ids = [r[0] for r in contents.rejects]
            have_t = _present(conn, "ticks", tick_ids)
            have_r = _present(conn, "rejects", reject_ids)
            trade_ids = [r[0] for r in contents.trades]
            trade_reject_ids = [r[0] for r in contents.trade_rejects]
            have_tr = _present(conn, "trades", trade_ids, "trade_id")
            have_trr = _present(conn, "trade_rejects", trade_reject_ids, "trade_id")
            known = conn is not None
            times: list[int] = []
            syms: set[str] = set()
            n_in = 0
            for kind, rows, have, run_at in (
                ("tick", contents.ticks, have_t, TICK_RUN_ID),
                ("reject", contents.rejects, have_r, TICK_RUN_ID),
                ("trade", contents.trades, have_tr, TRADE_RUN_ID),
                ("trade_reject", contents.trade_rejects, have_trr, TRADE_RUN_ID),
            ):
                for r in rows:
                    inside = r[0] in have
                    n_in += inside
                    times.append(r[3])
                    syms.add(r[1])
                    records.append(
                        (p.name, kind, r[0], r[1], r[2], r[3], r[run_at], inside if known else None)
                    )
            problems.extend((p.name, pr.line, pr.kind, pr.detail) for pr in contents.problems)
            n = len(contents.ticks) + len(contents.rejects)
            n += len(contents.trades) + len(contents.trade_rejects)
            file_rows.append(
                {
                    "file": p.name,
                    "folder": where,
                    "bytes": size,
                    "lines": contents.lines,
                    "ticks": len(contents.ticks),
                    "rejects": len(contents.rejects),
                    "trades": len(contents.trades),
                    "trade_rejects": len(contents.trade_rejects),
                    "symbols": sorted(syms),
                    "first_us": min(times) if times else None,
                    "last_us": max(times) if times else None,
                    "torn": contents.torn,
                    "corrupt": contents.corrupt,
                    "in_db": n_in if known else None,
                    "not_in_db": n - n_in if known else None,
                }
            )
    finally:
        if conn is not None:
            conn.close()
    files_df = with_datetimes(
        pl.DataFrame(file_rows, schema=_SCAN_FILE_SCHEMA), {"first_us": "first", "last_us": "last"}
    )
    rec_df = with_datetimes(
        pl.DataFrame(records, schema=_SCAN_RECORD_SCHEMA, orient="row"), {"ts_us": "ts"}
    )
    prob_df = pl.DataFrame(problems, schema=_SCAN_PROBLEM_SCHEMA, orient="row")
    return BackupScan(folder, files_df, rec_df, prob_df)
