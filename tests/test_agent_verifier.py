"""The answerability verifier and the generated test sets, on real KB text: the shared corpus's US
statutes and a real bank's FAQ sheet (the verifier's coefficients come from synthetic questions
generated from the bundled KB's and the shared corpus KB's text, `agent/verifier.json`; no eval
question was read).

The fast tests need no chat model: features of real retrieved lines, the fitting and threshold
arithmetic, the shipped coefficients, the report the Staff view reads. The slow ones load the
packaged 1.5B model once: the verifier declines each of the six kinds of unanswerable question
and answers answerable ones. `docteller eval generate` writes all six kinds from corpus files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CORPUS_KB_FILES = ["us_code/efta_15usc1693.md", "us_code/truth_in_savings_12usc4301.md"]


@pytest.fixture(scope="module")
def corpus_kb(corpus: Path):
    """An in-memory index of two statutes from `../shared/corpus/kb`."""
    from ingest.embed import get_embedder
    from ingest.loaders import load_document
    from retrieval.store import KnowledgeIndex

    index = KnowledgeIndex.in_memory(embedder=get_embedder())
    for name in CORPUS_KB_FILES:
        index.add_document(load_document(corpus / "kb" / name))
    return index


_SELECTORS: dict[int, object] = {}


def _lines(kb, question: str):
    from agent.evidence import EvidenceSelector
    from agent.pipeline.select import EVIDENCE_LINE_CHARS, JUDGED_LINES

    selector = _SELECTORS.setdefault(id(kb), EvidenceSelector(kb.embedder))  # units embedded once per chunk
    scored = selector.score(question, kb.search(question, k=8))
    return selector.lines(scored, budget_chars=EVIDENCE_LINE_CHARS, max_lines=JUDGED_LINES)


def test_features_read_coverage_rarity_and_answer_type_from_real_lines(corpus_kb) -> None:
    from agent.verifier import features

    question = "how many business days before a scheduled automatic transfer can I stop it"
    answerable = features(question, _lines(corpus_kb, question), 0.5, corpus_kb.term_frequencies)
    assert answerable["coverage"] > 0.4
    assert answerable["type_missing"] == 0.0  # "how many … days": the lines hold a period

    stranger = "what does Zorblatt Bank charge for a crypto wallet transfer"
    other = features(stranger, _lines(corpus_kb, stranger), 0.5, corpus_kb.term_frequencies)
    assert other["unseen_share"] > 0.2  # "zorblatt", "crypto", "wallet": words the statutes never use
    assert other["unseen_share"] > answerable["unseen_share"]
    assert other["names_missing"] >= 1 and other["coverage"] < answerable["coverage"]

    figure = "why was the $50 liability limit raised to $750"
    assert features(figure, _lines(corpus_kb, figure), 0.5, corpus_kb.term_frequencies)["figures_missing"] == 1.0
    # A small amount counts too: "$5" is not the statute's "$50".
    small = "since the law caps my stolen card loss at $5, how do I claim the rest back"
    assert features(small, _lines(corpus_kb, small), 0.5, corpus_kb.term_frequencies)["figures_missing"] == 1.0


def test_the_customers_own_figures_are_not_claims_the_lines_must_state(corpus_kb) -> None:
    """"my $8,000 transfer", "if I'm 67": the customer's situation, not a figure of the bank's terms;
    a figure the question claims about the terms still must be in the lines."""
    from agent.verifier import claimed_figures_text, features

    assert (claimed_figures_text("why was my card blocked before my $8,000 transfer went out")
            == "why was my card blocked before my  transfer went out")
    assert claimed_figures_text("is there a monthly fee if I'm 67") == "is there a monthly fee if I'm "
    assert claimed_figures_text("what would I get on 20k") == "what would I get on "
    # Three words between "my" and the figure: a claim about the terms, not the customer's own.
    assert claimed_figures_text("since the rule limits my overdraft charge to $3") == (
        "since the rule limits my overdraft charge to $3")
    assert claimed_figures_text("why did the fee go up to $45?") == "why did the fee go up to $45?"
    own = "someone used my card for $600 without my permission, how soon must I report it"
    assert features(own, _lines(corpus_kb, own), None, corpus_kb.term_frequencies)["figures_missing"] == 0.0
    claimed = "why was the $50 liability limit raised to $750"
    assert features(claimed, _lines(corpus_kb, claimed), None, corpus_kb.term_frequencies)["figures_missing"] == 1.0


def test_closed_class_words_are_not_words_the_kb_never_uses(corpus_kb) -> None:
    """"much", "he", "got", "ok" are grammar, not topic: a statute never writes them, and they
    were read as words the KB doesn't use (an informal question looked out of the KB)."""
    from agent.verifier import features, question_terms

    assert question_terms("how much can I borrow on a personal loan?") == ["borrow", "personal", "loan"]
    question = "ok so how much notice does the bank have to give before it changes the yield on my savings"
    assert features(question, _lines(corpus_kb, question), None, corpus_kb.term_frequencies)["unseen_share"] == 0.0


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("how late can I tell the bank to stop an automatic payment from my account", "three business days"),
        ("how much notice does the bank have to give me before a change that lowers my savings yield", "30 days"),
    ],
)
def test_a_period_answers_a_deadline_or_notice_question(corpus_kb, question: str, fact: str) -> None:
    """Statutes answer "how late" and "how much notice" with a period ("up to three business days
    preceding the scheduled date", "at least 30 days before"): the line stating it is selected and
    holds the kind of value asked for."""
    from agent.verifier import features

    lines = _lines(corpus_kb, question)
    assert any(fact in line.text for line in lines), [line.text for line in lines]
    assert features(question, lines, None, corpus_kb.term_frequencies)["type_missing"] == 0.0


