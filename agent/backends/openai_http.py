"""Any OpenAI-compatible server (`POST {base_url}/chat/completions`): llama.cpp's server, vLLM,
TGI, Ollama, or a hosted endpoint.

httpx with explicit timeouts. Connection failures and 5xx answers are retried with exponential
backoff before the first token arrives; once tokens have been yielded a failure is raised rather
than retried, so a caller never sees an answer's beginning twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from docteller.cancel import check as check_cancelled
from docteller.protocols import ChatMessage
from docteller.settings import Settings, get_settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class ChatServerError(RuntimeError):
    """The chat server is unreachable or answered with an error."""


class OpenAIHttpChatModel:
    """`ChatModel` that talks to an OpenAI-compatible `/v1/chat/completions` endpoint."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "default",
        api_key: str | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        use_stream: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai:{model}@{self.base_url}"
        self.model_hash = ""  # servers don't expose the weights' digest; the model id is recorded
        self.retries = retries
        self.backoff = backoff
        self.use_stream = use_stream
        self._serves_logprobs: bool | None = None  # learnt on the first choice_probabilities call
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "OpenAIHttpChatModel":
        settings = settings or get_settings()
        return cls(settings.openai_base_url, model=settings.openai_model, api_key=settings.openai_api_key)

    def close(self) -> None:
        self._client.close()

    def _request_body(
        self, messages: Sequence[ChatMessage], max_tokens: int, temperature: float, stream: bool
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }

    def _with_retries(self, attempt_fn) -> Iterator[str]:
        """Run `attempt_fn()` (a generator) and retry it while it has yielded nothing."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            yielded = False
            try:
                for piece in attempt_fn():
                    check_cancelled()
                    yielded = True
                    yield piece
                return
            except (httpx.ConnectError, httpx.ConnectTimeout, _RetryableStatus) as exc:
                if yielded or attempt == self.retries:
                    raise ChatServerError(
                        f"chat server at {self.base_url} is unreachable or failing "
                        f"after {attempt + 1} attempt(s): {exc}. Is it running? "
                        "(DOCTELLER_OPENAI_BASE_URL)"
                    ) from exc
                log.warning("chat server attempt %d failed (%s); retrying in %.1fs", attempt + 1, exc, delay)
                time.sleep(delay)
                delay *= 2
            except httpx.TimeoutException as exc:
                raise ChatServerError(f"chat server at {self.base_url} timed out: {exc}") from exc
            except httpx.HTTPError as exc:
                raise ChatServerError(f"chat server at {self.base_url} failed: {exc}") from exc

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0
    ) -> Iterator[str]:
        if self.use_stream:
            body = self._request_body(messages, max_tokens, temperature, stream=True)
            return self._with_retries(lambda: self._stream_once(body))
        body = self._request_body(messages, max_tokens, temperature, stream=False)
        return self._with_retries(lambda: self._complete_once(body))

    def complete(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0
    ) -> str:
        """One non-streaming request; the whole answer at once."""
        body = self._request_body(messages, max_tokens, temperature, stream=False)
        return "".join(self._with_retries(lambda: self._complete_once(body)))

    def choice_probabilities(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """The first reply token's `top_logprobs` (vLLM, llama.cpp server with logits_all, OpenAI);
        a server that doesn't return them is asked for a short greedy reply instead."""
        import math

        from agent.backends.choices import choice_from_text, normalised

        if self._serves_logprobs is not False:
            body = self._request_body(messages, 1, 0.0, stream=False) | {"logprobs": True, "top_logprobs": 20}
            # Retried like any request while the server is down or busy (503); only a server
            # that answers without logprobs, or refuses them (4xx), is judged by reply from then on.
            top = next(self._with_retries(lambda: self._top_logprobs_once(body)))
            if top:
                self._serves_logprobs = True
                by_text: dict[str, float] = {}
                for entry in top:
                    text = str(entry.get("token", "")).strip().lower()
                    by_text[text] = by_text.get(text, 0.0) + math.exp(float(entry.get("logprob", -math.inf)))
                ids = {c: {c.strip().lower()} for c in choices}
                return normalised(lambda text: by_text.get(text, 0.0), ids)
            self._serves_logprobs = False
        return choice_from_text(self.complete(messages, max_tokens=3, temperature=0.0), choices)

    def _top_logprobs_once(self, body: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """The first reply token's top_logprobs ([] when the server gives none or refuses them)."""
        response = self._client.post("/chat/completions", json=body)
        if response.status_code in RETRYABLE_STATUS:
            _raise_for_status(response)  # _RetryableStatus: retried by _with_retries
        if response.status_code >= 400:
            log.info("chat server refuses logprobs (HTTP %d); judging from a short reply", response.status_code)
            yield []
            return
        try:
            content = (response.json()["choices"][0].get("logprobs") or {}).get("content") or []
        except (KeyError, IndexError, ValueError):
            content = []
        yield (content[0].get("top_logprobs") or []) if content else []

    def _complete_once(self, body: dict[str, Any]) -> Iterator[str]:
        response = self._client.post("/chat/completions", json=body)
        _raise_for_status(response)
        data = response.json()
        content = data["choices"][0]["message"].get("content") or ""
        if content:
            yield content

    def _stream_once(self, body: dict[str, Any]) -> Iterator[str]:
        with self._client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
            _raise_for_status(response)
            for line in response.iter_lines():
                # Server-sent events: "data: {json}" lines, blank separators, "data: [DONE]" last.
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise ChatServerError(f"chat server sent malformed event: {data[:200]!r}") from exc
                if "error" in event:
                    raise ChatServerError(f"chat server error: {event['error']}")
                choices = event.get("choices") or []
                if choices:
                    piece = (choices[0].get("delta") or {}).get("content")
                    if piece:
                        yield piece


class _RetryableStatus(httpx.HTTPError):
    pass


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code in RETRYABLE_STATUS:
        raise _RetryableStatus(f"HTTP {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400:
        raise ChatServerError(
            f"chat server answered HTTP {response.status_code}: {response.text[:300]}"
        )
