"""The trading session: whether the market is open, so staleness is judged only then."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from robust_collector.config import SessionConfig


class MarketSession:
    """Whether the market is open at a given UTC time (always, unless enabled)."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        c = self.config
        self._tz = zoneinfo.ZoneInfo(c.timezone)
        self._open = dt.time.fromisoformat(c.open)
        self._close = dt.time.fromisoformat(c.close)
        self._days = frozenset(c.weekdays)
        self._holidays = frozenset(dt.date.fromisoformat(d) for d in c.holidays)

    def is_open(self, wall_seconds: float) -> bool:
        """True when ``wall_seconds`` (epoch) falls inside the trading session."""
        if not self.config.enabled:
            return True
        local = dt.datetime.fromtimestamp(wall_seconds, tz=self._tz)
        if local.weekday() not in self._days or local.date() in self._holidays:
            return False
        return self._open <= local.time() < self._close

    def open_seconds_between(self, start: float, end: float, step: float = 60.0) -> float:
        """Approximate seconds of open market in ``[start, end]`` (minute resolution)."""
        if not self.config.enabled or end <= start:
            return max(0.0, end - start)
        total, t = 0.0, start
        while t < end:
            nxt = min(end, t + step)
            if self.is_open(t):
                total += nxt - t
            t = nxt
        return total
