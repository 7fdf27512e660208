"""What stands between the public network and docteller's customers' data.

- `SessionCookies`: the server issues every browser a random session id in a signed, HttpOnly
  cookie. Handlers key a customer's session on that id only: Gradio's `session_hash` and any other
  client-chosen string are never keys or paths.
- `RateLimiter` / `StreamLimiter` / `FailureThrottle`: per-client request rate, concurrent
  answers, and failed staff-token attempts.
- `SecurityMiddleware` (pure ASGI, so it runs before any body is read): security headers, CORS
  only for configured origins, request-size caps from Content-Length (and counted while
  streaming), API-key and staff-token checks before the body, and Gradio file downloads limited
  to the session that owns the file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger(__name__)

COOKIE_NAME = "docteller_sid"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    # Gradio's page boots from an inline script and styles its components inline, hence
    # 'unsafe-inline'; everything else is same-origin only, and no site may frame the app.
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
        b"style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
        b"media-src 'self' blob: data:; connect-src 'self'; worker-src 'self' blob:; "
        b"object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    ),
)


def digest(*parts: str, length: int = 32) -> str:
    """A stable pseudonym for a secret (session id, API key): safe to log, useless to present."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


class SessionCookies:
    """Random session ids, signed so that a forged or altered cookie is refused."""

    def __init__(self, secret: str | None, secure: bool = False, max_age_s: int = 12 * 3600) -> None:
        # No configured secret: a per-process one (sessions then end with the process, which is
        # also when their in-memory state ends). Several app processes need a shared secret.
        self._key = (secret or secrets.token_urlsafe(32)).encode()
        self.secure = secure
        self.max_age_s = max_age_s

    def _sign(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self) -> tuple[str, str]:
        """A new session id and the cookie value that carries it."""
        sid = secrets.token_urlsafe(24)
        return sid, f"{sid}.{self._sign(sid)}"

    def verify(self, value: str | None) -> str | None:
        """The session id in a cookie value, or None when it is missing, malformed or forged."""
        if not value or len(value) > 128 or "." not in value:
            return None
        sid, _, signature = value.rpartition(".")
        if not sid or not hmac.compare_digest(signature.encode(), self._sign(sid).encode()):
            return None
        return sid

    def from_cookie_header(self, header: str | None) -> str | None:
        if not header:
            return None
        try:
            jar = SimpleCookie()
            jar.load(header)
        except Exception:  # a malformed Cookie header is treated as no cookie
            return None
        morsel = jar.get(COOKIE_NAME)
        return self.verify(morsel.value if morsel else None)

    def set_cookie_header(self, value: str) -> bytes:
        parts = [f"{COOKIE_NAME}={value}", "Path=/", "HttpOnly", "SameSite=Lax", f"Max-Age={self.max_age_s}"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts).encode()


class RateLimiter:
    """At most `per_minute` events per client in any sliding minute (bounded memory)."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            events = self._events.pop(client, None) or deque()
            while events and now - events[0] > 60.0:
                events.popleft()
            allowed = len(events) < self.per_minute
            if allowed:
                events.append(now)
            self._events[client] = events
            while len(self._events) > self.max_clients:
                self._events.popitem(last=False)
            return allowed


class StreamLimiter:
    """At most `limit` answers in flight per client; `acquire` returns a release callback or None."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> Callable[[], None] | None:
        with self._lock:
            if self.limit > 0 and self._active.get(client, 0) >= self.limit:
                return None
            self._active[client] = self._active.get(client, 0) + 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                left = self._active.get(client, 1) - 1
                if left > 0:
                    self._active[client] = left
                else:
                    self._active.pop(client, None)

        return release