def _separated_rows(seed: int, n: int, informative: str, **extra) -> list[dict]:
    """`n` synthetic verifier rows, half answerable, told apart by the `informative` feature alone."""
    from agent.verifier import FEATURES

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        answerable = i % 2 == 0
        values = {f: float(rng.normal()) for f in FEATURES}
        values[informative] += 2.0 if answerable else -2.0
        rows.append({"features": values, "answerable": answerable, "split": "dev" if i % 3 == 0 else "train",
                     "category": "answerable" if answerable else "out_of_kb", **extra})
    return rows


def test_fit_separates_and_the_threshold_caps_false_declines() -> None:
    from agent.verifier import FEATURES, _threshold, fit

    rows = _separated_rows(0, 300, "coverage")
    model = fit(rows)
    assert model.coef[FEATURES.index("coverage")] > 1.0  # the informative feature carries the weight
    dev = [(model.probability(r["features"]), r["answerable"]) for r in rows if r["split"] == "dev"]
    declined = [p < model.threshold for p, a in dev if a]
    assert sum(declined) / len(declined) <= 0.05
    # Ten answerable scores: at most 5 % may be declined, so none is: the threshold sits below all.
    assert _threshold([(p / 10, True) for p in range(1, 11)] + [(0.05, False)], 0.05) < 0.1


def test_a_judged_fit_records_the_one_model_whose_probabilities_it_read(tmp_path: Path) -> None:
    from agent.verifier import VerifierModel
    from agent.verifier_training import fit_and_save

    judge = {"id": "some-model", "sha256": "ab" * 32}
    rows = _separated_rows(2, 120, "judge_logit", judge_model=judge)
    out = tmp_path / "judged.json"
    fit_and_save(rows, "kb", path=out, with_judge=True, features=["judge_logit", "similarity"])
    assert VerifierModel.model_validate_json(out.read_text()).fitted_on["judge_model"] == judge
    # Rows judged by two models (or by none) hold probabilities no one model's verifier can use.
    rows[0] = {**rows[0], "judge_model": {"id": "other", "sha256": "cd" * 32}}
    with pytest.raises(ValueError, match="one chat model"):
        fit_and_save(rows, "kb", path=tmp_path / "mixed.json", with_judge=True, features=["judge_logit"])
    assert not (tmp_path / "mixed.json").exists()


def test_the_threshold_keeps_false_declines_down_on_every_training_kb() -> None:
    """Two KBs' rows: one KB's answerable questions score lower (harder phrasing). A threshold
    pooled over both would decline more than 5 % of that KB's; one per KB, the lowest, doesn't."""
    from agent.verifier import FEATURES, fit

    rng = np.random.default_rng(1)
    rows = []
    for n in range(1200):
        kb = "easy" if n % 2 else "hard"
        answerable = n % 4 < 2
        values = {f: float(rng.normal()) for f in FEATURES}
        values["coverage"] += (2.0 if kb == "easy" else 0.5) if answerable else -2.0
        rows.append({"features": values, "answerable": answerable, "kb": kb, "category": "x",
                     "split": "dev" if n % 3 == 0 else "train"})
    model = fit(rows)
    for kb in ("easy", "hard"):
        scores = [model.probability(r["features"]) for r in rows if r["split"] == "dev" and r["kb"] == kb and r["answerable"]]
        assert sum(p < model.threshold for p in scores) / len(scores) <= 0.05, kb
    pooled = fit([{**r, "kb": ""} for r in rows])
    hard = [pooled.probability(r["features"]) for r in rows if r["split"] == "dev" and r["kb"] == "hard" and r["answerable"]]
    assert sum(p < pooled.threshold for p in hard) / len(hard) > 0.05  # what one pooled threshold does


