"""Evidence selection on the real bank KB: the sentence or table row that answers the question
reaches the prompt, within the character budget, with its table header and a real chunk behind it."""

from __future__ import annotations

import pytest

from agent.evaluate import fact_present, load_questions
from agent.evidence import (
    EvidenceSelector,
    EvidenceUnit,
    KnowledgeUnits,
    expected_answers,
    is_informative,
    quotable,
    quote,
    split_units,
)
from agent.prompt import REMOVED_MARKER
from docteller.settings import DEFAULT_KB_DIR


@pytest.fixture(scope="module")
def kb():
    from ingest.embed import get_embedder
    from ingest.loaders import load_document
    from retrieval.store import KnowledgeIndex

    index = KnowledgeIndex.in_memory(embedder=get_embedder())
    for path in sorted(DEFAULT_KB_DIR.iterdir()):
        if path.is_file():
            index.add_document(load_document(path))
    return index


def test_units_are_sentences_and_table_rows_with_their_header() -> None:
    text = (
        "Wire transfers\n"
        "Outgoing wires requested online, by phone or at any of our branches are sent within the United States on the same business day. Cut-off is "
        "4:00 p.m. ET on Martin Luther King Jr. Day eve.\n"
        "Minimum order: $100. Maximum: $5,000 per day.\n"
        "1. Monthly maintenance fees\n"
        "Service | Fee\n"
        "Outgoing domestic wire | $25\n"
        "Outgoing international wire | $45\n"
        "\n"
        "Ask us (Mon-Fri) about anything else."
    )
    units = split_units(text)
    assert [u.text for u in units] == [
        "Wire transfers",
        "Outgoing wires requested online, by phone or at any of our branches are sent within the United States on the same business day.",
        "Cut-off is 4:00 p.m. ET on Martin Luther King Jr. Day eve.",
        "Minimum order: $100. Maximum: $5,000 per day.",  # a short line is one fact
        "1. Monthly maintenance fees",  # not "1." and a sentence
        "Service | Fee",
        "Outgoing domestic wire | $25",
        "Outgoing international wire | $45",
        "Ask us (Mon-Fri) about anything else.",
    ]
    assert units[7].table_header == "Service | Fee"
    assert units[8].table_header is None
    assert quotable(units[7]) == "Monthly maintenance fees — Service: Outgoing international wire; Fee: $45"
    assert quotable(EvidenceUnit("Fee | $45 | extra", 0, "Service | Fee")) == "Fee | $45 | extra"  # ragged row
    # The real fee schedule's header has merged (empty) cells.
    assert quotable(EvidenceUnit("Cashier's check | $10", 0, "Service |  |  | Fee")) == "Service: Cashier's check; Fee: $10"


def test_list_items_are_quoted_with_their_lead_in() -> None:
    text = (
        "You can close a checking or savings account:\n"
        "by phone at 1-800-555-0142 after we verify your identity;\n"
        "in any branch, with photo ID.\n"
        "Joint accounts pass to the surviving owner.\n"
        "lowercase line with no lead-in above it\n"
        "Fees by channel:\n"
        "Channel | Fee\n"
        "Branch | $5\n"
        "after the table, nothing to complete"
    )
    assert [u.text for u in split_units(text)] == [
        "You can close a checking or savings account: by phone at 1-800-555-0142 after we verify your identity;",
        "You can close a checking or savings account: in any branch, with photo ID.",
        "Joint accounts pass to the surviving owner.",
        "lowercase line with no lead-in above it",
        "Fees by channel:",
        "Channel | Fee",
        "Branch | $5",
        "after the table, nothing to complete",
    ]
    # A numbered list run into one sentence keeps its items with their lead-in (its numbers end no
    # sentence); "at least 21." still does.
    inline = ("Auto loans are open to: 1. Employed people aged 21 to 60 (at the end of the term) "
              "2. Self-employed people aged 25 to 65 3. Partnerships. Rates vary. You must be at least 21. "
              "Bring two payslips.")
    assert [u.text for u in split_units(inline)] == [
        "Auto loans are open to: 1. Employed people aged 21 to 60 (at the end of the term) 2. Self-employed "
        "people aged 25 to 65 3. Partnerships.", "Rates vary.", "You must be at least 21.", "Bring two payslips."]


