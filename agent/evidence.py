"""Evidence selection: the few sentences and table rows of the retrieved chunks that answer the question.

A retrieved chunk is a section of a policy; the answer is usually one sentence or one table row
of it. The model is shown only the best-scoring units (sentences, list items, table rows with
their header) of the top chunks, within a character budget, because
- prompt processing dominates time to first token on a CPU (≈ 100 prompt tokens/s on 2 cores), and
- a small model answers the neighbouring fact when it is shown whole sections.

Each unit is scored by the cosine similarity of the question to the unit (embedded with its
heading path for context), plus its share of the question's terms (weighted by how rare each is
among the candidate units; a table row's column names count), plus its chunk's similarity, plus
a bonus when it holds the kind of value asked for (a time for "how late", an amount for "how much").
KB units are embedded when their document is indexed and stored by the index
(`retrieval.units`); unit vectors are also cached per chunk, so only the question is embedded.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from agent.prompt import REMOVED_MARKER, SourcePassage, neutralise, query_terms
from docteller.model import Chunk, SearchHit
from docteller.protocols import Embedder, KnowledgeBase
from docteller.redact import redact_text
from retrieval.units import units_digest

log = logging.getLogger(__name__)

# Weights of a unit's score: its own cosine similarity to the question, plus these times its
# weighted share of the question's terms and its chunk's cosine similarity (tuned on the eval
# set: how often the best line, or the best two, hold the answer's facts).
LEXICAL_WEIGHT = 0.3
CHUNK_WEIGHT = 0.3
# A unit holding the kind of value the question asks for (a time for "how late", an amount for
# "how much") gets this much more. Tuned like the weights above: with it the best line held the
# answer's facts for 74 answerable eval questions instead of 70, the quoted lines for 93 instead of 90.
ANSWER_TYPE_WEIGHT = 0.06

# The kinds of value a line can state. A period counts whether written in digits or words
# ("45 days", "ten business days", "two complete billing cycles"), and so does a day named
# relative to another ("the following banking day", "the business day before").
_NUMBER_WORD = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
                r"sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
                r"hundred)(?:-(?:one|two|three|four|five|six|seven|eight|nine))?")
_QUANTITY = rf"(?:\d[\d,.]*|{_NUMBER_WORD}(?:\s+\(\d+\))?)"
_UNIT_OF_TIME = r"(?:minutes?|hours?|days?|weeks?|months?|years?|billing cycles?|cycles?)"
_CLOCK = r"\d{1,2}(?::\d{2})?\s*(?:a\.m\.|p\.m\.|am\b|pm\b)|\bnoon\b|\bmidnight\b"
_PERIOD = (
    rf"\b{_QUANTITY}[\s-]+(?:[a-z]+[\s-]+){{0,2}}?{_UNIT_OF_TIME}\b"  # "45 days", "ten business days", "two complete billing cycles"
    r"|\b(?:next|same|following|prior|preceding|previous)\s+(?:business\s+|banking\s+|calendar\s+|working\s+)?day\b"
    r"|\bbusiness day (?:after|before|following|preceding)\b"
    r"|\b(?:daily|weekly|monthly|quarterly|annually|yearly|immediately|promptly|within minutes)\b"
)
_AMOUNT = (r"[$€£]\s?\d|\b(?:Rs|INR|USD)\.?\s?\d|\d\s?%|\bfree\b|\bno\s+(?:\w+\s+)?(?:fees?|charges?)\b"
           r"|\d\s*(?:lakhs?|lacs?|crores?)\b")
_PHONE_NUMBER = r"\(?\d{3}\)?[-.\s]\d{3}[-.\s]\d{4}\b|\b1-?8[06]0-?\d{1,3}-?\d{3}-?\d{3,4}\b|\b\d{3,4}-\d{6,8}\b"
PHONE_NUMBER_RE = re.compile(_PHONE_NUMBER)
_PHONE = _PHONE_NUMBER + r"|\bshort ?code\b|\b\d{5,6}\b"  # what answers "what number do I text": a short code too
_COUNT = rf"\d|\b{_NUMBER_WORD}\b"

# A question's words that ask for time, not money, after "how much" ("how much notice").
_TIME_NOUNS = r"(?:time|notice|warning|advance|lead time|days?|weeks?|months?|years?|hours?)"

# A way to reach someone asked for: a contact verb read as a verb (after a subject, a modal or
# auxiliary, "to" or "please", or opening the request: "who do I call", "how can I reach you",
# "call me"), or a contact noun's number or details. The same words as a noun or a noun's
# modifier ("a mobile phone contract", "send with my phone", "a text message") ask for none.
_CONTACT_VERB = r"(?:call|phone|telephone|contact|text|ring|reach|(?:talk|speak) (?:to|with))"
_ASKS_TO_CONTACT = (
    r"(?:^\s*(?:please\s+)?|\b(?:can|could|should|shall|do|does|did|will|would|must|may|might|to|please|who|whom|"
    r"where|i|we|you)\s+(?:(?:i|we|you|also|still|just|first|then|directly)\s+)?)" + _CONTACT_VERB + r"\b"
    r"|\b(?:phone|telephone|contact|fax) (?:number|details|info(?:rmation)?)\b"
)

# (what the question asks, what a unit that answers it holds): the expected answer type. The
# table is the grammar of English wh-questions and their answer types (a time of day, a period,
# an amount, a rate, a phone number, a count), not a list of any KB's words.
_ANSWER_TYPES = [
    # A time of day: opening hours, cut-offs.
    (r"\b(?:what time|hours|open (?:on|until|at|late)|close[sd]? (?:on|at|early)|cut-?off)\b", _CLOCK),
    # A deadline: a time of day, or a period before or after an event ("up to three business days
    # preceding the scheduled date"), or a day named relative to it (`expected_answers`); a line
    # holding a time of day is the likelier answer (`preferred_answers`).
    (r"\b(?:by when|until when|how late|how early|latest|earliest|deadline|how far (?:ahead|in advance))\b"
     r"(?!.*\b(?:open|close[sd]?)\b)", rf"{_CLOCK}|{_PERIOD}", _CLOCK),
    # A period: how long, how soon, how much notice; when something happens or is available.
    (rf"\b(?:how long|how soon|how quickly|how fast|how often|how many {_UNIT_OF_TIME}|how much {_TIME_NOUNS}|"
     r"notice|when (?:can|will|do|does|must|should|is|are))\b", _PERIOD),
    # An amount of money ("how much notice" asks for a period instead).
    (rf"\b(?:how much(?!\s+(?:\w+\s+)?{_TIME_NOUNS}\b)|fees?|costs?|charges?|price|penalty)\b", _AMOUNT),
    (r"\b(?:rates?|apy|apr|interest)\b", r"\d\s?%"),
    # A phone number: asked how to reach someone ("who pays", "who is eligible" ask for a party).
    (_ASKS_TO_CONTACT, _PHONE),
    # A count or a bound: any figure, in digits or words.
    (r"\b(?:max(?:imum)?|limits?|most|min(?:imum)?|least|how many|how big|how old|age)\b", _COUNT),
    # A way to tell or ask the bank something ("how do I report a lost card", "how can I dispute
    # a charge") is answered likeliest by a line naming a channel: a phone number, an app or
    # website menu path ("Cards > Lock card"), an instruction to call, visit, write or sign in.
    # It ranks lines and picks the lead, but a line without one may still answer: not required.
    (r"\bhow (?:do|can|should|would|could) (?:i|we)\s+(?:report|notify|tell|inform|reach|contact|apply|dispute|"
     r"request|order|cancel|close)\b",
     rf"{_PHONE_NUMBER}|\w\s+>\s+\w|\b(?:call|visit|write to|sign in|log in|log on|go to)\b", None, False),
]


class AnswerType(NamedTuple):
    asks: re.Pattern[str]  # the question asks for this kind of value
    answers: re.Pattern[str]  # what answers it
    likeliest: re.Pattern[str]  # what answers it likeliest (a line holding it is ranked up)
    required: bool  # a line must hold `answers` to answer the question (the verifier's answer type)


def _answer_type(asks: str, answers: str, likeliest: str | None = None, required: bool = True) -> AnswerType:
    return AnswerType(re.compile(asks, re.IGNORECASE), re.compile(answers, re.IGNORECASE),
                      re.compile(likeliest or answers, re.IGNORECASE), required)


ANSWER_TYPES = [_answer_type(*entry) for entry in _ANSWER_TYPES]


def required_answers(question: str) -> list[re.Pattern[str]]:
    """Patterns of the values that answer the question, one of which a line must hold to answer it
    ("how late …" → a clock time or a period; "how much notice …" → a period)."""
    return [t.answers for t in ANSWER_TYPES if t.required and t.asks.search(question)]


def expected_answers(question: str) -> list[re.Pattern[str]]:
    """What answers the question: `required_answers`, and a channel when it asks for a way."""
    return [t.answers for t in ANSWER_TYPES if t.asks.search(question)]


def preferred_answers(question: str) -> list[re.Pattern[str]]:
    """Patterns of the values that answer the question likeliest ("how late …" → a clock time;
    a way to tell the bank → a channel): the ones a line is ranked up for."""
    return [t.likeliest for t in ANSWER_TYPES if t.asks.search(question)]


SHORT_LINE_CHARS = 160
# An FAQ answer was written to answer its question whole: quoted whole up to this length.
FAQ_ANSWER_CHARS = 600
# A paragraph, or a list with its lead-in, up to this length is quoted whole in an answer (the
# sentence or item that scored best is only where the customer's answer starts: "Call our 24/7
# Card Services line at …" sits next to "You can also lock your card in the app").
WHOLE_UNIT_CHARS = 420
LEAD_IN_CHARS = 400
# An untagged heading (OCR'd and plain pages have no heading markup): a few capitalised words
# with no closing punctuation.
_CAPTION_RE = re.compile(r"^(?:\d{1,2}\.\s+)?[A-Z][^.:;,!?|]{2,50}$")
_LABEL_VALUE_RE = re.compile(r"^[A-Z][A-Za-z ]{1,30}:\s+\S")
# An enumerated item of a list, statute or agreement: "(1) $50; or", "(a) …", "2. …", "iv) …".
_ENUMERATED_RE = re.compile(r"^\(?(?:\d{1,3}|[a-zA-Z]|[ivxlIVXL]{1,5})[.)]\s+\S")
# A sentence that introduces what follows instead of ending: "… shall not exceed the lesser of",
# "… in the following manner:".
_OPEN_ENDED_RE = re.compile(r"[^.!?;)\]\"”]$")
_ITEM_END_RE = re.compile(r"[;,]\s*(?:or|and)$")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"“])")
# A sentence opening with a pronoun that points back ("It gets activated after 24 hours.", "This
# fee is waived …") says nothing without the sentence before it.
_POINTS_BACK_RE = re.compile(r"^(?:(?:It|They)\b|(?:This|That|These|Those|Such)\s+[a-z])")
# A full stop after these doesn't end a sentence ("4:00 p.m. ET", "U.S. Treasury", "e.g. Zelle",
# "Martin Luther King Jr. Day").
# Nor does the full stop of a numbered heading ("1. Monthly maintenance fees").
_ABBREVIATION_RE = re.compile(
    r"(?:\b(?:[a-zA-Z]\.){2,}|\b(?:Mr|Mrs|Ms|Dr|Jr|Sr|St|No|Inc|Ltd|Co|Corp|vs|approx|Dept)\.|^(?:\d{1,3}|[A-Za-z])\.)$"
)


# A sentence too long to lead an answer (a statute's "In addition, reimbursement need not be made
# … within two business days …, but the consumer's liability … may not exceed a total of $500, or
# …, whichever is less.") is cut into its clauses at a semicolon or at ", but" (`clauses`): each
# has its own subject and verb, and the answer leads with the one that states the value asked for.
# Evidence units stay whole sentences: scored as clauses, the sentence's condition ("two business
# days") and its limit ("$500") no longer matched the question together (dev, shared corpus KB).
_CLAUSE_SPLIT_RE = re.compile(r"(?<=;)\s+|,\s+(?=but\s)")
MIN_CLAUSE_CHARS = 40  # a shorter piece stays with the clause before it


def clauses(sentence: str) -> list[str]:
    """A sentence longer than `WHOLE_UNIT_CHARS` (the longest paragraph quoted whole), cut at its
    top-level clause boundaries (never inside parentheses), each clause verbatim; a sentence that
    short, or with no boundary, whole."""
    if len(sentence) <= WHOLE_UNIT_CHARS:
        return [sentence]
    pieces: list[str] = []
    start = 0
    for match in _CLAUSE_SPLIT_RE.finditer(sentence):
        before = sentence[:match.start()]
        if before.count("(") != before.count(")"):
            continue  # inside a parenthesis: "(or in extenuating circumstances …, within …)"
        pieces.append(sentence[start:match.start()] + ("," if match.group().startswith(",") else ""))
        start = match.end()
    pieces.append(sentence[start:])
    joined: list[str] = []
    for piece in (p.strip() for p in pieces):
        if joined and (len(piece) < MIN_CLAUSE_CHARS or len(joined[-1]) < MIN_CLAUSE_CHARS):
            joined[-1] = f"{joined[-1]} {piece}"
        elif piece:
            joined.append(piece)
    return joined or [sentence]


# No sentence or heading ends on these: a line that does was wrapped ("… Parkway. The" /
# "Riverside night deposit box …", as OCR reads a scanned notice line by line).
_CONTINUES_RE = re.compile(r"\b(?:the|a|an|and|or|of|to|in|on|at|for|with|by|from|our|your|their|its)$", re.IGNORECASE)


def _rejoin_wrapped_lines(lines: Sequence[str]) -> list[str]:
    out: list[str] = []
    for raw in lines:
        line = raw.strip()
        if (
            out and line and "|" not in line and "|" not in out[-1] and _CONTINUES_RE.search(out[-1])
            and not _ENUMERATED_RE.match(line)  # "… the lesser of" / "(1) $50; or": a list, not a wrap
            and not line.startswith(("Q:", "A:"))  # an FAQ question ending "… avail of" / its answer
        ):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def _referring_runs(sentences: Sequence[str]) -> list[list[str]]:
    """`sentences` in runs: a sentence that points back (`_POINTS_BACK_RE`) joins the run of the
    sentence before it. A run is quoted whole, so the pointing sentence keeps what it points to."""
    runs: list[list[str]] = []
    for sentence in sentences:
        if runs and _POINTS_BACK_RE.match(sentence):
            runs[-1].append(sentence)
        else:
            runs.append([sentence])
    return runs


def referring_run(sentence: str, text: str | None) -> str:
    """`sentence` with the sentences of `text` it points back to or that point back to it (its
    run, `_referring_runs`); `sentence` alone when `text` doesn't hold it as a sentence."""
    for run in _referring_runs(_sentences(text or "")):
        if sentence in run:
            return " ".join(run)
    return sentence


