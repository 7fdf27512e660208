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
from decimal import Decimal, InvalidOperation
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence

from agent.prompt import SourcePassage, query_terms

log = logging.getLogger(__name__)

CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"

DECLINE_TEXT = (
    "I can't find that in our policies, so I don't want to guess. "
    "Would you like me to connect you with a member of our team?"
)

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


DEFAULT_JUDGE_THRESHOLD = 0.5  # for a chat model the judge was not calibrated with: "yes" more likely than "no"


@dataclass(frozen=True)
class Calibration:
    threshold: float
    metric: str = "top_vector_score"
    # The extractive answer's judge: decline when the model's P("yes", the lines answer the
    # question) is below this. Calibrated per chat model (a different model gets the default).
    judge_threshold: float = DEFAULT_JUDGE_THRESHOLD
    judge_model_sha256: str | None = None

    def judge_threshold_for(self, model_hash: str) -> float:
        if self.judge_model_sha256 and model_hash == self.judge_model_sha256:
            return self.judge_threshold
        return DEFAULT_JUDGE_THRESHOLD


def load_calibration(path: Path = CALIBRATION_PATH) -> Calibration:
    try:
        data = json.loads(path.read_text())
        judge = data.get("answer_judge") or {}
        return Calibration(
            threshold=float(data["threshold"]),
            metric=data.get("metric", "top_vector_score"),
            judge_threshold=float(judge.get("threshold", DEFAULT_JUDGE_THRESHOLD)),
            judge_model_sha256=judge.get("model_sha256"),
        )
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

_NAME_RE = re.compile(r"(?<![.?!]\s)(?<!^)\b([A-Z][A-Za-z0-9&]*(?:'s)?)")
_NOT_ENTITIES = {
    "i", "i'm", "i've", "i'd", "i'll", "ok", "okay", "asap", "fyi", "btw", "pls", "plz", "thx", "hi",
    "hey", "hello", "thanks", "please", "us",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
}


# Financial products and services customers ask banks about, often lower-case ("my 401k"), that
# a bank's own policies may not offer. One named in a question but in none of the evidence means
# the evidence is about something else: "the penalty for cashing out my 401k early" retrieves
# the CD early-withdrawal penalty, and the judge took it for an answer. (Checked on the eval set:
# none of its answerable questions names one the KB lacks.)
_PRODUCT_PATTERNS = [
    r"401\s?\(?k\)?", r"403\s?\(?b\)?", r"\b(?:roth\s+)?iras?\b", r"\broth\b", r"\bhsas?\b", r"\b529 plans?\b",
    r"\bpensions?\b", r"\bannuit(?:y|ies)\b", r"\bbrokerage\b", r"\bmutual funds?\b", r"\betfs?\b",
    r"\bstock market\b", r"\bbitcoin\b", r"\bcrypto(?:currenc(?:y|ies))?\b", r"\bstudent loans?\b",
    r"\b(?:auto|car|vehicle|boat|rv|motorcycle|business|sba|payday|construction|bridge) loans?\b",
    r"\breverse mortgages?\b", r"\bjumbo (?:mortgage|loan)s?\b",
    r"\b(?:life|travel|car|auto|home|homeowners|renters|pet|health|identity theft) insurance\b",
    r"\bzelle\b", r"\bvenmo\b", r"\bpaypal\b", r"\bcash app\b", r"\b(?:apple|google|samsung) pay\b",
    r"\bwestern union\b", r"\bmoneygram\b", r"\b(?:amex|american express|mastercard|discover card)\b",
    r"\bbusiness (?:accounts?|checking|savings|credit cards?|debit cards?)\b", r"\bmerchant services\b",
    r"\bpayroll services\b", r"\btrust accounts?\b", r"\bcustodial accounts?\b", r"\bprepaid cards?\b",
    r"\bgift cards?\b", r"\btravell?ers'? (?:cheques?|checks?)\b",
]
_PRODUCT_RES = [re.compile(p, re.IGNORECASE) for p in _PRODUCT_PATTERNS]


