"""The web application: FastAPI with the HTTP API routes and the Gradio UI mounted at `/`."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from collections.abc import AsyncIterator

import gradio as gr
from fastapi import FastAPI

from docteller.settings import Settings, get_settings
from ui.api import build_api_router
from ui.backend import Backend
from ui.chat import CSS, build_blocks
from ui.security import SecurityMiddleware, SecurityPolicy

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

    if not settings.api_key_list:
        logger.info("HTTP API (/v1/chat/completions, /v1/extract) is off: set DOCTELLER_API_KEYS to enable it")
    docs = settings.api_docs  # the OpenAPI pages map the attack surface: off unless asked for
    app = FastAPI(
        title="docteller", version="0.1.0", lifespan=lifespan,
        docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None,
    )
    app.state.backend = backend
    app.include_router(build_api_router(backend))  # before the mount: `/` would shadow them

    demo = build_blocks(backend)
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    cache = Path(demo.GRADIO_CACHE).resolve()
    backend.gradio_cache_dirs = [cache]
    app.add_middleware(
        SecurityMiddleware,
        policy=SecurityPolicy(
            cookies=backend.cookies,
            ownership=backend.ownership,
            max_body_bytes=settings.max_upload_mb * 1024 * 1024 + 64 * 1024,  # + multipart headers
            max_json_bytes=1024 * 1024,
            api_keys=settings.api_key_list,
            staff_token=settings.staff_token,
            staff_throttle=backend.staff_throttle,
            cors_origins=settings.cors_origin_list,
            gradio_cache_dirs=(cache,),
        ),
    )
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
        app_kwargs={} if docs else {"openapi_url": None, "docs_url": None, "redoc_url": None},
    )
