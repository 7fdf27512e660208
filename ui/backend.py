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

from docteller.cancel import Cancelled, cancellable
from docteller.cancel import check as check_cancelled
from docteller.model import ExtractionResult, UploadedDocument
from docteller.settings import Settings, get_settings
from ui.model_queue import ModelQueue, QueuedChatModel, one_turn, queue_status, reporting_waits
from ui.security import (
    FailureThrottle,
    FileOwnership,
    RateLimiter,
    SessionCookies,
    StreamLimiter,
    digest,
    preview_prefix,
    remove_cached_file,
)

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


@dataclass(frozen=True)
class StaffActor:
    """Who did a staff action, for the audit log: a pseudonym of the token used, and the client."""

    name: str
    client: str

    @classmethod
    def from_token(cls, token: str, client: str) -> "StaffActor":
        return cls(name="staff-" + digest("staff", token, length=12), client=client)

    @classmethod
    def local(cls) -> "StaffActor":
        return cls(name="local", client="in-process")


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


def kept_copy(doc: UploadedDocument) -> tuple[Path, str]:
    """Where this tab keeps its copy of an upload, and its type (`TabSession.add_upload` records
    both; an upload without them has no pages to show)."""
    if doc.path is None or doc.mime is None:
        raise LookupError(f"{doc.name}: no copy of this upload is kept")
    return doc.path, doc.mime


@dataclass(frozen=True)
class Status:
    """What a turn is doing before its first words ("2 customers ahead of you…"): shown in the
    answer's place until the answer starts, never part of it."""

    text: str


# (document kind, or None before it is known; pages done; pages in all) while an upload is read
UploadProgress = Callable[[str | None, int, int], None]

_KIND_NAMES = {"passport": "passport", "id": "ID card", "visa": "visa", "statement": "statement",
               "receipt": "receipt", "form": "form"}


def upload_status(kind: str | None, done: int, total: int) -> str:
    """The status line while an upload is read: "Reading your statement, page 2 of 3…" ("your
    document" while its kind is not known: it is found from what the pages say)."""
    return f"_Reading your {_KIND_NAMES.get(kind or '', 'document')}, page {done} of {total}…_"


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


class SessionLimit(Exception):
    """No room for another conversation without ending one that is still in use."""


class TurnCancelled(Exception):
    """The client went away, or the turn ran past its time budget."""


TIME_BUDGET_TEXT = (
    "I'm sorry, that took longer than it should. Please ask again in a moment, or use "
    "**Talk to a person** and a colleague will help you."
)