def unknown_entities(question: str, evidence_texts: Iterable[str]) -> list[str]:
    """Names in the question that no evidence text mentions: capitalised ones (not
    sentence-initial), and financial products (`_PRODUCT_PATTERNS`) in any case. "What are
    Chase's overdraft fees?" retrieves our own overdraft policy, which must not be passed off as
    Chase's. Weekdays, months and chat words are not entities."""
    evidence = " ".join(evidence_texts).lower()
    missing = []
    for name in _NAME_RE.findall(question.strip()):
        base = name.removesuffix("'s")
        if base.lower() in _NOT_ENTITIES or len(base) < 2:
            continue
        if not re.search(rf"\b{re.escape(base.lower())}", evidence):
            missing.append(base)
    products = sorted(
        (found.start(), found.group(0))
        for pattern in _PRODUCT_RES
        if (found := pattern.search(question)) and not pattern.search(evidence)
    )
    named = {m.lower() for m in missing}
    return missing + [name for _, name in products if name.lower() not in named]


# --- a value the evidence presupposes instead of stating -------------------------------------

# "what credit limit would I get", "what credit score do I need": the question asks what value the
# bank will give or require of the customer, named by the words between "what"/"which" and the
# verb. Only a compound of two or three words: a single word ("what rate would I get") is a generic
# head the evidence states in other words ("your rate depends on …", "8.49% to 21.99% APR"). Not
# "what account number should I give": "the form shows your account number" answers that.
_ASKED_VALUE_RE = re.compile(
    r"\b(?:what|which)\s+((?:[a-z0-9'-]+\s+){1,2}?[a-z0-9'-]+)\s+(?:would|will|do|does|can|could|must)\s+"
    r"(?:i|we)\s+(?:get|need|have|receive|require|qualify for|be (?:given|offered|approved for))\b",
    re.IGNORECASE,
)


def presupposed_value(question: str, evidence_texts: Iterable[str]) -> str | None:
    """The thing a "what X would/do I …" question asks about, when the evidence mentions it only
    as "your X" and never says what it is: "cash advances are limited to 30% of your credit
    limit" and "a soft inquiry does not affect your credit score" take the customer's credit
    limit and score as given, so neither answers "what credit limit would I get" or "what credit
    score do I need", however close the topic. None when the evidence states X ("your daily limit
    is $800", "Credit limit: $5,000"), doesn't name it at all (it may paraphrase), or the
    question asks no such thing."""
    asked = _ASKED_VALUE_RE.search(question)
    if asked is None:
        return None
    thing = re.sub(r"\s+", " ", asked.group(1).lower())
    evidence = " ".join(evidence_texts).lower()
    mentions = list(re.finditer(rf"\b{re.escape(thing)}\b", evidence))
    if not mentions:
        return None
    for mention in mentions:
        presupposed = evidence[: mention.start()].endswith("your ")
        stated = re.match(r"\s*(?::|=|\b(?:is|are|was|will be|would be)\b)", evidence[mention.end():])
        if not presupposed or stated:
            return None
    return thing


# --- numbers --------------------------------------------------------------------------------

_CITATION_RE = re.compile(r"\[(?:S\d+(?:\s*,\s*S?\d+)*|[^\[\]]{1,120}?,\s*p\.\s*\d+)\]")
# $1,234.56  1,234  12.5%  2025-01-31  31/01/2025  10am
_NUMBER_RE = re.compile(r"(?<![\w.])[$€£]?\d[\d,]*(?:\.\d+)?%?")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december"]
    )
}


def strip_citations(text: str) -> str:
    return _CITATION_RE.sub("", text)


def _to_decimal(token: str) -> Decimal | None:
    cleaned = token.strip("$€£%").replace(",", "")
    if not cleaned or cleaned.count(".") > 1:
        return None
    try:
        return Decimal(cleaned)  # equal values hash equal: 45 and 45.00 match in sets
    except InvalidOperation:
        return None


def numbers_in(text: str) -> set[Decimal]:
    """The numeric values a text states (amounts, percentages, counts, parts of dates)."""
    values: set[Decimal] = set()
    for token in _NUMBER_RE.findall(strip_citations(text)):
        token = token.rstrip(".,")
        for piece in re.split(r"[-/]", token) if re.fullmatch(r"\d+[-/]\d+([-/]\d+)?", token) else [token]:
            value = _to_decimal(piece)
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
        value = _to_decimal(raw)
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
_STOP = set(
    "a an and are as at be by can do does for from has have how i if in is it its may my of on or "
    "our the their there this to we what when where which who will with you your not no yes".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD_RE.findall(text.lower()) if w not in _STOP and len(w) > 1}


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
        value = _to_decimal(re.sub(r"(?i)\s?(dollars|usd)$", "", raw).replace(" ", ""))
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
