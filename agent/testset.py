"""A KB-specific test set, generated from the KB's own text: answerable and unanswerable questions.

`docteller eval generate KB_DIR --out set.jsonl` writes it; `docteller eval answers --questions
set.jsonl` measures, on the bank's own documents, how often answers are right and declines are
correct. The same generator makes the synthetic data the answerability verifier is fitted on
(`python -m agent.verifier train`).

Answerable questions are written from one evidence unit (a sentence, a table row, an FAQ pair)
by templates: the value the unit states (an amount, a rate, a time, a period, a phone number)
is what the question asks for and what the answer must include. Unanswerable ones follow the
UAEval4RAG taxonomy:

- underspecified: the asked attribute without what it belongs to ("How much is the fee?");
- false presupposition: a unit's fact with its figure changed, asked as if true;
- out of the KB: banking questions about something the KB never mentions, or another bank
  (question frames around a common word no KB unit uses; with a model, also questions the chat
  model writes, kept only when they use such a word);
- adjacent fact: an attribute the KB states for other things, asked of a subject the KB
  covers but never with that attribute;
- nonsensical: a real question's words shuffled, or letters that make no words;
- out of scope: everyday questions that have nothing to do with banking (frames around such a
  word; with a model, also written by it).

Generation is seeded, so a KB and a seed always give the same set (with the same model).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from agent.evidence import EvidenceSelector, EvidenceUnit, quotable, section_of
from docteller.model import Chunk
from docteller.protocols import ChatMessage, ChatModel
from retrieval.bm25 import index_terms, tokenize

log = logging.getLogger(__name__)

CATEGORIES = (
    "underspecified",
    "false_presupposition",
    "out_of_kb",
    "adjacent_fact",
    "nonsensical",
    "out_of_scope",
)


class TestQuestion(BaseModel):
    """One line of a questions file (the format `docteller eval answers --questions` reads)."""

    id: str
    question: str
    answerable: bool
    category: str  # "answerable" or one of CATEGORIES
    doc: str | None = None
    page: int | None = None
    answer: str | None = None
    must_include: list[str] = []


# --- the KB's units ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceUnit:
    unit: EvidenceUnit
    chunk: Chunk
    text: str  # as quoted (a table row with its column names)


def load_units(kb_dir: Path) -> list[SourceUnit]:
    """Every evidence unit of every document under `kb_dir`, as the answer path splits them."""
    from ingest.chunking import chunk_document
    from ingest.loaders import load_document
    from ingest.loading import iter_files
    from ingest.sniff import IngestError

    files = iter_files([kb_dir])
    if not files:
        raise FileNotFoundError(f"{kb_dir}: no documents to generate questions from")
    chunks: list[Chunk] = []
    for path in files:
        try:
            chunks += chunk_document(load_document(path))
        except (IngestError, OSError) as exc:
            log.warning("skipping %s: %s", path, exc)
    return units_of(chunks)


def units_of(chunks: Iterable[Chunk]) -> list[SourceUnit]:
    """The evidence units of already chunked (or indexed) documents."""
    units: list[SourceUnit] = []
    for chunk in chunks:
        found, _ = EvidenceSelector.split(chunk, "kb")
        units += [SourceUnit(u, chunk, quotable(u)) for u in found]
    return units


# --- values a unit states -----------------------------------------------------------------------

_NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|fourteen|thirty|forty-five|sixty|ninety"
_VALUE_PATTERNS = [
    ("phone", re.compile(r"(?:\+?1[-\s.])?\(?\d{3}\)?[-\s.]\d{3}[-\s.]\d{4}")),
    ("percent", re.compile(r"\d+(?:\.\d+)?\s?%")),
    ("amount", re.compile(r"(?:[$€£]|\bRs\.?\s?|\bUSD\s?|\bINR\s?)\d[\d,]*(?:\.\d+)?")),
    ("time", re.compile(r"\b\d{1,2}(?::\d{2})?\s?(?:a\.m\.|p\.m\.|am|pm)\b", re.I)),
    ("period", re.compile(rf"\b(?:\d+|{_NUMBER_WORDS})\s+(?:business\s+|calendar\s+)?(?:days?|weeks?|months?|years?|hours?)\b", re.I)),
]
_SECTION_MARK = re.compile(r"^(?:§+\s*[\w.–-]+\.?|\(?[a-z0-9]{1,3}\)|\d+(?:\.\d+)*\.?)\s+", re.I)


@dataclass(frozen=True)
class Value:
    kind: str
    text: str
    subject: str  # what it is a value of: a table row's first cell, or the unit's heading
    attribute: str  # what kind of value: the column name, or the noun the sentence gives it


_KIND_NAMES = {"amount": "amount", "percent": "rate", "time": "cut-off time", "period": "time limit",
               "phone": "phone number"}
_NOT_ATTRIBUTES = frozenset("""days day business calendar months month years year weeks week hours hour
    and the for per with from that this each which than after before within more less over under""".split())


def _clean_heading(text: str) -> str:
    text = _SECTION_MARK.sub("", text.strip())
    text = re.sub(r"\s+", " ", text).strip(" .:;—-")
    return text[:80]


def _attribute(text: str, found: re.Match[str]) -> str | None:
    """The noun a sentence gives its value: "a $35 fee", "a limit of $500"."""
    after = re.match(r"\s+(?:per\s+\w+\s+)?([a-z]{4,})\b", text[found.end():])
    if after and after.group(1) not in _NOT_ATTRIBUTES:
        return after.group(1)
    before = re.search(r"\b([a-z]{4,})\s+(?:of|is|was|at|will be)\s+(?:up to\s+|at least\s+|at most\s+)?$", text[: found.start()])
    if before and before.group(1) not in _NOT_ATTRIBUTES:
        return before.group(1)
    return None


def value_of(source: SourceUnit) -> Value | None:
    """The first value the unit states, what it is a value of and what kind, or None."""
    unit = source.unit
    if unit.table_header:
        names = [c.strip() for c in unit.table_header.split("|") if c.strip()]
        cells = [c.strip() for c in unit.text.split("|") if c.strip()]
        if len(names) == len(cells) and len(cells) >= 2:
            for name, cell in zip(names[1:], cells[1:]):
                for kind, pattern in _VALUE_PATTERNS:
                    found = pattern.search(cell)
                    if found:
                        return Value(kind, found.group(0), cells[0], name.lower())
        return None
    for kind, pattern in _VALUE_PATTERNS:
        found = pattern.search(unit.text)
        if found:
            attribute = _attribute(unit.text, found) or _KIND_NAMES[kind]
            return Value(kind, found.group(0), heading_of(source), attribute)
    return None


def heading_of(source: SourceUnit) -> str:
    section = section_of(source.unit) or (source.chunk.heading_path[-1] if source.chunk.heading_path else "")
    return _clean_heading(section or source.chunk.title)


# --- answerable questions ----------------------------------------------------------------------

_TEMPLATES = {
    "amount": ("How much is the {a} for {s}?", "What is the {a} for {s}?"),
    "percent": ("What is the {a} for {s}?", "What {a} do you offer for {s}?"),
    "time": ("What is the {a} for {s}?", "By what time is the {a} for {s}?"),
    "period": ("How long is the {a} for {s}?", "What is the {a} for {s}?"),
    "phone": ("What number do I call for {s}?", "What is the phone number for {s}?"),
}
# How customers also type: a fragment, the subject first, a need stated rather than asked
# ("wire transfers - what's the fee?", "fee for wire transfers?"), lower case. English forms, no
# KB's words: a third of the template questions take one, so an answerable question is not
# learned as one that opens with "what" or "how".
_INFORMAL = (
    "{a} for {s}?", "{s} - what's the {a}?", "{s} {a}?", "need the {a} for {s}",
    "i want to know the {a} on {s}", "{s}: {a}?", "so what {a} applies to {s}",
)
_WRITE_QUESTION = (
    "Bank policy text:\n{text}\n\nWrite one short question a bank customer would ask that this "
    "text answers, in your own everyday words. Do not include the answer. Output only the question."
)


def _faq_pair(source: SourceUnit) -> tuple[str, str] | None:
    """(question, answer) when the unit is an FAQ answer and its question is the line before it."""
    lines = source.chunk.text.splitlines()
    for n, line in enumerate(lines):
        if source.unit.text in line and n > 0:
            previous = lines[n - 1].strip()
            question = re.sub(r"^(?:Q:|Question:)\s*", "", previous)
            if previous.endswith("?") or previous.startswith("Q:"):
                return question.rstrip("?") + "?", source.unit.text
    return None


def _written_by_model(model: ChatModel, source: SourceUnit, value: Value) -> str | None:
    text = f"{heading_of(source)} — {source.text}"
    reply = "".join(model.stream([ChatMessage("user", _WRITE_QUESTION.format(text=text[:500]))],
                                 max_tokens=40, temperature=0.0))
    question = reply.strip().splitlines()[0].strip().strip('"') if reply.strip() else ""
    if not (12 <= len(question) <= 160 and question.endswith("?")) or value.text in question:
        return None
    return question


def answerable_question(source: SourceUnit, rng: random.Random, model: ChatModel | None = None) -> TestQuestion | None:
    value = value_of(source)
    doc = Path(source.chunk.source).name
    faq = _faq_pair(source)
    if faq is not None:
        question, answer = faq
        keep = value.text if value else _key_phrase(answer)
        return TestQuestion(id="", question=question, answerable=True, category="answerable", doc=doc,
                            page=source.chunk.page_start, answer=answer, must_include=[keep] if keep else [])
    if value is None or not value.subject:
        return None
    question = None
    if model is not None and not source.unit.table_header:
        question = _written_by_model(model, source, value)
    if question is None:
        if rng.random() < 1 / 3:
            question = rng.choice(_INFORMAL).format(a=value.attribute, s=value.subject.lower())
        else:
            question = rng.choice(_TEMPLATES[value.kind]).format(a=value.attribute, s=value.subject)
    return TestQuestion(id="", question=question, answerable=True, category="answerable", doc=doc,
                        page=source.chunk.page_start, answer=source.text, must_include=[value.text])


def _key_phrase(text: str) -> str | None:
    """Three consecutive words of an answer, starting at its first long word (a fact it states)."""
    words = text.split()
    for n, word in enumerate(words):
        if len(re.sub(r"\W", "", word)) >= 6 and n + 3 <= len(words):
            return " ".join(words[n : n + 3]).strip(",.;:")
    return None


# --- unanswerable questions --------------------------------------------------------------------

_VAGUE = {
    "amount": ("How much is it?", "How much does it cost?", "What's the {a}?"),
    "percent": ("What's the rate?", "What {a} do I get?"),
    "time": ("What time?", "What's the {a}?"),
    "period": ("How long does it take?", "How long do I have?", "What's the {a}?"),
    "phone": ("What's the number?", "Who do I call?"),
}


_VAGUE_ATTRIBUTE = ("What's the {a}?", "How much is the {a}?", "Is there a {a}?", "what {a} applies?",
                    "{a}?", "whats the {a} these days")


def underspecified(value: Value, rng: random.Random, shared: bool = False) -> str:
    """The kind of value asked for, without what it belongs to (`shared`: the KB states this
    attribute for several subjects, so naming it alone still leaves the question open)."""
    if shared and rng.random() < 0.6:
        return rng.choice(_VAGUE_ATTRIBUTE).format(a=value.attribute)
    return rng.choice(_VAGUE[value.kind]).format(a=value.attribute)


def _changed(value: Value, rng: random.Random) -> str | None:
    """The value with its figure changed (never to one of the unit's own figures)."""
    found = re.search(r"\d[\d,]*(?:\.\d+)?", value.text)
    if not found or value.kind in ("phone", "time"):
        return None
    number = Decimal(found.group(0).replace(",", ""))
    factor = Decimal(rng.choice(["3", "4", "0.25"])) if number > 4 else Decimal(rng.choice(["7", "9"]))
    new = number * factor
    shown = f"{new:,.2f}".rstrip("0").rstrip(".") if "." in found.group(0) else f"{new.to_integral_value():,}"
    return value.text[: found.start()] + shown + value.text[found.end():]


def false_presupposition(value: Value, rng: random.Random) -> str | None:
    changed = _changed(value, rng)
    if changed is None:
        return None
    form = rng.choice((
        "Why did the {a} for {s} go up to {v}?",
        "Since the {a} for {s} is now {v}, when does that start?",
        "Why is the {a} for {s} {v} now?",
    ))
    return form.format(a=value.attribute, s=value.subject, v=changed)


def adjacent_fact(subject: str, attribute: str, rng: random.Random) -> str:
    form = rng.choice(("What is the {a} for {s}?", "Is there a {a} on {s}?", "How much is the {a} for {s}?",
                       *_INFORMAL[:3]))
    return form.format(a=attribute, s=subject)


def nonsensical(question: str, rng: random.Random) -> str:
    if rng.random() < 0.3:
        letters = "bcdfghjklmnpqrstvwxz"
        words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 7))) for _ in range(rng.randint(3, 6))]
        return " ".join(words) + "?"
    words = re.findall(r"[\w$%.,'-]+", question.rstrip("?"))
    rng.shuffle(words)
    return " ".join(words).lower() + "?"