class FailureThrottle:
    """Failed staff-token attempts per client: after `free` failures, each further try must wait
    twice as long as the last (1 s, 2 s, 4 s … up to `max_wait_s`). A success clears the count."""

    def __init__(self, free: int = 5, max_wait_s: float = 300.0, max_clients: int = 10_000) -> None:
        self.free = free
        self.max_wait_s = max_wait_s
        self.max_clients = max_clients
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds this client must still wait before its next attempt is even checked."""
        with self._lock:
            failures, until = self._state.get(client, (0, 0.0))
        return max(0.0, until - time.monotonic())

    def failed(self, client: str) -> None:
        with self._lock:
            failures, _ = self._state.pop(client, (0, 0.0))
            failures += 1
            wait = 0.0 if failures <= self.free else min(self.max_wait_s, 2.0 ** (failures - self.free - 1))
            self._state[client] = (failures, time.monotonic() + wait)
            while len(self._state) > self.max_clients:
                self._state.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._state.pop(client, None)


def token_equals(supplied: str | None, expected: str | None) -> bool:
    """Exact, constant-time comparison (no stripping: ' token' is not 'token')."""
    if not expected or supplied is None:
        return False
    return hmac.compare_digest(supplied.encode(), expected.encode())


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token
    return None


@dataclass
class FileOwnership:
    """Which session may download which file from Gradio's cache (uploads and rendered pages).

    Gradio serves any cached file to anyone who has its URL; a customer's uploaded ID must only
    ever be served back to the session that uploaded it, and only while that session lives.
    """

    # Gradio stores identical bytes once (its cache folder is a content hash), so two customers
    # who upload the same file share one cached path: it has a set of owners, and is deleted
    # when the last of them lets go.
    _owners: dict[str, set[str]] = field(default_factory=dict)  # resolved path -> session digests
    _by_session: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, session_digest: str, path: str | Path) -> None:
        key = str(Path(path).resolve())
        with self._lock:
            self._owners.setdefault(key, set()).add(session_digest)
            self._by_session.setdefault(session_digest, set()).add(key)

    def owns(self, session_digest: str | None, path: str | Path) -> bool:
        if session_digest is None:
            return False
        with self._lock:
            return session_digest in self._owners.get(str(Path(path).resolve()), ())

    def release_session(self, session_digest: str) -> list[str]:
        """Forget a session's files; delete those no other session holds (and empty cache folders)."""
        with self._lock:
            paths = self._by_session.pop(session_digest, set())
            orphaned = [p for p in paths if self._let_go_locked(session_digest, p)]
        for p in orphaned:
            remove_cached_file(Path(p))
        return sorted(paths)

    def release_file(self, session_digest: str, path: str | Path) -> None:
        """This session is done with a file: deleted unless another session still holds it."""
        key = str(Path(path).resolve())
        with self._lock:
            self._by_session.get(session_digest, set()).discard(key)
            orphaned = self._let_go_locked(session_digest, key)
        if orphaned:
            remove_cached_file(Path(key))

    def _let_go_locked(self, session_digest: str, key: str) -> bool:
        """Drop one owner of `key`; True when nobody holds it any more."""
        owners = self._owners.get(key)
        if owners is None:
            return False
        owners.discard(session_digest)
        if owners:
            return False
        del self._owners[key]
        return True


def remove_cached_file(path: Path) -> None:
    """Delete one file from Gradio's cache and its hash folder when that is left empty."""
    try:
        path.unlink(missing_ok=True)
        parent = path.parent
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    except OSError as exc:
        logger.warning("could not remove cached file: %s", exc)


ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


@dataclass
class SecurityPolicy:
    """What the middleware enforces; built from `Settings` by the app."""

    cookies: SessionCookies
    ownership: FileOwnership
    max_body_bytes: int  # uploads: the configured cap plus multipart overhead
    max_json_bytes: int  # /v1/chat/completions and other JSON bodies
    api_keys: tuple[str, ...]
    staff_token: str | None
    staff_throttle: FailureThrottle
    cors_origins: tuple[str, ...] = ()
    gradio_cache_dirs: tuple[Path, ...] = ()


