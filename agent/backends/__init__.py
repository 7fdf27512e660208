"""Chat model backends behind one `docteller.protocols.ChatModel` protocol.

| `settings.llm_backend` | class                        | runs on                                   |
|------------------------|------------------------------|-------------------------------------------|
| `llamacpp` (default)   | `LlamaCppChatModel`          | CPU, packaged 1.5B GGUF or `gguf_path`    |
| `transformers`         | `TransformersVlmChatModel`   | GPU 4-bit NF4 (CPU unquantized), `vlm_path` |
| `openai`               | `OpenAIHttpChatModel`        | any OpenAI-compatible server              |
"""

from __future__ import annotations

from docteller.protocols import ChatModel
from docteller.settings import Settings, get_settings


def get_chat_model(settings: Settings | None = None) -> ChatModel:
    """Build the chat model `settings.llm_backend` names. Heavy libraries load only here."""
    settings = settings or get_settings()
    backend = settings.llm_backend
    if backend == "llamacpp":
        from agent.backends.llamacpp import LlamaCppChatModel

        return LlamaCppChatModel.from_settings(settings)
    if backend == "transformers":
        from agent.backends.transformers_vlm import TransformersVlmChatModel

        return TransformersVlmChatModel.from_settings(settings)
    if backend == "openai":
        from agent.backends.openai_http import OpenAIHttpChatModel

        return OpenAIHttpChatModel.from_settings(settings)
    raise ValueError(f"unknown llm_backend {backend!r}: use llamacpp, transformers or openai")


__all__ = ["get_chat_model"]
