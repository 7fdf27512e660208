"""`docteller serve`: the web app (chat, uploads, staff view, HTTP API) on one port."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:  # noqa: ARG001 (no eval verbs here)
    @app.command()
    def serve(
        host: str = typer.Option(None, help="Interface to bind (default: settings, 127.0.0.1)."),
        port: int = typer.Option(None, help="Port (default: settings, 7860)."),
        index_kb: bool = typer.Option(
            True, "--index-kb/--no-index-kb", help="Index the bundled knowledge base first if needed."
        ),
        gguf: Path = typer.Option(None, exists=True, dir_okay=False, help="Chat model GGUF (default: packaged)."),
        warm: bool = typer.Option(True, "--warm/--lazy", help="Load the chat model before serving."),
    ) -> None:
        """Serve the customer chat, the staff view and the HTTP API."""
        import uvicorn

        from docteller.settings import get_settings
        from ui.app import create_app
        from ui.backend import Backend

        settings = get_settings()
        updates = {k: v for k, v in {"host": host, "port": port, "gguf_path": gguf}.items() if v is not None}
        if updates:
            settings = settings.model_copy(update=updates)
        backend = Backend(settings)
        if index_kb:
            typer.echo(f"Checking the knowledge base index ({settings.kb_dir})…")
            backend.ensure_kb_indexed()
        if warm:
            typer.echo("Loading the chat model…")
            backend.warm_up()
        if not settings.staff_token:
            typer.echo("Staff view disabled (set DOCTELLER_STAFF_TOKEN to enable it).")
        typer.echo(f"docteller on http://{settings.host}:{settings.port}  (API: /v1/chat/completions, /health)")
        uvicorn.run(
            create_app(backend=backend), host=settings.host, port=settings.port, log_level="warning",
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips or None,
            timeout_graceful_shutdown=5,  # then open event streams are cut, not waited for
        )
