"""Property: the streaming Validator and validate_frame make exactly the same decisions.

Sequences mix good quotes with bad ticks, genuine level shifts (re-anchoring),
duplicates, out-of-order and future times, locked/crossed quotes and last-only
quotes over two symbols, under random thresholds and rule switches.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from helpers.quote_strategies import configs, sequences
from hypothesis import HealthCheck, given, settings

from robust_collector.model import Quote
from robust_collector.validation import (
    ValidationConfig,
    Validator,
    quotes_frame,
    validate_frame,
)


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


# Rejection warnings are not under test here; keep them out of failure reports.
logging.getLogger("robust_collector.validation").setLevel(logging.ERROR)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), quotes=sequences())
def test_streaming_and_frame_make_the_same_decisions(
    config: ValidationConfig, quotes: list[Quote]
) -> None:
    v = Validator(config)
    expected = [(x.status, x.rule, x.reason) for x in map(v.check, quotes)]
    result = validate_frame(quotes_frame(quotes), config)
    got = [
        tuple(r)
        for r in result.frame.select(
            "status", "reject_rule", result.frame["reject_reason"].fill_null(result.frame["note"])
        ).iter_rows()
    ]
    assert got == expected
    assert result.stats == v.stats()
    # And the frame keeps every input value in order.
    assert all(
        _same(a, b)
        for row, q in zip(
            result.frame.select("tick_id", "bid", "ask", "last").iter_rows(), quotes, strict=True
        )
        for a, b in zip(row, (q.tick_id, q.bid, q.ask, q.last), strict=True)
    )