def _is_field(line: str) -> bool:
    """A short "Label: value" line that isn't a sentence ("Closed until: March 27, 2026")."""
    return len(line) <= 60 and bool(_LABEL_VALUE_RE.match(line)) and ". " not in line


# A numbered list run into one line ("… is open to: 1. Employed people … 2. Self-employed people
# …"): its numbers, 1, 2, 3 in turn, end no sentence.
_INLINE_LIST_RE = re.compile(r"(?:^|[\s:;])1\.\s+\S.*\s2\.\s+\S")
_INLINE_NUMBER_RE = re.compile(r"(?:^|\s)(\d{1,2})\.$")


def _sentences(line: str) -> list[str]:
    sentences: list[str] = []
    next_item = 1 if _INLINE_LIST_RE.search(line) else 0
    for piece in _SENTENCE_SPLIT_RE.split(line):
        number = _INLINE_NUMBER_RE.search(sentences[-1]) if sentences and next_item else None
        if number and int(number.group(1)) == next_item:
            next_item += 1
            sentences[-1] = f"{sentences[-1]} {piece}"
        elif sentences and _ABBREVIATION_RE.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return [s.strip() for s in sentences if s.strip()]


@dataclass(frozen=True)
class EvidenceUnit:
    text: str
    position: int  # order within its chunk
    table_header: str | None  # the header row of the table this row belongs to
    section: str | None = None  # the heading of the section holding it (quoted with table rows)
    # The FAQ question this unit answers: embedded and scored with the unit, never quoted as an answer.
    context: str | None = None
    # The paragraph, or the list with its lead-in, that this sentence or item belongs to, when
    # short enough to quote whole (`WHOLE_UNIT_CHARS`); None when the unit is already whole.
    whole: str | None = None


