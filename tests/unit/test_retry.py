"""RetryPolicy: Temporal's defaults and backoff arithmetic."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from saga import RetryPolicy


def test_defaults_are_temporals() -> None:
    policy = RetryPolicy()
    assert policy.initial_interval == timedelta(seconds=1)
    assert policy.backoff_coefficient == 2.0
    assert policy.maximum_interval is None
    assert policy.effective_maximum_interval == timedelta(seconds=100)  # 100 × initial
    assert policy.maximum_attempts == 0  # unlimited
    assert tuple(policy.non_retryable_error_types) == ()


def test_backoff_doubles_from_the_initial_interval() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(n).total_seconds() for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]


def test_backoff_is_capped_at_100_times_the_initial_interval_by_default() -> None:
    policy = RetryPolicy()
    assert policy.backoff(8) == timedelta(seconds=100)  # 128 capped
    assert policy.backoff(50) == timedelta(seconds=100)


def test_default_cap_follows_a_custom_initial_interval() -> None:
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=10))
    assert policy.effective_maximum_interval == timedelta(seconds=1)
    assert policy.backoff(20) == timedelta(seconds=1)


def test_explicit_maximum_interval_caps_the_wait() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=3.0,
        maximum_interval=timedelta(seconds=30),
    )
    assert [policy.backoff(n).total_seconds() for n in range(1, 5)] == [2, 6, 18, 30]


def test_coefficient_one_keeps_a_constant_interval() -> None:
    policy = RetryPolicy(initial_interval=timedelta(seconds=5), backoff_coefficient=1.0)
    assert {policy.backoff(n) for n in range(1, 10)} == {timedelta(seconds=5)}


def test_fractional_coefficient_arithmetic() -> None:
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.5)
    assert policy.backoff(1) == timedelta(milliseconds=100)
    assert policy.backoff(2) == timedelta(milliseconds=150)
    assert policy.backoff(3) == timedelta(milliseconds=225)


@pytest.mark.parametrize(
    ("maximum_attempts", "attempt", "allowed"),
    [(0, 1, True), (0, 10_000, True), (1, 1, False), (5, 4, True), (5, 5, False), (5, 6, False)],
)
def test_maximum_attempts_counts_the_first_attempt(
    maximum_attempts: int, attempt: int, allowed: bool
) -> None:
    policy = RetryPolicy(maximum_attempts=maximum_attempts)
    assert policy.allows_retry(attempt, "ValueError", non_retryable=False) is allowed


def test_non_retryable_error_types_stop_retries() -> None:
    policy = RetryPolicy(non_retryable_error_types=["InsufficientFunds"])
    assert not policy.allows_retry(1, "InsufficientFunds", non_retryable=False)
    assert policy.allows_retry(1, "BankUnavailable", non_retryable=False)


def test_non_retryable_flag_wins_over_the_policy() -> None:
    assert not RetryPolicy().allows_retry(1, "Anything", non_retryable=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_interval": timedelta(0)},
        {"initial_interval": timedelta(seconds=-1)},
        {"backoff_coefficient": 0.5},
        {"maximum_attempts": -1},
        {"initial_interval": timedelta(seconds=10), "maximum_interval": timedelta(seconds=1)},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen_and_round_trips_as_json() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=250),
        backoff_coefficient=1.5,
        maximum_interval=timedelta(seconds=7),
        maximum_attempts=9,
        non_retryable_error_types=("A", "B"),
    )
    with pytest.raises(ValidationError):
        policy.maximum_attempts = 3  # type: ignore[misc]
    assert RetryPolicy.model_validate_json(policy.model_dump_json()) == policy


@pytest.mark.parametrize("attempt", [48, 60, 1_100, 10**6])
def test_backoff_of_a_very_late_attempt_is_the_cap_not_an_overflow(attempt: int) -> None:
    # Unlimited attempts with the default 100 s cap reach attempt 48 after about 80
    # minutes of outage; the wait must stay the cap (it used to overflow timedelta).
    assert RetryPolicy().backoff(attempt) == timedelta(seconds=100)
    capped = RetryPolicy(maximum_interval=timedelta(days=1))
    assert capped.backoff(attempt) == timedelta(days=1)
