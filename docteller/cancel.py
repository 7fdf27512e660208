"""Stopping a turn from outside it: the client went away, or the turn ran past its time budget.

The web layer runs each answer on a worker thread and marks it `cancellable`; the agent and the
model backends call `check()` once per generated token, so a turn stops within one token of being
cancelled and the shared model is free for the next customer.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

_local = threading.local()


class Cancelled(Exception):
    """Raised inside a cancelled turn; `over_budget` tells a time-out from a client that left."""

    def __init__(self, over_budget: bool) -> None:
        super().__init__("time budget exceeded" if over_budget else "cancelled")
        self.over_budget = over_budget


@contextlib.contextmanager
def cancellable(event: threading.Event, deadline: float | None = None) -> Iterator[None]:
    """Within this block (on this thread), `check()` raises once `event` is set or `deadline`
    (a `time.monotonic()` value) has passed."""
    previous = getattr(_local, "state", None)
    _local.state = (event, deadline)
    try:
        yield
    finally:
        _local.state = previous


def check() -> None:
    state = getattr(_local, "state", None)
    if state is None:
        return
    event, deadline = state
    if event.is_set():
        raise Cancelled(over_budget=False)
    if deadline is not None and time.monotonic() > deadline:
        raise Cancelled(over_budget=True)
