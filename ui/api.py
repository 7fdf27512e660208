"""HTTP API beside the web UI: health, OpenAI-compatible chat, extraction, staff indexing.

`POST /v1/chat/completions` answers with the same grounded agent as the chat tab. The reply
text ends with its sources, and the response (or the last stream chunk) carries an extra
`citations` list, so plain OpenAI clients see the sources and aware clients get them as data.
Pass `user` to keep a conversation (and its uploads' context) across requests; without it each
request is a fresh session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from ui.backend import (
    Backend,
    SessionBusy,
    SessionLimit,
    StaffActor,
    Status,
    TabSession,
    TurnCancelled,
    UploadRejected,
    citation_dicts,
)
from docteller.model import PUBLISHER_MAX_CHARS, Citation, clean_publisher, one_per_page
from ui.render import masked_extraction_json
from ui.security import check_filename, client_address, safe_suffix, token_equals
from ui.staff import run_indexing, summarise

logger = logging.getLogger(__name__)

_STATUS_FOR = {"too_large": 413, "unsupported": 415, "unreadable": 422}


class ContentPart(BaseModel):
    type: str = "text"
    text: str | None = None


class ChatMessageIn(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=200)
    stream: bool = False
    # Accepted for compatibility; the agent's own settings decide length and sampling.
    max_tokens: int | None = None
    temperature: float | None = None
    # A stable id keeps one conversation across requests; it is scoped to the API key that sent it.
    user: str | None = Field(default=None, max_length=256)


def _source_label(c: Citation) -> str:
    title = c.title or Path(c.source or "document").name
    if c.publisher:
        title = f"{c.publisher}: {title}"
    return f"{title}, p. {c.page}" if c.page else title


def sources_text(citations: list[dict[str, Any]]) -> str:
    """The answer's sources for plain clients, a document page once (two chunks of one page are
    one source), the same as the CLI lists them (`one_per_page`)."""
    if not citations:
        return ""
    labels = [_source_label(c) for c in one_per_page(Citation.model_validate(c) for c in citations)]
    return "\n\nSources:\n" + "\n".join(f"[{n}] {label}" for n, label in enumerate(labels, 1))


def _citations(answer: Any) -> list[dict[str, Any]]:
    return citation_dicts(answer)


def _answer_extras(answer: Any) -> dict[str, Any]:
    return {
        "citations": _citations(answer),
        "abstained": bool(getattr(answer, "abstained", False)),
        "handoff": bool(getattr(answer, "handoff", False)),
    }


def build_api_router(backend: Backend) -> APIRouter:
    """The HTTP API's routes (the security middleware has already checked each request's key)."""
    api = _Api(backend)
    router = APIRouter()
    router.add_api_route("/health", api.health, methods=["GET"])
    router.add_api_route("/v1/models", api.models, methods=["GET"])
    router.add_api_route("/v1/chat/completions", api.chat_completions, methods=["POST"], response_model=None)
    router.add_api_route("/v1/extract", api.extract, methods=["POST"])
    router.add_api_route("/v1/index", api.index, methods=["POST"], response_model=None)
    return router


class _Api:
    """The endpoints, over one `Backend`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.settings = backend.settings

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _api_key(http: Request) -> str:
        # The security middleware already refused requests without a valid key.
        return (http.headers.get("authorization") or "").partition(" ")[2]

    def _session_for(self, request: ChatCompletionRequest, api_key: str) -> TabSession:
        try:
            if request.user:
                return self.backend.api_session(api_key, request.user)
            return self.backend.new_api_session()
        except SessionLimit as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from None

    def _question(self, request: ChatCompletionRequest) -> str:
        users = [m for m in request.messages if m.role == "user" and m.text().strip()]
        if not users:
            raise HTTPException(400, "messages must contain a user message with text")
        question = users[-1].text().strip()
        if len(question) > self.settings.max_message_chars:
            raise HTTPException(
                413, f"the message is {len(question)} characters; the limit is {self.settings.max_message_chars}"
            )
        return question

    def _admit(self, api_key: str) -> Callable[[], None]:
        """Per-client rate and concurrent-answer limits; returns the release of the stream slot."""
        client = self.backend.api_key_group(api_key)
        if not self.backend.rate_limiter.allow(client):
            raise HTTPException(429, "too many requests; slow down", headers={"Retry-After": "10"})
        release = self.backend.stream_limiter.acquire(client)
        if release is None:
            raise HTTPException(429, "too many answers in progress for this key", headers={"Retry-After": "5"})
        return release

    async def _receive(self, upload: UploadFile, dest_dir: Path) -> tuple[Path, str]:
        """Copy an upload to disk under our own name (the client's is returned, checked, for
        display only), stopping at the size cap."""
        try:
            name = check_filename(upload.filename)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        cap = self.settings.max_upload_mb * 1024 * 1024
        slot = Path(tempfile.mkdtemp(dir=dest_dir))
        dest = slot / ("upload" + safe_suffix(name))
        size = 0
        with open(dest, "wb") as out:
            while block := await upload.read(1 << 20):
                size += len(block)
                if size > cap:
                    raise HTTPException(413, f"{name} is too large (over {self.settings.max_upload_mb} MB limit)")
                out.write(block)
        return dest, name

    # --- endpoints -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Liveness, index size and which chat model is loaded (never loads the chat model)."""
        backend = self.backend
        info: dict[str, Any] = {
            "status": "ok",
            "uptime_s": round(time.time() - backend.started, 1),
            "model": backend.model_id,
            "sessions": len(backend.sessions),
            "staff_api": bool(self.settings.staff_token),
        }
        try:
            stats = backend.stats()
            info["index"] = {k: stats[k] for k in ("documents", "chunks") if k in stats} or stats
        except Exception:  # the app is up even if the index is not readable yet
            logger.exception("health: index not readable")
            info["status"] = "degraded"
        return info

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": "docteller", "object": "model", "created": int(self.backend.started), "owned_by": "docteller"}],
        }

    async def chat_completions(self, request: ChatCompletionRequest, http: Request) -> JSONResponse | StreamingResponse:
        question = self._question(request)
        api_key = self._api_key(http)
        release = self._admit(api_key)
        try:
            session = await run_in_threadpool(self._session_for, request, api_key)
        except BaseException:
            release()
            raise
        reply = _Reply(request, session, question, cleanup=request.user is None, release=release)
        if request.stream:
            return StreamingResponse(reply.stream(http), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await reply.whole(http)

    async def extract(self, http: Request, file: UploadFile = File(...), unmasked: bool = False) -> dict[str, Any]:
        """Extract fields, checks and transactions from one ID, passport or statement.

        Document and account numbers are masked by value everywhere in the JSON; `unmasked=true`
        is only honoured with the staff token as the bearer, and is audited.
        """
        bearer = self._api_key(http)
        staff = token_equals(bearer, self.settings.staff_token)
        if unmasked and not staff:
            raise HTTPException(403, "unmasked values need the staff token")
        release = self._admit(bearer)
        workdir = Path(tempfile.mkdtemp(prefix="docteller-api-"))
        try:
            path, name = await self._receive(file, workdir)
            try:
                result = await run_in_threadpool(self.backend.extract_file, path, name)
            except UploadRejected as exc:
                raise HTTPException(_STATUS_FOR.get(exc.kind, 422), str(exc)) from None
            if unmasked:
                self.backend.audit_staff(
                    "staff.extract_unmasked", StaffActor.from_token(bearer, client_address(http.scope)),
                    file=name, doc_type=result.doc_type,
                )
                return result.as_json()
            return masked_extraction_json(result)
        finally:
            release()
            shutil.rmtree(workdir, ignore_errors=True)

    async def index(
        self, http: Request, files: list[UploadFile] = File(...), publisher: str | None = Form(None)
    ) -> JSONResponse:
        """Bulk-index policy documents (zips unpacked safely); per-file results.

        `publisher`: these are another institution's documents (answers cite them by its name);
        empty marks them the bank's own; left out, a new version keeps the publisher it had.
        200 when every file was indexed (or unchanged), 207 when some failed, 422 when all did.
        """
        if publisher is not None and len(publisher) > PUBLISHER_MAX_CHARS:
            raise HTTPException(422, f"publisher is longer than {PUBLISHER_MAX_CHARS} characters")
        published_by = None if publisher is None else (clean_publisher(publisher) or "")
        workdir = Path(tempfile.mkdtemp(prefix="docteller-api-index-"))
        actor = StaffActor.from_token(self._api_key(http), client_address(http.scope))
        try:
            pairs = [await self._receive(f, workdir) for f in files]
            names = {str(p): name for p, name in pairs}

            def work() -> list[list[Any]]:
                rows: list[list[Any]] = []
                for _, _, rows, _ in run_indexing(
                    self.backend, [p for p, _ in pairs], actor=actor, original_names=names, publisher=published_by
                ):
                    pass
                return rows

            rows = await run_in_threadpool(work)
            keys = ("file", "status", "reason", "pages", "chunks", "seconds")
            failed = sum(1 for r in rows if r[1] == "failed")
            status = 200 if not failed else (422 if failed == len(rows) else 207)
            body = {"results": [dict(zip(keys, r)) for r in rows], "summary": summarise(rows).replace("**", "")}
            return JSONResponse(body, status_code=status)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


class _Reply:
    """One chat-completions answer, whole or streamed, cancelled when the client goes away."""

    def __init__(
        self, request: ChatCompletionRequest, session: TabSession, question: str, cleanup: bool,
        release: Callable[[], None],
    ) -> None:
        self.request, self.session, self.question = request, session, question
        self.cleanup, self.release = cleanup, release
        self.cancel = threading.Event()
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model_name = request.model or "docteller"

    def _finish(self) -> None:
        self.cancel.set()  # a no-op when the answer completed
        if self.cleanup:
            self.session.close()
        self.release()

    async def _watch(self, http: Request) -> None:
        while not self.cancel.is_set():
            if await http.is_disconnected():
                self.cancel.set()
                return
            await asyncio.sleep(0.25)

    async def whole(self, http: Request) -> JSONResponse:
        def run() -> Any:
            answer = None
            for event in self.session.ask_stream(self.question, cancel=self.cancel):
                if not isinstance(event, (str, Status)):
                    answer = event
            return answer

        watcher = asyncio.create_task(self._watch(http))
        try:
            answer = await run_in_threadpool(run)
        except SessionBusy as exc:
            raise HTTPException(409, str(exc)) from None
        except TurnCancelled:
            raise HTTPException(499, "client closed the request") from None
        finally:
            watcher.cancel()
            self._finish()
        if answer is None:
            raise HTTPException(500, "the agent finished without an answer")
        content = (answer.answer or "").strip() + sources_text(_citations(answer))
        return JSONResponse(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                **_answer_extras(answer),
            }
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def stream(self, http: Request) -> AsyncIterator[str]:
        """SSE chunks. Starlette cancels this generator when the client disconnects; the
        `finally` then stops the agent's turn so the shared model is free for others."""
        events = self.session.ask_stream(self.question, cancel=self.cancel)
        done = object()
        watcher = asyncio.create_task(self._watch(http))
        yield self._chunk({"role": "assistant", "content": ""})
        streamed: list[str] = []
        try:
            while True:
                event = await run_in_threadpool(next, events, done)
                if event is done:
                    break
                if isinstance(event, Status):  # the web page's status line; not answer text
                    continue
                if isinstance(event, str):
                    streamed.append(event)
                    yield self._chunk({"content": event})
                    continue
                # Tokens are the model's draft; the final answer is the checked one (figures
                # verified, or a decline). If checking changed it, say so rather than leave
                # the client with an unchecked draft.
                tail = sources_text(_citations(event))
                final_text = (event.answer or "").strip()
                if " ".join("".join(streamed).split()) != " ".join(final_text.split()):
                    tail = f"\n\nChecked answer: {final_text}" + tail
                yield self._chunk({"content": tail}, "stop", answer=final_text, **_answer_extras(event))
        except SessionBusy as exc:
            yield self._chunk({"content": f"\n\n[{exc}]"}, "stop")
        except TurnCancelled:
            return
        except Exception:  # the stream has started: report in-band, never hang the client
            logger.exception("streamed answer failed")
            yield self._chunk({"content": "\n\n[error: the answer could not be completed; please try again]"}, "stop")
        finally:
            watcher.cancel()
            self._finish()
        yield "data: [DONE]\n\n"