@dataclass
class ScoredUnit:
    unit: EvidenceUnit
    hit: SearchHit
    origin: str
    score: float


def split_units(text: str, headings: Sequence[str] = ()) -> list[EvidenceUnit]:
    """Sentences of prose lines, and table rows (`a | b | c`) each carrying their table's header,
    each unit carrying the heading of its section: the last of `headings` (the chunk's heading
    path) or caption-like line seen above it, or the path's last one when the chunk starts
    inside a section. FAQ answers carry their question (`context`); list items their lead-in;
    sentences of a short paragraph and items of a short list the whole they belong to (`whole`)."""
    return _UnitSplitter(headings).split(text)


class _UnitSplitter:
    """The state `split_units` keeps from line to line (section, table header, lead-in, FAQ question)."""

    def __init__(self, headings: Sequence[str]) -> None:
        self.units: list[EvidenceUnit] = []
        self.header: str | None = None
        self.by_name = {h.strip().lower(): h.strip() for h in headings if h and h.strip()}
        self.section = next((h.strip() for h in reversed(headings) if h and h.strip()), None)
        self.lead_in: str | None = None  # a sentence that the next lines complete ("… as follows:")
        self.items: list[int] = []  # units completing the current lead-in
        self.question: str | None = None  # the FAQ question the following answer lines answer
        self.whole_lines: set[str] = set()  # units that are a whole line, not a sentence of a paragraph

    def split(self, text: str) -> list[EvidenceUnit]:
        lines = _rejoin_wrapped_lines(text.splitlines())
        for n, line in enumerate(lines):
            following = lines[n + 1] if n + 1 < len(lines) else ""
            self.line(line, following)
        self.end_list()
        return self.units

    def add(self, text: str, *, table_header: str | None = None, section: str | None = None,
            whole: str | None = None) -> None:
        self.units.append(EvidenceUnit(text, len(self.units), table_header, section, self.question, whole))

    def line(self, line: str, following: str) -> None:
        if not line or line == REMOVED_MARKER:
            self.header = None if not line else self.header
            return
        if line.lower().rstrip(":") in self.by_name:
            # One of the chunk's headings: it names the section of what follows, and is neither
            # evidence nor the lead-in of a list ("7. General Terms" above "A. Fees" is not
            # a sentence that its subsection's title completes).
            self.end_list()
            self.header = None
            self.section = self.by_name[line.lower().rstrip(":")]
            return
        if line.startswith("Q:"):
            # An FAQ's question matches a customer's question best and answers nothing: it is
            # the context its answer is embedded and scored with, never a unit of its own.
            self.end_list()
            self.question = line[2:].strip() or None
            return
        if "|" in line:
            self.end_list()
            if self.header is None:
                self.header = line  # the first row of a table block is its header (chunking repeats it)
                self.add(line)
            else:
                self.add(line, table_header=self.header, section=self.section)
            return
        self.header = None
        if self.lead_in is not None and (line[0].islower() or _ENUMERATED_RE.match(line)):
            self.item(line, following)
            return
        if _CAPTION_RE.match(line):
            self.section = line  # "Safe deposit boxes" above a table in an OCR'd notice: its caption
        self.end_list()
        if self.record(line):
            return
        answer = line.startswith("A:")
        if answer:
            line = line[2:].strip()
        # A short line (a list item, a label and its value) is one fact: "Minimum order: $100.
        # Maximum: $5,000 per day." split in two leaves "Maximum: $5,000 per day" a maximum of what?
        # An FAQ answer ("Yes. Notary services are free for customers … Non-customers pay $10 per
        # signature.") was written to answer its question whole: split, the fee is whose?
        short = FAQ_ANSWER_CHARS if answer else SHORT_LINE_CHARS
        sentences = [line] if len(line) <= short else _sentences(line)
        if len(sentences) > 1 and len(line) <= WHOLE_UNIT_CHARS:
            for sentence in sentences:
                self.add(sentence, section=self.section, whole=line)
        else:  # a long paragraph: a sentence is quoted with those it points back to or that point to it
            for run in _referring_runs(sentences):
                whole = " ".join(run)
                for sentence in run:
                    self.add(sentence, section=self.section,
                             whole=whole if len(run) > 1 and len(whole) <= WHOLE_UNIT_CHARS else None)
        last = sentences[-1]
        opens = last.endswith(":") or (_OPEN_ENDED_RE.search(last) and _ENUMERATED_RE.match(following))
        self.lead_in = last if opens and len(last) <= LEAD_IN_CHARS else None
        if len(sentences) == 1:
            self.whole_lines.add(self.units[-1].text)

    def item(self, line: str, following: str) -> None:
        """A list item finishing its lead-in ("You can close an account:" / "by phone at
        1-800-555-0142;", or "… shall not exceed the lesser of" / "(1) $50; or") is quoted with
        it: alone it says "by phone" to do what, "$50" of what?"""
        lead_in = self.lead_in or ""
        if not self.items and self.units and self.units[-1].text == lead_in:
            self.units.pop()  # the lead-in alone answers nothing once its items carry it
        sentences = [line] if len(line) <= SHORT_LINE_CHARS else _sentences(line)
        self.items.append(len(self.units))
        self.add(f"{lead_in} {sentences[0]}", section=self.section)
        for sentence in sentences[1:]:
            self.add(sentence, section=self.section)
        if (
            len(sentences) == 1 and _OPEN_ENDED_RE.search(line) and _ENUMERATED_RE.match(following)
            and not _ITEM_END_RE.search(line)  # "(1) $50; or" ends its item; "(A) a check which" leads on
        ):
            # "(A) a check which" / "(i) is drawn on the Treasury": a nested list's lead-in.
            nested = self.units[-1].text
            if len(nested) <= LEAD_IN_CHARS:
                self.end_list()
                self.lead_in = nested

    def end_list(self) -> None:
        """Close the current list: its items learn the whole list they belong to, when short."""
        if len(self.items) > 1 and self.lead_in:
            rest = [self.units[i].text[len(self.lead_in) + 1:] for i in self.items]
            whole = f"{self.lead_in} {' '.join(rest)}"
            if len(whole) <= WHOLE_UNIT_CHARS:
                for i in self.items:
                    self.units[i] = replace(self.units[i], whole=whole)
        self.items = []
        self.lead_in = None

    def record(self, line: str) -> bool:
        """A run of "Label: value" lines is one record ("Closed from: March 2; Closed until:
        March 27; Reopening: March 30"), led by the sentence just above it when there is one
        ("The Riverside Branch will be closed for renovation."): each alone is a date of what?"""
        units, section = self.units, self.section
        if not (
            _is_field(line) and units and units[-1].text in self.whole_lines
            and units[-1].table_header is None and units[-1].section == section
            and _is_field(units[-1].text.split("; ")[-1])
        ):
            return False
        record = units.pop()
        merged = f"{record.text}; {line}"
        if "; " not in record.text and units and units[-1].table_header is None and units[-1].section == section \
                and units[-1].text.endswith(".") and units[-1].text in self.whole_lines:
            merged = f"{units.pop().text} {merged}"
        self.add(merged, section=section)
        self.whole_lines.add(merged)
        return True


