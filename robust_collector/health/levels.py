"""Health levels and the immutable results of a check: component, snapshot, error record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class HealthLevel(IntEnum):
    """Ordered health levels: HEALTHY < DEGRADED < UNHEALTHY < CRITICAL."""

    HEALTHY = 0
    DEGRADED = 1
    UNHEALTHY = 2
    CRITICAL = 3

    @property
    def icon(self) -> str:
        return _ICONS[self]

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | HealthLevel) -> HealthLevel:
        if isinstance(value, str):
            return cls[value.upper()]
        return cls(value)


_ICONS = {
    HealthLevel.HEALTHY: "✅",
    HealthLevel.DEGRADED: "⚠️",
    HealthLevel.UNHEALTHY: "❌",
    HealthLevel.CRITICAL: "🔴",
}


@dataclass(frozen=True)
class ComponentHealth:
    """One component's level, the reasons for it, and the numbers behind it."""

    name: str
    kind: str
    level: HealthLevel
    reasons: tuple[str, ...]
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class HealthSnapshot:
    """The whole system at one moment: the overall (worst) level and every component."""

    ts: float
    level: HealthLevel
    reasons: tuple[str, ...]
    components: tuple[ComponentHealth, ...]

    def component(self, name: str) -> ComponentHealth:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class ErrorRecord:
    """One recent error: when, where, what (secrets already redacted)."""

    ts: float
    component: str
    symbol: str | None
    error_type: str
    message: str
