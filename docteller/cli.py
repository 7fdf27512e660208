"""The `docteller` command line: index | docs | search | extract | ask | chat | serve | eval.

Each package registers its own verbs (`register(app, eval_app)` in its `commands` module) so the
CLI stays one small entry point. Heavy imports happen inside the commands, keeping `--help` fast.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

import docteller  # noqa: F401  (sets the offline environment variables first)

app = typer.Typer(
    name="docteller",
    help="A bank customer-service assistant that reads documents.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
eval_app = typer.Typer(help="Measure retrieval, extraction and answer quality.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

COMMAND_MODULES = (
    "agent.kb_commands",  # `index` first: the order `--help` lists the commands in
    "retrieval.commands",
    "ingest.extract.commands",
    "agent.commands",
    "ui.commands",
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, os.environ.get("DOCTELLER_LOG", "WARNING")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a package not present in this checkout
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(app, eval_app)


_register()

if __name__ == "__main__":
    app()
