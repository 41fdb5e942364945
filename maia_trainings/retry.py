"""How a run can end, which endings earn another attempt, and how long a retry waits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from .models import Status


class Ending(StrEnum):
    """How one run of a training ended."""

    SUCCEEDED = "succeeded"  # the trainer returned its results
    ERROR = "error"  # the trainer raised: it would fail again
    TIMEOUT = "timeout"  # it ran past its MAX_RUNTIME
    RETRY = "retry"  # the trainer asked for another attempt (errors.Retry, out of memory)
    DIED = "died"  # the child process died without saying how it ended
    EXPIRED = "expired"  # its lease ran out: the process that ran it died or hung
    INTERRUPTED = "interrupted"  # the service stopped it on shutdown
    LOST = "lost"  # the run no longer owned its training: cancelled, or taken over
    BROKEN = "broken"  # the service itself could not run it (a bad TRAINER, a full disk)


# Failures of the machinery, not of the training: another attempt may well succeed.
RETRIED_ENDINGS = frozenset({Ending.RETRY, Ending.DIED, Ending.EXPIRED})


@dataclass(frozen=True)
class RetryPolicy:
    """Retried endings go back to the queue after an exponential back-off, while attempts last.

    ``base_delay`` seconds after the first attempt, twice as long after each further one; the
    ``max_attempts``-th failed attempt fails the training for good.
    """

    max_attempts: int
    base_delay: float

    @staticmethod
    def retries(ending: Ending) -> bool:
        return ending in RETRIED_ENDINGS

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay(self, attempts: int) -> timedelta:
        """The wait before the next attempt, after ``attempts`` attempts."""
        return timedelta(seconds=self.base_delay * 2 ** max(attempts - 1, 0))

    def after_failure(self, attempts: int, error: str, now: datetime) -> dict[str, Any]:
        """A training's new values after its ``attempts``-th attempt failed with ``error``:
        queued again once the back-off has passed, or failed for good when none are left."""
        if self.gives_up(attempts):
            return {
                "status": Status.FAILED,
                "error": f"{error} (after {attempts} attempts)",
                "finished_at": now,
                "updated_at": now,
            }
        return {
            "status": Status.QUEUED,
            "error": error,
            "due_at": now + self.delay(attempts),
            "updated_at": now,
        }