@dataclass
class EvidenceLine:
    """A quotable line (sentence, or table row with its column names) and where it comes from."""

    text: str
    passage: SourcePassage
    unit: EvidenceUnit | None = None  # the unit quoted (its whole paragraph or list, its FAQ question)

    @property
    def whole(self) -> str:
        """What to quote to the customer: the paragraph or the list with its lead-in this line
        belongs to when short, else the line; a table row with its column names; never the FAQ
        question."""
        if self.unit is None:
            return self.text
        if self.unit.table_header:
            return quotable(replace(self.unit, section=None))
        return self.unit.whole or self.unit.text

    @property
    def section(self) -> str | None:
        return section_of(self.unit) if self.unit is not None else None


_SECTION_NUMBER_RE = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[A-Z]\.)\s+")


def quotable(unit: EvidenceUnit) -> str:
    """A unit as it reads quoted to a customer: a table row with its section and column names
    ("Mobile check deposit — Limit: Per day; Amount: $5,000"), a sentence as is. Without the
    section a row is a fragment: a per-day limit of what?"""
    if not unit.table_header:
        return unit.text
    # Merged header cells come out empty ("Service |  |  | Fee"): match the non-empty ones.
    names = [c.strip() for c in unit.table_header.split("|") if c.strip()]
    cells = [c.strip() for c in unit.text.split("|") if c.strip()]
    if len(names) != len(cells):
        return unit.text
    row = "; ".join(f"{name}: {cell}" for name, cell in zip(names, cells))
    section = section_of(unit)
    return f"{section} — {row}" if section else row


