"""Questions about the customer's own uploaded documents, answered by code from extracted data.

"When does my passport expire?", "what was my largest debit?", "does my statement reconcile?",
totals, counts, the biggest credit, the balance on a date: a language model is unreliable at
arithmetic and at copying long numbers, so these are computed here with `Decimal` from the
`ExtractionResult` fields and transactions, and cited as the uploaded document and page.
Anything this module does not recognise returns None and goes to retrieval + the model.

A statement answer's citation carries the boxes of the transaction rows (or balance lines) it
used, so the page preview outlines them. A value read with less confidence than the
`uncertain_below` setting is qualified where it is stated ("USD 950.00 (currency not certain:
USD was guessed from ...)"), never presented as fact.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from docteller.check_labels import CheckName, field_label
from docteller.model import BBox, Citation, ExtractionResult, Field, Transaction, UploadedDocument
from docteller.parsing.dates import find_date, month_in
from docteller.parsing.money import format_money
from docteller.redact import mask


@dataclass
class DocAnswer:
    text: str
    fields_used: list[str] = field(default_factory=list)
    # The upload's page(s) used, each with the boxes of the rows / lines used on it.
    citations: list[Citation] = field(default_factory=list)


_ID_TYPES = {"passport", "id", "visa"}
_MY = re.compile(r"\b(my|mine|i|i've|i'm|me)\b", re.IGNORECASE)
_ID_WORDS = re.compile(r"\b(passport|id|identity|licen[cs]e|visa|document)\b", re.IGNORECASE)
_STATEMENT_WORDS = re.compile(
    r"\b(statement|transactions?|debits?|credits?|withdrawals?|deposits?|spen[dt]|spending|paid|payments?|"
    r"purchases?|balance|reconcile\w*|income|received|charges?)\b",
    re.IGNORECASE,
)

# How a customer asks what the bank's rules are, as opposed to what their document says:
# "how long do I have to…", "can I…", "what happens if…", "who do I call…".
_POLICY_RE = re.compile(
    r"^\s*(?:(?:and|so|but|ok|okay)\s*,?\s*)?(?:how (?:do|can|would|should|long (?:do|does|will|would|have)|soon|"
    r"late|early|often|quickly)|can i|could i|may i|should i|must i|do i (?:have|need|get)|am i|will i|would i|"
    r"what (?:happens|should|do i do|can i do|if|is the (?:deadline|time limit|process|procedure))|who (?:do|should|can)|"
    r"where (?:do|can|should)|when (?:can|should|must|do) i|is there|are there|is it (?:possible|free)|"
    r"do you|does the bank|will you|can you)\b",
    re.IGNORECASE,
)
# The customer's own document named, or what they did ("what did I pay", "I spent").
_OWN_DOCUMENT_RE = re.compile(
    r"\b(?:my|this|the uploaded|the attached)\s+(?:\w+\s+)?(?:statement|passport|id|identity card|licen[cs]e|"
    r"document|receipt|form|bill|letter|upload|file|card)\b|\b(?:did|have) i\b|\bi (?:paid|spent|received|bought|got)\b",
    re.IGNORECASE,
)


# An obligation or a permission asked about, wherever it sits: "how many days do I have to tell
# the bank about an error on my statement", "what does the bank need to do if …".
# The subject is any one to three words: who is obliged is not a list this code can know.
_OBLIGATION_RE = re.compile(
    r"\b(?:do|does|will|would|must)\s+(?:[\w'-]+\s+){1,3}?(?:have|need|get)\s+to\b"
    r"|\b(?:am|are|is)\s+(?:[\w'-]+\s+){1,3}?(?:allowed|required|supposed)\s+to\b",
    re.IGNORECASE,
)


def is_policy_question(question: str) -> bool:
    """A question about the bank's rules or procedures ("how long do I have to report an error
    on my statement?", "how many days do I have to tell the bank about an error on my
    statement?"), even when it mentions the customer's own documents."""
    return bool(_POLICY_RE.match(question) or _OBLIGATION_RE.search(question))


