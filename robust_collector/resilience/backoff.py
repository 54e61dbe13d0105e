"""One backoff schedule for every wait-and-try-again: retries, reconnects, restarts.

``Backoff(initial, multiplier, cap, jitter).delay(n)`` is the wait after failed
attempt ``n`` (1-based): ``min(cap, initial * multiplier ** (n - 1))``, then
jittered. The jitter modes are AWS's ("Exponential Backoff And Jitter"):

* ``none``: the bound itself;
* ``full``: uniform in ``[0, bound]``;
* ``equal``: half the bound plus uniform in ``[0, bound / 2]`` (never an instant retry);
* ``decorrelated``: ``min(cap, uniform(initial, 3 * prev))``; it grows on its own, so
  ``multiplier`` does not apply and ``delay`` wants the previous wait as ``prev``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = ["Backoff", "JitterMode"]

JitterMode = Literal["none", "full", "equal", "decorrelated"]
_JITTER_MODES: tuple[str, ...] = get_args(JitterMode)

_MAX_EXPONENT = 1000
"""Growth stops at ``multiplier ** 1000``: the cap has long been reached, and no overflow."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """An exponential schedule, capped, with optional jitter drawn from ``rng``.

    ``multiplier=1`` gives a constant wait. Frozen: share it freely; only ``rng``
    (excluded from equality) has state.
    """

    initial: float = 1.0
    multiplier: float = 2.0
    cap: float = 60.0
    jitter: JitterMode = "none"
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.initial >= 0:
            raise ValueError(f"initial must be >= 0, got {self.initial}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not self.cap >= 0:
            raise ValueError(f"cap must be >= 0, got {self.cap}")
        if self.jitter not in _JITTER_MODES:
            raise ValueError(
                f"jitter must be one of {', '.join(_JITTER_MODES)}; got {self.jitter!r}"
            )

    def bound(self, attempt: int) -> float:
        """The un-jittered wait after failed attempt ``attempt``: ``min(cap, initial * m**(n-1))``."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        try:
            grown = self.initial * self.multiplier ** min(attempt - 1, _MAX_EXPONENT)
        except OverflowError:  # a float power too large (multiplier > 2)
            grown = math.inf if self.initial else 0.0
        return min(grown, self.cap)

    def delay(self, attempt: int, prev: float | None = None) -> float:
        """The wait after failed attempt ``attempt`` (1-based), jittered per the mode.

        ``prev`` (the previous wait; ``initial`` when None) is read only by "decorrelated".
        """
        jitter = self.jitter
        if jitter == "decorrelated":
            if attempt < 1:
                raise ValueError(f"attempt numbers start at 1, got {attempt}")
            last = self.initial if prev is None else prev
            upper = max(self.initial, last * 3.0)
            return min(self.cap, self.rng.uniform(self.initial, upper))
        bound = self.bound(attempt)
        if jitter == "full":
            return self.rng.uniform(0.0, bound)
        if jitter == "equal":
            return bound / 2.0 + self.rng.uniform(0.0, bound / 2.0)
        return bound
