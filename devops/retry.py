"""When and how long to wait between attempts: exponential backoff with full jitter,
``Retry-After`` honoured, everything inside one overall deadline. Pure: no sleeping here."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass, field

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff parameters. ``deadline`` bounds the whole call, retries and waits included."""

    deadline: float = 20.0
    attempt_timeout: float = 10.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_attempts: int = 6
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Delay before attempt ``attempt + 1`` (attempts count from 1).

        A server's ``Retry-After`` wins when given; otherwise full jitter over an
        exponentially growing window, so concurrent relays don't retry in lockstep.
        """
        if retry_after is not None:
            return retry_after
        window = min(self.max_delay, self.base_delay * (2.0 ** (attempt - 1)))
        return window * float(self.jitter())