def asks_about_upload(question: str) -> bool:
    """A question about what the customer's own document says ("what did I pay in rent?", "what
    name is on my ID?"), not about the bank's policies."""
    return bool(_OWN_DOCUMENT_RE.search(question)) and not is_policy_question(question)


def _threshold(uncertain_below: float | None) -> float:
    if uncertain_below is not None:
        return uncertain_below
    from docteller.settings import get_settings

    return get_settings().uncertain_below


def field_caveat(f: Field | None, below: float) -> str:
    """'' for a confident value, else why it may be wrong, for the answer to say so."""
    if f is None or not f.uncertain(below):
        return ""
    if f.name == "currency":
        how = f"was guessed from {f.raw}" if f.source == "inferred" and f.raw else f"was read with {f.confidence:.0%} confidence"
        return f"currency not certain: {f.value} {how}"
    return f"{field_label(f.name)} not certain: read with {f.confidence:.0%} confidence, please check it against your document"


@dataclass
class _Amounts:
    """Formats a statement's amounts; the first one carries the currency's caveat, if any."""

    currency: str | None
    caveat: str = ""

    def __call__(self, value: Decimal) -> str:
        text = format_money(value, self.currency)
        if self.caveat:
            text, self.caveat = f"{text} ({self.caveat})", ""
        return text


def _latest(uploads: Sequence[UploadedDocument], types: set[str]) -> UploadedDocument | None:
    for u in reversed(uploads):
        if u.extraction.doc_type in types:
            return u
    return None


def _cite(u: UploadedDocument, page: int | None, boxes: Sequence[BBox | None] = ()) -> Citation:
    return Citation(
        doc_id=u.doc_id, title=u.name, page=page, source=u.name, origin="upload", boxes=[b for b in boxes if b is not None]
    )


def _cite_field(u: UploadedDocument, *names: str) -> Citation:
    """The page of the first field, with the boxes of those of `names` printed on that page."""
    page = _field_page(u, names[0])
    fields = [u.extraction.fields.get(n) for n in names]
    return _cite(u, page, [f.bbox for f in fields if f is not None and (f.page or 1) == page])


def _cite_rows(u: UploadedDocument, rows: Sequence[Transaction]) -> list[Citation]:
    """One citation per page the rows are on, each outlining its rows."""
    pages = sorted({t.page or 1 for t in rows}) or [1]
    return [_cite(u, p, [t.bbox for t in rows if (t.page or 1) == p]) for p in pages]


def _field_page(u: UploadedDocument, name: str) -> int | None:
    f = u.extraction.fields.get(name)
    return f.page if f and f.page else 1


def _tx_date(t: Transaction) -> dt.date | None:
    try:
        return dt.date.fromisoformat(t.date) if t.date else None
    except ValueError:
        return None


_ASKS_OWN_EXPIRY = re.compile(
    r"\b(when|what date|which date|expiry date|expiration date|how long)\b"
    r"|\b(is|has|did|does)\s+my\b[^?.]*\b(expire[ds]?|valid|out of date)\b"
)