def test_table_rows_are_quoted_with_their_section() -> None:
    text = (
        "Mobile check deposit\n"
        "Limit | Amount\n"
        "Per day | $5,000\n"
        "\n"
        "4. Wire transfers\n"
        "Service | Fee\n"
        "Outgoing wire transfer | $25\n"
    )
    units = split_units(text, ["Deposits", "Mobile check deposit", "4. Wire transfers"])
    rows = [u for u in units if u.table_header]
    # "Per day: $5,000" alone is a limit of nothing; the number of a numbered heading is dropped,
    # and a section the row already names ("wire transfer") is not repeated.
    assert [quotable(u) for u in rows] == [
        "Mobile check deposit — Limit: Per day; Amount: $5,000",
        "Service: Outgoing wire transfer; Fee: $25",
    ]
    # A chunk's headings are its units' sections, never units, nor the lead-in of a list: a
    # numbered section's title over its lettered subsection's title is not one sentence.
    agreement = "7. General Terms\nA. Fees\nThere is no charge for the Service."
    assert [(u.text, u.section) for u in split_units(agreement, ["Agreement", "7. General Terms", "A. Fees"])] == [
        ("There is no charge for the Service.", "A. Fees")]
    # Without heading markup (an OCR'd notice), a caption-like line above a table names it.
    ocr = "Bring your key and photo ID.\nSafe deposit boxes\nBox size | Annual rent\n3x5 | $45"
    assert [quotable(u) for u in split_units(ocr) if u.table_header] == [
        "Safe deposit boxes — Box size: 3x5; Annual rent: $45"
    ]
    # A chunk that starts inside a section takes the section from its heading path.
    (row,) = [u for u in split_units("Limit | Amount\nPer day | $5,000", ["Deposits", "Mobile check deposit"]) if u.table_header]
    assert quotable(row) == "Mobile check deposit — Limit: Per day; Amount: $5,000"


def test_label_value_lines_are_one_record_led_by_the_line_above() -> None:
    """The OCR'd branch notice: each date alone is a date of what? Led by its sentence, the
    record answers both "what dates is Riverside closed" and "when does it reopen"."""
    text = (
        "The Riverside Branch will be closed for renovation.\n"
        "Closed from: March 2, 2026\n"
        "Closed until: March 27, 2026\n"
        "Reopening: Monday, March 30, 2026 at 9:00 a.m.\n"
        "During the closure, please visit our Main Office. The\n"  # OCR: one line per printed line
        "Riverside ATM will remain open.\n"
        "You can refer your complaint to the Ombudsman, a free service for customers of member banks. You must contact "
        "the Ombudsman within 6 months of our final response.\n"
        "Website: ifo.example\n"
        "Phone: 1-800-555-0191\n"
        "Minimum order: $100. Maximum: $5,000 per day.\n"
        "Fees: closing an account within 90 days costs $25.\n"
    )
    assert [u.text for u in split_units(text)] == [
        "The Riverside Branch will be closed for renovation. Closed from: March 2, 2026; Closed until: March 27, 2026; "
        "Reopening: Monday, March 30, 2026 at 9:00 a.m.",
        "During the closure, please visit our Main Office. The Riverside ATM will remain open.",  # rejoined
        "You can refer your complaint to the Ombudsman, a free service for customers of member banks.",
        # A paragraph's last sentence doesn't lead the record below it: the 6 months stay a fact of their own.
        "You must contact the Ombudsman within 6 months of our final response.",
        "Website: ifo.example; Phone: 1-800-555-0191",
        # Sentences with a label are not fields.
        "Minimum order: $100. Maximum: $5,000 per day.",
        "Fees: closing an account within 90 days costs $25.",
    ]


def test_sentences_are_quoted_after_their_section_but_scored_without_it() -> None:
    text = "CEDARPAY PERSON-TO-PERSON PAYMENTS\nThe limit is $2,500 per day.\nCedarPay person-to-person payments are free."
    units = split_units(text, ["Transfers", "CEDARPAY PERSON-TO-PERSON PAYMENTS"])
    limit, free = [u for u in units if "$" in u.text or "free" in u.text]
    assert quotable(limit) == "The limit is $2,500 per day."  # scored as is
    # Quoted, "the limit" says of what (an all-caps heading in sentence case); a sentence that
    # already names its section is not prefixed again.
    assert quote(limit) == "Cedarpay person-to-person payments — The limit is $2,500 per day."
    assert quote(free) == "CedarPay person-to-person payments are free."
    assert quote(EvidenceUnit("A: Yes. Coin counting is free for customers.", 0, None)) == "Yes. Coin counting is free for customers."


