"""Grounding policy: is the evidence strong enough, is the draft supported, what does it cite.

- Evidence strength: the best KB hit's cosine similarity (`vector_score`) against a threshold
  calibrated on the eval questions (`agent/calibration.json`, written by
  `agent.evaluate.calibrate_threshold`), never a guessed constant.
- Support: every number, amount, percentage and date in a draft answer must occur in the
  evidence, the customer's fields or the question; sentences carrying an unsupported figure are
  stripped, and an answer left with nothing is declined.
- Citations: `[S1]` markers are mapped to the chunks that were actually shown to the model;
  unknown ids are dropped. With no markers, the passages the answer overlaps most are cited.
- Comparisons ("is my $12,000 wire over the limit?") are decided here with `Decimal`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

from agent.prompt import SourcePassage, query_terms
from docteller.parsing.money import to_decimal
from docteller.parsing.text import CONTENT_STOPWORDS
from retrieval.bm25 import tokenize

log = logging.getLogger(__name__)

CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"

OFFER_PERSON = "Would you like me to connect you with a member of our team?"
DECLINE_TEXT = f"I can't find that in our policies, so I don't want to guess. {OFFER_PERSON}"
NAMES_SHOWN = 3  # at most this many names are repeated back in a decline


def unnamed_decline_text(names: Sequence[str]) -> str:
    """The decline for a question about what the bank's documents never name: says which."""
    shown = [f"“{name[:40]}”" for name in names[:NAMES_SHOWN]]
    listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
    return f"Our policies don't mention {listed}, so I can't answer that without guessing. {OFFER_PERSON}"


def clarifying_text(topics: Sequence[str]) -> str:
    """The reply to a question with several answers in the policies: which one is meant."""
    listed = "; ".join(f"“{t}”" for t in topics)
    return (f"Our policies give different answers for different things: {listed}. Which one do you mean? "
            "Or would you like me to connect you with a member of our team?")

_DECLINE_MARKERS = (
    "can't find that",
    "cannot find that",
    "can not find",
    "couldn't find",
    "could not find",
    "not in our policies",
    "no information",
    "not mentioned",
    "does not contain",
    "doesn't contain",
    "do not contain",
    "don't have information",
    "do not have information",
    "not provided in",
    "unable to find",
)


def is_model_decline(text: str) -> bool:
    low = text.lower().replace("’", "'")
    return any(m in low for m in _DECLINE_MARKERS)


# --- evidence strength ----------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    threshold: float
    metric: str = "top_vector_score"


def load_calibration(path: Path = CALIBRATION_PATH) -> Calibration:
    try:
        data = json.loads(path.read_text())
        return Calibration(threshold=float(data["threshold"]), metric=data.get("metric", "top_vector_score"))
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"{path} is missing: run `python -m agent.evaluate calibrate` to calibrate the "
            "evidence threshold on knowledge_base/eval/questions.jsonl"
        ) from exc
    except (ValueError, KeyError) as exc:
        raise RuntimeError(f"{path} is malformed: {exc}") from exc


def evidence_strength(hits: Sequence) -> float:
    """Best cosine similarity among the hits (0 when there are none)."""
    scores = [h.vector_score for h in hits if h.vector_score is not None]
    return max(scores) if scores else 0.0


# --- entities the evidence never mentions --------------------------------------------------

# A capitalised word that doesn't open the question or a sentence, and a run of them, which is
# one name ("Northwind Credit Union", "Samsung Wallet").
_NAME_WORD = r"[A-Z][A-Za-z0-9&]*(?:'s)?"
_NOT_SENTENCE_START = r"(?<![.?!]\s)(?<!^)\b"
_NAME_RE = re.compile(rf"{_NOT_SENTENCE_START}({_NAME_WORD})")
_NAME_RUN_RE = re.compile(rf"{_NOT_SENTENCE_START}({_NAME_WORD}(?:\s+{_NAME_WORD})*)")
_NOT_ENTITIES = {
    "i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "asap", "fyi", "btw", "pls", "plz", "thx", "hi",
    "hey", "hello", "thanks", "please", "us",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
}


def _name_word(word: str) -> str | None:
    """A capitalised word as part of a name: without its possessive "'s"; None for a weekday, a
    month, a chat word ("Hi", "Thanks") or a single letter."""
    base = word.removesuffix("'s")
    return None if base.lower() in _NOT_ENTITIES or len(base) < 2 else base


