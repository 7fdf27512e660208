"""The answer pipeline's stages called one by one on the bundled KB, each ablation's
pass-through against the full pipeline, and `docteller eval answers --ablate`.

A scripted chat model stands in for the packaged one (no model is loaded); the index holds the
bundled KB's cards policy, embedded once for the module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


KB_FILES = ["cards-lost-stolen-and-disputes.md"]
DAILY_LIMIT = "What is the daily limit for debit card purchases?"


@pytest.fixture(scope="module")
def kb(bundled_kb_index):
    return bundled_kb_index(*KB_FILES)


@pytest.fixture()
def make_resources(kb, docteller_home: Path, scripted_model):
    from agent.resources import AgentResources
    from docteller.settings import get_settings

    def _make(reply=lambda m: "yes", answer_style: str = "extractive"):
        settings = get_settings().model_copy(update={"answer_style": answer_style})
        return AgentResources(kb, scripted_model(reply), embedder=kb.embedder, settings=settings)

    return _make


def _sid(messages, needle: str) -> str:
    for m in re.finditer(r'<passage id="(S\d+)"[^>]*>(.*?)</passage>', messages[-1].content, re.S):
        if needle in m.group(2):
            return m.group(1)
    raise AssertionError(f"{needle!r} not in any passage")


def test_each_stage_called_alone_hands_the_next_its_typed_input(make_resources) -> None:
    from agent.pipeline import Cited, Draft, Evidence, Judgement, Query, Retrieved, Route, Turn
    from agent.pipeline.cite import Citer
    from agent.pipeline.compose import Composer
    from agent.pipeline.judge import Judge
    from agent.pipeline.retrieve import Retriever
    from agent.pipeline.rewrite import Rewriter
    from agent.pipeline.route import route
    from agent.pipeline.select import JUDGED_LINES, EvidenceSelection

    resources = make_resources()
    turn = Turn(DAILY_LIMIT)
    assert route(turn) == Route("grounded")
    assert route(Turn("can I speak to a real person")).kind == "handoff"
    assert route(Turn("")).kind == "empty"

    query = Rewriter(resources).rewrite(turn)
    assert isinstance(query, Query) and query.text == DAILY_LIMIT and query.standalone is None

    found = Retriever(resources).retrieve(query, turn)
    assert isinstance(found, Retrieved) and found.declined is None and not found.own
    assert found.strength >= resources.calibration.threshold
    assert any("cards-lost-stolen" in h.chunk.source for h in found.pool)

    evidence = EvidenceSelection(resources).select(query, found)
    assert isinstance(evidence, Evidence) and evidence.comparison is None
    assert 0 < len(evidence.lines) <= JUDGED_LINES and "$5,000" in evidence.lines[0].text
    assert [s.score for s in evidence.scored] == sorted((s.score for s in evidence.scored), reverse=True)

    judgement = Judge(resources).judge(query, found, evidence)
    assert isinstance(judgement, Judgement) and judgement.answerable and judgement.verdict is not None

    draft = Composer(resources).quote(query, evidence)
    assert isinstance(draft, Draft) and draft.style == "quoted" and "$5,000" in draft.text
    cited = Citer.cite(draft)
    assert isinstance(cited, Cited) and cited.citations
    assert {c.chunk_id for c in cited.citations} == {line.passage.hit.chunk.id for line in draft.lines}


def test_the_session_streams_what_the_pipeline_run_alone_answers(make_resources) -> None:
    from agent.pipeline import Turn

    resources = make_resources()
    finished = []
    events = list(resources.pipeline.run(Turn(DAILY_LIMIT), lambda a, ids: finished.append(ids) or a))
    tokens = [e.text for e in events if e.kind == "token"]
    assert len(tokens) > 1 and "".join(tokens) == events[-1].answer.answer  # a sentence at a time
    assert finished and finished[0]  # recorded once, with the chunks it retrieved
    assert resources.new_session().ask(DAILY_LIMIT).answer == events[-1].answer.answer


def test_judge_ablated_answers_what_the_verifier_declines(make_resources) -> None:
    from agent.pipeline import AnswerPipeline

    resources = make_resources()
    question = "How much does the card charge?"
    full = resources.new_session().ask(question)
    assert full.abstained and full.verdict is not None and not full.verdict.answerable
    ablated = resources.new_session(pipeline=AnswerPipeline(resources, ablate={"judge"})).ask(question)
    assert not ablated.abstained and ablated.citations and ablated.verdict is None
    assert "judge ablated" in ablated.reason


def test_under_load_a_turn_does_without_the_models_optional_uses(kb, docteller_home: Path, scripted_model) -> None:
    """The web app's queue for the shared model says how long a use would wait; past
    `model_max_wait_s` the judgement is the lexical verifier's and a follow-up is not rewritten."""
    import threading

    from agent.pipeline import Turn
    from agent.resources import AgentResources
    from docteller.settings import get_settings
    from ui.model_queue import ModelQueue, QueuedChatModel

    judging, release = threading.Event(), threading.Event()

    def reply(messages):  # the first judgement holds the model until released
        judging.set()
        release.wait(30)
        return "yes"

    model = scripted_model(reply)
    settings = get_settings().model_copy(update={"answer_judge": "model", "model_max_wait_s": 0.0})
    resources = AgentResources(kb, QueuedChatModel.wrap(model, ModelQueue()), embedder=kb.embedder, settings=settings)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(answer=resources.new_session().ask(DAILY_LIMIT)))
    worker.start()
    try:
        assert judging.wait(30)
        assert resources.model_wait() > 0
        second = resources.new_session().ask(DAILY_LIMIT)  # asked while the model judges the first
        followup = Turn("and can I raise it?", history=((DAILY_LIMIT, "…"),))
        busy_query = resources.pipeline.rewriter.rewrite(followup)
    finally:
        release.set()
        worker.join(30)
    assert "the chat model was busy" in second.reason and second.verdict is not None
    assert second.as_cli_json()["reason"] == second.reason  # `docteller ask --json` says why
    assert second.verdict.features["judge_logit"] == 0.0  # the lexical verifier decided: no P(yes)
    assert busy_query.text == f"{DAILY_LIMIT} and can I raise it?"  # the fallback: no model rewrite
    assert "busy" not in first["answer"].reason and first["answer"].verdict.features["judge_logit"] > 0
    assert len(model.calls) == 1
    assert resources.model_wait() == 0.0
    third = resources.new_session().ask(DAILY_LIMIT)  # the model is idle again: it judges
    assert "busy" not in third.reason and len(model.calls) == 2


