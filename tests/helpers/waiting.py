"""Waiting on a condition with a timeout: the one way integration tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(
    pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition", step: float = 0.01
) -> Any:
    """Poll ``pred`` until it returns something truthy; returns it, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
