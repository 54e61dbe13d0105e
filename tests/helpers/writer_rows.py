"""Rows and callbacks shared by the storage fault tests (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from robust_collector.storage.writer import INSERT_ERROR

RUN = "run-1"


def tick(i: int, ts: int = 1_700_000_000_000_000) -> tuple[Any, ...]:
    """A tick row in TICK_COLUMNS order."""
    return (f"{RUN}:SPY:{i}", "SPY", i, ts, ts, 1.0, 1.01, 1.0, 1.0, None, "sim", RUN)


def reject(i: int, ts: int) -> tuple[Any, ...]:
    """A reject row in REJECT_COLUMNS order."""
    return (*tick(i, ts)[:-1], RUN, "future_timestamp", "ts in the future", 1)


def error_event(message: str) -> tuple[str, tuple[Any, ...]]:
    """An error row as the collector queues it."""
    return (INSERT_ERROR, (RUN, 1, "source", "SPY", "HTTPError", message))


class Errors:
    """Collects the writer's on_error calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, BaseException]] = []

    def __call__(self, component: str, exc: BaseException) -> None:
        self.seen.append((component, exc))

    def text(self) -> str:
        return "\n".join(f"{type(e).__name__}: {e}" for _, e in self.seen)