def test_a_one_word_question_with_different_answers_is_asked_back_which_one(
    bundled_kb_index, docteller_home: Path, scripted_model
) -> None:
    from agent.pipeline import AnswerPipeline
    from agent.resources import AgentResources

    kb = bundled_kb_index("cards-lost-stolen-and-disputes.md", "fee-schedule.pdf")
    resources = AgentResources(kb, scripted_model(lambda m: "yes"), embedder=kb.embedder)  # the verifier would answer
    session = resources.new_session()
    answer = session.ask("How much is the charge?")
    assert answer.abstained and answer.verdict is None and answer.reason.startswith("underspecified: different answers under")
    assert answer.answer.startswith("Our policies give different answers for different things: “")
    topics = re.findall(r"“([^”]+)”", answer.answer)
    assert 2 <= len(topics) <= 4 and len(set(topics)) == len(topics) and "Which one do you mean?" in answer.answer
    assert "Overdraft and returned item fees" in topics  # the fee schedule's "2. Overdraft and …", without its number
    assert session.ask("yes").handoff  # it offers a person too
    # Naming the thing answers it; a judge ablated answers the one-word question too.
    assert not resources.new_session().ask("What's the charge for expedited delivery of a new card?").abstained
    assert not resources.new_session(pipeline=AnswerPipeline(resources, ablate={"judge"})).ask("How much is the charge?").abstained


