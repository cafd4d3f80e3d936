"""Retry policies with Temporal's defaults and meaning."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RetryPolicy(BaseModel):
    """How a failed activity is retried.

    Args:
        initial_interval: Wait before the first retry.
        backoff_coefficient: Each wait is the previous one times this.
        maximum_interval: Cap on a single wait; defaults to 100 × ``initial_interval``.
        maximum_attempts: Attempts in all, the first included; 0 means unlimited.
        non_retryable_error_types: Error type names that stop retrying at once.

    Example:
        >>> RetryPolicy(maximum_attempts=5).backoff(3)
        datetime.timedelta(seconds=4)
    """

    model_config = ConfigDict(frozen=True)

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = Field(default=2.0, ge=1.0)
    maximum_interval: timedelta | None = None
    maximum_attempts: int = Field(default=0, ge=0)
    non_retryable_error_types: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_intervals(self) -> RetryPolicy:
        if self.initial_interval <= timedelta(0):
            raise ValueError("initial_interval must be positive")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("maximum_interval must not be below initial_interval")
        return self

    @property
    def effective_maximum_interval(self) -> timedelta:
        """The cap on one wait, applying the 100 × initial default."""
        return self.maximum_interval or self.initial_interval * 100

    def backoff(self, attempt: int) -> timedelta:
        """Wait after failed attempt number ``attempt`` (1-based) before the next one."""
        cap = self.effective_maximum_interval
        try:
            seconds = self.initial_interval.total_seconds() * self.backoff_coefficient ** (
                attempt - 1
            )
        except OverflowError:  # a long outage with unlimited attempts: far past the cap
            return cap
        # Compare as floats: past ~2**47 s the wait no longer fits in a timedelta.
        return cap if seconds >= cap.total_seconds() else timedelta(seconds=seconds)

    def allows_retry(self, attempt: int, error_type: str, non_retryable: bool) -> bool:
        """Whether a failure of ``attempt`` with this error type may be retried."""
        if non_retryable or error_type in self.non_retryable_error_types:
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts


DEFAULT_RETRY_POLICY = RetryPolicy()