def quote(unit: EvidenceUnit) -> str:
    """A unit as quoted to the customer and shown to the judge: `quotable`, and a sentence too
    after its section ("CedarPay person-to-person payments — The limit is $2,500 per day").

    Sentences are scored without their section (`quotable`): with it, every sentence of a section
    shares its terms and the ranking got worse (the quoted lines held the answer's facts for 86
    answerable eval questions instead of 93). Shown with it, the judge's P(yes) separated
    answerable from unanswerable questions better (AUC 0.874 -> 0.900): "The limit is $2,500 per
    day" is the limit of what?"""
    text = quotable(unit)
    if unit.table_header:
        return text
    text = text.removeprefix("A: ")  # an FAQ answer's marker means nothing in a quote
    section = section_of(unit)
    return f"{section} — {text}" if section else text


def scored_text(unit: EvidenceUnit) -> str:
    """What a unit is embedded and scored as: `quotable`, after the FAQ question it answers."""
    text = quotable(unit)
    return f"{unit.context} — {text}" if unit.context else text


def plain_heading(heading: str) -> str:
    """A heading without its number ("5. Card and ATM fees" -> "Card and ATM fees"), an all-caps
    one in sentence case."""
    section = _SECTION_NUMBER_RE.sub("", heading).strip()
    return section[0] + section[1:].lower() if section.isupper() else section