def test_unit_search_finds_the_row_of_a_chunk_that_ranks_low_as_a_whole(kb, tmp_path) -> None:
    """The coin-counting fee is one row of a twelve-row fee table: the table isn't among the
    question's kept hits, but the row alone is among the most similar units of the KB."""
    from ingest.embed import get_embedder
    from ingest.loaders import load_document
    from retrieval.store import KnowledgeIndex

    question = "can non customers use your coin counter? whats it cost"
    index = KnowledgeIndex.open(tmp_path / "index", embedder=get_embedder())
    for name in ("faq.csv", "fee-schedule.pdf"):
        index.add_document(load_document(DEFAULT_KB_DIR / name))
    units = KnowledgeUnits(EvidenceSelector(index.embedder), index)
    hits = units.search(question, k=3)
    rows = [quotable(u) for h in hits for u in split_units(h.chunk.text, h.chunk.heading_path) if u.table_header]
    assert any("Coin counting" in r and "5% of the total" in r for r in rows), rows
    assert all(h.vector_score is not None and -1 <= h.vector_score <= 1 for h in hits)
    # Chunks already retrieved are skipped, not returned twice.
    assert not {h.chunk.id for h in units.search(question, k=3, exclude={hits[0].chunk.id})} & {hits[0].chunk.id}

    # The vectors are kept beside the index: a new process loads them instead of re-embedding.
    from retrieval.units import UNITS_FILE

    index.close()
    assert (tmp_path / "index" / UNITS_FILE).is_file()

    class CountingEmbedder:
        def __init__(self, inner):
            self.inner, self.model_id, self.dim, self.texts = inner, inner.model_id, inner.dim, 0

        def embed(self, texts):
            self.texts += len(texts)
            return self.inner.embed(texts)

    counting = CountingEmbedder(get_embedder())
    index = KnowledgeIndex.open(tmp_path / "index", embedder=counting)
    reloaded = KnowledgeUnits(EvidenceSelector(counting), index)
    assert [h.chunk.id for h in reloaded.search(question, k=3)] == [h.chunk.id for h in hits]
    assert counting.texts == 1  # the question only
    # The selector scores the hits' units with the stored vectors: still only the question.
    reloaded.selector.score(question, hits)
    assert counting.texts == 2

    # A document added to the index is searched from the next question on.
    index.add_document(load_document(DEFAULT_KB_DIR / "foreign-exchange-and-travel.txt"))
    found = reloaded.search("most foreign cash i can buy in one day", k=3)
    assert any("FOREIGN CURRENCY" in h.chunk.title.upper() for h in found), [h.chunk.title for h in found]
    index.close()


def test_headings_labels_and_faq_questions_are_not_evidence() -> None:
    headings = {"wire transfers", "cancelling or recalling a wire"}
    def informative(text: str, header: str | None = None) -> bool:
        return is_informative(EvidenceUnit(text, 0, header), headings)

    assert not informative("Cancelling or recalling a wire")
    assert not informative("Home equity line of credit")  # a bare label
    assert not informative("Q: How do I order more checks?")
    assert informative("Fees may change.")
    assert informative("Outgoing wire | $25", "Service | Fee")
    assert informative("A wire can be recalled for $35 but the return is not guaranteed and needs consent.")


def test_injected_lines_never_become_units(kb) -> None:
    selector = EvidenceSelector(kb.embedder)
    hits = kb.search("are international wire fees waived", k=8)
    for hit in hits:
        units, vectors = selector.units(hit.chunk, "kb")
        assert len(units) == len(vectors)
        assert all(REMOVED_MARKER not in u.text and "ignore all previous" not in u.text.lower() for u in units)


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("what's the charge to stop payment on a check i wrote", "$30"),
        ("how long is a preapproval letter good for?", "90 days"),
        ("is there a delivery charge if i get currency sent to my house", "$7.50"),
    ],
)
def test_the_answering_line_is_selected_within_budget(kb, question: str, fact: str) -> None:
    selector = EvidenceSelector(kb.embedder)
    hits = kb.search(question, k=8)
    passages = selector.select(selector.score(question, hits), budget_chars=600, max_passages=4)
    shown = "\n".join(p.text for p in passages)
    assert fact_present(fact, shown), shown
    assert sum(len(p.text) for p in passages) <= 600 + 100  # budget, plus repeated table headers
    chunk_ids = {h.chunk.id for h in hits}
    assert all(p.hit.chunk.id in chunk_ids for p in passages)  # citations map to retrieved chunks
    assert [p.sid for p in passages] == [f"S{i}" for i in range(1, len(passages) + 1)]
    assert passages[0].score == max(p.score for p in passages)