def answer_document_question(
    question: str, uploads: Sequence[UploadedDocument], *, today: dt.date | None = None, uncertain_below: float | None = None
) -> DocAnswer | None:
    """A computed answer, or None when the question isn't about the uploaded documents.

    `uncertain_below` (default: the `uncertain_below` setting) is the confidence under which a
    value is stated with a caveat."""
    low = question.lower()
    if not _MY.search(question) and "uploaded" not in low and "this statement" not in low:
        return None
    today = today or dt.date.today()
    below = _threshold(uncertain_below)

    if re.search(r"\b(expir\w*|valid until|still valid|out of date)\b", low) and (
        _ID_WORDS.search(question) or _latest(uploads, _ID_TYPES)
    ):
        doc = _latest(uploads, _ID_TYPES)
        if doc is None:
            # "When does my passport expire?" needs the document; "my passport expired last week,
            # can I still open an account?" states it and asks the policy: that is the KB's.
            if _ID_WORDS.search(question) and not re.search(r"\bcard\b", low) and _ASKS_OWN_EXPIRY.search(low):
                return DocAnswer("I don't have your ID document yet. Please upload your passport or ID card and ask again.")
            return None
        return _expiry_answer(doc, today, below)

    if _STATEMENT_WORDS.search(question):
        doc = _latest(uploads, {"statement"})
        if doc is None:
            # "What was my balance on my statement?" needs the statement; "How long do I have to
            # report an error on my statement?" asks the bank's policy: that is the KB's.
            if re.search(r"\bmy (bank )?statement\b", low) and not is_policy_question(question):
                return DocAnswer("I don't have your statement yet. Please upload it and ask again.")
            return None
        return _statement_answer(question, doc, below)

    ident = _latest(uploads, _ID_TYPES)
    return _identity_field_answer(low, ident, below) if ident is not None else None


def _identity_field_answer(low: str, ident: UploadedDocument, below: float) -> DocAnswer | None:
    for pattern, name, label in (
        (r"\b(date of birth|born|birthday|dob)\b", "date_of_birth", "date of birth"),
        (r"\b(surname|last name|family name)\b", "surname", "surname"),
        (r"\b(given names?|first name)\b", "given_names", "given names"),
        (r"\b(nationality)\b", "nationality", "nationality"),
        (r"\b(passport|document|id) (number|no)\b", "document_number", "document number"),
    ):
        if re.search(pattern, low) and ident.extraction.value(name):
            f = ident.extraction.fields[name]
            shown = mask(f.value) if f.sensitive else f.value
            caveat = field_caveat(f, below)
            return DocAnswer(
                f"Your {label} on {ident.name} is {shown}{f' ({caveat})' if caveat else ''} "
                f"[your document {ident.name}, p. {_field_page(ident, name)}].",
                [name],
                [_cite_field(ident, name)],
            )
    return None


def _expiry_answer(doc: UploadedDocument, today: dt.date, below: float) -> DocAnswer:
    expiry = doc.extraction.value("expiry_date")
    kind = {"passport": "passport", "id": "ID card", "visa": "visa"}.get(doc.extraction.doc_type, "document")
    page = _field_page(doc, "expiry_date")
    cite = f"[your document {doc.name}, p. {page}]"
    if not expiry:
        return DocAnswer(
            f"I couldn't read an expiry date on {doc.name}. You can correct the field, or I can connect you with a person.",
            [],
            [_cite(doc, page)],
        )
    citation = [_cite_field(doc, "expiry_date")]
    caveat = field_caveat(doc.extraction.fields.get("expiry_date"), below)
    note = f" ({caveat})" if caveat else ""
    try:
        date = dt.date.fromisoformat(expiry)
    except ValueError:
        return DocAnswer(f"Your {kind} shows the expiry date {expiry}{note} {cite}.", ["expiry_date"], citation)
    days = (date - today).days
    if days < 0:
        text = f"Your {kind} expired on {date.isoformat()}{note}, {-days} days ago {cite}. You'll need a valid ID for most requests."
    elif days == 0:
        text = f"Your {kind} expires today, {date.isoformat()}{note} {cite}."
    else:
        text = f"Your {kind} expires on {date.isoformat()}{note}, in {days} days {cite}."
    return DocAnswer(text, ["expiry_date"], citation)


def _row_note(t: Transaction, below: float) -> str:
    return f" (this row was read with {t.confidence:.0%} confidence, please check it)" if t.confidence < below else ""


_WANTS_DEBIT = re.compile(r"\b(debits?|withdrawals?|spen[dt]|spending|paid|payments?|purchases?|expenses?|charges?|outgoing)\b")
_WANTS_CREDIT = re.compile(r"\b(credits?|deposits?|income|received|incoming|paid in)\b")


