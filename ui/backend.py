"""The web app's one seam onto the rest of docteller: shared resources and per-tab sessions.

One `Backend` per process owns the shared, expensive things: the knowledge-base index and the
chat model (loaded lazily, once). Every browser tab (Gradio session hash) and every API
conversation gets its own `TabSession`, wrapping an agent session plus the uploaded files, so two
customers never see each other's documents. The chat model is serialised inside the agent;
retrieval and extraction run in parallel across sessions.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docteller.model import ExtractionResult
from docteller.redact import mask
from docteller.settings import Settings, get_settings

logger = logging.getLogger(__name__)

PDF = "application/pdf"
CUSTOMER_UPLOAD_MIMES = frozenset(
    {PDF, "image/png", "image/jpeg", "image/tiff", "image/webp", "image/bmp", "image/gif"}
)


class UploadRejected(Exception):
    """An upload that is refused; `str()` names the file and the reason and is safe to show.

    `kind` lets the HTTP API pick a status code: "too_large" (413), "unsupported" (415),
    "unreadable" (422).
    """

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


class SessionBusy(Exception):
    """The same session is still busy with its previous turn."""


def check_upload(path: str | Path, name: str, settings: Settings, allowed: Iterable[str] | None = None) -> str:
    """Size cap, then the content-sniffed type (never the extension). Returns the MIME type."""
    from ingest.sniff import IngestError, sniff

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise UploadRejected(f"{name}: the upload did not arrive, please try again.") from None
    cap = settings.max_upload_mb * 1024 * 1024
    if size > cap:
        raise UploadRejected(
            f"{name} is too large ({size / 1048576:.1f} MB); the limit is {settings.max_upload_mb} MB.",
            kind="too_large",
        )
    try:
        mime = sniff(path)
    except IngestError as exc:
        kind = "unsupported" if "unsupported" in exc.reason else "unreadable"
        raise UploadRejected(f"{name}: {exc.reason}.", kind=kind) from None
    if allowed is not None and mime not in allowed:
        raise UploadRejected(
            f"{name} is a file type I can't read here ({mime}). Please upload a PDF or a photo "
            "(JPEG, PNG, TIFF, WebP).",
            kind="unsupported",
        )
    return mime


@dataclass
class UploadedDocument:
    """A customer's upload within one session: where it is kept, what was read from it."""

    doc_id: str
    name: str
    path: Path
    mime: str
    result: ExtractionResult


@dataclass
class AnswerRecord:
    """What the UI keeps of an answer: the citations its Sources panel can open."""

    question: str
    text: str
    citations: list[dict[str, Any]]
    abstained: bool = False


def _final_answer(event: Any) -> Any | None:
    """The agent's `Answer` if `event` is the final event of a streamed turn."""
    if getattr(event, "kind", None) == "final":
        return event.answer
    return None


def _token_text(event: Any) -> str:
    if isinstance(event, str):
        return event
    return getattr(event, "text", "") or ""


def citation_dicts(answer: Any) -> list[dict[str, Any]]:
    """The answer's citations as plain dicts (the agent returns pydantic `Citation`s)."""
    out = []
    for c in answer.citations or []:
        out.append(c.model_dump() if hasattr(c, "model_dump") else dict(c))
    return out


