"""The answer bubble's status line: the place in line for the shared model, upload pages as they
are read, and answers composed whole arriving a sentence at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from docteller.cancel import Cancelled, cancellable
from ui.model_queue import ModelQueue, QueuedChatModel, queue_status, reporting_waits

STATEMENT = "statements/bank_statement_ocr_nz/tutorial_everyday_scanned.pdf"


def _wait_until(predicate, what: str) -> None:
    """Block until `predicate()` holds (a condition on the queue, never a sleep-and-hope)."""
    done = threading.Event()
    for _ in range(2000):
        if predicate():
            return
        done.wait(0.005)
    raise AssertionError(f"timed out waiting for {what}")


class _Waiter(threading.Thread):
    """Takes a turn in `queue`, records every position it is told, then holds until released."""

    def __init__(self, queue: ModelQueue, name: str, served: list[str]) -> None:
        super().__init__(name=name, daemon=True)
        self.queue, self.served = queue, served
        self.positions: list[int] = []
        self.release = threading.Event()
        self.serving = threading.Event()

    def run(self) -> None:
        with self.queue.turn(self.positions.append):
            self.served.append(self.name)
            self.serving.set()
            self.release.wait(30)


def test_tickets_are_served_first_come_first_served_and_told_their_place() -> None:
    queue = ModelQueue()
    served: list[str] = []
    first = _Waiter(queue, "first", served)
    first.start()
    first.serving.wait(5)
    second = _Waiter(queue, "second", served)
    second.start()
    _wait_until(lambda: queue.waiting() == 1, "the second in line")
    third = _Waiter(queue, "third", served)
    third.start()
    _wait_until(lambda: queue.waiting() == 2, "the third in line")
    _wait_until(lambda: third.positions == [2], "the third told its place")
    assert second.positions == [1]

    first.release.set()
    second.serving.wait(5)
    _wait_until(lambda: third.positions == [2, 1], "the third moving up")
    assert second.positions == [1, 0]  # 0: its wait is over
    second.release.set()
    third.serving.wait(5)
    third.release.set()
    for waiter in (first, second, third):
        waiter.join(5)
    assert served == ["first", "second", "third"]
    assert third.positions == [2, 1, 0] and first.positions == []  # the first never waited
    assert not queue.busy and queue.waiting() == 0


def test_a_cancelled_wait_leaves_the_line_and_those_behind_move_up() -> None:
    queue = ModelQueue()
    served: list[str] = []
    holder = _Waiter(queue, "holder", served)
    holder.start()
    holder.serving.wait(5)
    cancel = threading.Event()
    outcome: list[str] = []

    def leaver() -> None:
        try:
            with cancellable(cancel), queue.turn():
                outcome.append("served")
        except Cancelled:
            outcome.append("cancelled")

    leaving = threading.Thread(target=leaver, daemon=True)
    leaving.start()
    _wait_until(lambda: queue.waiting() == 1, "the leaver in line")
    behind = _Waiter(queue, "behind", served)
    behind.start()
    _wait_until(lambda: behind.positions == [2], "the one behind told its place")
    cancel.set()
    leaving.join(5)
    assert outcome == ["cancelled"]
    _wait_until(lambda: behind.positions == [2, 1], "the one behind moving up")
    holder.release.set()
    behind.serving.wait(5)
    behind.release.set()
    behind.join(5)
    assert served == ["holder", "behind"]


def test_the_queued_model_reports_waits_to_this_threads_reporter_and_keeps_the_models_abilities() -> None:
    class Scorer:
        model_id, model_hash = "m", "0"

        def stream(self, messages, *, max_tokens=320, temperature=0.0):
            yield "a"
            yield "b"

        def choice_probabilities(self, messages, choices):
            return {"yes": 1.0, "no": 0.0}

    class Plain:
        model_id, model_hash = "p", "1"

        def stream(self, messages, *, max_tokens=320, temperature=0.0):
            yield "x"

    from docteller.protocols import ChoiceScorer

    queue = ModelQueue()
    scorer, plain = QueuedChatModel.wrap(Scorer(), queue), QueuedChatModel.wrap(Plain(), queue)
    assert isinstance(scorer, ChoiceScorer) and not isinstance(plain, ChoiceScorer)
    assert scorer.model_id == "m" and QueuedChatModel.wrap(scorer, queue) is scorer
    heard: list[int] = []
    with queue.turn():  # someone else is generating
        def ask() -> None:
            with reporting_waits(heard.append):
                assert "".join(plain.stream([])) == "x"

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        _wait_until(lambda: heard == [1], "the wait reported")
    asking.join(5)
    assert heard == [1, 0]
    assert scorer.choice_probabilities([], ("yes", "no"))["yes"] == 1.0 and not queue.busy
    assert queue_status(2) == "_2 customers ahead of you — your answer starts soon…_"
    assert queue_status(1).startswith("_1 customer ahead")


def test_an_answer_composed_whole_arrives_in_growing_frames(tmp_path: Path, scripted_model) -> None:
    """The extractive answer streams sentence by sentence; each frame shows a longer prefix."""
    from agent.resources import AgentResources
    from agent.pipeline import answer_pieces
    from ingest.embed import get_embedder
    from ingest.loaders import load_document
    from retrieval.store import KnowledgeIndex
    from docteller.settings import DEFAULT_KB_DIR, get_settings
    from ui.backend import TabSession
    from ui.chat import _answer_turn

    index = KnowledgeIndex.in_memory(embedder=get_embedder())
    index.add_document(load_document(DEFAULT_KB_DIR / "cards-lost-stolen-and-disputes.md"))
    settings = get_settings().model_copy(update={"answer_style": "extractive"})
    resources = AgentResources(index, scripted_model(lambda m: "yes"), embedder=index.embedder, settings=settings)
    session = TabSession(key="k", agent=resources.new_session(), upload_dir=tmp_path)
    question = "What is the daily limit for debit card purchases?"
    transcript: list[dict] = [{"role": "user", "content": question}]
    frames = [shown[-1]["content"] for _, shown in _answer_turn(session, question, transcript, {"answer_at": {}})]
    final = session.answers[-1].text
    pieces = answer_pieces(final)
    assert len(pieces) >= 4 and "".join(pieces) == final
    assert frames[0] == "_Searching our policies…_"
    streamed = [f for f in frames[1:] if not f.startswith("_")]
    growing = streamed[: len(pieces)]
    assert len(growing) == len(pieces)
    assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in zip(growing, growing[1:]))
    assert growing[-1] == final
    assert transcript[-1]["content"].startswith(final) and "**Sources**" in transcript[-1]["content"]


def test_an_uploads_pages_are_told_as_they_are_read(tmp_path: Path, corpus: Path, scripted_model) -> None:
    """A scanned statement: the status names each page as it starts being read (the upload is
    read once; its kind is known only after)."""
    from agent.resources import AgentResources
    from docteller.settings import get_settings
    from ingest.embed import get_embedder
    from retrieval.store import KnowledgeIndex
    from docteller.model import UploadedDocument
    from ui.backend import TabSession, upload_status
    from ui.chat import read_upload

    index = KnowledgeIndex.in_memory(embedder=get_embedder())
    resources = AgentResources(index, scripted_model(lambda m: "yes"), embedder=index.embedder, settings=get_settings())
    session = TabSession(key="k", agent=resources.new_session(), upload_dir=tmp_path / "up")
    steps = list(read_upload(session, corpus / STATEMENT, "statement.pdf", get_settings()))
    *statuses, doc = steps
    assert isinstance(doc, UploadedDocument) and doc.extraction.doc_type == "statement"
    assert statuses == ["_Reading your document, page 1 of 2…_", "_Reading your document, page 2 of 2…_"]
    assert upload_status("statement", 2, 3) == "_Reading your statement, page 2 of 3…_"
    assert upload_status("id", 1, 1) == "_Reading your ID card, page 1 of 1…_"


def test_a_rejected_upload_raises_from_the_reader(tmp_path: Path) -> None:
    from docteller.settings import get_settings
    from ui.backend import TabSession, UploadRejected
    from ui.chat import read_upload

    bad = tmp_path / "notes.txt"
    bad.write_text("not a statement")
    session = TabSession(key="k", agent=object(), upload_dir=tmp_path / "up")
    with pytest.raises(UploadRejected):
        list(read_upload(session, bad, "notes.txt", get_settings()))


class _RecordingModel:
    """Records which turn's call ran when; each call blocks until its event is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gates: dict[str, threading.Event] = {}

    def stream(self, messages, *, max_tokens: int = 320, temperature: float = 0.0):
        name = messages[-1].content
        self.calls.append(name)
        self.gates.setdefault(name, threading.Event()).wait(30)
        yield name


def test_a_turns_model_calls_run_back_to_back_once_it_is_served() -> None:
    """Queued per call, a turn's second call (the answer after the judgement) went to the back of
    the line behind every customer who arrived meanwhile; held for the turn, it does not."""
    from docteller.protocols import ChatMessage
    from ui.model_queue import one_turn

    inner = _RecordingModel()
    queue = ModelQueue()
    model = QueuedChatModel(inner, queue)

    def turn(name: str, calls: int) -> None:
        with one_turn():
            for n in range(calls):
                list(model.stream([ChatMessage("user", f"{name}{n}")]))

    first = threading.Thread(target=turn, args=("a", 2), daemon=True)
    first.start()
    _wait_until(lambda: inner.calls == ["a0"], "the first turn's first call")
    second = threading.Thread(target=turn, args=("b", 1), daemon=True)
    second.start()
    _wait_until(lambda: queue.waiting() == 1, "the second customer in line")
    for name in ("a0", "a1", "b0"):
        inner.gates.setdefault(name, threading.Event()).set()
    first.join(10)
    second.join(10)
    assert inner.calls == ["a0", "a1", "b0"]  # per call it would have been a0, b0, a1
    assert not queue.busy and queue.waiting() == 0