def test_expected_answer_types() -> None:
    def holds(question: str, line: str) -> bool:
        return any(p.search(line) for p in expected_answers(question))

    assert holds("how late is the main office open on fridays", "Fridays until 6:00 p.m.")
    assert not holds("how late is the main office open on fridays", "All branches are closed on Sundays.")
    assert holds("how much is a cashier's check", "Cashier's check | $10")
    assert holds("whats the rate on a 1 year cd", "12 months | 4.35%")
    assert holds("who do I call about a lost card", "Call 1-800-555-0199")
    assert expected_answers("can I open an account online") == []
    # A deadline is a time of day or a period before the event; notice is a period, not money;
    # statutes spell their periods in words. Opening hours stay clock times.
    stop = "by notifying the financial institution at any time up to three business days preceding the scheduled date"
    assert holds("how late can I tell the bank to stop an automatic payment", stop)
    notice = "shall be notified by mail at least 30 days before the change takes effect"
    assert holds("how much notice does the bank have to give before a change", notice)
    assert not holds("how much notice does the bank have to give before a change", "A cashier's check is $10.")
    assert holds("how much is a wire", "$25 per wire") and not holds("how much is a wire", notice)
    assert holds("how long do I have to dispute a charge", "within sixty days after having transmitted")
    assert holds("how long can the card company take", "two complete billing cycles of the creditor")
    assert holds("when can I use cash I deposit", "not later than the business day after the business day")
    assert not holds("how late is the main office open on fridays", "within 3 business days")
    assert holds("who do I call about a transfer abroad", "Call us at 877.337.8357")
    # "who" asks for a party, not a phone number, unless it asks whom to reach.
    assert expected_answers("who pays the fee for an incoming wire") == [p for p in expected_answers("the fee")]
    assert holds("who should I speak to about a complaint", "call 1-800-555-0142")
    assert holds("what is your phone number", "Call 1-800-555-0199") and holds("call me back", "1-800-555-0199")
    # A contact word as a noun or a noun's modifier asks for no number: a line about accepted
    # documents, a card's use abroad, or a transfer limit answers these.
    assert not holds("is a mobile phone contract enough to prove where I live", "Call 1-800-555-0199")
    assert not holds("i lost my phone, will my card still work abroad", "Call 1-800-555-0199")
    assert expected_answers("what is the most i can send with my phone per day") == expected_answers(
        "what is the most i can send per day")


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("how late is the main office open on fridays", "6:00 p.m."),
        ("whats the latest i can submit a wire online for it to go out today", "4:00 p.m."),
        ("whats the rate on a 1 year cd", "4.35%"),  # the table says "12 months"
        ("most foreign cash i can buy in one day?", "$5,000"),  # the policy says "Maximum"
    ],
)
def test_a_line_holding_the_asked_for_value_is_quoted(kb, question: str, fact: str) -> None:
    """Lines that share the question's words ("closed on Sundays", the international wire's
    2:00 p.m., the 18-month CD) used to outrank the one holding the value asked for."""
    from agent.pipeline.compose import quoted_lines

    selector = EvidenceSelector(kb.embedder)
    lines = selector.lines(selector.score(question, kb.search(question, k=8)), budget_chars=560, max_lines=3)
    quoted = " ".join(line.text for line in quoted_lines(lines))
    assert fact_present(fact, quoted), quoted


def test_selection_recall_on_the_eval_set_beats_whole_chunk_windows(kb) -> None:
    """Facts of the answerable eval questions present in what the model is shown: the selected
    lines (600 characters) must cover at least as many as the first 2,000 characters of the top
    four chunks, the previous way of filling the prompt."""
    selector = EvidenceSelector(kb.embedder)
    questions = [q for q in load_questions() if q["answerable"]][::3]
    selected = windows = 0
    for q in questions:
        hits = kb.search(q["question"], k=8)
        shown = "\n".join(p.text for p in selector.select(selector.score(q["question"], hits), budget_chars=600))
        window = "\n".join(h.chunk.text for h in hits[:4])[:2000]
        selected += all(fact_present(f, shown) for f in q["must_include"])
        windows += all(fact_present(f, window) for f in q["must_include"])
    assert selected >= windows
    assert selected / len(questions) >= 0.8