# A name after a preposition of place or direction says where ("use my card in Japan", "wire
# money to Peru", "pay at Walmart"), not what is asked about: the KB's rule for "abroad" or
# "a merchant" may answer it without naming the place.
_PLACE_PREPOSITION_RE = re.compile(r"\b(?:in|to|from|at|into|near|around|across|within|inside|outside)\s+$", re.IGNORECASE)
# An acronym ("CD", "IRAs", "APY") abbreviates what a KB may only spell out ("certificate of
# deposit"): never read as a name the KB lacks.
_ACRONYM_RE = re.compile(r"[A-Z]{2,5}s?")


def _name_runs(question: str) -> list[tuple[str, int]]:
    """(name, where it starts) for each name the question uses: a run of capitalised words that
    doesn't open a sentence, less weekdays, months and chat words ("Hi", "Thanks"). A question
    typed in capitals or in title case has none (every word would read as a name)."""
    words = re.findall(r"[A-Za-z][A-Za-z']*", question)
    if not words or sum(w[0].isupper() for w in words) > len(words) / 2:
        return []
    runs = []
    for m in _NAME_RUN_RE.finditer(question):
        parts = [base for base in map(_name_word, m.group(1).split()) if base]
        if parts:
            runs.append((" ".join(parts), m.start()))
    return runs


def names_the_kb_never_mentions(question: str, frequencies: Callable[[str], tuple[dict[str, int], int]]) -> list[str]:
    """The question's names with a word no document of the KB uses (`frequencies`: the KB's
    document frequencies of a text's search terms): "What does Northwind Credit Union charge …"
    of a KB that never says "Northwind". No passage can answer about what the bank's documents never name.
    A name after a preposition of place ("… in Japan") is left out: a rule for using a card
    abroad may answer it; so is an acronym (`_ACRONYM_RE`)."""
    question = question.strip()
    found: list[str] = []
    for name, start in _name_runs(question):
        if _PLACE_PREPOSITION_RE.search(question[:start]):
            continue
        named = " ".join(w for w in name.split() if not _ACRONYM_RE.fullmatch(w))
        counts, _ = frequencies(named)
        if named and any(counts.get(term, 0) == 0 for term in tokenize(named)):
            found.append(name)
    return found


def unknown_entities(question: str, evidence_texts: Iterable[str]) -> list[str]:
    """Capitalised names in the question (not sentence-initial) that no evidence text mentions:
    another bank's or a brand's name means the evidence is about something else. Weekdays,
    months and chat words are not names. Used as a feature by `agent.verifier`, and by the
    generative answer path, which has no verifier. Word by word, and in a title-case question too,
    unlike the KB-wide check (`_name_runs`): the verifier's `names_missing` was fitted on this."""
    evidence = " ".join(evidence_texts).lower()
    missing = []
    for name in _NAME_RE.findall(question.strip()):
        base = _name_word(name)
        if base and not re.search(rf"\b{re.escape(base.lower())}", evidence):
            missing.append(base)
    return missing


# --- numbers --------------------------------------------------------------------------------

_CITATION_RE = re.compile(r"\[(?:S\d+(?:\s*,\s*S?\d+)*|[^\[\]]{1,120}?,\s*p\.\s*\d+)\]")
# $1,234.56  1,234  12.5%  2025-01-31  31/01/2025  10am
_NUMBER_RE = re.compile(r"(?<![\w.])[$€£]?\d[\d,]*(?:\.\d+)?%?")

def strip_citations(text: str) -> str:
    return _CITATION_RE.sub("", text)


def numbers_in(text: str) -> set[Decimal]:
    """The numeric values a text states (amounts, percentages, counts, parts of dates)."""
    values: set[Decimal] = set()
    for token in _NUMBER_RE.findall(strip_citations(text)):
        token = token.rstrip(".,")
        for piece in re.split(r"[-/]", token) if re.fullmatch(r"\d+[-/]\d+([-/]\d+)?", token) else [token]:
            value = to_decimal(piece)
            if value is not None:
                values.add(value)
    return values


_TRIVIAL_NUMBERS = {Decimal(n) for n in range(0, 11)}  # "one of 3 ways", "within 1 day" are low risk
_MARKED_RE = re.compile(r"(?<![\w.])([$€£])\s?(\d[\d,]*(?:\.\d+)?)|(?<![\w.$€£])(\d[\d,]*(?:\.\d+)?)\s?%")


def marked_figures(text: str) -> set[tuple[str, Decimal]]:
    """Amounts and percentages as (kind, value): ("$", 5) for "$5" or "£5", ("%", 4.15) for "4.15%"."""
    found: set[tuple[str, Decimal]] = set()
    for m in _MARKED_RE.finditer(strip_citations(text)):
        raw = (m.group(2) or m.group(3)).rstrip(".,")
        value = to_decimal(raw)
        if value is not None:
            found.add(("$" if m.group(1) else "%", value))
    return found