def test_a_question_about_what_the_kb_never_names_is_declined_saying_so(make_resources) -> None:
    from agent.pipeline import AnswerPipeline

    resources = make_resources()  # the model would say "yes": the verifier is never asked
    session = resources.new_session()
    question = "What does Northwind Credit Union charge for expedited delivery of a new card?"
    answer = session.ask(question)
    assert answer.abstained and answer.verdict is None and answer.reason == "the KB never mentions Northwind Credit Union"
    assert answer.answer.startswith("Our policies don't mention “Northwind Credit Union”")
    assert session.ask("yes please").handoff  # the decline offers a person, as every decline does
    # The same question about the bank's own card is answered; with the judge ablated, so is this one.
    assert not resources.new_session().ask("What's the charge for expedited delivery of a new card?").abstained
    ablated = AnswerPipeline(resources, ablate={"judge"})
    assert not resources.new_session(pipeline=ablated).ask(question).abstained


def test_prefilter_ablated_lets_weak_evidence_through(make_resources) -> None:
    from agent.pipeline import AnswerPipeline

    resources = make_resources()
    assert resources.new_session().ask("How much is it?").reason.startswith("weak evidence")
    ablated = resources.new_session(pipeline=AnswerPipeline(resources, ablate={"prefilter"})).ask("How much is it?")
    assert not (ablated.reason or "").startswith("weak evidence")


def test_rewrite_ablated_searches_a_follow_up_as_asked(make_resources) -> None:
    from agent.pipeline import AnswerPipeline

    resources = make_resources()
    sessions = [resources.new_session(), resources.new_session(pipeline=AnswerPipeline(resources, ablate={"rewrite"}))]
    for session in sessions:
        session.record_turn("What is the ATM cash withdrawal limit for a debit card?")
    full, ablated = (s.standalone_query("and for Premier Checking?") for s in sessions)
    assert "ATM cash withdrawal limit" in full and "Premier Checking" in full
    assert ablated == "and for Premier Checking?"
    assert sessions[1].ask("and for Premier Checking?").standalone_query is None


def test_select_ablated_keeps_retrieval_order(make_resources) -> None:
    from agent.pipeline import Query, Turn
    from agent.pipeline.retrieve import Retriever
    from agent.pipeline.select import EvidenceSelection, RetrievalOrder

    resources = make_resources()
    query = Query(DAILY_LIMIT, DAILY_LIMIT)
    found = Retriever(resources).retrieve(query, Turn(DAILY_LIMIT))
    plain = RetrievalOrder(resources).select(query, found)
    scored = EvidenceSelection(resources).select(query, found)
    chunk_order = list(dict.fromkeys(s.hit.chunk.id for s in plain.scored))
    assert chunk_order == [h.chunk.id for h in found.pool if h.chunk.id in chunk_order]
    assert all(s.score == (s.hit.vector_score or 0.0) for s in plain.scored)
    assert [s.unit for s in plain.scored] != [s.unit for s in scored.scored]  # re-scoring reorders


def test_check_ablated_keeps_an_unsupported_figure_the_full_pipeline_strips(make_resources) -> None:
    from agent.pipeline import AnswerPipeline

    def reply(messages):
        return f"Debit card purchases are limited to $7,777 per day [{_sid(messages, '$5,000')}]."

    resources = make_resources(reply, answer_style="generative")
    full = resources.new_session().ask(DAILY_LIMIT)
    assert full.abstained and full.reason == "the draft's figures are not in the evidence"
    events = list(resources.new_session(pipeline=AnswerPipeline(resources, ablate={"check"})).ask_stream(DAILY_LIMIT))
    ablated = events[-1].answer
    assert not ablated.abstained and "$7,777" in ablated.answer and "check ablated" in ablated.reason
    streamed = "".join(e.text for e in events if e.kind == "token")
    assert "$7,777" in streamed and "[S" not in streamed  # still streamed token by token, citations rendered


def test_an_unknown_stage_cannot_be_ablated(make_resources) -> None:
    from agent.pipeline import AnswerPipeline

    with pytest.raises(ValueError, match="no such stage"):
        AnswerPipeline(make_resources(), ablate={"route"})