def test_question_terms_leave_out_what_customers_type_for_grammar() -> None:
    from agent.verifier import question_terms

    assert question_terms("whats the cutoff if im paying a bill online") == ["cutoff", "paying", "bill", "online"]
    assert question_terms("im sure u dont charge for that, do you? I've asked") == ["sure", "charge", "asked"]
    assert question_terms("ATM withdrawal limit with my ID card") == ["atm", "withdrawal", "limit", "id", "card"]


def test_shipped_verifier_is_fitted_on_the_bundled_kb_and_documented() -> None:
    from agent.verifier import FEATURES, VERIFIER_PATH, AnswerabilityVerifier

    data = json.loads(Path(VERIFIER_PATH).read_text())
    verifier = AnswerabilityVerifier.load()
    assert set(verifier.model.features) <= set(FEATURES) and 0.0 < verifier.model.threshold < 1.0
    assert not verifier.uses_judge  # fitted without the chat model's P(yes): no forward pass per question
    fitted = data["fitted_on"]
    assert fitted["kb"].startswith("knowledge_base/documents") and fitted["questions"] >= 100
    assert fitted["dev"]["false_declines"] <= 0.1 and fitted["dev"]["unanswerable"] > 0


def test_shipped_judged_verifier_weighs_the_chat_models_probability() -> None:
    from agent.model_files import DEFAULT_MODEL_ID, DEFAULT_MODEL_SHA256
    from agent.verifier import JUDGED_VERIFIER_PATH, AnswerabilityVerifier

    verifier = AnswerabilityVerifier.load(path=JUDGED_VERIFIER_PATH)
    assert verifier.uses_judge and verifier.name == "model-judged" and 0.0 < verifier.model.threshold < 1.0
    judge_weight = verifier.model.coef[verifier.model.features.index("judge_logit")]
    assert judge_weight > 0  # the model saying yes makes an answer likelier
    fitted = json.loads(JUDGED_VERIFIER_PATH.read_text())["fitted_on"]
    assert fitted["kb"].startswith("knowledge_base/documents") and fitted["questions"] >= 100
    assert fitted["judge_model"] == {"id": DEFAULT_MODEL_ID, "sha256": DEFAULT_MODEL_SHA256}
    assert fitted["dev"]["false_declines"] <= 0.1 and fitted["dev"]["unanswerable"] > 0


def test_the_chat_model_judges_where_the_judged_verifier_was_fitted_on_its_probabilities(scripted_model) -> None:
    from agent.model_files import DEFAULT_MODEL_SHA256
    from agent.verifier import AnswerabilityVerifier

    class Scoring(scripted_model):
        def choice_probabilities(self, messages, choices):
            return {"yes": 0.5, "no": 0.5}

    packaged, other = Scoring(lambda m: "yes"), Scoring(lambda m: "yes")
    packaged.model_hash = DEFAULT_MODEL_SHA256  # the packaged model's weights: what the judged fit read
    text_only = scripted_model(lambda m: "yes")
    text_only.model_hash = DEFAULT_MODEL_SHA256
    # "auto": the packaged model's P(yes) is what the judged verifier was fitted on; another
    # model's is calibrated differently, and a text-only reply gives 0 or 1.
    assert AnswerabilityVerifier.for_chat_model(packaged).uses_judge
    assert AnswerabilityVerifier.for_chat_model(other).name == "lexical"
    assert AnswerabilityVerifier.for_chat_model(text_only).name == "lexical"
    assert not AnswerabilityVerifier.for_chat_model(packaged, "lexical").uses_judge
    assert AnswerabilityVerifier.for_chat_model(other, "model").uses_judge


