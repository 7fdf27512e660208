"""`docteller extract FILE` and `docteller eval extraction`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    @app.command("extract")
    def extract_command(
        file: Path = typer.Argument(..., help="ID/passport photo or scan, bank statement PDF, receipt or form."),
        as_json: bool = typer.Option(False, "--json", help="Print ExtractionResult.as_json()."),
        doc_type: str = typer.Option("auto", "--type", help="auto | id | passport | statement | receipt | form"),
    ) -> None:
        """Extract and check fields from a document."""
        from docteller.redact import mask
        from ingest.extract import DOC_TYPES, extract
        from ingest.sniff import IngestError

        if doc_type not in DOC_TYPES:
            typer.echo(f"{file}: --type must be one of {', '.join(DOC_TYPES)}", err=True)
            raise typer.Exit(1)
        try:
            result = extract(file, doc_type)
        except IngestError as exc:
            typer.echo(f"{file}: {exc.reason}", err=True)
            raise typer.Exit(1) from None
        if as_json:
            typer.echo(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        from docteller.check_labels import doc_type_name, plural
        from docteller.settings import get_settings

        console.print(f"[bold]{file.name}[/bold]: {doc_type_name(result.doc_type)}, {plural(result.pages, 'page')}, {result.seconds:.2f} s")
        fields = Table(title="Fields")
        for col in ("field", "value", "confidence", "page", "source"):
            fields.add_column(col)
        below = get_settings().uncertain_below
        for name, f in result.fields.items():
            shown = mask(f.value) if f.sensitive and f.value and "*" not in f.value else (f.value or "")
            confidence = f"{f.confidence:.2f}" + (" [yellow]not certain[/yellow]" if f.uncertain(below) else "")
            fields.add_row(name, shown, confidence, str(f.page or ""), f.source)
        console.print(fields)
        if result.checks:
            checks = Table(title="Checks")
            checks.add_column("check")
            checks.add_column("result")
            checks.add_column("detail")
            verdicts = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[dim]not read[/dim]"}
            for name, c in result.checks.items():
                # The plain name first; the machine key (as in --json) for scripts and support.
                checks.add_row(f"{c.label} [dim]({name})[/dim]", verdicts[c.ok], c.detail)
            console.print(checks)
        if result.transactions:
            tx = Table(title=f"Transactions ({len(result.transactions)})")
            for col in ("date", "description", "amount", "balance", "row ok"):
                tx.add_column(col)
            for t in result.transactions:
                tx.add_row(t.date or "", t.description, str(t.amount), "" if t.balance is None else str(t.balance), "" if t.row_ok is None else ("yes" if t.row_ok else "NO"))
            console.print(tx)
        for w in result.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")

    @eval_app.command("extraction")
    def eval_extraction(
        corpus: Path = typer.Option(Path(__file__).resolve().parents[2].parent / "shared" / "corpus", help="Shared corpus root."),
        id_limit: int = typer.Option(0, help="Evaluate only the first N ID images (0 = all; GT images first)."),
        receipt_limit: int = typer.Option(0, help="First N SROIE receipts (0 = all)."),
        form_limit: int = typer.Option(0, help="First N FUNSD forms (0 = all)."),
        passporteye: bool = typer.Option(True, help="Also run passporteye.read_mrz on the same ID images."),
    ) -> None:
        """Field accuracy, transactions recall/precision, reconciliation and timing on the corpus."""
        from ingest.extract.evaluate import render, run_all

        if not corpus.is_dir():
            typer.echo(f"{corpus}: corpus not found", err=True)
            raise typer.Exit(1)
        reports = run_all(corpus, id_limit=id_limit or None, receipt_limit=receipt_limit or None, form_limit=form_limit or None, passporteye=passporteye)
        typer.echo(render(reports))