def unsupported_numbers(answer: str, evidence_texts: Iterable[str]) -> set[Decimal]:
    """Figures in `answer` that the evidence doesn't state. A bare small count ("one of 3 ways")
    is low risk and skipped; an amount or a percentage never is, and must be in the evidence as
    an amount or a percentage: "$5" is not supported by "$10", nor by "5 business days"."""
    evidence: set[Decimal] = set()
    evidence_marked: set[tuple[str, Decimal]] = set()
    for text in evidence_texts:
        evidence |= numbers_in(text)
        evidence_marked |= marked_figures(text)
    marked = marked_figures(answer)
    missing = {value for kind, value in marked if (kind, value) not in evidence_marked}
    bare = {value for _, value in marked}
    return missing | {
        n for n in numbers_in(answer) if n not in evidence and n not in _TRIVIAL_NUMBERS and n not in bare
    }


_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\[(])|\n+")


def split_sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_RE.split(text)) if s]


def _filter_sentences(
    answer: str,
    evidence_texts: Sequence[str],
    cited_evidence: dict[str, str] | None,
    is_supported: Callable[[str, Sequence[str]], bool],
) -> tuple[str, list[str]]:
    """Keep the sentences `is_supported` accepts against their evidence: the passages a sentence
    cites (`[S2]` -> cited_evidence["S2"]) plus the non-passage evidence (fields, the question), or
    all the evidence when it cites nothing. Returns (kept text, dropped sentences)."""
    cited_evidence = cited_evidence or {}
    passage_texts = set(cited_evidence.values())
    non_passage = [t for t in evidence_texts if t not in passage_texts]
    kept: list[str] = []
    dropped: list[str] = []
    for sentence in split_sentences(answer):
        ids = [sid for sid in cited_ids(sentence) if sid in cited_evidence]
        scope = [*(cited_evidence[sid] for sid in ids), *non_passage] if ids else list(evidence_texts)
        (kept if is_supported(sentence, scope) else dropped).append(sentence)
    return " ".join(kept), dropped


def strip_unsupported(
    answer: str, evidence_texts: Sequence[str], cited_evidence: dict[str, str] | None = None
) -> tuple[str, set[Decimal]]:
    """Drop sentences that state a figure the evidence doesn't contain.

    With `cited_evidence` ({"S2": passage text}), a sentence that cites `[S2]` must find its
    figures in S2 itself (or in the fields / the question). A small model otherwise states a real
    figure from a neighbouring passage about another product (the branch wire fee as the daily
    wire limit), which a check against all the evidence lets through.
    Returns (kept text, the unsupported figures found)."""
    bad: set[Decimal] = set()

    def figures_supported(sentence: str, scope: Sequence[str]) -> bool:
        missing = unsupported_numbers(sentence, scope)
        bad.update(missing)
        return not missing

    kept, _ = _filter_sentences(answer, evidence_texts, cited_evidence, figures_supported)
    return kept, bad


