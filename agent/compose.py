"""Compose an extractive answer a customer can use: the direct answer first, then the evidence.

The evidence lines (`agent.evidence`) are sentences, list items, table rows and FAQ answers,
ranked for the question. An answer made of them reads:

    Call our 24/7 Card Services line at 1-800-555-0199 (…). [Cards…, p. 1]

    Report a lost or stolen card immediately:
    - “Call our 24/7 Card Services line at 1-800-555-0199 (…). You can also lock your card …” [Cards…, p. 1]

- The lead is one plain sentence copied from the best line: the best-scoring sentence, or the
  first sentence among the quoted lines that holds the kind of value asked for (a phone number
  for "who do I call", an amount for "how much") when the best one doesn't. Every figure and
  name in it is checked in code against the evidence it cites (`lead_is_supported`); a lead
  that fails is dropped and only the quotes remain.
- Then each quoted line whole: the paragraph, or the list with its lead-in, that the best
  sentence or item belongs to (`EvidenceLine.whole`), a table row with its column names, an FAQ
  answer (never the FAQ's question). Each whole is quoted once, with its citation, under its
  section heading shown once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.evidence import EvidenceLine, expected_answers, _sentences
from agent.grounding import unsupported_numbers

_ITEM_TAIL_RE = re.compile(r"[;,]\s*(?:or|and)?$")
_NAME_RE = re.compile(r"\b[A-Z][a-zA-Z&'-]*[A-Z][a-zA-Z&'-]*\b|\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)+\b")


def lead_sentence(question: str, lines: Sequence[EvidenceLine]) -> tuple[str, EvidenceLine] | None:
    """The answer's first sentence and the line it is copied from, or None when there are no lines."""
    if not lines:
        return None
    wanted = expected_answers(question)
    best = lines[0]
    if wanted and not any(p.search(best.text) for p in wanted):
        for line in lines:
            for sentence in _sentences(line.whole):
                if any(p.search(sentence) for p in wanted):
                    return plain(sentence), line
    return plain(_first_sentence(_own_text(best))), best


def _first_sentence(text: str) -> str:
    """The first sentence of a unit (a whole FAQ answer can run to several), with the next one
    when it is only "Yes." or "No, …" so the lead says what is or isn't so."""
    sentences = _sentences(text)
    if len(sentences) > 1 and len(sentences[0].split()) <= 3:
        return f"{sentences[0]} {sentences[1]}"
    return sentences[0] if sentences else text


def _own_text(line: EvidenceLine) -> str:
    """The line without the section heading `quote` puts before a sentence (it is shown once,
    above the quotes); a table row keeps its section: "Mobile check deposit — Limit: …"."""
    unit = line.unit
    if unit is None or unit.table_header:
        return line.text
    return unit.text


def plain(sentence: str) -> str:
    """A sentence as an answer's lead: a list item's trailing "; or" dropped, closing punctuation added."""
    text = _ITEM_TAIL_RE.sub("", sentence.strip()).strip()
    return text if text[-1:] in ".!?)" else f"{text}."


def lead_is_supported(lead: str, evidence: Sequence[str]) -> bool:
    """Every figure (amounts and percentages always, counts above 10) and every name in the lead
    is stated in the evidence it cites."""
    if unsupported_numbers(lead, evidence):
        return False
    text = " ".join(evidence)
    return all(name in text for name in _NAME_RE.findall(lead))


def compose_answer(question: str, lines: Sequence[EvidenceLine]) -> str:
    """The direct answer, then each quoted whole once, grouped under its section, with citations.

    Another institution's document is never the bank's word: its lead and its quotes say whose
    they are ("Bank of America's Online Banking says: …")."""
    if not lines:
        return ""
    lead = lead_sentence(question, lines)
    quotes = _quote_groups(lines)
    if lead is not None:
        sentence, source = lead
        if lead_is_supported(sentence, [source.passage.hit.chunk.text, source.whole]):
            said = _attributed(sentence, source)
            only = len(lines) == 1 or all(line.whole == lines[0].whole for line in lines)
            if only and _same(sentence, lines[0].whole):
                return f"{said} {source.passage.label}"
            return f"{said} {source.passage.label}\n\n{quotes}"
    return quotes


def _attributed(sentence: str, line: EvidenceLine) -> str:
    """The lead as said: plain for the bank's own words and the customer's document, introduced
    by its owner for a third party's ("Bank of America's Online Banking says: …")."""
    if line.passage.publisher is None:
        return sentence
    return f"{_capitalised(line.passage.owner)} says: {sentence}"


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _same(a: str, b: str) -> bool:
    return plain(a).rstrip(".") == plain(b).rstrip(".")


def _quote_groups(lines: Sequence[EvidenceLine]) -> str:
    """Quoted wholes, each once, under whose they are ("From our policy:", "From your document:",
    "Bank of America's Online Banking says:") and their section heading (each shown once per run),
    so mixed evidence names every owner and "our policy" is only said of the bank's own."""
    out: list[str] = []
    seen: set[str] = set()
    last_section: str | None = None
    last_owner: str | None = None
    for line in lines:
        whole = line.whole
        if whole in seen:
            continue
        seen.add(whole)
        owner = line.passage.owner
        if owner != last_owner:
            out.append(f"{_capitalised(owner)} says:" if line.passage.publisher else f"From {owner}:")
            last_owner, last_section = owner, None
        section = line.section
        if section and section != last_section:
            out.append(f"{section}:")
        last_section = section or last_section
        out.append(f"- “{whole}” {line.passage.label}")
    return "\n".join(out)