@dataclass
class TabSession:
    """One browser tab's (or API conversation's) state: agent session, uploads, answers."""

    key: str
    agent: Any
    upload_dir: Path
    new_agent: Callable[[], Any] | None = None  # builds a fresh agent session for "new conversation"
    uploads: dict[str, UploadedDocument] = field(default_factory=dict)
    answers: list[AnswerRecord] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    # One turn at a time per tab; different tabs proceed in parallel. A plain Lock (not RLock):
    # a streamed answer is iterated from whichever worker thread Gradio or Starlette picks.
    lock: threading.Lock = field(default_factory=threading.Lock)
    busy_timeout_s: float = 180.0

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @contextmanager
    def _turn(self) -> Iterator[None]:
        if not self.lock.acquire(timeout=self.busy_timeout_s):
            raise SessionBusy("still working on your previous message; please wait a moment")
        try:
            self.touch()
            yield
        finally:
            self.lock.release()

    def add_upload(self, src: str | Path, name: str, settings: Settings) -> UploadedDocument:
        """Check, keep and extract one upload; raises `UploadRejected` with a friendly reason."""
        from ingest.sniff import IngestError

        with self._turn():
            mime = check_upload(src, name, settings, CUSTOMER_UPLOAD_MIMES)
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            safe_name = Path(name).name or "upload"
            kept = self.upload_dir / f"{len(self.uploads) + 1:03d}-{safe_name}"
            shutil.copyfile(src, kept)
            try:
                result = self.agent.add_upload(kept, safe_name)
            except IngestError as exc:
                kept.unlink(missing_ok=True)
                raise UploadRejected(f"{safe_name}: {exc.reason}.", kind="unreadable") from None
            doc = UploadedDocument(doc_id=result.doc_id, name=safe_name, path=kept, mime=mime, result=result)
            self.uploads[doc.doc_id] = doc
            logger.info(
                "session %s: %s read as %s (%d fields, %d transactions)",
                self.key[:8], safe_name, result.doc_type, len(result.fields), len(result.transactions),
            )
            return doc

    def correct_field(self, doc_id: str, name: str, value: str) -> UploadedDocument:
        """Record the customer's correction; the agent answers with the corrected value."""
        with self._turn():
            doc = self.uploads[doc_id]
            updated = self.agent.correct_field(doc_id, name, value)
            if isinstance(updated, ExtractionResult):
                doc.result = updated
            else:
                current = doc.result.fields.get(name)
                if current is not None and (current.value != value or current.source != "user"):
                    doc.result.fields[name] = current.model_copy(
                        update={"value": value, "source": "user", "confidence": 1.0}
                    )
            shown = mask(value) if doc.result.fields.get(name) and doc.result.fields[name].sensitive else value
            logger.info("session %s: %s corrected to %s", self.key[:8], name, shown)
            return doc

    def ask_stream(self, question: str) -> Iterator[str | Any]:
        """Token texts, then the agent's final `Answer` (kept for the Sources panel).

        The agent's generator runs to completion on one dedicated thread: it holds its session
        lock across yields, and web servers resume a generator from whichever worker thread is
        free, so it must not be stepped from several threads. A client that goes away mid-answer
        does not abandon the turn either: the answer still completes, is recorded and audited.
        """
        if not self.lock.acquire(timeout=self.busy_timeout_s):
            raise SessionBusy("still working on your previous message; please wait a moment")
        self.touch()
        events: queue.Queue = queue.Queue()

        def produce() -> None:
            try:
                final = None
                for event in self.agent.ask_stream(question):
                    answer = _final_answer(event)
                    if answer is not None:
                        final = answer
                    else:
                        events.put(("token", _token_text(event)))
                if final is None:
                    raise RuntimeError("the agent finished without an answer")
                self._record(question, final)
                events.put(("final", final))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                events.put(("error", exc))
            finally:
                self.lock.release()
                events.put(("done", None))

        threading.Thread(target=produce, name=f"answer-{self.key[:8]}", daemon=True).start()
        while True:
            kind, item = events.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            if kind == "token" and not item:
                continue
            yield item

    def _record(self, question: str, answer: Any) -> None:
        self.answers.append(
            AnswerRecord(
                question=question,
                text=answer.answer,
                citations=citation_dicts(answer),
                abstained=bool(answer.abstained),
            )
        )

    def handoff(self, message: str = "I'd like to talk to a person.") -> Any:
        """Hand the conversation to a person: the agent answers with how to reach one and audits it."""
        with self._turn():
            answer = self.agent.request_human(message)
            self._record(message, answer)
            return answer

    def reset(self) -> None:
        """New conversation: forget history and uploads (files deleted)."""
        with self._turn():
            if hasattr(self.agent, "reset"):
                self.agent.reset()
            elif self.new_agent is not None:
                self.agent = self.new_agent()
            self.uploads.clear()
            self.answers.clear()
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.upload_dir, ignore_errors=True)