def strip_unsupported_wording(
    answer: str, evidence_texts: Sequence[str], cited_evidence: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """Drop sentences whose wording their passages don't support (lexical support below
    `MIN_LEXICAL_SUPPORT`): a small model pads a correct, grounded sentence with how-to steps
    it invented; the grounded sentence is kept, the padding goes."""
    return _filter_sentences(
        answer, evidence_texts, cited_evidence,
        lambda sentence, scope: lexical_support(sentence, scope) >= MIN_LEXICAL_SUPPORT,
    )


# --- citations ------------------------------------------------------------------------------

_MARKER_RE = re.compile(r"\[\s*(S\d+(?:\s*[,;]\s*S?\d+)*)\s*\]")


def cited_ids(answer: str) -> list[str]:
    """`S` ids in citation order, e.g. '[S2][S1, S3]' -> ['S2', 'S1', 'S3']."""
    ids: list[str] = []
    for group in _MARKER_RE.findall(answer):
        for part in re.split(r"\s*[,;]\s*", group):
            sid = part if part.startswith("S") else f"S{part}"
            if sid not in ids:
                ids.append(sid)
    return ids


def render_citations(answer: str, passages: Sequence[SourcePassage]) -> str:
    """Replace `[S1]` markers with `[title, p. N]`; markers naming no real passage vanish."""
    by_id = {p.sid: p for p in passages}

    def _sub(m: re.Match[str]) -> str:
        labels = []
        for part in re.split(r"\s*[,;]\s*", m.group(1)):
            sid = part if part.startswith("S") else f"S{part}"
            if sid in by_id and by_id[sid].label not in labels:
                labels.append(by_id[sid].label)
        return "".join(labels)

    text = _MARKER_RE.sub(_sub, answer)
    return re.sub(r"[ \t]+([.,;])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


_WORD_RE = re.compile(r"[a-z0-9]+(?:[.,]\d+)?")
def content_words(text: str) -> set[str]:
    return {w for w in _WORD_RE.findall(text.lower()) if w not in CONTENT_STOPWORDS and len(w) > 1}


def overlap_passages(answer: str, passages: Sequence[SourcePassage], limit: int = 2) -> list[SourcePassage]:
    """Passages sharing the most content words with the answer (for answers that cite nothing)."""
    words = content_words(strip_citations(answer))
    if not words:
        return []
    scored = []
    for p in passages:
        shared = len(words & content_words(p.hit.chunk.text))
        if shared:
            scored.append((shared / len(words), p))
    scored.sort(key=lambda sp: -sp[0])
    best = scored[0][0] if scored else 0
    return [p for s, p in scored[:limit] if s >= 0.2 and s >= best * 0.6]


MIN_LEXICAL_SUPPORT = 0.5
_SUPPORT_IGNORE = {"yes", "no", "not", "also", "yes,", "pleas", "thank", "here", "follo"}


def lexical_support(answer: str, evidence_texts: Iterable[str]) -> float:
    """Share of the answer's content terms (5-letter stems) that occur in the evidence.

    A small model that ignores its passages ("1. Open the Apple Pay app. 2. Tap…") writes words
    the passages never contain; a grounded answer mostly reuses the passages' own words."""
    terms = query_terms(strip_citations(answer)) - _SUPPORT_IGNORE
    terms = {t for t in terms if not t.isdigit()}  # figures are checked separately
    if not terms:
        return 1.0
    evidence: set[str] = set()
    for text in evidence_texts:
        evidence |= query_terms(text)
    return len(terms & evidence) / len(terms)


# --- amount vs limit comparisons ------------------------------------------------------------

_AMOUNT_RE = re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d{1,2})?|\b\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?\b|\b\d+(?:\.\d{1,2})?\s?(?:dollars|usd)\b)", re.IGNORECASE)
_COMPARE_Q_RE = re.compile(
    r"\b(over|above|exceed\w*|under|below|within|more than|less than|beyond|allowed|too (much|big|large)|go over)\b",
    re.IGNORECASE,
)
_LIMIT_WORDS = (
    "limit", "maximum", "max", "up to", "cap", "threshold", "no more than", "at most",
    "per day", "daily", "per transaction", "per month", "per week",
)


def amounts_in(text: str) -> list[tuple[Decimal, str]]:
    out = []
    for m in _AMOUNT_RE.finditer(text):
        raw = m.group(0)
        value = to_decimal(re.sub(r"(?i)\s?(dollars|usd)$", "", raw).replace(" ", ""))
        if value is not None:
            out.append((value, raw))
    return out


@dataclass
class Comparison:
    customer_amount: Decimal
    limit_amount: Decimal
    limit_sentence: str
    passage: SourcePassage

    @property
    def over(self) -> bool:
        return self.customer_amount > self.limit_amount

    def describe(self) -> str:
        relation = "over" if self.over else ("exactly at" if self.customer_amount == self.limit_amount else "within")
        return (
            f"${self.customer_amount:,.2f} is {relation} the ${self.limit_amount:,.2f} limit "
            f"(difference ${abs(self.customer_amount - self.limit_amount):,.2f})"
        )


def compare_amount_to_limit(question: str, passages: Sequence[SourcePassage]) -> Comparison | None:
    """Decide "is my $X over the limit?" from the passages, or None when it isn't that question
    or no limit sentence is found. The limit sentence chosen is the one that shares the most
    words with the question among sentences naming a limit and an amount."""
    if not _COMPARE_Q_RE.search(question):
        return None
    asked = amounts_in(question)
    if len(asked) != 1:
        return None
    customer_amount = asked[0][0]
    q_words = query_terms(question)
    best: tuple[int, str, Decimal, SourcePassage] | None = None
    for p in passages:
        for sentence in split_sentences(p.hit.chunk.text):
            low = sentence.lower()
            if not any(w in low for w in _LIMIT_WORDS):
                continue
            found = amounts_in(sentence)
            if not found:
                continue
            score = len(q_words & query_terms(sentence))
            if best is None or score > best[0]:
                best = (score, sentence, found[0][0], p)
    if best is None or best[0] == 0:
        return None
    return Comparison(customer_amount, best[2], best[1].strip(), best[3])
