"""HTTP API beside the web UI: health, OpenAI-compatible chat, extraction, staff indexing.

`POST /v1/chat/completions` answers with the same grounded agent as the chat tab. The reply
text ends with its sources, and the response (or the last stream chunk) carries an extra
`citations` list, so plain OpenAI clients see the sources and aware clients get them as data.
Pass `user` to keep a conversation (and its uploads' context) across requests; without it each
request is a fresh session.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from ui.backend import Backend, SessionBusy, TabSession, UploadRejected, citation_dicts
from ui.staff import run_indexing, summarise, token_matches

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
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    # Accepted for compatibility; the agent's own settings decide length and sampling.
    max_tokens: int | None = None
    temperature: float | None = None
    user: str | None = None  # a stable id keeps one server-side conversation across requests


def sources_text(citations: list[dict[str, Any]]) -> str:
    if not citations:
        return ""
    labels: list[str] = []
    for c in citations:
        title = c.get("title") or Path(str(c.get("source") or "document")).name
        page = c.get("page")
        label = f"{title}, p. {page}" if page else title
        if label not in labels:  # two chunks of one page: one source
            labels.append(label)
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
    router = APIRouter()
    bearer = HTTPBearer(auto_error=False)

    def _session_for(request: ChatCompletionRequest) -> TabSession:
        if request.user:
            return backend.session(f"api-user-{request.user}")
        return backend.new_api_session()

    def _question(request: ChatCompletionRequest) -> str:
        users = [m for m in request.messages if m.role == "user" and m.text().strip()]
        if not users:
            raise HTTPException(400, "messages must contain a user message with text")
        return users[-1].text().strip()

    @router.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, index size and which chat model is loaded (never loads the chat model)."""
        info: dict[str, Any] = {
            "status": "ok",
            "uptime_s": round(time.time() - backend.started, 1),
            "model": backend.model_id,
            "sessions": len(backend.sessions),
            "staff_api": bool(backend.settings.staff_token),
        }
        try:
            stats = backend.stats()
            info["index"] = {k: stats[k] for k in ("documents", "chunks") if k in stats} or stats
        except Exception as exc:  # the app is up even if the index is not readable yet
            info["status"] = "degraded"
            info["index_error"] = str(exc)
        return info

    @router.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": "docteller", "object": "model", "created": int(backend.started), "owned_by": "docteller"}],
        }

    @router.post("/v1/chat/completions", response_model=None)
    def chat_completions(request: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        question = _question(request)
        session = _session_for(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        model_name = request.model or "docteller"
        cleanup = request.user is None

        if not request.stream:
            try:
                answer = None
                for event in session.ask_stream(question):
                    if not isinstance(event, str):
                        answer = event
            except SessionBusy as exc:
                raise HTTPException(409, str(exc)) from None
            finally:
                if cleanup:
                    session.close()
            if answer is None:
                raise HTTPException(500, "the agent finished without an answer")
            content = (answer.answer or "").strip() + sources_text(_citations(answer))
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model_name,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                    **_answer_extras(answer),
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        def events() -> Iterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            streamed: list[str] = []
            try:
                for event in session.ask_stream(question):
                    if isinstance(event, str):
                        streamed.append(event)
                        yield chunk({"content": event})
                        continue
                    # Tokens are the model's draft; the final answer is the checked one (figures
                    # verified, or a decline). If checking changed it, say so rather than leave
                    # the client with an unchecked draft.
                    tail = sources_text(_citations(event))
                    final_text = (event.answer or "").strip()
                    if " ".join("".join(streamed).split()) != " ".join(final_text.split()):
                        tail = f"\n\nChecked answer: {final_text}" + tail
                    yield chunk({"content": tail}, "stop", answer=final_text, **_answer_extras(event))
            except Exception as exc:  # the stream has started: report in-band, never hang the client
                logger.exception("streamed answer failed")
                yield chunk({"content": f"\n\n[error: {exc}]"}, "stop")
            finally:
                if cleanup:
                    session.close()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _receive(upload: UploadFile, dest_dir: Path) -> Path:
        """Copy an upload to disk, stopping at the size cap instead of filling the disk."""
        cap = backend.settings.max_upload_mb * 1024 * 1024
        name = Path(upload.filename or "upload").name or "upload"
        dest = dest_dir / name
        size = 0
        with open(dest, "wb") as out:
            while block := await upload.read(1 << 20):
                size += len(block)
                if size > cap:
                    raise HTTPException(
                        413, f"{name} is too large (over {backend.settings.max_upload_mb} MB limit)"
                    )
                out.write(block)
        return dest

    @router.post("/v1/extract")
    async def extract(file: UploadFile = File(...)) -> dict[str, Any]:
        """Extract fields, checks and transactions from one ID, passport or statement."""
        workdir = Path(tempfile.mkdtemp(prefix="docteller-api-"))
        try:
            path = await _receive(file, workdir)
            try:
                result = await run_in_threadpool(backend.extract_file, path, path.name)
            except UploadRejected as exc:
                raise HTTPException(_STATUS_FOR.get(exc.kind, 422), str(exc)) from None
            return result.as_json()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def require_staff(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not backend.settings.staff_token:
            raise HTTPException(403, "staff API disabled: no staff token is configured (DOCTELLER_STAFF_TOKEN)")
        if credentials is None or not token_matches(backend.settings, credentials.credentials):
            logger.warning("refused /v1/index request with a missing or wrong staff token")
            raise HTTPException(401, "staff token required", headers={"WWW-Authenticate": "Bearer"})

    @router.post("/v1/index", dependencies=[Depends(require_staff)])
    async def index(files: list[UploadFile] = File(...)) -> dict[str, Any]:
        """Bulk-index policy documents (zips unpacked safely); per-file results."""
        workdir = Path(tempfile.mkdtemp(prefix="docteller-api-index-"))
        try:
            paths = [await _receive(f, workdir) for f in files]

            def work() -> list[list[Any]]:
                rows: list[list[Any]] = []
                for _, _, rows, _ in run_indexing(backend, paths):
                    pass
                return rows

            rows = await run_in_threadpool(work)
            keys = ("file", "status", "reason", "pages", "chunks", "seconds")
            return {"results": [dict(zip(keys, r)) for r in rows], "summary": summarise(rows).replace("**", "")}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return router
