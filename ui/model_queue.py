"""The line for the one shared chat model: first come, first served, and each customer told where
they stand ("2 customers ahead of you").

A loaded model generates for one turn at a time (the backends serialise it with a lock). A lock
says nothing about who waits behind it, and is not fair; `ModelQueue` hands out numbered
tickets and serves them in order, reporting each waiting ticket's position whenever it changes.
`QueuedChatModel` puts every use of the model (query rewrite, answerability judgement, answer
generation) through the queue, and tells whoever is waiting on this thread (`reporting_waits`)
how many are ahead. Within `one_turn()` (a customer's turn), the first use takes the place in line
and the turn keeps it until it ends, so its uses run back to back. `expected_wait` says how long a
use would wait now, so the agent can do without the model's optional uses under load
(`Settings.model_max_wait_s`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Any

from docteller.cancel import check as check_cancelled
from docteller.protocols import ChatMessage

# How often a waiting ticket wakes to see whether its turn was cancelled (a client that left).
CANCEL_POLL_S = 0.25

WaitReporter = Callable[[int], None]  # called with how many are ahead; 0 once it is served

_local = threading.local()


class ModelQueue:
    """FIFO tickets for one resource. `ahead(ticket)` = the one being served (if any) plus the
    tickets that came before it and still wait."""

    def __init__(self, turn_seconds: float = 2.0) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[int] = deque()
        self._serving: int | None = None
        self._issued = 0
        # How long a turn holds the resource: a moving average of the turns served (the packaged
        # model's judgement takes ≈ 1.5–2 s on 2 cores; a generated answer far longer).
        self.turn_seconds = turn_seconds

    def expected_wait(self) -> float:
        """Seconds a ticket taken now would wait: the turn being served and those waiting, each
        as long as a turn takes on average."""
        with self._cond:
            return (len(self._waiting) + (self._serving is not None)) * self.turn_seconds

    def waiting(self) -> int:
        """How many tickets wait (not counting the one being served)."""
        with self._cond:
            return len(self._waiting)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._serving is not None

    def _ahead_locked(self, ticket: int) -> int:
        return self._waiting.index(ticket) + (self._serving is not None)

    @contextmanager
    def turn(self, on_wait: WaitReporter | None = None) -> Iterator[None]:
        """Wait for this caller's turn, then hold the resource for the block.

        `on_wait(n)` is called (on this thread, quickly: the queue's lock is held) each time the
        number ahead changes while waiting, and with 0 when a wait ends in being served. A turn
        cancelled while waiting (`docteller.cancel`) leaves the line at once."""
        with self._cond:
            ticket = self._issued
            self._issued += 1
            self._waiting.append(ticket)
            self._wait_locked(ticket, on_wait)
        served = time.perf_counter()
        try:
            yield
        finally:
            with self._cond:
                self._serving = None
                self.turn_seconds = 0.7 * self.turn_seconds + 0.3 * (time.perf_counter() - served)
                self._cond.notify_all()

    def _wait_locked(self, ticket: int, on_wait: WaitReporter | None) -> None:
        last: int | None = None
        try:
            while (ahead := self._ahead_locked(ticket)) > 0:
                if on_wait is not None and ahead != last:
                    on_wait(ahead)
                last = ahead
                self._cond.wait(CANCEL_POLL_S)
                check_cancelled()
        except BaseException:
            self._waiting.remove(ticket)
            self._cond.notify_all()  # those behind move up
            raise
        self._waiting.popleft()
        self._serving = ticket
        self._cond.notify_all()  # those behind are one closer
        if on_wait is not None and last is not None:
            on_wait(0)


@contextmanager
def reporting_waits(reporter: WaitReporter | None) -> Iterator[None]:
    """Within this block (on this thread), a wait for the model is reported to `reporter`."""
    previous = getattr(_local, "reporter", None)
    _local.reporter = reporter
    try:
        yield
    finally:
        _local.reporter = previous


def _current_reporter() -> WaitReporter | None:
    return getattr(_local, "reporter", None)


@contextmanager
def one_turn() -> Iterator[None]:
    """Within this block (one customer's turn, on this thread) the model is queued for once, at
    its first use, and kept until the block ends.

    A turn may use the model several times (rewrite a follow-up, judge the evidence, write the
    answer). Queued call by call, each use went to the back of the line again, so with 20
    customers a turn waited for the whole line once per use; held for the turn, it waits once and
    its uses run back to back, as if the model were served per customer."""
    previous = getattr(_local, "held", None)
    held = _local.held = _HeldTurns()
    try:
        yield
    finally:
        _local.held = previous
        held.release()


class _HeldTurns:
    """The queues this thread's turn has been served by, kept until the turn ends."""

    def __init__(self) -> None:
        self._queues: set[int] = set()
        self._stack = ExitStack()

    def holds(self, queue: "ModelQueue") -> bool:
        return id(queue) in self._queues

    def use(self, queue: "ModelQueue") -> AbstractContextManager[None]:
        if id(queue) not in self._queues:
            self._stack.enter_context(queue.turn(_current_reporter()))  # raises if cancelled while waiting
            self._queues.add(id(queue))
        return nullcontext()

    def release(self) -> None:
        self._queues.clear()
        self._stack.close()


def _turn_of(queue: "ModelQueue") -> AbstractContextManager[None]:
    """This call's place in `queue`: the turn's held place within `one_turn`, else its own."""
    held = getattr(_local, "held", None)
    return held.use(queue) if held is not None else queue.turn(_current_reporter())


class QueuedChatModel:
    """A `ChatModel` whose generations take their turn in a `ModelQueue`. Everything else (model
    id and hash, token counting, `accepts_images`) is the wrapped model's."""

    def __init__(self, inner: Any, queue: ModelQueue) -> None:
        self.inner = inner
        self.queue = queue

    @classmethod
    def wrap(cls, inner: Any, queue: ModelQueue) -> "QueuedChatModel":
        """The right wrapper for `inner`: one that scores choices only when `inner` can (the
        agent checks `isinstance(model, ChoiceScorer)` to pick how it judges evidence)."""
        if isinstance(inner, QueuedChatModel):
            return inner
        if hasattr(inner, "choice_probabilities"):
            return QueuedChoiceScorer(inner, queue)
        return cls(inner, queue)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def expected_wait(self) -> float:
        """Seconds a use of the model would wait now (`docteller.protocols.QueuedModel`): none
        when this thread's turn already holds it."""
        held = getattr(_local, "held", None)
        return 0.0 if held is not None and held.holds(self.queue) else self.queue.expected_wait()

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0
    ) -> Iterator[str]:
        with _turn_of(self.queue):
            yield from self.inner.stream(messages, max_tokens=max_tokens, temperature=temperature)


class QueuedChoiceScorer(QueuedChatModel):
    def choice_probabilities(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        with _turn_of(self.queue):
            return self.inner.choice_probabilities(messages, choices)


def queue_status(ahead: int) -> str:
    """What a waiting customer reads in the answer's status line."""
    people = "customer" if ahead == 1 else "customers"
    return f"_{ahead} {people} ahead of you — your answer starts soon…_"