def _line(text: str, chunk_id: str, score: float):
    from agent.evidence import EvidenceLine
    from agent.prompt import SourcePassage
    from docteller.model import Chunk, SearchHit

    chunk = Chunk(id=chunk_id, doc_id="d", ordinal=0, text=text, page_start=1, page_end=1, title="Rates")
    return EvidenceLine(text, SourcePassage("S1", SearchHit(chunk=chunk, score=score), "kb", text=text, score=score))


@pytest.mark.parametrize(
    ("scores_and_chunks", "quoted"),
    [
        ([(1.0, "rates"), (0.7, "rates"), (0.65, "rates")], 1),  # a clear best line stands alone
        ([(1.0, "rates"), (0.9, "other"), (0.88, "faq")], 2),  # a third from another section is not quoted
        ([(1.0, "rates"), (0.9, "other"), (0.88, "rates")], 3),  # a third row of the same table is
        ([(1.0, "rates"), (0.9, "rates"), (0.8, "rates")], 2),  # ...when it scores within the margin
    ],
)
def test_quoted_lines_follow_the_margin_and_the_section(scores_and_chunks, quoted: int) -> None:
    from agent.pipeline.compose import quoted_lines

    lines = [_line(f"Term: {n} months; APY: 4.{n}%", chunk, score) for n, (score, chunk) in enumerate(scores_and_chunks, 1)]
    assert quoted_lines(lines) == lines[:quoted]
    assert quoted_lines([]) == []


def test_lines_keep_one_copy_of_an_answer_a_faq_sheet_repeats(corpus) -> None:
    """The shared corpus's FAQ sheet answers "my card is lost" once per card product, a word or two
    apart; the judged lines hold one copy and leave room for a different answer."""
    import csv

    from agent.evidence import EvidenceSelector, EvidenceUnit, ScoredUnit
    from docteller.model import Chunk, SearchHit

    with open(corpus / "kb/bankfaqs/BankFAQs.csv", encoding="utf-8") as fh:
        answers = [row["Answer"] for row in csv.DictReader(fh)]
    lost = [a for a in answers if a.startswith("In case your card gets lost or stolen, all you have to do is call")]
    short = sorted({a for a in lost if len(a) < 300})  # "… HDFC Bank PhoneBanking …" / "… Phone Banking …"
    longer = next(a for a in lost if len(a) > 400)  # the same start, then how to switch to a back-up card
    assert len(short) == 2
    scored = []
    for n, text in enumerate([short[0], short[1], longer]):
        chunk = Chunk(id=f"faq:{n}", doc_id="faq", ordinal=n, text=text, page_start=1, page_end=1, title="FAQ")
        scored.append(ScoredUnit(EvidenceUnit(text, 0, None), SearchHit(chunk=chunk, score=1.0), "kb", 1.0 - n / 10))
    lines = EvidenceSelector.lines(scored, budget_chars=2000, max_lines=3)
    assert [line.text for line in lines] == [short[0], longer]


def test_a_sentence_that_points_back_is_quoted_with_the_one_before(corpus) -> None:
    """A long FAQ answer is split into sentences; "It gets activated after 24 hours." means
    nothing alone, so it and the sentence it points back to are quoted together, whichever of
    the two scored best. A sentence naming its own subject ("This Agreement …") starts anew."""
    import csv

    with open(corpus / "kb/bankfaqs/BankFAQs.csv", encoding="utf-8") as fh:
        answer = next(row["Answer"] for row in csv.DictReader(fh)
                      if row["Question"].startswith("What is the procedure to follow if my Debit Card PIN is blocked"))
    units = split_units(f"Q: What if my PIN is blocked\nA: {answer}")
    blocked = next(u for u in units if u.text.startswith("Please note that if you enter an incorrect PIN"))
    again = next(u for u in units if u.text == "It gets activated after 24 hours.")
    assert blocked.whole == again.whole == f"{blocked.text} {again.text}"
    assert next(u for u in units if u.text.startswith("Kindly use your Debit")).whole is None

    text = ("Fees are listed in the schedule that we provide to you when you open an account with us. "
            "They may change with 30 days' notice, which we send to you by mail or by secure message. "
            + "This Agreement is governed by the laws of the state where your account is held by us. " * 4)
    units = split_units(text)
    assert units[0].whole == units[1].whole == f"{units[0].text} {units[1].text}"
    assert units[2].text.startswith("This Agreement") and units[2].whole is None