_OUT_OF_KB_PROMPT = (
    "A bank's documents cover only these topics: {topics}.\n"
    "Write {n} short, different questions a bank customer might ask about banking products, "
    "services or other banks that these documents do NOT cover. One question per line, no numbering."
)
_OUT_OF_SCOPE_PROMPT = (
    "Write {n} short, different questions people ask a general assistant about everyday life, "
    "travel, health, sport, cooking, science or technology, with nothing to do with banks or money. "
    "One question per line, no numbering."
)


# Question frames with a slot for a word the KB never uses: everyday questions (out of scope), and
# banking questions about something this KB does not cover (out of the KB). The words come from
# the embedding model's vocabulary, so the frames name no topic themselves.
_OFF_TOPIC_FRAMES = (
    "Who invented the {w}?", "How do I repair a broken {w}?", "What is the history of the {w}?",
    "Where can I buy a cheap {w}?", "Can you recommend a good book about {w}?",
    "What's the best way to clean a {w}?", "Is a {w} dangerous for children?", "How big does a {w} get?",
)
_OTHER_TOPIC_FRAMES = (
    "Do you offer {w} accounts?", "What is the interest rate on a {w} loan?", "How do I open a {w} plan with you?",
    "Can I pay for {w} with my card?", "Is there a fee for {w} transfers?", "What are the rules for {w} deposits?",
    "What does {W} Bank charge for a {a}?", "Does {W} Financial offer a better {a} than you?",
)


