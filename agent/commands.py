"""`docteller ask`, `docteller chat` and `docteller eval answers`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from docteller.settings import EVAL_QUESTIONS


def _resources(kb: list[Path] | None = None):
    """The shared resources over the served KB, or over the documents under `kb` (an eval KB
    indexed into its own folder by `retrieval.evaluate.open_eval_kb`)."""
    from agent.resources import AgentResources

    if not kb:
        return AgentResources.load()
    from agent.evidence import KBUnitTexts
    from retrieval.evaluate import open_eval_kb

    try:
        index = open_eval_kb(kb, splitter=KBUnitTexts())
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return AgentResources.load(kb=index)


_KB_OPTION_HELP = ("Answer from these documents (files or folders, repeatable) instead of the served KB: "
                   "indexed into $DOCTELLER_HOME/eval-kbs/ on first use.")


def _upload_all(session, files: list[Path]) -> None:
    from ingest.sniff import IngestError

    for f in files:
        try:
            result = session.add_upload(f)
        except (IngestError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"uploaded {f.name}: {result.doc_type}, {len(result.fields)} fields", err=True)


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    _register_followups(eval_app)
    _register_generate(eval_app)
    app.command("ask")(ask)
    app.command("chat")(chat)
    eval_app.command("answers")(eval_answers)


def ask(
    question: str = typer.Argument(..., help="The customer's question."),
    file: list[Path] = typer.Option([], "--file", "-f", exists=True, dir_okay=False, help="A customer document to upload first (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
) -> None:
    """Answer one question from the bank's KB (and the given documents), with citations."""
    session = _resources().new_session()
    _upload_all(session, file)
    if as_json:
        answer = session.ask(question)
        typer.echo(json.dumps(answer.as_cli_json(), indent=2, ensure_ascii=False))
        return
    _stream_answer(session, question)


def chat(
    file: list[Path] = typer.Option([], "--file", "-f", exists=True, dir_okay=False, help="Upload a document first."),
) -> None:
    """Interactive chat in the terminal. Commands: /upload PATH, /human, /quit."""
    resources = _resources()
    session = resources.new_session()
    _upload_all(session, file)
    typer.echo(f"docteller chat ({resources.model_label}). /upload PATH, /human, /quit")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            break
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line.startswith("/upload"):
            _chat_upload(session, Path(line[len("/upload"):].strip()).expanduser())
        elif line == "/human":
            typer.echo(f"bot> {session.request_human().answer}")
        else:
            sys.stdout.write("bot> ")
            _stream_answer(session, line)


def _chat_upload(session, path: Path) -> None:
    """`/upload PATH` in the chat: read the document and show what was found (numbers masked)."""
    from docteller.redact import mask
    from ingest.sniff import IngestError

    try:
        result = session.add_upload(path)
    except (IngestError, OSError) as exc:
        typer.echo(f"could not upload: {exc}")
        return
    typer.echo(f"read {path.name} as {result.doc_type}:")
    for name, f in result.fields.items():
        typer.echo(f"  {name}: {mask(f.value) if f.sensitive else f.value}")
    for name, c in result.checks.items():
        typer.echo(f"  check {c.label}: {c.status.value} {c.detail}")


