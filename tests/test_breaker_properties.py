"""Property test: random call sequences against an independent reference model.

The model is a plain, single-threaded restatement of the documented state
machine (docs/resilience.md). Hypothesis drives both with the same random mix of
immediate calls, calls held open across other events (permit tokens), excluded
errors, clock advances and manual operations, and compares every observable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from robust_collector.errors import CircuitOpenError
from robust_collector.resilience import BreakerState, CircuitBreaker, ManualClock


class Boom(Exception):
    pass


class Excluded(Exception):
    pass


OUTCOMES = st.sampled_from(["success", "failure", "excluded"])


@dataclass
class Model:
    """The reference state machine; times are the integers the test clock moves by."""

    failure_threshold: int
    success_threshold: int
    half_open_max: int
    timeout: float
    rate: float | None
    window_size: int
    minimum_calls: int
    now: float = 0.0
    state: str = "CLOSED"
    epoch: int = 0
    reset_epoch: int = 0
    entered: float = 0.0
    opened_at: float | None = None
    consecutive: int = 0
    trial_successes: int = 0
    trials_in_flight: int = 0
    window: list[bool] = field(default_factory=list)
    calls: int = 0
    successes: int = 0
    failures: int = 0
    ignored: int = 0
    rejections: int = 0
    changes: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)

    def move(self, new: str, at: float) -> None:
        self.events.append((self.state, new))
        self.state = new
        self.epoch += 1
        self.changes += 1
        self.entered = at
        self.trial_successes = 0
        self.trials_in_flight = 0
        if new == "OPEN":
            self.opened_at = at
        if new == "CLOSED":
            self.consecutive = 0
            self.window = []

    def tick(self) -> None:
        """Apply the timeout: OPEN becomes HALF_OPEN once ``timeout`` has passed."""
        due = None if self.opened_at is None else self.opened_at + self.timeout
        if self.state == "OPEN" and due is not None and self.now >= due:
            self.move("HALF_OPEN", due)

    def begin(self) -> int | None:
        self.tick()
        if self.state == "CLOSED":
            self.calls += 1
            return self.epoch
        if self.state == "HALF_OPEN" and self.trials_in_flight < self.half_open_max:
            self.trials_in_flight += 1
            self.calls += 1
            return self.epoch
        self.rejections += 1
        return None

    def finish(self, token: int, outcome: str) -> None:
        if token < self.reset_epoch:
            return
        current = token == self.epoch
        if outcome == "excluded":
            self.ignored += 1
            if current and self.state == "HALF_OPEN":
                self.trials_in_flight -= 1
        elif outcome == "success":
            self.successes += 1
            if not current:
                return
            self.consecutive = 0
            if self.state == "CLOSED" and self.rate is not None:
                self.record(False)
            elif self.state == "HALF_OPEN":
                self.trials_in_flight -= 1
                self.trial_successes += 1
                if self.trial_successes >= max(self.success_threshold, self.half_open_max):
                    self.move("CLOSED", self.now)
        else:
            self.failures += 1
            if not current:
                return
            self.consecutive += 1
            if self.state == "HALF_OPEN":
                self.move("OPEN", self.now)
            elif self.state == "CLOSED":
                if self.rate is not None:
                    self.record(True)
                if self.consecutive >= self.failure_threshold or self.rate_exceeded():
                    self.move("OPEN", self.now)

    def rate_exceeded(self) -> bool:
        if self.rate is None or len(self.window) < self.minimum_calls:
            return False
        return sum(self.window) / len(self.window) >= self.rate

    def record(self, failed: bool) -> None:
        self.window = [*self.window, failed][-self.window_size :]

    def manual_open(self) -> None:
        self.tick()
        if self.state == "OPEN":
            self.opened_at = self.entered = self.now
        else:
            self.move("OPEN", self.now)

    def manual_close(self) -> None:
        self.tick()
        if self.state == "CLOSED":
            self.consecutive = 0
            self.window = []
        else:
            self.move("CLOSED", self.now)

    def reset(self) -> None:
        self.tick()
        if self.state == "CLOSED":
            self.epoch += 1
            self.consecutive = 0
            self.window = []
        else:
            self.move("CLOSED", self.now)
        self.reset_epoch = self.epoch
        self.entered = self.now
        self.opened_at = None
        self.calls = self.successes = self.failures = 0
        self.ignored = self.rejections = self.changes = 0


class BreakerMachine(RuleBasedStateMachine):
    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.events: list[tuple[str, str]] = []
        self.breaker: CircuitBreaker
        self.model: Model

    @initialize(
        failure_threshold=st.integers(1, 4),
        success_threshold=st.integers(1, 3),
        half_open_max=st.integers(1, 3),
        timeout=st.integers(0, 5),
        rate=st.none() | st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        window_size=st.integers(1, 6),
        data=st.data(),
    )
    def setup(
        self,
        failure_threshold: int,
        success_threshold: int,
        half_open_max: int,
        timeout: int,
        rate: float | None,
        window_size: int,
        data: st.DataObject,
    ) -> None:
        minimum_calls = data.draw(st.integers(1, window_size))
        self.breaker = CircuitBreaker(
            "P",
            failure_threshold=failure_threshold,
            timeout_seconds=timeout,
            success_threshold=success_threshold,
            half_open_max_calls=half_open_max,
            exclude=(Excluded,),
            clock=self.clock,
            failure_rate_threshold=rate,
            window_size=window_size,
            minimum_calls=minimum_calls,
        )
        self.breaker.add_listener(
            lambda _name, old, new, _reason: self.events.append((old.value, new.value))
        )
        self.model = Model(
            failure_threshold,
            success_threshold,
            half_open_max,
            float(timeout),
            rate,
            window_size,
            minimum_calls,
        )

    # --------------------------------------------------------------- rules

    @rule(outcome=OUTCOMES)
    def call(self, outcome: str) -> None:
        def fn() -> str:
            if outcome == "failure":
                raise Boom("down")
            if outcome == "excluded":
                raise Excluded("not counted")
            return "ok"

        expected = self.model.begin()
        try:
            self.breaker.call(fn)
        except CircuitOpenError:
            assert expected is None
            return
        except (Boom, Excluded):
            pass
        assert expected is not None
        self.model.finish(expected, outcome)

    @rule(target=tokens)
    def begin(self) -> object:
        expected = self.model.begin()
        try:
            token = self.breaker.before_call()
        except CircuitOpenError:
            assert expected is None
            return multiple()
        assert expected is not None
        return (token, expected)

    @rule(pair=consumes(tokens), outcome=OUTCOMES)
    def finish(self, pair: tuple[int, int], outcome: str) -> None:
        token, expected = pair
        if outcome == "success":
            self.breaker.on_success(token)
        elif outcome == "failure":
            self.breaker.on_failure(token, Boom("late"))
        else:
            self.breaker.on_failure(token, Excluded("late"))
        self.model.finish(expected, outcome)

    @rule(seconds=st.integers(0, 6))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    @rule()
    def read_state(self) -> None:
        self.model.tick()
        assert self.breaker.state.value == self.model.state

    @precondition(lambda self: self.model.changes < 40)
    @rule(action=st.sampled_from(["open", "close", "reset"]))
    def manual(self, action: str) -> None:
        if action == "open":
            self.breaker.open()
            self.model.manual_open()
        elif action == "close":
            self.breaker.close()
            self.model.manual_close()
        else:
            self.breaker.reset()
            self.model.reset()

    # ----------------------------------------------------------- invariant

    @invariant()
    def same_observables(self) -> None:
        model = self.model
        model.tick()
        stats = self.breaker.stats
        assert stats.state is BreakerState(model.state)
        assert (
            stats.calls,
            stats.successes,
            stats.failures,
            stats.ignored,
            stats.rejections,
            stats.state_changes,
            stats.consecutive_failures,
        ) == (
            model.calls,
            model.successes,
            model.failures,
            model.ignored,
            model.rejections,
            model.changes,
            model.consecutive,
        )
        assert stats.opened_at == model.opened_at
        assert stats.time_in_state == pytest.approx(model.now - model.entered)
        expected_wait = (
            max(0.0, model.opened_at + model.timeout - model.now)
            if model.state == "OPEN" and model.opened_at is not None
            else 0.0
        )
        assert stats.retry_after == pytest.approx(expected_wait)
        if model.rate is None or not model.window:
            assert stats.failure_rate is None
        else:
            assert stats.failure_rate == pytest.approx(sum(model.window) / len(model.window))
        assert self.events == model.events


BreakerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerMatchesModel = BreakerMachine.TestCase
