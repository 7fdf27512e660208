"""llama.cpp on the CPU: the default chat model (packaged Qwen2.5-Coder-1.5B Q4_K_M GGUF).

`create_chat_completion(stream=True)` is used rather than raw completion so the chat template
stored in the GGUF's metadata formats the conversation exactly as the model was trained.
A llama.cpp context is not re-entrant, so one lock serialises generations: many chat sessions
(browser tabs) share one loaded model and queue for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.backends.choices import choice_token_ids, normalised
from docteller.cancel import check as check_cancelled
from docteller.protocols import ChatMessage
from docteller.settings import Settings, get_settings

log = logging.getLogger(__name__)


class LlamaCppChatModel:
    """`ChatModel` over a local GGUF file with llama-cpp-python."""

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str,
        model_hash: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        from llama_cpp import Llama

        self.model_path = Path(model_path)
        self.model_id = model_id
        self.model_hash = model_hash
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        self.llm = Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            seed=seed,
            verbose=False,
        )
        # Every answer prompt starts with the same system policy, and llama.cpp reuses the KV
        # cache for the prefix the previous prompt shares, so only the evidence and the question
        # are evaluated. A follow-up's query rewrite in between evicts that prefix, so the state
        # after each long system prompt's first use is kept (≈ 8 MB) and restored when needed:
        # restoring takes ≈ 0.8 s against ≈ 2.9 s to evaluate the judge's policy again. (Saving
        # state after every completion, as llama-cpp-python's LlamaRAMCache does, costs ≈ 0.5 s
        # per answer.)
        self._system_states: dict[tuple[int, ...], Any] = {}
        self._choice_ids: dict[tuple[str, ...], dict[str, set[int]]] = {}
        self._formatter: Any = None
        log.info("loaded %s (%s) with %s threads", model_id, self.model_path.name, n_threads)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "LlamaCppChatModel":
        from agent.model_files import resolve_gguf

        settings = settings or get_settings()
        path, model_id, sha = resolve_gguf(settings)
        return cls(
            path,
            model_id=model_id,
            model_hash=sha,
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(
        self, messages: Sequence[ChatMessage], *, max_tokens: int = 320, temperature: float = 0.0
    ) -> Iterator[str]:
        payload = [{"role": m.role, "content": m.content} for m in messages]
        with self._lock:
            system = self._restore_system_prefix(payload)
            chunks = self.llm.create_chat_completion(
                messages=payload,
                stream=True,
                max_tokens=max_tokens,
                temperature=temperature,
                # Greedy decoding at temperature 0 gives reproducible answers for audits.
                top_k=1 if temperature <= 0 else 40,
                repeat_penalty=1.05,
            )
            for chunk in chunks:
                check_cancelled()  # a client that left, or a turn past its budget, frees the model now
                piece = chunk["choices"][0].get("delta", {}).get("content")
                if piece:
                    yield piece
            self._keep_system_state(system)

    def choice_probabilities(self, messages: Sequence[ChatMessage], choices: Sequence[str]) -> dict[str, float]:
        """One forward pass over the chat-formatted prompt; the first reply token's distribution.

        The prompt is formatted with the GGUF's own chat template, as `create_chat_completion`
        does, and shares its KV-cache prefix reuse (the fixed system prompt is not re-evaluated)."""
        key = tuple(choices)
        if key not in self._choice_ids:
            self._choice_ids[key] = choice_token_ids(
                lambda text: self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), choices
            )
        payload = [{"role": m.role, "content": m.content} for m in messages]
        tokens = self._tokens(payload)
        with self._lock:
            system = self._restore_system_prefix(payload, tokens)
            llm = self.llm
            # Reuse the cached prefix, but evaluate at least the last token (its logits are read).
            shared = min(_shared_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens), len(tokens) - 1)
            llm.n_tokens = shared  # `eval` drops the KV cache after this point
            llm.eval(tokens[shared:])
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
            self._keep_system_state(system)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        return normalised(lambda token: float(probabilities[token]), self._choice_ids[key])

    # Only system prompts this long are worth a saved state (restoring costs ≈ 0.8 s); the few
    # fixed ones (judge, generative answer) fit in a handful of states.
    MIN_SAVED_PREFIX_TOKENS = 128
    MAX_SAVED_STATES = 4

    def _tokens(self, payload: list[dict[str, str]]) -> list[int]:
        return self.llm.tokenize(self._format(payload).encode("utf-8"), add_bos=False, special=True)

    def _restore_system_prefix(self, payload: list[dict[str, str]], tokens: list[int] | None = None) -> tuple[int, ...] | None:
        """Load the saved state for this prompt's system part when the KV cache has lost it.

        Returns the system part's tokens when they are worth keeping (see `_keep_system_state`):
        what the prompt shares with the system message followed by an empty user message."""
        if len(payload) < 2 or payload[0]["role"] != "system":
            return None
        tokens = tokens if tokens is not None else self._tokens(payload)
        blank = self._tokens([payload[0], {"role": "user", "content": ""}])
        length = _shared_prefix(tokens, blank)
        if length < self.MIN_SAVED_PREFIX_TOKENS:
            return None
        system = tuple(tokens[:length])
        cached = _shared_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), system)
        state = self._system_states.get(system)
        if state is not None and cached < length:
            self.llm.load_state(state)
            log.debug("restored the KV cache of a %d-token system prompt", length)
        return system

    def _keep_system_state(self, system: tuple[int, ...] | None) -> None:
        """After a prompt's first evaluation, save the state holding its system part (once)."""
        if system is not None and system not in self._system_states and len(self._system_states) < self.MAX_SAVED_STATES:
            self._system_states[system] = self.llm.save_state()

    def _format(self, payload: list[dict[str, str]]) -> str:
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise RuntimeError(f"{self.model_path.name} has no chat template in its metadata")
            token_text = lambda token: self.llm.detokenize([token]).decode("utf-8", "ignore") if token >= 0 else ""
            self._formatter = Jinja2ChatFormatter(
                template=template, eos_token=token_text(self.llm.token_eos()), bos_token=token_text(self.llm.token_bos())
            )
        return self._formatter(messages=payload).prompt


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