@dataclass
class _StatementQuestion:
    """A question about a statement: which transactions it is about (a month named), and
    whether it asks about debits, credits or both."""

    doc: UploadedDocument
    low: str
    money: _Amounts
    below: float
    txs: list[Transaction]
    wants_debit: bool
    wants_credit: bool

    @classmethod
    def of(cls, question: str, doc: UploadedDocument, below: float) -> "_StatementQuestion":
        r = doc.extraction
        low = question.lower()
        txs = list(r.transactions)
        month = month_in(question)
        if month is not None:
            txs = [t for t in txs if (d := _tx_date(t)) is not None and d.month == month]
        money = _Amounts(r.value("currency"), field_caveat(r.fields.get("currency"), below))
        return cls(doc, low, money, below, txs, bool(_WANTS_DEBIT.search(low)), bool(_WANTS_CREDIT.search(low)))

    @property
    def cite_doc(self) -> str:
        return f"your document {self.doc.name}"

    @property
    def only_debits(self) -> bool:
        return self.wants_debit and not self.wants_credit

    @property
    def only_credits(self) -> bool:
        return self.wants_credit and not self.wants_debit

    def pick(self, signed: int) -> list[Transaction]:
        return [t for t in self.txs if t.amount * signed > 0]


def _statement_answer(question: str, doc: UploadedDocument, below: float) -> DocAnswer | None:
    q = _StatementQuestion.of(question, doc, below)
    low = q.low
    if re.search(r"\breconcil\w*|\badd up\b|\bbalances? (match|check)\b", low):
        return _reconcile_answer(doc, q.money, below)
    asks_either = q.wants_debit or q.wants_credit
    if re.search(r"\b(largest|biggest|highest|maximum|max|top|smallest|lowest|minimum)\b", low) and asks_either:
        return _extreme_answer(q)
    if re.search(r"\b(how many|number of|count)\b", low):
        return _count_answer(q)
    if re.search(r"\b(total|sum|altogether|in total|how much)\b", low) and asks_either:
        return _total_answer(q)
    if "balance" in low:
        return _balance_answer(question, doc, q.money, below)
    return None


def _extreme_answer(q: _StatementQuestion) -> DocAnswer:
    """The largest (or smallest) debit or credit."""
    kind = "debit" if q.only_debits else "credit"
    pool = q.pick(-1 if kind == "debit" else 1)
    if not pool:
        return DocAnswer(f"I found no {kind}s on {q.doc.name}.", ["transactions"], [_cite(q.doc, 1)])
    smallest = bool(re.search(r"\b(smallest|lowest|minimum)\b", q.low))
    t = (min if smallest else max)(pool, key=lambda t: abs(t.amount))
    word = "smallest" if smallest else "largest"
    return DocAnswer(
        f"Your {word} {kind} was {q.money(abs(t.amount))} on {t.date or 'an unknown date'} "
        f"— {t.description}{_row_note(t, q.below)} [{q.cite_doc}, p. {t.page or 1}].",
        ["transactions"],
        _cite_rows(q.doc, [t]),
    )


def _count_answer(q: _StatementQuestion) -> DocAnswer:
    """How many transactions (debits, credits) the statement lists."""
    pool = q.pick(-1) if q.only_debits else q.pick(1) if q.only_credits else q.txs
    kind = "debits" if q.only_debits else "credits" if q.only_credits else "transactions"
    citations = _cite_rows(q.doc, pool)
    return DocAnswer(f"Your statement lists {len(pool)} {kind} [{q.cite_doc}, p. {citations[0].page}].", ["transactions"], citations)


def _total_answer(q: _StatementQuestion) -> DocAnswer:
    """The total of the debits (or credits)."""
    signed = -1 if q.only_debits else 1
    pool = q.pick(signed)
    total = sum((abs(t.amount) for t in pool), Decimal(0))
    kind = "debits" if signed < 0 else "credits"
    citations = _cite_rows(q.doc, pool)
    return DocAnswer(
        f"Your total {kind} come to {q.money(total)} across {len(pool)} transactions "
        f"[{q.cite_doc}, p. {citations[0].page}].",
        ["transactions"],
        citations,
    )