@dataclass
class TabSession:
    """One browser's (or API conversation's) state: agent session, uploads, answers.

    `key` is the registry key, derived from a server-issued secret; `public_id` is a random
    pseudonym that logs and the audit trail use, so neither reveals a handle to the session.
    """

    key: str
    agent: Any
    upload_dir: Path
    new_agent: Callable[[], Any] | None = None  # builds a fresh agent session for "new conversation"
    public_id: str = ""
    group: str = "web"  # eviction group: "web", or one per API key
    uploads: dict[str, UploadedDocument] = field(default_factory=dict)
    answers: list[AnswerRecord] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    # One turn at a time per tab; different tabs proceed in parallel. A plain Lock (not RLock):
    # a streamed answer is iterated from whichever worker thread Gradio or Starlette picks.
    lock: threading.Lock = field(default_factory=threading.Lock)
    busy_timeout_s: float = 180.0
    time_budget_s: float = 90.0
    on_close: Callable[["TabSession"], None] | None = None
    _turn_cancel: threading.Event | None = None
    preview_prefix: str = ""  # file-name prefix of this browser session's page previews
    expires_at: float | None = None  # set when its tab closed: ended then unless it is back
    _previews: int = 0

    def preview_file(self, image: Any) -> str | None:
        """Save a page preview where Gradio may serve it to this session only (its name carries
        the session's tag; the security middleware checks it on download)."""
        if image is None:
            return None
        self._previews += 1
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        path = self.upload_dir / f"{self.preview_prefix or 'p-'}{self._previews}.png"
        image.save(path, format="PNG")
        return str(path)

    def touch(self) -> None:
        self.last_used = time.monotonic()
        self.expires_at = None

    def expire_after(self, seconds: float) -> None:
        """The tab closed: end the session in `seconds` unless it comes back (a reload)."""
        self.cancel_turn()
        self.expires_at = time.monotonic() + seconds

    @property
    def active(self) -> bool:
        """A turn is running: such a session is never evicted."""
        return self.lock.locked()

    @contextmanager
    def _turn(self) -> Iterator[None]:
        if not self.lock.acquire(timeout=self.busy_timeout_s):
            raise SessionBusy("still working on your previous message; please wait a moment")
        try:
            self.touch()
            yield
        finally:
            self.touch()
            self.lock.release()

    @property
    def working_status(self) -> str:
        """The status line of an answer that has not started yet."""
        return "_Checking your documents and our policies…_" if self.uploads else "_Searching our policies…_"

    def add_upload(
        self, src: str | Path, name: str, settings: Settings, progress: UploadProgress | None = None
    ) -> UploadedDocument:
        """Check, keep and extract one upload; raises `UploadRejected` with a friendly reason.
        `progress` hears of each page read (see `UploadProgress`)."""
        from ingest.sniff import IngestError

        with self._turn():
            mime = check_upload(src, name, settings, CUSTOMER_UPLOAD_MIMES)
            self.upload_dir.mkdir(parents=True, exist_ok=True)
            # The stored name is ours (a counter and the type); the customer's name is only shown.
            kept = self.upload_dir / f"{len(self.uploads) + 1:03d}{_SUFFIX_FOR.get(mime, '')}"
            shutil.copyfile(src, kept)
            try:
                listening = {"progress": progress} if progress else {}  # agents without progress still work
                result = self.agent.add_upload(kept, name, **listening)
            except IngestError as exc:
                kept.unlink(missing_ok=True)
                raise UploadRejected(f"{name}: {exc.reason}.", kind="unreadable") from None
            doc = UploadedDocument(doc_id=result.doc_id, name=name, extraction=result, path=kept, mime=mime)
            self.uploads[doc.doc_id] = doc
            logger.info(
                "session %s: upload read as %s (%d fields, %d transactions)",
                self.public_id[:8], result.doc_type, len(result.fields), len(result.transactions),
            )
            return doc

    def correct_field(self, doc_id: str, name: str, value: str) -> UploadedDocument:
        """Record the customer's correction; the agent answers with the corrected value."""
        with self._turn():
            doc = self.uploads[doc_id]
            updated = self.agent.correct_field(doc_id, name, value)
            if isinstance(updated, ExtractionResult):
                doc.extraction = updated
            else:
                current = doc.extraction.fields.get(name)
                if current is not None and (current.value != value or current.source != "user"):
                    doc.extraction.fields[name] = current.model_copy(
                        update={"value": value, "source": "user", "confidence": 1.0}
                    )
            logger.info("session %s: field %s corrected", self.public_id[:8], name)
            return doc

    def cancel_turn(self) -> None:
        """Stop the turn in progress, if any (the browser tab closed or the client hung up)."""
        cancel = self._turn_cancel
        if cancel is not None:
            cancel.set()

    def ask_stream(self, question: str, cancel: threading.Event | None = None) -> Iterator[str | Status | Any]:
        """Token texts, then the agent's final `Answer` (kept for the Sources panel); before the
        first token, `Status` lines while the turn waits for the shared model (its place in line).

        The agent's generator runs on one dedicated thread: it holds its session lock across
        yields, and web servers resume a generator from whichever worker thread is free, so it
        must not be stepped from several threads. When the client goes away (this generator is
        closed) or the turn runs past `time_budget_s`, the agent's generator is closed at its
        next step, which stops the model's generation and frees the shared model for others.
        """
        if not self.lock.acquire(timeout=self.busy_timeout_s):
            raise SessionBusy("still working on your previous message; please wait a moment")
        self.touch()
        events: queue.Queue = queue.Queue()
        cancelled = self._turn_cancel = cancel or threading.Event()
        deadline = time.monotonic() + self.time_budget_s

        def waiting(ahead: int) -> None:
            events.put(("status", Status(queue_status(ahead) if ahead else self.working_status)))

        def produce() -> None:
            stream = self.agent.ask_stream(question)
            try:
                with cancellable(cancelled, deadline), reporting_waits(waiting), one_turn():
                    final = None
                    for event in stream:
                        check_cancelled()  # also checked per token inside the agent and the model
                        answer = _final_answer(event)
                        if answer is not None:
                            final = answer
                        else:
                            events.put(("token", _token_text(event)))
                if final is None:
                    raise RuntimeError("the agent finished without an answer")
                self._record(question, final)
                events.put(("final", final))
            except Cancelled as exc:
                if exc.over_budget:
                    final = self._over_budget(question)
                    self._record(question, final)
                    events.put(("final", final))
                else:
                    events.put(("error", TurnCancelled("the client went away")))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                events.put(("error", exc))
            finally:
                stream.close()  # stops a generation still in progress
                self.touch()
                self.lock.release()
                events.put(("done", None))

        threading.Thread(target=produce, name=f"answer-{self.public_id[:8]}", daemon=True).start()
        try:
            while True:
                kind, item = events.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                if kind == "token" and not item:
                    continue
                yield item
        finally:
            cancelled.set()  # a no-op when the turn finished; stops it when the client left

    def _over_budget(self, question: str) -> Any:
        from agent.pipeline.types import Answer

        logger.warning("session %s: answer stopped after its %.0f s budget", self.public_id[:8], self.time_budget_s)
        return Answer(question=question, answer=TIME_BUDGET_TEXT, abstained=True, reason="time budget exceeded",
                      session_id=self.public_id)

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
            for child in list(self.upload_dir.iterdir()) if self.upload_dir.exists() else []:
                _remove(child)
        if self.on_close is not None:
            self.on_close(self)  # the cached copies Gradio holds of this session's files

    def close(self) -> None:
        shutil.rmtree(self.upload_dir, ignore_errors=True)
        if self.on_close is not None:
            self.on_close(self)


