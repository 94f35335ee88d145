"""Reconnect back-off policies of the agent MTPs (pure functions).

R-MQTT.10 / R-MQTT.33 (TR-181 ConnectRetryTime), R-STOMP.7 / R-STOMP.25
(ServerRetry*), R-WS.19 .. R-WS.21 (SessionRetry*), R-UDS.5; TP-469 6.3,
7.8, 11.6 and 11.16.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.agent.mtp.backoff import (
    MAX_RETRY_EXPONENT,
    Backoff,
    MQTTRetry,
    STOMPRetry,
    UDSRetry,
    WebSocketRetry,
)

SETTINGS = settings(max_examples=200, deadline=None)


def test_mqtt_bounds_follow_connect_retry_time() -> None:
    """R-MQTT.10: [T*(k/1000)^(n-1), T*(k/1000)^n], n frozen at 10."""
    policy = MQTTRetry(5, 2000, None)
    assert policy.bounds(1) == (5, 10)  # TP-469 11.16: between T and T*k/1000
    assert policy.bounds(2) == (10, 20)
    assert policy.bounds(10) == (5 * 2 ** 9, 5 * 2 ** 10)
    assert policy.bounds(11) == policy.bounds(10) == policy.bounds(500)


def test_mqtt_max_interval_caps_the_drawn_value() -> None:
    policy = MQTTRetry(5, 2000, 30)
    assert policy.bounds(3) == (20, 30)
    assert policy.bounds(4) == (30, 30)
    rng = random.Random(1)
    assert all(policy.delay(n, rng) <= 30 for n in range(1, 15))
    assert policy.delay(6, rng) == 30


def test_stomp_bounds_start_at_zero() -> None:
    """R-STOMP.7: a random value in [0, I*(k/1000)^(n-1)], capped by the maximum."""
    policy = STOMPRetry(60, 2000, 30720)
    assert policy.bounds(1) == (0.0, 60)
    assert policy.bounds(2) == (0.0, 120)
    assert policy.bounds(10) == (0.0, 30720)   # 60*2^9 = 30720
    assert policy.bounds(11) == policy.bounds(10)
    assert STOMPRetry(60, 3000, 100).bounds(3) == (0.0, 100)
    assert STOMPRetry(1, 1000, None).bounds(7) == (0.0, 1)


def test_websocket_defaults_are_the_r_ws_19_table() -> None:
    """R-WS.19: factory defaults 5 s / 2000 give 5-10, 10-20, ... 2560-5120 s."""
    policy = WebSocketRetry()
    table = {1: (5, 10), 2: (10, 20), 3: (20, 40), 4: (40, 80), 5: (80, 160),
             6: (160, 320), 7: (320, 640), 8: (640, 1280), 9: (1280, 2560),
             10: (2560, 5120), 11: (2560, 5120), 40: (2560, 5120)}
    for n, expected in table.items():
        assert policy.bounds(n) == expected


def test_uds_retry_is_one_to_five_seconds() -> None:
    """R-UDS.5: a random amount of time between 1 and 5 seconds, every time."""
    policy = UDSRetry()
    rng = random.Random(3)
    values = [policy.delay(n, rng) for n in range(1, 50)]
    assert all(1.0 <= v <= 5.0 for v in values)
    assert len(set(values)) > 40
    assert UDSRetry(2, 2).delay(1, rng) == 2


def test_delays_are_deterministic_with_an_injected_rng() -> None:
    for policy in (MQTTRetry(), STOMPRetry(), WebSocketRetry(), UDSRetry()):
        a = [policy.delay(n, random.Random(42)) for n in range(1, 12)]
        b = [policy.delay(n, random.Random(42)) for n in range(1, 12)]
        assert a == b


@pytest.mark.parametrize("retry", [0, -1, True, 1.5, "1", None])
def test_bad_retry_numbers_are_refused(retry: object) -> None:
    for policy in (MQTTRetry(), STOMPRetry(), WebSocketRetry(), UDSRetry()):
        with pytest.raises(ValueError):
            policy.bounds(retry)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            policy.delay(retry, random.Random())  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [
    lambda: MQTTRetry(0), lambda: MQTTRetry(-1), lambda: MQTTRetry(5, 999),
    lambda: MQTTRetry(5, 65536), lambda: MQTTRetry(5, 2000.0),  # type: ignore[arg-type]
    lambda: MQTTRetry(5, 2000, 0), lambda: STOMPRetry(0), lambda: STOMPRetry(1, True),
    lambda: STOMPRetry(1, 2000, -3), lambda: WebSocketRetry(0), lambda: WebSocketRetry(5, 500),
    lambda: UDSRetry(3, 2), lambda: UDSRetry(-1, 2),
])
def test_bad_parameters_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_backoff_counts_retries_and_resets() -> None:
    """R-WS.20: the count restarts at zero once a session is established."""
    backoff = Backoff(MQTTRetry(1, 2000, None), random.Random(0))
    assert backoff.retry == 0
    assert backoff.bounds() == (1, 2)
    first = backoff.next_delay()
    assert backoff.retry == 1 and 1 <= first <= 2
    second = backoff.next_delay()
    assert backoff.retry == 2 and 2 <= second <= 4 and backoff.bounds() == (2, 4)
    backoff.reset()
    assert backoff.retry == 0
    assert 1 <= backoff.next_delay() <= 2
    assert isinstance(Backoff(UDSRetry()).rng, random.Random)


POLICIES = st.one_of(
    st.builds(MQTTRetry, st.floats(0.001, 1e4), st.integers(1000, 65535),
              st.one_of(st.none(), st.floats(0.001, 1e6))),
    st.builds(STOMPRetry, st.floats(0.001, 1e4), st.integers(1000, 65535),
              st.one_of(st.none(), st.floats(0.001, 1e6))),
    st.builds(WebSocketRetry, st.floats(0.001, 1e4), st.integers(1000, 65535)),
    st.floats(0, 100).flatmap(lambda lo: st.builds(UDSRetry, st.just(lo), st.floats(lo, lo + 100))),
)


@SETTINGS
@given(POLICIES, st.integers(1, 10_000), st.integers(0, 2 ** 32))
def test_every_delay_lies_within_its_bounds(policy: object, retry: int, seed: int) -> None:
    low, high = policy.bounds(retry)  # type: ignore[attr-defined]
    delay = policy.delay(retry, random.Random(seed))  # type: ignore[attr-defined]
    assert 0 <= low <= high
    assert low - 1e-9 * max(1, high) <= delay <= high + 1e-9 * max(1, high)
    capped = min(retry, MAX_RETRY_EXPONENT)
    assert policy.bounds(capped) == (low, high)  # type: ignore[attr-defined]


@SETTINGS
@given(st.one_of(st.integers(max_value=0), st.floats(), st.text(max_size=3), st.none(),
                 st.booleans()))
def test_invalid_retry_raises_only_value_error(retry: object) -> None:
    with pytest.raises(ValueError):
        MQTTRetry().bounds(retry)  # type: ignore[arg-type]
