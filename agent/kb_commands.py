"""`docteller index PATH...`: bulk-index files and folders into the persistent knowledge index;
`docteller eval retrieval`: hit@k of search over an eval set.

Both live in the agent layer, not beside the pipeline (`retrieval.indexing`, `retrieval.evaluate`),
because they split and embed the agent's evidence units (`agent.evidence.KBUnitTexts`) of what
they index (search ranks chunks by their best unit too): what a unit is is the agent's business,
and a lower layer never imports the agent.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from retrieval.indexing import FileResult, IndexSummary
    from retrieval.store import KnowledgeIndex


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("index")(index_command)
    eval_app.command("retrieval")(eval_retrieval_command)


def index_command(
    paths: list[Path] = typer.Argument(..., help="Files or folders (walked recursively; hidden files skipped)."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any file failed."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="If another run is indexing into this home, wait for it (default) or exit 3 at once."
    ),
    engine: str = typer.Option(
        "process",
        "--engine",
        help="process: a local process pool parses, this process embeds. ray: Ray Data actor pools "
        "parse, OCR, chunk and embed (pip install '.[ray]'); this process still writes the index.",
    ),
    ray_address: str = typer.Option(
        None, "--ray-address", help="With --engine ray: join this Ray cluster (e.g. ray://head:10001 or auto) "
        "instead of starting a local Ray for the run.",
    ),
    publisher: str = typer.Option(
        None, "--publisher", help="These are another institution's documents (e.g. \"Northwind Bank\"): answers "
        "cite them by its name, never as our policy. \"\" marks them the bank's own; left out, a re-indexed "
        "file keeps the publisher it had.",
    ),
) -> None:
    """Index documents (PDF, images, Markdown, TXT, HTML, DOCX, CSV/XLSX FAQ sheets) for search."""
    from rich.console import Console

    from docteller.processes import index_write_lock
    from docteller.settings import get_settings

    console = Console(stderr=True, soft_wrap=True)  # a message naming a long path stays one line
    _check_engine(console, engine, ray_address)
    _check_publisher(console, publisher)
    with _open_index(console) as index:
        # Answers also search the KB sentence by sentence (agent.evidence.KnowledgeUnits): with the
        # agent's splitting attached, each document's sentences are embedded as it is indexed,
        # while staff wait, not on a customer's first question.
        from agent.evidence import EvidenceSelector, KnowledgeUnits

        units = KnowledgeUnits(EvidenceSelector(index.embedder), index)
        summary = _index_with_progress(
            console, index, paths, strict=strict, as_json=as_json, engine=engine, ray_address=ray_address,
            lock_wait_s=None if wait else 0, publisher=publisher,
        )
        with console.status("embedding sentences for answer evidence"), index_write_lock(get_settings()):
            units.refresh()  # only chunks stored without them (e.g. an index built by older code)

    if as_json:
        typer.echo(json.dumps(summary.as_json(), indent=2))
    else:
        _print_summary(summary)
    if strict and summary.failed:
        raise typer.Exit(1)


def _open_index(console: Console) -> KnowledgeIndex:
    from retrieval.manifest import EmbeddingModelMismatch
    from retrieval.store import KnowledgeIndex

    try:
        return KnowledgeIndex.open()
    except EmbeddingModelMismatch as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _progress_bar(console: Console, disable: bool) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[pages]} pages · {task.fields[chunks]} chunks"),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


def _index_with_progress(
    console: Console, index: KnowledgeIndex, paths: list[Path], *, strict: bool, as_json: bool, engine: str,
    ray_address: str | None, lock_wait_s: float | None, publisher: str | None,
) -> IndexSummary:
    """Run the pipeline under a progress bar (none with --json); busy and unreachable exit 3 and 2."""
    from docteller.processes import IndexBusy
    from ingest.loading import iter_files
    from retrieval.indexing import index_paths

    progress_bar = _progress_bar(console, disable=as_json)
    totals = {"pages": 0, "chunks": 0}
    with progress_bar:
        task = progress_bar.add_task("index", total=len(iter_files(paths)), **totals)

        def on_file(result: FileResult) -> None:
            totals["pages"] += result.pages
            totals["chunks"] += result.chunks
            progress_bar.update(task, advance=1, **totals)
            if result.status == "failed":
                progress_bar.console.print(f"[red]failed[/red] {result.path}: {result.reason}")

        try:
            return index_paths(
                paths, strict=strict, progress=on_file, index=index, engine=engine, ray_address=ray_address,
                lock_wait_s=lock_wait_s, publisher=publisher,
            )
        except IndexBusy as exc:
            console.print(f"[red]busy:[/red] {exc}")
            raise typer.Exit(3) from exc
        except ConnectionError as exc:  # --ray-address where no cluster answers
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc


def _check_engine(console: Console, engine: str, ray_address: str | None) -> None:
    error = None
    if engine not in ("process", "ray"):
        error = f"--engine must be 'process' or 'ray', not {engine!r}"
    elif ray_address and engine != "ray":
        error = "--ray-address needs --engine ray"
    elif engine == "ray" and importlib.util.find_spec("ray") is None:
        error = "--engine ray needs Ray: pip install 'docteller[ray]' (or '.[ray]' in a checkout)"
    if error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2)


def _check_publisher(console: Console, publisher: str | None) -> None:
    from docteller.model import PUBLISHER_MAX_CHARS

    if publisher is not None and len(publisher) > PUBLISHER_MAX_CHARS:
        console.print(f"[red]error:[/red] --publisher is longer than {PUBLISHER_MAX_CHARS} characters")
        raise typer.Exit(2)


def _print_summary(summary: IndexSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Index summary")
    for column in ("file", "status", "pages", "chunks", "seconds", "reason"):
        table.add_column(column, overflow="fold")
    colours = {"indexed": "green", "replaced": "cyan", "unchanged": "dim", "failed": "red"}
    for f in summary.files:
        table.add_row(
            Path(f.path).name,
            f"[{colours[f.status]}]{f.status}[/]",
            str(f.pages),
            str(f.chunks),
            f"{f.seconds:.2f}",
            f.reason or "",
        )
    Console().print(table)
    t = summary.totals()
    Console().print(
        f"{t['files']} files: {t['indexed']} indexed, {t['replaced']} replaced, {t['unchanged']} unchanged, "
        f"{t['failed']} failed · {t['pages']} pages · {t['chunks']} chunks · {t['seconds']} s"
    )


def eval_retrieval_command(
    questions: Path | None = typer.Option(None, "--questions", help="JSONL eval set (default: the bundled one)."),
    kb: list[Path] = typer.Option(
        [], "--kb", help="Measure on these documents (files or folders, repeatable) instead of the served "
        "index: they are indexed into $DOCTELLER_HOME/eval-kbs/ on first use.",
    ),
    k: int = typer.Option(5, "-k", help="Depth for hit@k."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """hit@1, hit@5 and MRR of search over the answerable questions of an eval set, per split
    (dev / test) when the questions name one."""
    from agent.evidence import KBUnitTexts
    from docteller.settings import EVAL_QUESTIONS
    from retrieval.evaluate import evaluate_retrieval, load_questions, open_eval_kb
    from retrieval.manifest import EmbeddingModelMismatch
    from retrieval.store import KnowledgeIndex

    try:
        eval_set = load_questions(questions or EVAL_QUESTIONS)
        index = open_eval_kb(kb, splitter=KBUnitTexts()) if kb else KnowledgeIndex.open()
    except (OSError, ValueError, EmbeddingModelMismatch) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    splits = sorted({q.split for q in eval_set if q.split})
    groups = {"all": eval_set, **{name: [q for q in eval_set if q.split == name] for name in splits}}
    reports = {name: evaluate_retrieval(index, group, k=k) for name, group in groups.items()}
    if as_json:
        out = reports["all"].model_dump()
        out["splits"] = {name: r.model_dump() for name, r in reports.items() if name != "all"}
        typer.echo(json.dumps(out, indent=2))
        return
    for name, report in reports.items():
        typer.echo(
            f"{name}: {report.questions} answerable questions: hit@1 {report.hit_at_1:.3f}  "
            f"hit@{k} {report.hit_at_k:.3f}  MRR {report.mrr:.3f}"
        )
    for miss in reports["all"].misses:
        typer.echo(f"  miss {miss['id']}: {miss['question']} (want {miss['doc']} p.{miss['page']}, got {miss['got']})")