def section_of(unit: EvidenceUnit) -> str | None:
    """The unit's section heading without its number (an all-caps one in sentence case), unless
    the unit already names it."""
    section = plain_heading(unit.section or "")
    if section and not set(query_terms(section)) <= set(query_terms(unit.text)):
        return section
    return None


# Running page headers/footers ("… Schedule of Fees — Page 1 of 3") and a FAQ answer's bare
# "A: Yes." say nothing on their own.
_NOT_EVIDENCE_RE = re.compile(r"\bPage \d+ of \d+\b|^(?:A:\s*)?(?:yes|no)\b[.!]?$", re.IGNORECASE)


def is_informative(unit: EvidenceUnit, headings: set[str]) -> bool:
    """Headings ("Cancelling or recalling a wire"), bare labels and FAQ questions match a question
    well but answer nothing; they are never offered as evidence lines."""
    text = unit.text.strip()
    if text.lower().rstrip(":") in headings or text.endswith("?") or _NOT_EVIDENCE_RE.search(text):
        return False
    if unit.table_header is None and "|" in text:
        return True  # a table's header row: kept, it names the columns
    words = text.split()
    return len(words) > 5 or any(ch.isdigit() for ch in text) or text[-1:] in ".;!)"


# Two lines whose word sets overlap this much (Jaccard) say the same thing: a FAQ sheet repeats one
# answer for each of its products with a word changed, and three copies of it would be all the
# judge and the customer see. Only the best-scoring copy is kept.
NEAR_DUPLICATE = 0.8
_WORD_RE = re.compile(r"[a-z0-9]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD_RE.findall(text.lower()))


def _resemblance(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class EvidenceSelector:
    """Picks the units of the retrieved chunks that best answer a question, within a budget."""

    def __init__(self, embedder: Embedder, cache_chunks: int = 4096) -> None:
        self.embedder = embedder
        self.cache_chunks = cache_chunks
        # KB chunks' unit vectors as the index stores them (`KnowledgeUnits.stored_vectors`):
        # (chunk, unit texts) -> vectors, or None when not stored for these texts.
        self.stored: Callable[[Chunk, Sequence[str]], np.ndarray | None] | None = None
        self._cache: OrderedDict[str, tuple[list[EvidenceUnit], np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def split(chunk: Chunk, origin: str) -> tuple[list[EvidenceUnit], list[str]]:
        """The chunk's units and the texts they are embedded as."""
        text = neutralise(chunk.text)[0]
        if origin == "upload":  # account / document numbers reach the model masked
            text = redact_text(text)
        headings = {h.strip().lower() for h in (*chunk.heading_path, chunk.title) if h}
        units = [u for u in split_units(text, chunk.heading_path) if is_informative(u, headings)]
        context = " > ".join(h for h in chunk.heading_path if h)
        # Table rows are embedded with their column names ("Cut-off time for same-day sending:
        # 4:00 p.m. PT"): the bare cells ("4:00 p.m. PT") say nothing of what they are; FAQ
        # answers with their question.
        return units, [f"{context}: {scored_text(u)}" if context else scored_text(u) for u in units]

    def units(self, chunk: Chunk, origin: str) -> tuple[list[EvidenceUnit], np.ndarray]:
        """The chunk's units (instruction-like lines removed; uploads redacted) and their vectors."""
        key = f"{origin}:{chunk.id}"
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        units, texts = self.split(chunk, origin)
        vectors = self.stored(chunk, texts) if origin == "kb" and self.stored is not None else None
        return units, self.remember(chunk, origin, units, self.embedder.embed(texts) if vectors is None else vectors)

    def remember(self, chunk: Chunk, origin: str, units: list[EvidenceUnit], vectors: np.ndarray) -> np.ndarray:
        """Cache a chunk's units (`split`) and their vectors, computed here or kept from earlier."""
        with self._lock:
            self._cache[f"{origin}:{chunk.id}"] = (units, vectors)
            while len(self._cache) > self.cache_chunks:
                self._cache.popitem(last=False)
        return vectors

    def score(
        self, query: str, kb_hits: Sequence[SearchHit], upload_hits: Sequence[SearchHit] = ()
    ) -> list[ScoredUnit]:
        """Every unit of every hit, best first: the input of `lines` and `select`."""
        hits = [(h, "upload") for h in upload_hits] + [(h, "kb") for h in kb_hits]
        if not hits:
            return []
        query_vector = self.embedder.embed([query])[0]
        terms = query_terms(query)
        candidates = [(hit, origin, *self.units(hit.chunk, origin)) for hit, origin in hits]
        quoted = {id(unit): scored_text(unit) for _, _, units, _ in candidates for unit in units}
        unit_terms = {key: query_terms(text) for key, text in quoted.items()}
        # A question term is weighted by its rarity among the candidate units (inverse document
        # frequency within this pool): when every line is about wires, "incoming" decides.
        frequency = Counter(t for found in unit_terms.values() for t in found & terms)
        weight = {t: math.log((len(unit_terms) + 1) / (frequency[t] + 1)) + 1 for t in terms}
        total_weight = sum(weight.values()) or 1.0
        wanted = preferred_answers(query)
        scored: list[ScoredUnit] = []
        for hit, origin, units, vectors in candidates:
            if not units:
                continue
            similarities = vectors @ query_vector
            chunk_score = hit.vector_score or 0.0
            for unit, similarity in zip(units, similarities):
                lexical = sum(weight[t] for t in terms & unit_terms[id(unit)]) / total_weight
                total = float(similarity) + LEXICAL_WEIGHT * lexical + CHUNK_WEIGHT * chunk_score
                if wanted and any(pattern.search(quoted[id(unit)]) for pattern in wanted):
                    total += ANSWER_TYPE_WEIGHT
                scored.append(ScoredUnit(unit, hit, origin, total))
        scored.sort(key=lambda s: -s.score)
        return scored

    @staticmethod
    def lines(scored: Sequence[ScoredUnit], *, budget_chars: int = 700, max_lines: int = 8,
              question: str | None = None) -> list[EvidenceLine]:
        """The best units as quotable lines, best first, each with the passage it is cited as.

        A unit too long for what is left of the budget is skipped, unless `question` asks for a
        kind of value (an amount, a period) and one clause of it (`clauses`) states it: that
        clause is the line (a statute's one sentence about a card's loss runs to 770 characters,
        and its "$500" is in the last clause)."""
        wanted = expected_answers(question) if question else []
        sids: dict[str, str] = {}
        lines: list[EvidenceLine] = []
        seen: set[str] = set()
        said: list[frozenset[str]] = []  # the words of each line taken
        wholes: set[tuple[str, str]] = set()  # (chunk, paragraph or list) of each line taken
        size = 0
        for item in scored:
            if item.unit.table_header is None and "|" in item.unit.text:
                continue  # a table's header row names columns; it answers nothing when quoted
            text = quote(item.unit)
            if size + len(text) > budget_chars and lines:
                text = _clause_stating(item.unit, wanted, budget_chars - size)
            if text is None or text in seen:
                continue
            whole = (item.hit.chunk.id, item.unit.whole) if item.unit.whole else None
            if whole in wholes:
                continue  # another item of a list already taken: the list is quoted whole, once
            words = _words(text)
            if any(_resemblance(words, other) >= NEAR_DUPLICATE for other in said):
                continue  # the same answer in another row of a FAQ sheet ("PhoneBanking" / "Phone Banking")
            seen.add(text)
            said.append(words)
            if whole is not None:
                wholes.add(whole)
            size += len(text)
            sid = sids.setdefault(item.hit.chunk.id, f"S{len(sids) + 1}")
            passage = SourcePassage(sid, item.hit, item.origin, text=text, score=item.score)
            lines.append(EvidenceLine(text, passage, item.unit))
            if len(lines) >= max_lines:
                break
        return lines

    @staticmethod
    def select(scored: Sequence[ScoredUnit], *, budget_chars: int = 600, max_passages: int = 4) -> list[SourcePassage]:
        """Numbered passages (`S1`…) holding the best units, grouped by chunk in reading order."""
        chosen: dict[str, list[ScoredUnit]] = {}
        size = 0
        for item in scored:
            key = item.hit.chunk.id
            if key not in chosen and len(chosen) >= max_passages:
                continue
            cost = len(item.unit.text) + 1
            header = item.unit.table_header
            shown = {s.unit.text for s in chosen.get(key, [])}
            if header and header not in shown:
                cost += len(header) + 1
            if size + cost > budget_chars and chosen:
                continue
            chosen.setdefault(key, []).append(item)
            size += cost
        passages: list[SourcePassage] = []
        for n, items in enumerate(chosen.values(), 1):
            items.sort(key=lambda s: s.unit.position)
            lines: list[str] = []
            for s in items:
                header = s.unit.table_header
                if header and header not in lines:
                    lines.append(header)
                lines.append(s.unit.text)
            best = max(items, key=lambda s: s.score)
            passages.append(
                SourcePassage(
                    f"S{n}", best.hit, best.origin, text="\n".join(lines), score=best.score
                )
            )
        return passages


def _clause_stating(unit: EvidenceUnit, wanted: Sequence[re.Pattern[str]], room: int) -> str | None:
    """The first clause of a long unit that holds a value `wanted` asks for, quoted as the unit
    would be (after its section) if that fits in `room` characters, or bare if the clause alone
    is no longer than a paragraph quoted whole (it states what was asked: worth the tokens);
    else None."""
    if not wanted or unit.table_header:
        return None
    for clause in clauses(unit.text):
        if any(p.search(clause) for p in wanted):
            section = section_of(unit)
            text = f"{section} — {clause}" if section else clause
            if len(text) <= room:
                return text
            return clause if len(clause) <= WHOLE_UNIT_CHARS else None
    return None


class KBUnitTexts:
    """What the index embeds for each KB chunk's units (`retrieval.units.UnitSplitter`): the
    texts `EvidenceSelector.split` scores them by, so the stored vectors are the selector's own."""

    def __init__(self) -> None:
        self.fingerprint = _splitting_code_digest()

    def __call__(self, chunk: Chunk) -> list[str]:
        return EvidenceSelector.split(chunk, "kb")[1]


@lru_cache(maxsize=1)
def _splitting_code_digest() -> str:
    """Identifies the code that splits and words units (this module, and `agent.prompt`'s
    `neutralise` and `query_terms`): when it changes, the index checks every chunk's unit texts
    against the stored ones once, and embeds again only those that changed."""
    import agent.prompt

    digest = hashlib.sha1()
    for module_file in (__file__, agent.prompt.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()


class KnowledgeUnits:
    """Sentence-level search over every unit of the KB ("small-to-big" retrieval).

    A chunk is retrieved by its similarity as a whole, so a fee table of twelve rows ranks low
    for the one row that answers ("Coin counting: free for customers; 5% of the total for
    non-customers") and its rows never compete. Here every unit is compared with the question
    on its own, and the chunks of the best few join the retrieved ones. Measured on the eval set:
    the quoted lines held the answer's facts for 95 answerable questions instead of 93.

    The unit vectors live in the retrieval layer beside the chunks' (`retrieval.units`: a FAISS
    index, persisted with the manifest and updated document by document); this attaches the
    agent's splitting to the index and reads the stored vectors back for the selector, so a
    question embeds only itself."""

    def __init__(self, selector: EvidenceSelector, kb: KnowledgeBase) -> None:
        self.selector = selector
        self.kb = kb
        self._generation: int | None = None
        self._lock = threading.Lock()
        kb.unit_splitter = KBUnitTexts()
        selector.stored = self.stored_vectors

    def search(self, query: str, k: int, exclude: set[str] = frozenset()) -> list[SearchHit]:
        """Hits for the chunks of the `k` units most similar to `query` (chunks in `exclude`
        skipped), each with its chunk's cosine similarity as `vector_score`."""
        self.refresh()
        return self.kb.search_units(query, k, exclude=exclude)

    def refresh(self) -> None:
        """Embed the units of chunks the index holds without them (indexed by a process with no
        splitter attached, or split by older code): only those, never the whole KB again."""
        generation = self.kb.generation
        with self._lock:
            if generation == self._generation:
                return
            embedded = self.kb.sync_units()
            if embedded:
                log.info("embedded the evidence units of %d chunks", embedded)
            self._generation = generation

    def stored_vectors(self, chunk: Chunk, texts: Sequence[str]) -> np.ndarray | None:
        """The chunk's stored unit vectors, if they were embedded from exactly `texts`."""
        found = self.kb.chunk_units(chunk.id)
        if found is None:
            return None
        digest, vectors = found
        return vectors if digest == units_digest(texts) and len(vectors) == len(texts) else None
