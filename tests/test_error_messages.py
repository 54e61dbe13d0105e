"""Waits in error messages are printed for people: rounded, never hundreds of digits.

``errors.format_seconds`` is the one formatter; it lives in the lowest layer so that
``CircuitOpenError`` (in ``errors``) can use it without an import cycle.
"""

from __future__ import annotations

import pytest

from robust_collector import errors as errors_module
from robust_collector.errors import CircuitOpenError
from robust_collector.resilience import CircuitBreaker
from robust_collector.resilience import retry as retry_module


@pytest.mark.parametrize(
    ("wait", "shown"), [(1e308, "1e+308s"), (2.47258, "2.47s"), (60.0, "60s"), (0.04, "0.04s")]
)
def test_an_open_breakers_wait_is_printed_rounded_and_never_as_hundreds_of_digits(
    wait: float, shown: str
) -> None:
    """The message of a breaker opened for ``wait`` seconds, as a real breaker raises it."""
    breaker = CircuitBreaker("SPY", timeout_seconds=wait, clock=lambda: 0.0)
    breaker.open("a test")
    with pytest.raises(CircuitOpenError) as caught:
        breaker.call(lambda: None)
    assert str(caught.value) == f"circuit 'SPY' is open; retry after {shown}"
    assert caught.value.retry_after == wait  # rounded for people only


def test_there_is_one_shared_formatter() -> None:
    """``resilience.retry.format_seconds`` (its old home) is the one in ``errors``."""
    assert retry_module.format_seconds is errors_module.format_seconds
    assert errors_module.format_seconds(float("inf")) == "infs"
    assert errors_module.format_seconds(1234567.0) == "1.23e+06s"
