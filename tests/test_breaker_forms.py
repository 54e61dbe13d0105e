"""Every way into a breaker (call, call_async, @breaker on sync and async functions,
the before_call/on_success primitives) counts and transitions alike, in every state."""

from __future__ import annotations

import asyncio
import inspect
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from robust_collector.errors import CircuitOpenError
from robust_collector.resilience import CircuitBreaker, ManualClock


class Boom(Exception):
    """A failure the breaker counts."""


class Ignored(Exception):
    """A failure listed in ``exclude``."""


class Stop(BaseException):
    """A cancellation-like exit: counts as neither."""


# One step is an outcome ("ok", "fail", "ignored", "stop") or a clock advance (a number).
SCRIPT: list[str | float] = [
    "ok", "fail", "ok", "ignored", "stop",  # CLOSED: a success resets the count
    "fail", "fail", "fail",  # opens
    "ok",  # refused while OPEN
    5,  # half-open
    "ok", "ignored", "stop", "ok",  # two trial successes of three
    "fail",  # reopens
    "ok", 5,
    "ok", "ok", "ok",  # closes
    "ok", "fail", "fail", "ok", "fail", "fail", "fail",
]  # fmt: skip

CONFIGS: dict[str, dict[str, Any]] = {
    "consecutive failures": {"failure_threshold": 3},
    "failure rate": {
        "failure_threshold": 3,
        "failure_rate_threshold": 0.5,
        "window_size": 4,
        "minimum_calls": 4,
    },
}


def act(step: str) -> str:
    if step == "fail":
        raise Boom("down")
    if step == "ignored":
        raise Ignored("not the source's fault")
    if step == "stop":
        raise Stop
    return "ok"


async def act_async(step: str) -> str:
    await asyncio.sleep(0)
    return act(step)


def by_primitives(breaker: CircuitBreaker, step: str) -> str:
    token = breaker.before_call()
    try:
        result = act(step)
    except Exception as exc:
        breaker.on_failure(token, exc)
        raise
    except BaseException:
        breaker.release(token)
        raise
    breaker.on_success(token)
    return result


def decorated_async(fn: Callable[[str], Any]) -> Callable[[str], str]:
    return lambda step: asyncio.run(fn(step))  # type: ignore[no-any-return]


FORMS: dict[str, Callable[[CircuitBreaker], Callable[[str], str]]] = {
    "call": lambda b: lambda step: b.call(act, step),
    "call_async": lambda b: lambda step: asyncio.run(b.call_async(act_async, step)),
    "@breaker": lambda b: b(act),
    "@breaker async": lambda b: decorated_async(b(act_async)),
    "primitives": lambda b: lambda step: by_primitives(b, step),
}


def play(form: str, config: str) -> dict[str, object]:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "SPY",
        timeout_seconds=5,
        success_threshold=3,
        exclude=(Ignored,),
        clock=clock,
        **CONFIGS[config],
    )
    transitions: list[tuple[str, str, str]] = []
    breaker.add_listener(lambda _n, old, new, why: transitions.append((old, new, why)))
    run = FORMS[form](breaker)
    seen: list[str] = []
    for step in SCRIPT:
        if not isinstance(step, str):
            clock.advance(step)
            continue
        try:
            seen.append(run(step))
        except (Boom, Ignored, Stop, CircuitOpenError) as exc:
            seen.append(type(exc).__name__)
    return {"results": seen, "transitions": transitions, "stats": breaker.stats}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("form", [f for f in FORMS if f != "call"])
def test_every_form_counts_and_transitions_like_call(form: str, config: str) -> None:
    assert play(form, config) == play("call", config)


def test_the_script_visits_every_state_and_counts_every_outcome() -> None:
    """So forms that agree cannot all be agreeing on nothing."""
    played = play("call", "consecutive failures")
    assert [(old, new) for old, new, _ in played["transitions"]] == [  # type: ignore[attr-defined]
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("HALF_OPEN", "CLOSED"),
        ("CLOSED", "OPEN"),
    ]
    stats = played["stats"]
    assert (stats.rejections, stats.ignored, stats.state) == (2, 4, "OPEN")  # type: ignore[attr-defined]
    rated = play("call", "failure rate")
    reasons = [why for _, _, why in rated["transitions"]]  # type: ignore[attr-defined]
    assert any(why.startswith("failure rate 50% over last 4 calls") for why in reasons)


# -------------------------------------------------- the compiled entry points


def test_compiled_entry_points_keep_their_names_docs_and_signatures() -> None:
    for name in ("before_call", "on_success", "call", "call_async"):
        method = getattr(CircuitBreaker, name)
        assert method.__name__ == name
        assert method.__qualname__ == f"CircuitBreaker.{name}"
        assert method.__doc__
    assert str(inspect.signature(CircuitBreaker.on_success)) == "(self, token: 'int') -> 'None'"
    assert list(inspect.signature(CircuitBreaker.call).parameters) == [
        "self",
        "fn",
        "args",
        "kwargs",
    ]
    assert inspect.iscoroutinefunction(CircuitBreaker.call_async)
    assert not inspect.iscoroutinefunction(CircuitBreaker.call)


def test_a_traceback_through_the_breaker_shows_its_source_line() -> None:
    breaker = CircuitBreaker("SPY")
    with pytest.raises(Boom) as info:
        breaker(act)("fail")
    lines = traceback.format_exception(info.value)
    assert any("result = fn(*args, **kwargs)" in line for line in lines)
