"""Fit the answerability verifier on synthetic questions generated from KBs' own text.

    python -m agent.verifier_training collect b0.jsonl --kb knowledge_base/documents --seed 0
    python -m agent.verifier_training collect s0.jsonl --kb DIR --kb FILE --seed 0   # another KB
    python -m agent.verifier_training fit b0.jsonl b1.jsonl s0.jsonl s1.jsonl --without question_form

The shipped `agent/verifier.json` (v4, lexical): the bundled KB and `../shared/corpus/kb` (its
agreement PDF, US statutes and FAQ sheet), seeds 0 and 1 each, 932 questions, without `question_form`.

The shipped `agent/verifier-judged.json` (the default with the packaged model): the same two KBs,
seed 0, 479 questions collected with `--with-judge` (the packaged model's P(yes) for each), fitted
on the judge's logit, the retrieved chunks' best similarity and the best line's evidence score:

    python -m agent.verifier_training fit b0.jsonl s0.jsonl --with-judge --without coverage \
        --without line_coverage --without unseen_share --without missing_rarity --without type_missing \
        --without names_missing --without figures_missing --without specificity --without question_form

The word-coverage features were left out on the real dev questions' evidence (the bundled
`questions.jsonl` and `heldout.jsonl`, the shared KB's `shared_kb_dev` and `corpus_kb_test`):
learned from template questions, which reuse the KB's words, they add declines of real customers'
questions, which don't (docs/evaluation.md, sixth quality stop).

`collect` generates a question set from the KB (`agent.testset`: answerable questions and the six
kinds of unanswerable ones), asks each through the real answer path with a verifier that answers
everything, and keeps each question's features (the lines retrieval actually selected for it,
the judge's P(yes)); questions declined before the verifier (no evidence at all) are dropped.
A third of the questions (by a hash of their text) form the dev split that picks the threshold
(the lowest keeping false declines of each KB's dev answerable questions ≤ 5 %); the
coefficients are fitted on the rest. No eval question is read.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agent.testset import generate, units_of
from agent.verifier import (
    FEATURES,
    JUDGED_VERIFIER_PATH,
    VERIFIER_PATH,
    AnswerabilityVerifier,
    VerifierModel,
    fit,
    question_form,
    report,
    save,
)


def _split(question: str) -> str:
    return "dev" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 3 == 0 else "train"


def collect(out: Path, *, answerable: int = 120, per_category: int = 25, seed: int = 0,
            with_judge: bool = False, kb: Sequence[Path] = (), model_writes: bool = False) -> list[dict]:
    """Generate questions from the configured KB (or the documents under `kb`, indexed into an
    index of their own) and record the verifier's features for each (`model_writes`: the chat
    model also writes questions, answerable ones about sentences in its own everyday words)."""
    from agent.resources import AgentResources
    from docteller.settings import get_settings

    settings = get_settings()
    names = list(FEATURES) if with_judge else [f for f in FEATURES if f != "judge_logit"]
    permissive = VerifierModel(features=names, mean=[0.0] * len(names), scale=[1.0] * len(names),
                               coef=[0.0] * len(names), intercept=0.0, threshold=0.0)
    index = None
    kb_name = ",".join(str(p) for p in kb) or str(settings.kb_dir)
    if kb:
        from agent.evidence import KBUnitTexts
        from retrieval.evaluate import open_eval_kb

        index = open_eval_kb(list(kb), settings, splitter=KBUnitTexts())
    resources = AgentResources.load(settings, kb=index, verifier=AnswerabilityVerifier(permissive))
    resources.verifier.frequencies = resources.kb.term_frequencies
    chunks, _ = resources.kb.chunks_with_embeddings()  # the indexed KB: no document is read twice
    # Templates alone are seeded and fast; a model-written question costs seconds of CPU but may
    # use words the KB doesn't ("borrow" for a loan amount), as customers do.
    questions = generate(units_of(chunks), resources.chat_model if model_writes else None,
                         answerable=answerable, per_category=per_category, seed=seed)
    rows = []
    for n, q in enumerate(questions, 1):
        answer = resources.new_session(session_id=f"train-{q.id}").ask(q.question)
        if answer.verdict is None:
            continue
        row = {"question": q.question, "answerable": q.answerable, "category": q.category,
               "written_by": "model" if model_writes else "templates",
               "split": _split(q.question), "kb": kb_name, "features": answer.verdict.features}
        if with_judge:  # whose probabilities `judge_logit` holds: a fit on them is for that model
            row["judge_model"] = {"id": resources.chat_model.model_id, "sha256": resources.chat_model.model_hash}
        rows.append(row)
        print(f"[{n}/{len(questions)}] {q.category}: {q.question[:80]}", file=sys.stderr)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def fit_and_save(rows: Sequence[dict], kb: str, path: Path = VERIFIER_PATH, with_judge: bool = False,
                 max_false_decline: float = 0.05, features: Sequence[str] | None = None) -> VerifierModel:
    names = list(features or FEATURES)
    if not with_judge:
        names = [f for f in names if f != "judge_logit"]
    judge_model = None
    if with_judge:
        judges = {json.dumps(r.get("judge_model"), sort_keys=True) for r in rows}
        judge_model = json.loads(judges.pop()) if len(judges) == 1 else None
        if judge_model is None:
            raise ValueError("the rows to fit a judged verifier on must all name the one chat model whose "
                             "probabilities they hold (`judge_model`, written by `collect --with-judge`)")
    model = fit(rows, names=names, max_false_decline=max_false_decline)
    model.fitted_on = {
        "kb": kb,
        **({"judge_model": judge_model} if judge_model else {}),
        "questions": len(rows),
        "method": "logistic regression (L2, Newton) on standardised features; threshold: the lowest "
        f"P keeping false declines of dev answerable questions <= {max_false_decline}",
        "train": report(model, [r for r in rows if r["split"] == "train"]),
        "dev": report(model, [r for r in rows if r["split"] == "dev"]),
        "dev_by_kb": {kb: report(model, [r for r in rows if r["split"] == "dev" and r.get("kb", "") == kb])
                      for kb in sorted({r.get("kb", "") for r in rows})},
        "computed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save(model, path)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agent.verifier_training")
    parser.add_argument("command", choices=["collect", "fit"])
    parser.add_argument("rows", type=Path, nargs="+", help="collect: the one file to write; fit: the files to fit on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answerable", type=int, default=120)
    parser.add_argument("--per-category", type=int, default=25)
    parser.add_argument("--with-judge", action="store_true",
                        help="also weigh the chat model's P(yes): a forward pass per question, in training and serving")
    parser.add_argument("--model-writes", action="store_true",
                        help="collect: the chat model also writes questions (answerable ones in everyday words)")
    parser.add_argument("--kb-name", default="knowledge_base/documents", help="fit: the KB(s) the rows come from, recorded")
    parser.add_argument("--kb", type=Path, action="append", default=[], help="collect: documents (files or folders) to generate from")
    parser.add_argument("--max-false-decline", type=float, default=0.05,
                        help="fit: the share of the synthetic dev split's answerable questions the threshold may decline")
    parser.add_argument("--without", action="append", default=[], choices=FEATURES,
                        help="fit: leave this feature out (repeatable)")
    parser.add_argument("--out", type=Path, default=None,
                        help="fit: where to write the model (default: agent/verifier.json, or with --with-judge "
                             "agent/verifier-judged.json)")
    args = parser.parse_args(argv)
    if args.command == "collect":
        collect(args.rows[0], answerable=args.answerable, per_category=args.per_category, seed=args.seed,
                with_judge=args.with_judge, kb=args.kb, model_writes=args.model_writes)
        return 0
    rows: list[dict] = []
    for path in args.rows:
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r.setdefault("kb", path.stem)  # rows collected before they named their KB
                rows.append(r)
    for r in rows:  # features of the question alone can be added without asking again
        r["features"].setdefault("question_form", question_form(r["question"]))
    out = args.out or (JUDGED_VERIFIER_PATH if args.with_judge else VERIFIER_PATH)
    try:
        model = fit_and_save(rows, args.kb_name, path=out, with_judge=args.with_judge,
                             max_false_decline=args.max_false_decline,
                             features=[f for f in FEATURES if f not in args.without])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(model.fitted_on, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
