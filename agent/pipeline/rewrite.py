"""Rewrite: a follow-up made a standalone query without losing what the conversation is about.

Only a question that leans on earlier turns is rewritten (`needs_rewrite`: it opens with "and",
"what about", uses "it", "that", …, or has at most two content words); any other is searched as
asked.

"What's the monthly fee for Basic Savings?" → "and for Money Market Savings?" asks the same
thing of another product: the follow-up names a new value for one slot (a product, a channel,
a term) of the previous question. The packaged 1.5B model, asked to rewrite it, kept "Basic
Savings". So a follow-up of that shape is rewritten here, in code: the phrase of the previous
question that plays the part of the new value (the most similar phrase by embedding, preferring
one with the same head word or after the same preposition) is replaced by it. Any other
follow-up ("how long does it take?") is rewritten by the model, and a rewrite that drops a
content word of the follow-up or a name of the previous question is not used
(`keeps_context`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from agent.grounding import content_words
from agent.pipeline.types import Query, Turn
from agent.prompt import build_rewrite_messages

if TYPE_CHECKING:
    from agent.resources import AgentResources

log = logging.getLogger(__name__)

HISTORY_TURNS = 2  # earlier turns a rewrite (and a generated answer's prompt) sees

_CONNECTOR_RE = re.compile(
    r"^\s*(?:(?:and|but|also|so|then|ok(?:ay)?|or)\s*,?\s*)*(?:(?:what|how)\s+about\s+)?", re.IGNORECASE
)
_PREPOSITIONS = ("for", "with", "at", "on", "in", "by", "via", "from", "through", "using", "over", "to")
_DETERMINERS = {"the", "a", "an", "my", "your", "our", "that", "this"}
# A follow-up holding one of these asks a new question ("how long does it take?"), not for
# another value of the same one.
_CLAUSE_WORDS = {
    "what", "how", "when", "where", "why", "who", "which", "is", "are", "was", "were", "do", "does",
    "did", "can", "could", "will", "would", "should", "it", "its", "that", "this", "they", "them",
    "there", "i", "we", "you", "be", "if", "much", "many", "long",
}
_STOP = {
    "a", "an", "the", "my", "your", "our", "is", "are", "what", "what's", "whats", "how", "much", "do",
    "does", "i", "to", "of", "it", "can", "there", "any", "me", "on", "for", "at", "in", "with", "by",
    "from", "and", "or", "per", "be", "s", "get", "long", "when", "which", "who", "have", "has",
}
_WORD_RE = re.compile(r"[$\w][\w$,.'&-]*\w|\w")

MIN_SLOT_SIMILARITY = 0.3  # below this no phrase of the previous question plays the new value's part

Embed = Callable[[Sequence[str]], np.ndarray]


def slot_value(followup: str) -> tuple[str | None, str] | None:
    """(preposition, new value) of a follow-up that only names another value ("and for Money
    Market Savings?" → ("for", "Money Market Savings")), or None for any other question."""
    rest = _CONNECTOR_RE.sub("", followup.strip()).strip(" ?.!")
    if not rest or rest == followup.strip(" ?.!") and not re.match(r"(?i)^(?:for|at|on|in|by|via|with)\b", rest):
        return None  # no connector: a question of its own ("is it free?")
    words = rest.split()
    preposition = words[0].lower() if words[0].lower() in _PREPOSITIONS else None
    if preposition:
        words = words[1:]
    while words and words[0].lower() in _DETERMINERS:
        words = words[1:]
    if words and words[-1].lower() in ("one", "ones"):
        words = words[:-1]
    if not words or len(words) > 6 or any(w.lower().strip(",") in _CLAUSE_WORDS for w in words):
        return None
    return preposition, " ".join(words)


def _spans(question: str) -> list[tuple[int, int, str]]:
    """Candidate phrases of the previous question: 1–4 words, not starting or ending on a stopword,
    as (start, end) character offsets and text."""
    tokens = [(m.start(), m.end(), m.group(0)) for m in _WORD_RE.finditer(question)]
    spans = []
    for i in range(len(tokens)):
        for j in range(i, min(i + 4, len(tokens))):
            first, last = tokens[i][2].lower(), tokens[j][2].lower()
            if first in _STOP or last in _STOP:
                continue
            spans.append((tokens[i][0], tokens[j][1], question[tokens[i][0]:tokens[j][1]]))
    return spans


_PHRASE_RE = re.compile(
    r"\b(" + "|".join(_PREPOSITIONS) + r")\s+(?:(?:the|a|an|my|your|our)\s+)?"
    r"([\w$][\w$,.'&-]*?(?:\s+[\w$][\w$,.'&-]*?)*?)"
    r"(?=\s+(?:" + "|".join(_PREPOSITIONS) + r"|and|or|if|when|per|each|every)\b|[?.!]|,\s|$)",
    re.IGNORECASE,
)


def _phrases(question: str) -> list[tuple[int, int, str]]:
    """The prepositional phrases of a question ("for debit card purchases", "at a branch") as
    (start, end, text) of the phrase after the preposition and its determiner."""
    return [(m.start(1), m.end(2), m.group(2)) for m in _PHRASE_RE.finditer(question) if m.group(2)]


def rewrite_slot(followup: str, previous: str, embed: Embed) -> str | None:
    """The previous question with the follow-up's new value in place of the phrase it replaces,
    or None when the follow-up isn't of that shape or no phrase is similar enough."""
    slot = slot_value(followup)
    if slot is None:
        return None
    preposition, value = slot
    # "and for Premier Checking?" replaces a whole phrase after a preposition ("for debit card
    # purchases"), not a word of it; a bare value ("and the 24 month one?") any phrase.
    phrases = _phrases(previous) if preposition else []
    spans = phrases or _spans(previous)
    if not spans:
        return None
    vectors = embed([value] + [text for _, _, text in spans])
    similarity = vectors[1:] @ vectors[0]
    head = value.split()[-1].lower().rstrip("s")
    named = _is_name(value)
    best, best_score = None, -1.0
    for (start, end, text), sim in zip(spans, similarity):
        score = float(sim)
        if text.split()[-1].lower().rstrip("s") == head:
            score += 0.2  # same head word: "Basic Savings" / "Money Market Savings"
        following = previous[end:].split()[:1]
        if named and _is_name(text) and not (following and following[0][:1].isupper()):
            score += 0.15  # a whole name for a name: "Interest Checking" / "Everyday Savings", not "monthly fee"
        if phrases and previous[start:].lower().startswith(preposition + " "):
            score += 0.1  # same part in the sentence: "at the Main Office" / "at a branch"
        if text.lower() == value.lower():
            score = -1.0  # already there: not the phrase it replaces
        if score > best_score:
            best, best_score = (start, end), score
    # A prepositional follow-up replaces one of the previous question's prepositional phrases
    # (the structure says which part it is); a bare value must also be similar enough.
    if best is None or best_score < (0.0 if phrases else MIN_SLOT_SIMILARITY):
        return None
    start, end = best
    replacement = f"{preposition} {value}" if phrases else value  # "in the app" → "at a branch"
    return f"{previous[:start]}{replacement}{previous[end:]}"


def _is_name(text: str) -> bool:
    """A product or place name as written: every word capitalised ("Money Market Savings")."""
    words = [w for w in text.split() if w[:1].isalpha()]
    return bool(words) and all(w[0].isupper() for w in words)


_INITIALS_SKIP = {"of", "and", "&", "for", "the", "to", "on"}  # "line of credit": the "of" may or may not be a letter


def expansion(acronym: str, text: str) -> tuple[int, int] | None:
    """Where `text` spells `acronym` out ("HELOC" → "home equity line of credit"): (start, end)
    of the run of words whose initials are its letters (short joining words may be skipped)."""
    letters = acronym.lower()
    words = [(m.start(), m.end(), m.group(0).lower()) for m in re.finditer(r"[A-Za-z][\w'-]*", text)]

    def spell(i: int, k: int) -> int | None:  # index after the run spelling letters[k:] from word i
        if k == len(letters):
            return i
        if i == len(words):
            return None
        word = words[i][2]
        if word[0] == letters[k] and (end := spell(i + 1, k + 1)) is not None:
            return end
        if k > 0 and word in _INITIALS_SKIP:
            return spell(i + 1, k)
        return None

    if len(letters) < 2:
        return None
    for i in range(len(words)):
        end = spell(i, 0)
        if end is not None and end - i > 1:
            return words[i][0], words[end - 1][1]
    return None


def _acronyms_spelled_out(rewritten: str, followup: str) -> list[tuple[str, int, int]]:
    """The follow-up's acronyms ("HELOC") the rewrite leaves out but spells out, with where."""
    found = []
    for word in re.findall(r"\b[A-Z]{2,6}s?\b", followup):
        acronym = word.rstrip("s")
        if acronym.lower() not in rewritten.lower() and (span := expansion(acronym, rewritten)) is not None:
            found.append((acronym, *span))
    return found


def keeps_context(rewritten: str, followup: str, previous: str) -> bool:
    """A model rewrite keeps every content word of the follow-up (an acronym may be spelled out)
    and every capitalised name of the previous question (a product, a branch) that the follow-up
    doesn't replace."""
    low = rewritten.lower()
    spelled = {a.lower() for a, _, _ in _acronyms_spelled_out(rewritten, followup)}
    asked = _CONNECTOR_RE.sub("", followup)  # "what about", "and": not words to keep
    words = [w.lower() for w in _WORD_RE.findall(asked) if w.lower() not in _STOP and w.lower() not in _CLAUSE_WORDS]
    if not all(w in low or w.rstrip("s") in spelled for w in words):
        return False
    names = re.findall(r"\b[A-Z][\w-]*(?:\s+[A-Z][\w-]*)+\b", previous)
    names = [n for n in names if not re.match(r"(?i)^(what|how|when|where|can|is|do|does)\b", n)]
    return all(n.lower() in low for n in names)


def with_acronyms(rewritten: str, followup: str) -> str:
    """The rewrite with each acronym of the follow-up it spelled out put back after its expansion
    ("… on a home equity line of credit (HELOC)?"): a KB may use either form, and search needs it."""
    for acronym, _, end in sorted(_acronyms_spelled_out(rewritten, followup), key=lambda a: -a[2]):
        rewritten = f"{rewritten[:end]} ({acronym}){rewritten[end:]}"
    return rewritten


_FOLLOWUP_RE = re.compile(
    r"^(and|but|also|so|what about|how about|and what|then)\b|\b(it|its|it's|that|this|those|these|they|them|"
    r"there|same|one|ones|former|latter)\b",
    re.IGNORECASE,
)


def needs_rewrite(question: str, history: Sequence[tuple[str, str]]) -> bool:
    """Only follow-ups that lean on earlier turns are rewritten (costs a model call)."""
    if not history:
        return False
    return bool(_FOLLOWUP_RE.search(question)) or len(content_words(question)) <= 2


class Rewriter:
    """Turn -> Query: as asked, a follow-up's new value put in place in code (`rewrite_slot`), or
    the chat model's rewrite when it passes the guard; else "previous question + follow-up"."""

    def __init__(self, resources: AgentResources) -> None:
        self.resources = resources

    def rewrite(self, turn: Turn) -> Query:
        return Query(turn.question, self._standalone(turn))

    def _standalone(self, turn: Turn) -> str:
        question = turn.question
        history = list(turn.history[-HISTORY_TURNS:])
        if not needs_rewrite(question, history):
            return question
        last_question = turn.last_query or history[-1][0]
        embedder = self.resources.evidence.embedder
        if embedder is not None:
            slot = rewrite_slot(question, last_question, embedder.embed)
            if slot is not None:
                return slot
        fallback = f"{last_question} {question}"
        # A burst of customers: an extractive answer needs the model only to judge, which is done
        # without it too when it is this busy, so the turn doesn't queue for a rewrite either (a
        # generated answer waits for the model anyway: its rewrite runs in the same turn).
        wait = self.resources.model_too_busy() if self.resources.settings.answer_style == "extractive" else None
        if wait is not None:
            log.info("follow-up not rewritten by the chat model: ≈ %.1f s wait for it", wait)
            return fallback
        try:
            raw = "".join(
                self.resources.chat_model.stream(build_rewrite_messages(question, history), max_tokens=60)
            )
        except Exception as exc:  # a rewrite failure must not fail the answer
            log.warning("query rewrite failed (%s); using the heuristic query", exc)
            return fallback
        rewritten = raw.strip().splitlines()[0].strip(' "') if raw.strip() else ""
        # Guard: a usable rewrite is a single question of sensible length that keeps the topic
        # of the conversation; anything else falls back to "previous question + follow-up".
        context_words = content_words(question) | content_words(last_question)
        if (
            not rewritten
            or len(rewritten) > 3 * len(fallback) + 40
            or not (content_words(rewritten) & context_words)
            or not keeps_context(rewritten, question, last_question)
        ):
            return fallback
        return with_acronyms(rewritten, question)


class AsAsked:
    """Ablation pass-through: every question is searched exactly as typed."""

    def rewrite(self, turn: Turn) -> Query:
        return Query(turn.question, turn.question)
