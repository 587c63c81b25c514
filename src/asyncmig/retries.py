"""Lock retries on a busy database (DESIGN §8a): the schedule, as a pure value.

A DDL statement waiting for its ACCESS EXCLUSIVE lock behind one long transaction puts
every later query on that table in the queue behind it: the site stalls although the
migration itself is instant. So every transactional unit (and each statement of a
no-transaction file that may run in a transaction block) runs with a short
``lock_timeout``; when the lock is not granted in time (SQLSTATE 55P03) the unit rolls
back, sleeps, and runs again with a somewhat longer timeout, until the attempts or the
deadline run out.

The ``-- asyncmig: lock-timeout=…`` directive of a file replaces the first attempt's
timeout for that file. ``lock_timeout=0`` turns the default off (a file's directive
still applies); ``attempts=1`` turns retries off. ``wait_last`` lets the last attempt
wait without a timeout — off by default: a last attempt that waits is exactly the stall
the retries exist to avoid, so it is for a maintenance window, on purpose.

Statements that cannot run in a transaction block (``CREATE INDEX CONCURRENTLY``) get
no default lock timeout: they take no lock that blocks reads or writes, and a timed-out
concurrent build would leave an invalid index behind.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["LOCK_NOT_AVAILABLE", "RetryPolicy"]

LOCK_NOT_AVAILABLE = "55P03"

_GROWTH = 1.5  # each attempt's lock timeout, over the previous one
_CAP = 4.0  # at most this many times the first attempt's


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a unit may wait for a lock, and how often it tries again.

    Durations in seconds. Defaults: 2 s, 10 attempts, sleeps of 1 s doubling to 30 s,
    at most 10 minutes for one unit.
    """

    lock_timeout: float = 2.0
    attempts: int = 10
    sleep: float = 1.0
    max_sleep: float = 30.0
    deadline: float = 600.0
    wait_last: bool = False

    def timeout(self, attempt: int, directive: float | None = None) -> float | None:
        """The lock timeout of ``attempt`` (1-based): None sets none (the session's own
        applies), 0 waits without limit."""
        base = directive if directive is not None else self.lock_timeout
        if not base:
            return directive  # 0 from a directive means "no limit", None means unset
        if self.wait_last and attempt >= self.attempts > 1:
            return 0.0
        return float(min(base * _GROWTH ** (attempt - 1), base * _CAP))

    def pause(self, attempt: int) -> float:
        """Seconds to sleep after ``attempt`` failed: doubling, capped, with jitter."""
        base = float(min(self.sleep * 2.0 ** (attempt - 1), self.max_sleep))
        return base * random.uniform(0.5, 1.5)

    def active(self, directive: float | None = None) -> bool:
        """Whether a lock timeout is in effect (and so 55P03 can be retried)."""
        return bool(directive or self.lock_timeout)