class SessionRegistry:
    """Sessions by key (Gradio session hash), evicting the idle and the least recently used."""

    def __init__(self, factory: Callable[[str], TabSession], max_sessions: int = 500, idle_ttl_s: float = 4 * 3600):
        self._factory = factory
        self._sessions: OrderedDict[str, TabSession] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s

    def get(self, key: str) -> TabSession:
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                session.touch()
                return session
        created = self._factory(key)  # outside the lock: building a session may load models
        with self._lock:
            session = self._sessions.setdefault(key, created)
            self._sessions.move_to_end(key)
            evicted = self._evict_locked()
        if session is not created:
            created.close()
        for old in evicted:
            old.close()
        return session

    def peek(self, key: str) -> TabSession | None:
        with self._lock:
            return self._sessions.get(key)

    def drop(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def _evict_locked(self) -> list[TabSession]:
        now = time.monotonic()
        evicted = [k for k, s in self._sessions.items() if now - s.last_used > self.idle_ttl_s]
        while len(self._sessions) - len(evicted) > self.max_sessions:
            oldest = next(k for k in self._sessions if k not in evicted)
            evicted.append(oldest)
        return [self._sessions.pop(k) for k in evicted]

    def __len__(self) -> int:
        return len(self._sessions)

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.close()


class Backend:
    """Shared resources of one running app: settings, KB index, chat model, sessions."""

    def __init__(self, settings: Settings | None = None, *, index: Any = None, chat_model: Any = None) -> None:
        self.settings = settings or get_settings()
        self._index = index
        self._chat_model = chat_model
        self._resources: Any = None
        self._init_lock = threading.RLock()
        self._index_write_lock = threading.Lock()  # one bulk index / delete at a time
        self._upload_root = Path(tempfile.mkdtemp(prefix="docteller-uploads-"))
        self.sessions = SessionRegistry(self._new_tab_session)
        self.started = time.time()

    # --- shared resources (lazy, built once) ----------------------------------------------

    @property
    def index(self):
        if self._index is None:
            with self._init_lock:
                if self._index is None:
                    from agent.evidence import KBUnitTexts
                    from retrieval.store import KnowledgeIndex

                    index = KnowledgeIndex.open(self.settings.index_dir)
                    # Staff uploads embed their documents' evidence units as they are indexed.
                    index.unit_splitter = KBUnitTexts()
                    self._index = index
        return self._index

    @property
    def chat_model(self):
        if self._chat_model is None:
            with self._init_lock:
                if self._chat_model is None:
                    from agent.backends import get_chat_model

                    self._chat_model = get_chat_model(self.settings)
        return self._chat_model

    @property
    def resources(self):
        """The agent's shared resources (KB, embedder, chat model, calibration, audit log)."""
        if self._resources is None:
            index, model = self.index, self.chat_model  # outside the init lock: each takes it
            with self._init_lock:
                if self._resources is None:
                    from agent.session import AgentResources

                    self._resources = AgentResources(
                        index, model, embedder=getattr(index, "embedder", None), settings=self.settings
                    )
        return self._resources

    @property
    def model_id(self) -> str:
        return getattr(self._chat_model, "model_id", "not loaded") if self._chat_model else "not loaded"

    def warm_up(self) -> None:
        """Open the index, load the chat model and evaluate its fixed system prompt now rather
        than on the first question."""
        self.resources.warm_up()

    def ensure_kb_indexed(self) -> Any:
        from ingest.pipeline import ensure_kb_indexed

        with self._index_write_lock:
            return ensure_kb_indexed(self.settings, index=self.index)

    # --- sessions --------------------------------------------------------------------------

    def _new_tab_session(self, key: str) -> TabSession:
        resources = self.resources

        def new_agent() -> Any:
            return resources.new_session(session_id=key)

        return TabSession(
            key=key, agent=new_agent(), upload_dir=self._upload_root / key.replace("/", "_"), new_agent=new_agent
        )

    def session(self, key: str) -> TabSession:
        return self.sessions.get(key)

    def new_api_session(self) -> TabSession:
        """A throwaway session for one stateless API request (OpenAI-style clients resend history)."""
        import uuid

        return self._new_tab_session(f"api-{uuid.uuid4().hex}")

    # --- extraction without a chat session (HTTP API) ---------------------------------------

    def extract_file(self, path: str | Path, name: str) -> ExtractionResult:
        from ingest.extract import extract
        from ingest.sniff import IngestError

        check_upload(path, name, self.settings, CUSTOMER_UPLOAD_MIMES)
        try:
            return extract(path, name=name)
        except IngestError as exc:
            raise UploadRejected(f"{name}: {exc.reason}.", kind="unreadable") from None

    # --- staff: the knowledge base ----------------------------------------------------------

    def index_files(self, paths: list[Path], progress: Callable[[Any], None] | None = None) -> Any:
        from ingest.pipeline import index_paths

        index = self.index
        with self._index_write_lock:
            summary = index_paths(paths, settings=self.settings, strict=False, progress=progress, index=index)
            index.prepare_search()  # the first question after an upload must not pay for it
        return summary

    def documents(self) -> list[Any]:
        return list(self.index.documents())

    def delete_document(self, doc_id: str) -> bool:
        with self._index_write_lock:
            removed = bool(self.index.delete(doc_id))
            self.index.prepare_search()
        return removed

    def search(self, query: str, k: int = 10) -> list[Any]:
        return list(self.index.search(query, k=k))

    def stats(self) -> dict[str, Any]:
        return dict(self.index.stats())

    def close(self) -> None:
        self.sessions.close_all()
        shutil.rmtree(self._upload_root, ignore_errors=True)
        if self._index is not None:
            self._index.close()
