"""The dashboard's and the figures' colours: one per breaker state and per health level.

It imports nothing, so the live dashboard and the notebook helpers share it without
depending on each other.
"""

from __future__ import annotations

__all__ = ["BREAKER_COLORS", "LEVEL_COLORS"]

BREAKER_COLORS: dict[str, str] = {
    "CLOSED": "#2e7d32",
    "HALF_OPEN": "#f9a825",
    "OPEN": "#c62828",
    "DISABLED": "#757575",
}
"""One colour per breaker state, shared by the dashboard and the figures."""

LEVEL_COLORS: dict[str, str] = {
    "HEALTHY": "#2e7d32",
    "DEGRADED": "#f9a825",
    "UNHEALTHY": "#e65100",
    "CRITICAL": "#b71c1c",
    "UNKNOWN": "#757575",
}
"""One colour per health level (plus ``UNKNOWN``: no report, or not running)."""