class SecurityMiddleware:
    """Pure ASGI middleware: nothing here reads a request body before deciding to refuse it."""

    API_KEY_PATHS = ("/v1/chat/completions", "/v1/extract", "/v1/models")
    STAFF_PATHS = ("/v1/index",)

    def __init__(self, app: ASGIApp, policy: SecurityPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        cookie = next((v.decode("latin-1") for k, v in headers if k == b"cookie"), None)
        sid = self.policy.cookies.from_cookie_header(cookie)
        new_cookie: str | None = None
        if sid is None:
            sid, new_cookie = self.policy.cookies.issue()
            # Later code in this request (Gradio handlers) sees the new id as if it had come in.
            scope = dict(scope)
            scope["headers"] = [*(h for h in headers if h[0] != b"cookie"), (b"cookie", f"{COOKIE_NAME}={new_cookie}".encode())]
        origin = next((v.decode("latin-1") for k, v in headers if k == b"origin"), None)
        allowed_origin = origin if origin and origin in self.policy.cors_origins else None

        async def send_secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (k, v) for k, v in message.get("headers", [])
                    if not k.lower().startswith(b"access-control-") and k.lower() != b"server"
                ]
                kept.extend(SECURITY_HEADERS)
                if allowed_origin:
                    kept.append((b"access-control-allow-origin", allowed_origin.encode()))
                    kept.append((b"access-control-allow-credentials", b"true"))
                    kept.append((b"vary", b"Origin"))
                if new_cookie is not None:
                    kept.append((b"set-cookie", self.policy.cookies.set_cookie_header(new_cookie)))
                message = {**message, "headers": kept}
            await send(message)

        refusal = self._refusal(scope, path, method, headers, sid)
        if refusal is not None:
            status, detail, extra = refusal
            await _send_json(send_secured, status, {"detail": detail}, extra)
            return
        limit = self._body_limit(path)
        if method in ("POST", "PUT", "PATCH") and limit is not None:
            receive = _capped_receive(receive, limit)
        if method == "POST" and path.endswith("/gradio_api/upload"):
            send_secured = self._claiming_uploads(send_secured, digest("web", sid))
        try:
            await self.app(scope, receive, send_secured)
        except _BodyTooLarge:
            await _send_json(send_secured, 413, {"detail": f"request body over {limit // 1048576} MB"}, ())

    def _claiming_uploads(self, send: Callable, owner: str) -> Callable:
        """Record the files of a Gradio upload response as this session's (the body is a JSON
        list of the stored paths)."""
        body = bytearray()

        async def send_claiming(message: dict) -> None:
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        paths = json.loads(bytes(body))
                    except ValueError:
                        paths = []
                    for p in paths if isinstance(paths, list) else []:
                        if isinstance(p, str):
                            self.policy.ownership.claim(owner, p)
            await send(message)

        return send_claiming

    def _body_limit(self, path: str) -> int | None:
        if path.startswith("/v1/extract"):
            return self.policy.max_body_bytes
        if path.startswith("/v1/index") or path.endswith("/upload"):
            return self.policy.max_body_bytes * 8  # several files in one request
        if path.startswith("/v1/") or path.startswith("/gradio_api/"):
            return self.policy.max_json_bytes
        return None

    def _refusal(self, scope: dict, path: str, method: str, headers: list, sid: str) -> tuple[int, str, tuple] | None:
        limit = self._body_limit(path)
        length = next((v for k, v in headers if k == b"content-length"), None)
        if limit is not None and length is not None:
            try:
                if int(length) > limit:
                    return 413, f"request body over the {limit // 1048576} MB limit", ()
            except ValueError:
                return 400, "bad Content-Length", ()
        if method == "OPTIONS":
            return None
        if path.startswith(self.STAFF_PATHS):
            return self._staff_refusal(scope, headers)
        if path.startswith(self.API_KEY_PATHS):
            token = bearer_token(headers)
            if path.startswith("/v1/extract") and token_equals(token, self.policy.staff_token):
                return None  # staff may extract too (and only staff may ask for unmasked values)
            if not self.policy.api_keys:
                return 403, "the HTTP API is disabled: no API keys are configured (DOCTELLER_API_KEYS)", ()
            if not any(token_equals(token, key) for key in self.policy.api_keys):
                return 401, "a valid API key is required (Authorization: Bearer <key>)", ((b"www-authenticate", b"Bearer"),)
            return None
        if "/file=" in path or "/file/" in path:
            return self._file_refusal(path, sid)
        return None

    def _staff_refusal(self, scope: dict, headers: list) -> tuple[int, str, tuple] | None:
        if not self.policy.staff_token:
            return 403, "staff API disabled: no staff token is configured (DOCTELLER_STAFF_TOKEN)", ()
        client = client_address(scope)
        wait = self.policy.staff_throttle.retry_after(client)
        if wait > 0:
            return 429, "too many failed staff-token attempts; try again later", ((b"retry-after", str(int(wait) + 1).encode()),)
        if not token_equals(bearer_token(headers), self.policy.staff_token):
            self.policy.staff_throttle.failed(client)
            logger.warning("refused a staff API request from %s: missing or wrong staff token", client)
            return 401, "staff token required", ((b"www-authenticate", b"Bearer"),)
        self.policy.staff_throttle.succeeded(client)
        return None

    def _file_refusal(self, path: str, sid: str) -> tuple[int, str, tuple] | None:
        """Files in Gradio's cache are served only to the session that owns them: its uploads
        (claimed when uploaded) and the page previews rendered for it (named with its tag)."""
        marker = "/file=" if "/file=" in path else "/file/"
        requested = Path(unquote(path.split(marker, 1)[1]))
        try:
            resolved = requested.resolve()
        except (OSError, RuntimeError):
            return 404, "not found", ()
        in_cache = any(resolved.is_relative_to(d) for d in self.policy.gradio_cache_dirs)
        if not in_cache:
            return None
        if self.policy.ownership.owns(digest("web", sid), resolved) or resolved.name.startswith(preview_prefix(sid)):
            return None
        return 404, "not found", ()


