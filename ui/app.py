"""The web application: FastAPI with the HTTP API routes and the Gradio UI mounted at `/`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import gradio as gr
from fastapi import FastAPI

from docteller.settings import Settings, get_settings
from ui.api import build_api_router
from ui.backend import Backend
from ui.chat import CSS, build_blocks

logger = logging.getLogger(__name__)

# Events processed at once. Model calls are serialised inside the agent, so this bounds the
# retrieval/extraction work in flight and lets uploads proceed while another tab is answered.
QUEUE_CONCURRENCY = 16
QUEUE_MAX_SIZE = 256


def theme() -> gr.Theme:
    return gr.themes.Soft(primary_hue="emerald", secondary_hue="slate", neutral_hue="slate")


def create_app(settings: Settings | None = None, backend: Backend | None = None) -> FastAPI:
    """Build the app around `backend` (default: a new one for `settings`)."""
    backend = backend or Backend(settings or get_settings())
    settings = backend.settings

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        backend.close()

    app = FastAPI(title="docteller", version="0.1.0", lifespan=lifespan, docs_url="/docs")
    app.state.backend = backend
    app.include_router(build_api_router(backend))  # before the mount: `/` would shadow them

    demo = build_blocks(backend)
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    return gr.mount_gradio_app(
        app,
        demo,
        path="/",
        server_name=settings.host,
        server_port=settings.port,
        max_file_size=f"{settings.max_upload_mb}mb",
        footer_links=["api"],
        run_history=False,
        theme=theme(),
        css=CSS,
        ssr_mode=False,
    )
