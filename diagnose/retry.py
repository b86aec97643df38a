"""Bounded retries for transient network errors, so a blip is not reported as an outage."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class RetriesExhausted(Exception):
    """The last error, with how many attempts were made before giving up."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(str(last))
        self.attempts = attempts
        self.last = last


def with_retries(
    fn: Callable[[], T],
    *,
    transient: Callable[[BaseException], bool],
    tries: int,
    remaining: Callable[[], float],
    backoff_s: float = 0.2,
) -> tuple[T, int]:
    """Call fn until it succeeds, a non-transient error occurs, tries run out or time runs out.

    Returns (value, attempts); raises RetriesExhausted wrapping the last error otherwise.
    """
    attempt = 0
    delay = backoff_s
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except Exception as exc:  # classified below, re-raised wrapped
            if attempt >= max(1, tries) or not transient(exc) or remaining() <= delay + 0.05:
                raise RetriesExhausted(attempt, exc) from exc
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