def vocabulary_words(kb_vocab: "_Vocabulary", rng: random.Random, n: int) -> list[str]:
    """`n` common English words (the embedding model's vocabulary) that the KB never uses."""
    from docteller.settings import get_settings
    from ingest.embed import resolve_model

    _, model_dir = resolve_model(get_settings().embedding_model)
    vocab_file = model_dir / "vocab.txt"
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{vocab_file}: the embedding model has no word list to draw topics from")
    words = [w for w in vocab_file.read_text(encoding="utf-8").split()[2000:15000]
             if w.isalpha() and w.islower() and 5 <= len(w) <= 10 and kb_vocab.unseen(w)]
    return rng.sample(words, min(n, len(words)))


def model_questions(model: ChatModel, prompt: str, n: int, rounds: int = 2) -> list[str]:
    """Questions the chat model writes for `prompt`, one per line, deduplicated."""
    found: list[str] = []
    for r in range(rounds):
        reply = "".join(model.stream([ChatMessage("user", prompt)], max_tokens=25 * n, temperature=0.8 + 0.1 * r))
        for line in reply.splitlines():
            line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip().strip('"')
            if 12 <= len(line) <= 140 and line.endswith("?") and line.lower() not in {q.lower() for q in found}:
                found.append(line)
        if len(found) >= 2 * n:
            break
    return found