def eval_answers(
    limit: int = typer.Option(0, "--limit", "-n", help="Only the first N questions (0 = all)."),
    stride: int = typer.Option(1, "--stride", help="Every Nth question: a spread sample of answerable and unanswerable ones."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    questions_path: Path = typer.Option(
        EVAL_QUESTIONS, "--questions", exists=True, dir_okay=False,
        help="Questions file (JSONL). knowledge_base/eval/heldout.jsonl holds questions no threshold or rule was tuned on.",
    ),
    kb: list[Path] = typer.Option([], "--kb", help=_KB_OPTION_HELP),
    ablate: list[str] = typer.Option(
        [], "--ablate", metavar="STAGE",
        help="Also run with this answer-pipeline stage replaced by its pass-through and show both "
        "(repeatable; one run per stage): rewrite, prefilter, units, select, judge, check, or all.",
    ),
) -> None:
    """Answer correctness and abstain precision/recall on knowledge_base/eval/questions.jsonl
    (the questions the thresholds are calibrated on) or another questions file."""
    from agent.evaluate import ablation_stages, evaluate_ablations, evaluate_answers, load_questions, save_report

    questions = load_questions(questions_path)[:: max(stride, 1)]
    if limit:
        questions = questions[:limit]
    resources = _resources(kb)
    if ablate:
        try:
            stages = ablation_stages(ablate, resources.settings.answer_style)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        comparison = evaluate_ablations(resources, questions, stages, progress=True)
        saved = save_report(comparison["full"], resources.settings, questions_path)  # the served pipeline's
        typer.echo(f"report: {saved} (shown in the Staff view)", err=True)
        if as_json:
            typer.echo(json.dumps(comparison, indent=2, ensure_ascii=False))
            return
        _print_ablation_report(comparison, resources.settings.answer_style)
        return
    report = evaluate_answers(resources, questions, progress=True)  # progress goes to stderr
    saved = save_report(report, resources.settings, questions_path)
    typer.echo(f"report: {saved} (shown in the Staff view)", err=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    _print_answers_report(report)


def _print_answers_report(report: dict) -> None:
    s = report["summary"]
    typer.echo(f"questions:          {s['questions']}  ({s['model']})")
    for name, figures in [("all", s), *report["splits"].items()]:
        typer.echo(f"[{name}] questions {figures['questions']}: answer correct {figures['answer_correct']} "
                   f"(target >= 0.85), key fact present {figures['key_fact_present']}, facts in the lead "
                   f"{figures.get('facts_in_lead')}, correct declines "
                   f"{figures['correct_declines']} (>= 0.95), false declines {figures['false_declines']} (<= 0.05)")
    typer.echo(f"abstain precision:  {s['abstain_precision']}")
    for category, rate in s["declined_by_category"].items():
        typer.echo(f"  declined {category}: {rate}")
    typer.echo(f"mean seconds/q:     {s['mean_seconds']}")
    for r in report["rows"]:
        if not r["correct"]:
            typer.echo(f"  wrong {r['id']}: missing={r['missing']} cites_doc={r['cites_doc']} abstained={r['abstained']} :: {r['answer'][:120]}")


_ABLATION_MEASURES = [
    ("answer correct", "answer_correct"),
    ("correct declines", "correct_declines"),
    ("false declines", "false_declines"),
    ("key fact present", "key_fact_present"),
    ("facts in the lead", "facts_in_lead"),
    ("seconds/question", "mean_seconds"),
]


def _print_ablation_report(comparison: dict, answer_style: str) -> None:
    """The full pipeline's figures and each ablation's side by side, then what changed."""
    from agent.pipeline import ABLATIONS

    full, ablations = comparison["full"], comparison["ablations"]
    columns = [("full", full["summary"])] + [(f"-{stage}", a["summary"]) for stage, a in ablations.items()]
    typer.echo(f"questions: {full['summary']['questions']}  ({full['summary']['model']}, {answer_style})")
    width = max(10, *(len(name) + 2 for name, _ in columns))
    typer.echo(f"{'':<18}" + "".join(f"{name:>{width}}" for name, _ in columns))
    for label, key in _ABLATION_MEASURES:
        values = ["-" if s[key] is None else f"{s[key]:.2f}" for _, s in columns]
        typer.echo(f"{label:<18}" + "".join(f"{v:>{width}}" for v in values))
    for stage, a in ablations.items():
        if answer_style not in ABLATIONS[stage].styles:
            typer.echo(f"-{stage}: has no effect on {answer_style} answers")
        better = sum(d["ablated"]["correct"] and not d["full"]["correct"] for d in a["differences"])
        worse = sum(d["full"]["correct"] and not d["ablated"]["correct"] for d in a["differences"])
        typer.echo(f"-{stage} ({a['replaces']}): {len(a['differences'])} answers changed, "
                   f"{worse} no longer correct, {better} newly correct")
        for d in a["differences"]:
            mark = "worse" if d["full"]["correct"] and not d["ablated"]["correct"] else (
                "better" if d["ablated"]["correct"] and not d["full"]["correct"] else "same ")
            typer.echo(f"  {mark} {d['id']}: {d['ablated']['answer'][:100]!r}")


def _register_followups(eval_app: typer.Typer) -> None:
    @eval_app.command("followups")
    def eval_followups(
        questions_path: Path = typer.Option(
            Path("knowledge_base/eval/followups.jsonl"), "--questions", exists=True, dir_okay=False,
            help="JSONL of {id, split, history: [questions], followup, must_contain, must_not_contain}.",
        ),
        kb: list[Path] = typer.Option([], "--kb", help=_KB_OPTION_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    ) -> None:
        """Follow-up rewrites: does the standalone query keep the product and channel the
        conversation is about, and take the one the follow-up names?"""
        from agent.evaluate import evaluate_followups, load_questions

        try:
            pairs = load_questions(questions_path)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        report = evaluate_followups(_resources(kb), pairs)
        if as_json:
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
            return
        typer.echo("follow-ups rewritten right: " + ", ".join(f"{k} {v}" for k, v in report["summary"].items()))
        for row in report["rows"]:
            if not row["correct"]:
                typer.echo(f"  wrong {row['id']}: {row['query']}")


def _register_generate(eval_app: typer.Typer) -> None:
    @eval_app.command("generate")
    def eval_generate(
        kb_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="The folder of documents to write questions about."),
        out: Path = typer.Option(..., "--out", "-o", dir_okay=False, help="Where to write the questions (JSONL)."),
        answerable: int = typer.Option(30, "--answerable", help="How many answerable questions."),
        per_category: int = typer.Option(8, "--per-category", help="How many of each of the six unanswerable kinds."),
        seed: int = typer.Option(0, "--seed", help="Another seed gives another set."),
        with_model: bool = typer.Option(
            False, "--model/--templates",
            help="Let the chat model also write questions (answerable ones in its own words, out-of-KB and "
            "out-of-scope ones): more natural, seconds of CPU per question. Default: templates only.",
        ),
    ) -> None:
        """Write a test set for these documents: answerable questions and the six kinds of
        unanswerable one (underspecified, false presupposition, out of the KB, adjacent fact,
        nonsensical, out of scope), labelled. Run it with `docteller eval answers --questions OUT`
        (with DOCTELLER_KB_DIR set to the same folder) to measure declines on your own documents."""
        from agent.backends import get_chat_model
        from agent.testset import generate, load_units

        try:
            units = load_units(kb_dir)
        except FileNotFoundError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        model = get_chat_model() if with_model else None
        questions = generate(units, model, answerable=answerable, per_category=per_category, seed=seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(q.model_dump_json() + "\n" for q in questions), encoding="utf-8")
        counts: dict[str, int] = {}
        for q in questions:
            counts[q.category] = counts.get(q.category, 0) + 1
        typer.echo(f"wrote {len(questions)} questions to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _stream_answer(session, question: str) -> None:
    """Print the answer's tokens as they stream, then its sources."""
    answer = None
    for event in session.ask_stream(question):
        if event.kind == "token":
            sys.stdout.write(event.text)
            sys.stdout.flush()
        else:
            answer = event.answer
    sys.stdout.write("\n")
    _print_sources(answer)


def _print_sources(answer) -> None:
    if answer is None:
        return
    if answer.citations:
        typer.echo("sources: " + "; ".join(f"{c.title}, p. {c.page}" for c in answer.sources()), err=True)
    if answer.abstained:
        typer.echo(f"(declined: {answer.reason})", err=True)