def test_eval_answers_ablate_prints_the_full_and_the_ablated_figures(make_resources, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import agent.commands
    from docteller.cli import app

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"id": "limit", "question": DAILY_LIMIT, "answerable": True, "must_include": ["$5,000"],
         "doc": "cards-lost-stolen-and-disputes.md"},
        {"id": "fee", "question": "How much is the fee?", "answerable": False},
        {"id": "extra", "question": "Who invented the trombone?", "answerable": False},
    ]) + "\n")
    resources = make_resources()
    monkeypatch.setattr(agent.commands, "_resources", lambda kb=None: resources)
    runner = CliRunner()
    args = ["eval", "answers", "--questions", str(questions), "--limit", "2"]
    result = runner.invoke(app, [*args, "--ablate", "judge"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "full" in line)
    assert header.split() == ["full", "-judge"]
    declines = next(line for line in result.stdout.splitlines() if line.startswith("correct declines"))
    assert declines.split()[-2:] == ["1.00", "0.00"]  # the judge's decline of "How much is the fee?" (which fee?)
    assert "worse fee" in result.stdout

    as_json = json.loads(runner.invoke(app, [*args, "--ablate", "judge", "--json"]).stdout)
    assert as_json["full"]["summary"]["questions"] == 2 and as_json["ablations"]["judge"]["summary"]["ablated"] == ["judge"]
    assert as_json["full"]["summary"]["verifier"] == "lexical"  # a text-only scripted model: no judge
    assert [d["id"] for d in as_json["ablations"]["judge"]["differences"]] == ["fee"]
    assert runner.invoke(app, [*args, "--ablate", "nonsense"]).exit_code == 2


def _line(text: str, doc: str, score: float, section: str):
    from agent.evidence import EvidenceLine
    from agent.prompt import SourcePassage
    from docteller.model import Chunk, SearchHit

    chunk = Chunk(id=f"{doc}:0", doc_id=doc, ordinal=0, text=f"{section}\n{text}", page_start=1, page_end=1, title=section)
    return EvidenceLine(text, SourcePassage("S1", SearchHit(chunk=chunk, score=score), "kb", text=text, score=score))


def test_compose_quotes_no_look_alike_of_another_code_and_leads_with_the_sentence_holding_the_value() -> None:
    """Branch notices worded alike: a question naming branch 0007 quotes branch 0007's notice,
    not branch 0004's close runner-up; and the lead is the notice's fee sentence, not its first."""
    from agent.pipeline.compose import compose_answer, quoted_lines

    question = "How much is a safe deposit box at branch 0007 per year?"
    own = _line("The branch 0007 opens at 9:00 a.m. on weekdays. A safe deposit box at branch 0007 costs $46.00 a year.",
                "b7", 1.0, "Millbrook branch 0007")
    other = _line("A safe deposit box at branch 0004 costs $167.00 a year.", "b4", 0.97, "Millbrook branch 0004")
    assert quoted_lines([own, other], question) == [own]
    assert quoted_lines([own, other], "How much is a safe deposit box per year?") == [own, other]  # no code named
    answer = compose_answer(question, quoted_lines([own, other], question))
    assert answer.startswith("A safe deposit box at branch 0007 costs $46.00 a year.")
    assert "0004" not in answer and "$167.00" not in answer


def test_a_long_statute_sentence_leads_with_its_clause_holding_the_value(corpus: Path) -> None:
    """15 U.S.C. 1693g(a): the 690-character sentence on a card reported late answers "how much
    can I lose" in its last clause; the answer leads with that clause, not with the whole sentence."""
    from agent.pipeline.compose import compose_answer

    statute = (corpus / "kb/us_code/efta_15usc1693.md").read_text(encoding="utf-8")
    start = statute.index("In addition, reimbursement need not be made")
    sentence = statute[start : statute.index("whichever is less.", start) + len("whichever is less.")]
    assert len(sentence) > 600
    line = _line(sentence, "efta", 1.0, "(a) Unauthorized electronic fund transfers; limit")
    answer = compose_answer("if I report my lost card late, how much can I lose?", [line])
    lead = answer.split(" [")[0]
    assert lead.startswith("The consumer’s liability under this subsection in any such case may not exceed a total of $500")
    assert lead.endswith("whichever is less.") and len(lead) < 400
    assert f"“{sentence}”" in answer  # the whole sentence is still quoted, verbatim


def test_the_handoff_gives_the_general_line_whatever_the_bank_calls_it() -> None:
    """A bank whose general line is "Customer Care", listed after a card line: the handoff names
    that line's number and hours, cited, not the first phone number of the table."""
    from agent.pipeline.route import contact_from_kb
    from docteller.model import Chunk, SearchHit

    class ContactTableKB:
        def search(self, query: str, k: int = 5) -> list[SearchHit]:
            text = ("Lost or stolen cards | 1-888-555-0101 | 24 hours\n"
                    "Customer Care | 1-888-555-0100 | Mon-Sat 8 a.m.-8 p.m.")
            chunk = Chunk(id="contact:0", doc_id="contact", ordinal=0, text=text, page_start=2, page_end=2,
                          title="Contact us", source="contact.md")
            return [SearchHit(chunk=chunk, score=1.0)]

    text, citations = contact_from_kb(ContactTableKB())
    assert "1-888-555-0100 (Mon-Sat 8 a.m.-8 p.m.) [Contact us, p. 2]" in text and "0101" not in text
    assert [c.page for c in citations] == [2]


def test_the_number_to_call_is_in_the_answer(bundled_kb_index, docteller_home: Path, scripted_model) -> None:
    """"call Loan Servicing before you miss a payment" holds no number: the loans PDF's contact
    table row for Loan Servicing is quoted after it, cited. "How do I report a lost card?" leads
    with the line giving the number, and brings nothing more."""
    from agent.pipeline import AnswerPipeline
    from agent.pipeline.types import Turn
    from agent.resources import AgentResources

    kb = bundled_kb_index("loans-and-mortgages.pdf", "cards-lost-stolen-and-disputes.md")
    resources = AgentResources(kb, scripted_model(lambda m: "yes"), embedder=kb.embedder)
    pipeline = AnswerPipeline(resources)

    def quoted(question: str):
        query = pipeline.rewriter.rewrite(Turn(question=question))
        evidence = pipeline.selector.select(query, pipeline.retriever.retrieve(query, Turn(question=question)))
        return pipeline.composer.quote(query, evidence)

    draft = quoted("I'm struggling to keep up with my loan payments, what should I do?")
    assert "call Loan Servicing" in draft.lines[0].whole
    assert "1-800-555-0155" in draft.lines[-1].text and "Loan Servicing" in draft.lines[-1].text
    cited = pipeline.citer.cite(draft)
    assert "1-800-555-0155" in cited.text and "Personal Loans, Home Equity and Mortgages, p. 3" in cited.text

    # The example: three items of the replacement-card list ranked first and filled the
    # judged lines; they are one quote now, and a way to report ranks the line naming a channel up.
    lost = quoted("How do I report a lost card?")
    assert lost.text.startswith("Call our 24/7 Card Services line at 1-800-555-0199")
    assert pipeline.composer.contact_line(lost.lines) is None
    assert len({line.whole for line in lost.lines}) == len(lost.lines)  # no list taken twice


def test_unit_search_adds_no_copy_of_a_pooled_faq_row(corpus: Path) -> None:
    """The unit search's extra chunks skip a row the pool already holds up to case, spacing and
    punctuation (the sheet has one answer twice, once without its final full stop), but keep
    every other row."""
    from agent.pipeline.retrieve import _new_texts
    from docteller.model import SearchHit
    from ingest.chunking import chunk_document
    from ingest.loaders import load_document

    chunks = chunk_document(load_document(corpus / "kb" / "bankfaqs" / "BankFAQs.csv"))
    abroad = [c for c in chunks if c.text.startswith("Q: Will my accident policy cover me even if I am out of the country")]
    first, second = abroad[0], next(c for c in abroad if c.text != abroad[0].text)  # the same words, a stop apart
    other = next(c for c in chunks if c.text.startswith("Q: Does this policy cover natural death"))
    hit = lambda chunk: SearchHit(chunk=chunk, score=1.0)  # noqa: E731
    kept = _new_texts([hit(first)], [hit(second), hit(other), hit(other)])
    assert [h.chunk.id for h in kept] == [other.id]