def test_last_eval_report_is_shown_to_staff(docteller_home: Path) -> None:
    from agent.evaluate import last_report_markdown, save_report
    from docteller.settings import get_settings

    settings = get_settings()
    assert "docteller eval generate" in last_report_markdown(settings)  # nothing run yet: how to
    report = {"summary": {"questions": 4, "answer_correct": 0.5, "correct_declines": 1.0, "false_declines": 0.5,
                          "abstain_precision": 0.6667, "abstain_recall": 1.0, "mean_seconds": 1.2, "model": "m",
                          "verifier": "model-judged", "declined_by_category": {"out_of_scope": 1.0}},
              "rows": []}
    path = save_report(report, settings, Path("set.jsonl"))
    assert path.parent.parent == docteller_home
    shown = last_report_markdown(settings)
    assert "`set.jsonl`" in shown and "| decline precision | 0.6667 |" in shown and "out of scope | 1.0" in shown
    assert "(4 questions, m, model-judged verifier)" in shown  # which verifier's declines these are


def test_eval_counts_the_facts_in_an_answers_lead_apart_from_its_quotes() -> None:
    from types import SimpleNamespace

    from agent.evaluate import evaluate_answers

    replies = {
        "led": "The fee is $30. [Fees, p. 1]\n\nFrom our policy:\n- “Stop payment: $30” [Fees, p. 1]",
        "quoted": "Orders are free. [Fees, p. 1]\n\nFrom our policy:\n- “Stop payment: $30” [Fees, p. 1]",
        "declined": "I can't find that in our policies. Would you like me to connect you with a member of our team?",
    }

    class Session:
        def ask(self, question: str):
            return SimpleNamespace(answer=replies[question], abstained=question == "declined", citations=[],
                                   reason="", evidence_judgement=None)

    resources = SimpleNamespace(new_session=lambda **_: Session(), model_label="m", verifier=SimpleNamespace(name="v"))
    questions = [{"id": q, "question": q, "answerable": True, "must_include": ["$30"]} for q in replies]
    report = evaluate_answers(resources, questions)
    assert [r["facts_in_lead"] for r in report["rows"]] == [True, False, False]
    assert report["summary"]["facts_in_lead"] == 0.3333
    assert report["summary"]["answer_correct"] == 0.6667  # the quotes still hold the fact


# --- with the packaged chat model -----------------------------------------------------------


@pytest.fixture(scope="module")
def resources(corpus_kb, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from agent.backends.llamacpp import LlamaCppChatModel
    from agent.model_files import DEFAULT_MODEL_ID, DEFAULT_MODEL_SHA256, default_model_path
    from agent.resources import AgentResources
    from docteller.settings import get_settings

    home = tmp_path_factory.mktemp("verifier-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCTELLER_HOME", str(home))
        get_settings.cache_clear()
        settings = get_settings()
        model = LlamaCppChatModel(default_model_path(), model_id=DEFAULT_MODEL_ID, model_hash=DEFAULT_MODEL_SHA256,
                                  n_ctx=settings.llm_context, n_threads=settings.llm_threads)
        yield AgentResources(corpus_kb, model, embedder=corpus_kb.embedder, settings=settings)
    get_settings.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("how late can I tell the bank to stop an automatic payment from my account", "three business days"),
        ("how much notice does the bank have to give me before a change that lowers my savings yield", "30 days"),
    ],
)
def test_verifier_answers_answerable_questions_on_unseen_kb_text(resources, question: str, fact: str) -> None:
    answer = resources.new_session().ask(question)
    assert not answer.abstained, answer.reason
    assert answer.verdict is not None and answer.verdict.answerable and fact in answer.answer


# The packaged model judging (the default) answers this adjacent fact: the model is unsure (P(yes)
# 0.48) of a statute line about passbook accounts that states no fee. A known miss (README).
_JUDGED_MISS = pytest.mark.xfail(strict=True, reason="adjacent fact answered with the packaged model judging")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("category", "question", "judge"),
    [
        *[(c, q, j) for c, q in [
            ("underspecified", "how much is it?"),
            ("false_presupposition", "why did the law raise my stolen card liability to $750"),
            ("out_of_kb", "what does Zorblatt Bank charge for a crypto wallet transfer"),
            ("nonsensical", "transfer purple the sings liability on tuesday banana?"),
            ("out_of_scope", "what's a good recipe for banana bread"),
        ] for j in ("model", "lexical")],
        ("adjacent_fact", "what is the monthly maintenance fee on a passbook account", "lexical"),
        pytest.param("adjacent_fact", "what is the monthly maintenance fee on a passbook account", "model",
                     marks=_JUDGED_MISS),
    ],
)
def test_verifier_declines_each_kind_of_unanswerable_question(resources, category: str, question: str,
                                                              judge: str) -> None:
    from agent.resources import AgentResources
    from agent.verifier import AnswerabilityVerifier

    verifier = AnswerabilityVerifier.for_chat_model(resources.chat_model, judge, resources.kb.term_frequencies)
    assert verifier.uses_judge is (judge == "model")
    judged_by = AgentResources(resources.kb, resources.chat_model, embedder=resources.embedder,
                               settings=resources.settings, verifier=verifier)
    answer = judged_by.new_session().ask(question)
    assert answer.abstained, f"{category}: {answer.answer} ({answer.reason})"
    assert answer.citations == []