_SUFFIX_FOR = {PDF: ".pdf", "image/png": ".png", "image/jpeg": ".jpg", "image/tiff": ".tif",
               "image/webp": ".webp", "image/bmp": ".bmp", "image/gif": ".gif"}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class SessionRegistry:
    """Live sessions by key, ending the idle and, when full, the least recently active.

    A session in the middle of a turn is never ended, and neither is one active within
    `protect_s`: when only such sessions remain, a new one is refused (`SessionLimit`) rather
    than a customer's conversation dropped. Each group (the web, each API key) may also be capped,
    so one API client's flood of conversations only ever evicts its own.
    """

    def __init__(
        self,
        factory: Callable[[str, str], TabSession],
        max_sessions: int = 500,
        idle_ttl_s: float = 3600.0,
        protect_s: float = 600.0,
        group_caps: dict[str, int] | None = None,
        default_group_cap: int | None = None,
    ):
        self._factory = factory
        self._sessions: OrderedDict[str, TabSession] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self.protect_s = protect_s
        self.group_caps = group_caps or {}
        self.default_group_cap = default_group_cap

    def get(self, key: str, group: str = "web") -> TabSession:
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                session.touch()
                return session
            evicted = self._make_room_locked(group)  # raises SessionLimit before any work
        for old in evicted:
            old.close()
        created = self._factory(key, group)  # outside the lock: building a session may load models
        with self._lock:
            session = self._sessions.setdefault(key, created)
            self._sessions.move_to_end(key)
        if session is not created:
            created.close()
        return session

    def peek(self, key: str) -> TabSession | None:
        with self._lock:
            return self._sessions.get(key)

    def drop(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def sweep(self) -> int:
        """End sessions idle past the TTL (never one in a turn); returns how many ended."""
        with self._lock:
            now = time.monotonic()
            expired = [
                k for k, s in self._sessions.items()
                if not s.active and (now - s.last_used > self.idle_ttl_s or (s.expires_at is not None and now > s.expires_at))
            ]
            ended = [self._sessions.pop(k) for k in expired]
        for session in ended:
            session.close()
        return len(ended)

    def _evictable(self, session: TabSession, now: float) -> bool:
        return not session.active and now - session.last_used > self.protect_s

    def _make_room_locked(self, group: str) -> list[TabSession]:
        now = time.monotonic()
        evicted = [k for k, s in self._sessions.items() if not s.active and now - s.last_used > self.idle_ttl_s]
        ended = [self._sessions.pop(k) for k in evicted]
        cap = self.group_caps.get(group, self.default_group_cap if group != "web" else None)
        if cap is not None:
            members = [k for k, s in self._sessions.items() if s.group == group]
            if len(members) >= cap:
                victim = next((k for k in members if self._evictable(self._sessions[k], now)), None)
                if victim is None:
                    self._restore(ended)
                    raise SessionLimit("too many open conversations for this client; finish one first")
                ended.append(self._sessions.pop(victim))
        if len(self._sessions) >= self.max_sessions:
            victim = next((k for k, s in self._sessions.items() if self._evictable(s, now)), None)
            if victim is None:
                self._restore(ended)
                raise SessionLimit("the assistant is helping as many customers as it can; please try again shortly")
            ended.append(self._sessions.pop(victim))
        return ended

    def _restore(self, sessions: list[TabSession]) -> None:
        # Only idle-expired sessions are in `sessions` here: ending them is right anyway, but the
        # refusal path must not leak them un-closed.
        for s in sessions:
            threading.Thread(target=s.close, daemon=True).start()

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
        self.model_queue = ModelQueue()  # customers wait for the shared chat model in turn
        self._upload_root = Path(tempfile.mkdtemp(prefix="docteller-uploads-"))
        s = self.settings
        self.sessions = SessionRegistry(
            self._new_tab_session,
            max_sessions=s.max_sessions,
            idle_ttl_s=s.session_idle_minutes * 60,
            protect_s=s.session_protect_minutes * 60,
            default_group_cap=s.max_api_conversations_per_key,
        )
        self.cookies = SessionCookies(s.session_secret, secure=s.cookie_secure)
        self.ownership = FileOwnership()
        self.rate_limiter = RateLimiter(s.rate_limit_per_minute)
        self.stream_limiter = StreamLimiter(s.max_streams_per_client)
        self.staff_throttle = FailureThrottle()
        self.gradio_cache_dirs: list[Path] = []  # set by the app once Gradio's cache is known
        from agent.audit import AuditLog

        self.audit = AuditLog.for_settings(s)
        self.started = time.time()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="session-sweeper", daemon=True)
        self._sweeper.start()

    def _sweep_loop(self) -> None:
        """End idle conversations (and delete their uploads) even when no new one arrives."""
        interval = max(2.0, min(15.0, self.settings.session_idle_minutes * 60 / 4))
        while not self._stop.wait(interval):
            try:
                self.sessions.sweep()
            except Exception:  # the sweeper must outlive any one bad session
                logger.exception("session sweep failed")

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
                    from agent.resources import AgentResources

                    self._resources = AgentResources(
                        index, QueuedChatModel.wrap(model, self.model_queue),
                        embedder=getattr(index, "embedder", None), settings=self.settings,
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
        from retrieval.indexing import ensure_kb_indexed

        with self._index_write_lock:
            return ensure_kb_indexed(self.settings, index=self.index)

    # --- sessions --------------------------------------------------------------------------

    def _new_tab_session(self, key: str, group: str = "web") -> TabSession:
        """A session with a random public id and its own private upload folder (mkdtemp)."""
        import uuid

        resources = self.resources
        public_id = uuid.uuid4().hex

        def new_agent() -> Any:
            return resources.new_session(session_id=public_id)

        self._upload_root.mkdir(parents=True, exist_ok=True)
        return TabSession(
            key=key,
            agent=new_agent(),
            upload_dir=Path(tempfile.mkdtemp(prefix="s-", dir=self._upload_root)),
            new_agent=new_agent,
            public_id=public_id,
            group=group,
            time_budget_s=self.settings.answer_time_budget_s,
            on_close=self._release_files,
        )

    def _release_files(self, session: TabSession) -> None:
        """Delete what Gradio's cache holds for a session: its uploads and its page previews."""
        if not session.key.startswith("web:"):
            return
        self.ownership.release_session(session.key.removeprefix("web:"))
        if session.preview_prefix:
            for cache in self.gradio_cache_dirs:
                for cached in cache.glob(f"*/{session.preview_prefix}*"):
                    remove_cached_file(cached)

    @staticmethod
    def web_key(sid: str) -> str:
        """The registry key of a browser session: a digest of the server-issued cookie id."""
        return "web:" + digest("web", sid)

    @staticmethod
    def api_key_group(api_key: str) -> str:
        return "api:" + digest("api-key", api_key, length=16)

    def web_session(self, sid: str) -> TabSession:
        session = self.sessions.get(self.web_key(sid), group="web")
        session.preview_prefix = preview_prefix(sid)
        return session

    def api_session(self, api_key: str, user: str) -> TabSession:
        """An API conversation, keyed by (API key, `user`): another key's `user` is another session."""
        group = self.api_key_group(api_key)
        return self.sessions.get(f"{group}:{digest('api-user', api_key, user)}", group=group)

    def new_api_session(self) -> TabSession:
        """A throwaway session for one stateless API request (OpenAI-style clients resend history)."""
        import uuid

        return self._new_tab_session(f"api-once:{uuid.uuid4().hex}", group="api-once")

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

    def index_files(
        self,
        paths: list[Path],
        progress: Callable[[Any], None] | None = None,
        sources: dict[Path, str] | None = None,
        actor: StaffActor | None = None,
        publisher: str | None = None,
    ) -> Any:
        """Index staff files into the KB. `publisher`: another institution's name for these
        documents, "" the bank's own, None keep what an earlier version recorded."""
        from retrieval.indexing import index_paths

        index = self.index
        with self._index_write_lock:
            summary = index_paths(
                paths, settings=self.settings, strict=False, progress=progress, index=index, sources=sources,
                publisher=publisher,
            )
            index.prepare_search()  # the first question after an upload must not pay for it
        self._keep_originals(summary)
        shown = sources or {}
        self.audit_staff(
            "staff.index",
            actor,
            publisher=publisher,
            files=[
                {"file": shown.get(Path(f.path), Path(f.path).name), "status": f.status, "doc_id": f.doc_id,
                 "reason": f.reason}
                for f in summary.files
            ],
        )
        return summary

    @property
    def originals_dir(self) -> Path:
        """Staff uploads as they were sent, by document id: page previews show the real page."""
        return self.settings.home / "originals"

    def _keep_originals(self, summary: Any) -> None:
        self.originals_dir.mkdir(parents=True, exist_ok=True)
        for f in summary.files:
            if f.status in ("indexed", "replaced") and f.doc_id and Path(f.path).is_file():
                shutil.copyfile(f.path, self.originals_dir / f"{f.doc_id}{Path(f.path).suffix.lower()}")
        current = {d.doc_id for d in self.index.documents()}
        for kept in self.originals_dir.iterdir():  # earlier versions of replaced documents
            if kept.stem not in current:
                kept.unlink(missing_ok=True)

    def original_file(self, doc_id: str) -> Path | None:
        if not doc_id or not all(c in "0123456789abcdef" for c in doc_id):
            return None
        return next(iter(sorted(self.originals_dir.glob(f"{doc_id}*"))), None) if self.originals_dir.is_dir() else None

    def documents(self) -> list[Any]:
        return list(self.index.documents())

    def delete_document(self, doc_id: str, actor: StaffActor | None = None) -> bool:
        from docteller.processes import index_write_lock

        with self._index_write_lock, index_write_lock(self.settings):
            removed = bool(self.index.delete(doc_id))
            self.index.prepare_search()
        original = self.original_file(doc_id)
        if removed and original is not None:
            original.unlink(missing_ok=True)
        self.audit_staff("staff.delete", actor, doc_id=doc_id, removed=removed)
        return removed

    def audit_staff(self, event: str, actor: StaffActor | None, **detail: Any) -> None:
        from agent.audit import StaffAuditEntry, now_iso

        actor = actor or StaffActor.local()
        self.audit.write_staff(StaffAuditEntry(time=now_iso(), event=event, actor=actor.name, client=actor.client, detail=detail))

    def search(self, query: str, k: int = 10) -> list[Any]:
        return list(self.index.search(query, k=k))

    def stats(self) -> dict[str, Any]:
        return dict(self.index.stats())

    def close(self) -> None:
        self._stop.set()
        self.sessions.close_all()
        shutil.rmtree(self._upload_root, ignore_errors=True)
        if self._index is not None:
            self._index.close()
