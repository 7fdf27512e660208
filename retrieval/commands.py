"""`docteller docs list|delete`, `docteller search`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

docs_app = typer.Typer(help="List or delete indexed documents.", no_args_is_help=True)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.add_typer(docs_app, name="docs")
    app.command("search")(search_command)


def _open_index(need_model: bool = True):
    from retrieval.manifest import EmbeddingModelMismatch
    from retrieval.store import KnowledgeIndex

    try:
        return KnowledgeIndex.open()
    except EmbeddingModelMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@docs_app.command("list")
def docs_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Indexed documents with their page and chunk counts."""
    index = _open_index()
    records = index.documents()
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(records)} documents")
    for column in ("id", "title", "publisher", "type", "pages", "chunks", "origin", "indexed", "source"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            r.doc_id[:12], r.title, r.publisher or "ours", r.doc_type, str(r.pages), str(r.chunks), r.origin,
            r.indexed_at.strftime("%Y-%m-%d %H:%M"), r.source,
        )
    Console().print(table)


@docs_app.command("delete")
def docs_delete(doc_id: str = typer.Argument(..., help="Document id or a unique prefix of it.")) -> None:
    """Remove a document and its chunks from the index."""
    from docteller.processes import index_write_lock
    from docteller.settings import get_settings

    index = _open_index()
    with index_write_lock(get_settings()):
        removed = index.delete(doc_id)
    if not removed:
        typer.echo(f"error: no document with id (or unique id prefix) {doc_id!r}", err=True)
        raise typer.Exit(1)
    index.close()
    typer.echo(f"deleted {doc_id}")


def search_command(
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(5, "-k", "--k", min=1, max=100, help="Number of passages."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    doc: str | None = typer.Option(None, "--doc", help="Only this document (id or prefix)."),
    doc_type: str | None = typer.Option(None, "--type", help="Only this type: pdf, markdown, html, text, faq, …"),
) -> None:
    """Hybrid (vector + BM25) search over the indexed documents."""
    index = _open_index()
    filters = {key: value for key, value in (("doc_id", doc), ("doc_type", doc_type)) if value}
    hits = index.search(query, k=k, filters=filters or None)
    if as_json:
        typer.echo(json.dumps([h.as_json() for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        typer.echo("no results")
        return
    from rich.console import Console

    console = Console()
    for n, hit in enumerate(hits, start=1):
        c = hit.chunk
        pages = f"p. {c.page_start}" + (f"–{c.page_end}" if c.page_end != c.page_start else "")
        console.print(f"[bold]{n}. {c.title}[/bold] ({pages}) score {hit.score:.4f} cosine {hit.vector_score or 0:.3f}")
        console.print(f"   [dim]{Path(c.source).name} · {' > '.join(c.heading_path)}[/dim]")
        console.print("   " + c.text[:400].replace("\n", "\n   "))