# --- the whole set -----------------------------------------------------------------------------


class _Vocabulary:
    """How many units use each term, to tell which words a KB never uses in any form (the terms
    of its search index: "wanting" is a word a KB that writes "want" uses)."""

    def __init__(self, units: Sequence[SourceUnit]) -> None:
        self.df: Counter[str] = Counter()
        for source in units:
            chunk = source.chunk
            self.df.update(set(index_terms(" ".join([chunk.title, *chunk.heading_path, source.text]))))

    def unseen(self, text: str) -> list[str]:
        return [t for t in index_terms(text) if not self.df.get(t) and not t.isdigit()]


def generate(
    units: Sequence[SourceUnit],
    model: ChatModel | None,
    *,
    per_category: int = 10,
    answerable: int = 30,
    seed: int = 0,
    model_writes_answerable: bool = True,
) -> list[TestQuestion]:
    """`answerable` questions and `per_category` of each unanswerable kind (fewer when the KB
    offers fewer), all from templates over the KB's own text; with a `model`, the model also
    writes out-of-KB and out-of-scope questions (kept only when they use a word the KB never
    uses) and, with `model_writes_answerable`, the answerable questions about sentences (table
    rows and FAQ pairs always use templates)."""
    rng = random.Random(seed)
    vocab = _Vocabulary(units)
    shuffled = list(units)
    rng.shuffle(shuffled)
    positives: list[TestQuestion] = []
    valued: list[tuple[SourceUnit, Value]] = []
    seen: set[str] = set()
    for source in shuffled:
        value = value_of(source)
        if value is not None and value.subject:
            valued.append((source, value))
        if len(positives) < answerable:
            q = answerable_question(source, rng, model if model_writes_answerable else None)
            if q is not None and q.question.lower() not in seen and len(q.question) <= 200 and "|" not in q.question:
                seen.add(q.question.lower())
                positives.append(q)
    out: list[TestQuestion] = list(positives)

    def add(category: str, questions: Iterable[str]) -> None:
        kept = 0
        for question in questions:
            if kept >= per_category:
                break
            if question and question.lower() not in seen:
                seen.add(question.lower())
                out.append(TestQuestion(id="", question=question, answerable=False, category=category))
                kept += 1

    subjects_of: dict[str, set[str]] = {}
    for _, v in valued:
        subjects_of.setdefault(v.attribute, set()).add(v.subject.lower())
    add("underspecified", (underspecified(v, rng, len(subjects_of[v.attribute]) >= 2) for _, v in valued))
    add("false_presupposition", (false_presupposition(v, rng) for _, v in valued))
    add("adjacent_fact", _adjacent(valued, units, rng))
    add("nonsensical", (nonsensical(q.question, rng) for q in positives))
    written_other: list[str] = []
    written_off: list[str] = []
    if model is not None:
        topics = "; ".join(sorted({_clean_heading(s.chunk.title) for s in units})[:12])
        written = model_questions(model, _OUT_OF_KB_PROMPT.format(topics=topics, n=per_category), per_category)
        written_other = [q for q in written if vocab.unseen(q)]
        written_off = [q for q in model_questions(model, _OUT_OF_SCOPE_PROMPT.format(n=per_category), per_category)
                       if vocab.unseen(q)]
    words = vocabulary_words(vocab, rng, 4 * per_category)
    attributes = sorted({v.attribute for _, v in valued}) or ["fee"]
    add("out_of_kb", [*written_other, *(rng.choice(_OTHER_TOPIC_FRAMES).format(
        w=w, W=w.capitalize(), a=rng.choice(attributes)) for w in words[: 2 * per_category])])
    add("out_of_scope", [*written_off, *(rng.choice(_OFF_TOPIC_FRAMES).format(w=w) for w in words[2 * per_category:])])
    for n, q in enumerate(out, 1):
        q.id = f"g{n:03d}"
    return out


def _adjacent(valued: Sequence[tuple[SourceUnit, Value]], units: Sequence[SourceUnit], rng: random.Random) -> Iterable[str]:
    """Attributes stated for some subjects, asked of subjects the KB never states them for."""
    counts = Counter(v.attribute for _, v in valued)
    attributes = sorted(counts)
    subjects = sorted({heading_of(s) for s in units if 3 <= len(heading_of(s)) <= 60})
    if not attributes or not subjects:
        return
    texts = [set(tokenize(" ".join([s.chunk.title, *s.chunk.heading_path, s.chunk.text]))) for s in units]
    for _ in range(20 * len(attributes)):
        attribute, subject = rng.choice(attributes), rng.choice(subjects)
        need = set(tokenize(subject)) | set(tokenize(attribute))
        if need and not any(need <= text for text in texts):
            yield adjacent_fact(subject.lower(), attribute, rng)
