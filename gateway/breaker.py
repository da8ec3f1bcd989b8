"""A circuit breaker for a shared backend that must never slow a request down.

When a call to the backend fails (refused, timed out, the server hung), the breaker *opens*:
for ``break_for`` seconds every caller is told at once to use its local fallback, so a dead or
stopped server costs each worker one socket timeout, not one per request.  Then one caller (the
*trial*) is let through; its success closes the breaker, its failure opens it again.  Only the
trial's success closes it, so a call that was already under way when the server went away and
happens to succeed does not make the breaker flap.

Each change is logged once: a warning when it opens, another when it closes.  The log names the
backend as given (the caller strips any password first) and the failure's class and text.
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("gateway.state")

CLOSED, TRIAL = "closed", "trial"


class Breaker:
    """``allow()`` before a call (a ticket, or None: use the fallback), then ``succeeded(ticket)``
    or ``failed(exc)``.  ``clock`` is monotonic: nothing outside this process reads it."""

    def __init__(self, name: str, break_for: float = 5.0, clock=time.monotonic):
        self.name = name
        self.break_for = break_for
        self._clock = clock
        self._open_until: float | None = None      # None: closed
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> str | None:
        """CLOSED or TRIAL when the caller may use the backend, None when it must not."""
        if self._open_until is None:                # the hot path takes no lock
            return CLOSED
        with self._lock:
            if self._open_until is None:
                return CLOSED
            now = self._clock()
            if now < self._open_until:
                return None
            self._open_until = now + self.break_for     # the others wait for this one trial
            return TRIAL

    def succeeded(self, ticket: str | None) -> None:
        if ticket != TRIAL or self._open_until is None:
            return
        with self._lock:
            if self._open_until is None:
                return
            self._open_until = None
        log.warning("%s answers again: shared state is back in use", self.name)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            was_closed = self._open_until is None
            self._open_until = self._clock() + self.break_for
        if was_closed:
            log.warning("%s is unavailable (%s: %s): each worker uses its own memory meanwhile "
                        "and tries again every %gs", self.name, type(exc).__name__, exc,
                        self.break_for)

    def reset(self) -> None:
        """After a fork: a fresh lock (another thread may have held the parent's)."""
        self._lock = threading.Lock()
