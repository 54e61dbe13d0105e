"""Waiting on a condition with a timeout: the one way tests wait (never a fixed sleep)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    pred: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    step: float = 0.01,
    *,
    detail: Callable[[], object] | None = None,
    proc: subprocess.Popen[Any] | None = None,
    fail: bool = True,
) -> Any:
    """Poll ``pred`` until it returns something truthy; returns it, or fails after ``timeout``.

    ``detail`` is called at the timeout and its value added to the failure message (the
    state that did not arrive, e.g. ``w.stats``). With ``proc``, a child process that exits
    while we wait fails at once with its stderr. ``fail=False`` returns the last (falsy)
    value at the timeout instead of raising: for waits whose failure is checked later, or
    for "this must not happen within ``timeout``".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(f"child died on its own while waiting for {what}: {err}")
        if time.monotonic() > deadline:
            if not fail:
                return value
            extra = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(step)
