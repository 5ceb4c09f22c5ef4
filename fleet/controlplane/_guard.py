"""One object's failure is one log line and a retry, never the end of the process.

Every control loop runs in the nursery of ``up``, beside the sandbox
apiserver and the fleet: an exception that escapes a loop cancels all of
them. kube-controller-manager's answer is ``utilruntime.HandleError`` plus a
rate-limited requeue (``workqueue.AddRateLimited``), so a bad object costs a
log line and a retry; this module is that for our loops:

- :class:`~fleet.controlplane._queue.WorkQueue` workers requeue a failed key
  with a per-key exponential backoff (:class:`RetryBackoff`);
- informers skip a handler that fails on one event and go on with the next;
- periodic loops (the scheduler's binder, pod GC, node monitoring) survive a
  failed round and try again on their next one.

Each survival is counted where the loop's other figures are (``statistics()``)
and logged on one line; the traceback goes to DEBUG, since the same error
repeats on every retry. Cancellation (``trio.Cancelled``, a BaseException) and
``KeyboardInterrupt`` are never caught: shutdown stays shutdown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fleet.errors import ConfigError

__all__ = ["RetryBackoff", "log_failure"]

log = logging.getLogger("fleet.controlplane")


@dataclass(frozen=True, slots=True)
class RetryBackoff:
    """Per-key exponential backoff for failed work (client-go's ``ItemExponentialFailureRateLimiter``)."""

    initial: float = 0.1
    """First retry delay. client-go starts at 5 ms; a Python loop that failed on an
    object is better given a moment, and 0.1 s still retries a transient fault at once."""
    maximum: float = 300.0
    """Cap. client-go caps at 1000 s; five minutes keeps a poisoned object's log line
    rare while still noticing a fix within a sync period of a real controller."""

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError(
                f"retry backoff: want 0 < initial <= maximum, got {self.initial}, {self.maximum}"
            )

    def delay(self, failures: int) -> float:
        """The delay before retry number ``failures`` (1 for the first)."""
        delay: float = min(self.maximum, self.initial * 2 ** min(max(failures - 1, 0), 62))
        return delay


def log_failure(loop: str, what: str, exc: BaseException, retry_in: float | None = None) -> None:
    """One line naming the loop, the object and the error; the traceback at DEBUG."""
    retry = f" (retrying in {retry_in:.1f}s)" if retry_in is not None else ""
    log.warning("%s: %s: %s: %s%s", loop, what, type(exc).__name__, exc, retry)
    log.debug("%s: %s: traceback", loop, what, exc_info=exc)