@pytest.mark.slow
def test_the_packaged_model_judges_by_default(resources) -> None:
    assert resources.verifier.uses_judge  # `answer_judge` "auto" and the model the judged fit read


def test_eval_generate_writes_all_six_kinds_from_corpus_files(corpus: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from docteller.cli import app

    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    for name in CORPUS_KB_FILES:
        (kb_dir / Path(name).name).symlink_to(corpus / "kb" / name)
    out = tmp_path / "set.jsonl"
    result = CliRunner().invoke(app, ["eval", "generate", str(kb_dir), "--out", str(out),
                                      "--answerable", "6", "--per-category", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    from agent.testset import CATEGORIES

    assert {r["category"] for r in rows} == {"answerable", *CATEGORIES}
    assert all(not r["answerable"] for r in rows if r["category"] != "answerable")
    answerable = [r for r in rows if r["answerable"]]
    # Each answerable question names the document it came from and a figure that document states.
    for r in answerable:
        text = (kb_dir / r["doc"]).read_text()
        assert r["must_include"] and all(fact in text for fact in r["must_include"]), r
    bad = CliRunner().invoke(app, ["eval", "generate", str(tmp_path / "missing"), "--out", str(out)])
    assert bad.exit_code != 0


def test_generated_questions_read_like_customers_and_underspecified_ones_name_no_subject(corpus: Path, tmp_path: Path) -> None:
    """The verifier learns from generated questions: answerable ones are not all tidy "What is
    the … for …?" (customers type fragments, so a question that opens otherwise is no sign it
    can't be answered), and an underspecified one asks for an attribute without what it is of."""
    from agent.testset import generate, load_units
    from agent.verifier import question_form, question_terms

    for name in CORPUS_KB_FILES:
        (tmp_path / Path(name).name).symlink_to(corpus / "kb" / name)
    units = load_units(tmp_path)
    rows = generate(units, None, answerable=30, per_category=6, seed=0)
    answerable = [r for r in rows if r.answerable]
    informal = [r for r in answerable if not question_form(r.question)]
    assert 3 <= len(informal) < len(answerable) / 2, [r.question for r in answerable]
    texts = " ".join(u.text for u in units)
    assert all(f in texts for r in answerable for f in r.must_include)  # the value asked for is stated
    vague = [r.question for r in rows if r.category == "underspecified"]
    assert vague and all(len(question_terms(q)) <= 3 for q in vague), vague
    assert {r.question.lower() for r in rows if not r.answerable}.isdisjoint(r.question.lower() for r in answerable)


@pytest.mark.parametrize("name", ["corpus_kb_test.jsonl", "corpus_kb_test2.jsonl"])
def test_corpus_kb_test_questions_are_labelled_and_their_facts_are_in_the_documents(corpus: Path, name: str) -> None:
    """The frozen test splits for `../shared/corpus/kb` (`corpus_kb_test.jsonl`: written before the
    verifier was fitted, since seen and used as dev; `corpus_kb_test2.jsonl`: written before the
    answer-type and retrieval changes, run once at the end): each answerable question's facts are
    in its document, so a decline there is a false decline; the unanswerable ones cover the six kinds."""
    import re

    from agent.testset import CATEGORIES, TestQuestion
    from ingest.loaders import load_document

    path = Path(__file__).resolve().parent.parent / "knowledge_base" / "eval" / name
    items = [TestQuestion.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]
    files = {p.name: p for p in (corpus / "kb").rglob("*") if p.suffix in (".md", ".pdf", ".csv")}
    texts: dict[str, str] = {}
    for item in items:
        if not item.answerable:
            assert item.category in CATEGORIES and not item.must_include, item
            continue
        if item.doc not in texts:
            texts[item.doc] = re.sub(r"\s+", " ", load_document(files[item.doc]).text).lower()
        assert item.must_include and all(f.lower() in texts[item.doc] for f in item.must_include), item
    assert {i.category for i in items if not i.answerable} == set(CATEGORIES)
    assert sum(i.answerable for i in items) >= 20