class _BodyTooLarge(Exception):
    pass


def _capped_receive(receive: Callable, limit: int) -> Callable:
    """A `receive` that stops a body (chunked, or with a lying Content-Length) at `limit` bytes."""
    seen = 0

    async def capped() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message

    return capped


async def _send_json(send: Callable, status: int, body: dict, extra_headers: Iterable[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def client_address(scope: dict) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def session_id_from_headers(cookies: SessionCookies, headers: Any) -> str | None:
    """The verified session id from a request's headers (a Starlette `Headers` or a dict)."""
    if headers is None:
        return None
    header = headers.get("cookie") if hasattr(headers, "get") else None
    return cookies.from_cookie_header(header)


def preview_prefix(sid: str) -> str:
    """File-name prefix of the page previews rendered for one session (see `_file_refusal`)."""
    return f"p-{digest('file', sid, length=20)}-"


def check_filename(name: str | None) -> str:
    """A client's filename, made safe to show, or ValueError with the reason (→ HTTP 400)."""
    raw = (name or "").replace("\\", "/")
    base = raw.rsplit("/", 1)[-1].strip()
    if not base or base in (".", ".."):
        raise ValueError(f"bad filename {name!r}: a file name is required")
    if len(base.encode()) > 255:
        raise ValueError(f"bad filename: {len(base.encode())} bytes (the limit is 255)")
    if any(ord(c) < 32 for c in base):
        raise ValueError("bad filename: control characters")
    return base


def safe_suffix(name: str) -> str:
    """A file name's extension if it is plain ('.md'), else ''; our stored files are named by us,
    keeping only this (text formats are told apart by it)."""
    suffix = Path(name).suffix
    return suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