def _balance_answer(question: str, doc: UploadedDocument, money: _Amounts, below: float) -> DocAnswer | None:
    low = question.lower()
    r = doc.extraction
    cite_doc = f"your document {doc.name}"
    year_hint = next((d.year for t in r.transactions if (d := _tx_date(t))), None)
    on = find_date(question, year_hint)
    if on is not None:
        dated = [t for t in r.transactions if (d := _tx_date(t)) and d <= on and t.balance is not None]
        if dated:
            t = dated[-1]
            return DocAnswer(
                f"Your balance on {on.isoformat()} was {money(t.balance)} "
                f"(after {t.description} on {t.date}){_row_note(t, below)} [{cite_doc}, p. {t.page or 1}].",
                ["transactions"],
                _cite_rows(doc, [t]),
            )
        opening = r.amount("opening_balance")
        if opening is not None:
            return DocAnswer(
                f"No transactions on or before {on.isoformat()}; the opening balance was "
                f"{money(opening)}{_field_note(r, 'opening_balance', below)} [{cite_doc}, p. {_field_page(doc, 'opening_balance')}].",
                ["opening_balance"],
                [_cite_field(doc, "opening_balance")],
            )

    def stated(name: str, label: str) -> DocAnswer | None:
        value = r.amount(name)
        if value is None:
            return None
        return DocAnswer(
            f"Your {label} balance was {money(value)}{_field_note(r, name, below)} [{cite_doc}, p. {_field_page(doc, name)}].",
            [name],
            [_cite_field(doc, name)],
        )

    for name, label in (("opening_balance", "opening"), ("closing_balance", "closing")):
        if label in low or (name == "closing_balance" and re.search(r"\b(current|final|end)\b", low)):
            answer = stated(name, label)
            if answer is not None:
                return answer
    return stated("closing_balance", "closing")  # a balance question that names none: the closing one


def _field_note(r: ExtractionResult, name: str, below: float) -> str:
    caveat = field_caveat(r.fields.get(name), below)
    return f" ({caveat})" if caveat else ""


def _reconcile_answer(doc: UploadedDocument, money: _Amounts, below: float) -> DocAnswer:
    r = doc.extraction
    opening = r.amount("opening_balance")
    closing = r.amount("closing_balance")
    amounts = [t.amount for t in r.transactions]
    cite = f"[your document {doc.name}, p. {_field_page(doc, 'closing_balance')}]"
    citation = [_cite_field(doc, "closing_balance", "opening_balance")]
    if opening is None or closing is None:
        check = r.checks.get(CheckName.balance_reconciles)
        if check is not None and check.ok is not None:
            verdict = "reconciles" if check.ok else "does not reconcile"
            return DocAnswer(f"Your statement {verdict}: {check.detail} {cite}.", [CheckName.balance_reconciles.value], [_cite(doc, 1)])
        reason = check.detail if check is not None else "its opening or closing balance could not be read"
        return DocAnswer(f"I can't check {doc.name}: {reason}.", [], [_cite(doc, 1)])
    net = sum(amounts, Decimal(0))
    expected = opening + net
    used = ["opening_balance", "closing_balance", "transactions"]
    notes = "".join(_field_note(r, n, below) for n in ("opening_balance", "closing_balance"))
    if expected == closing:
        text = (
            f"Yes, your statement reconciles: opening balance {money(opening)} plus "
            f"{len(amounts)} transactions netting {money(net)} gives the closing balance "
            f"{money(closing)}{notes} {cite}."
        )
    else:
        text = (
            f"No, your statement does not reconcile: opening balance {money(opening)} plus "
            f"transactions netting {money(net)} gives {money(expected)}, but the "
            f"closing balance shows {money(closing)} (a difference of "
            f"{money(closing - expected)}){notes} {cite}."
        )
    return DocAnswer(text, used, citation)
