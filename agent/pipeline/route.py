"""Route: which path answers a turn.

- "empty": nothing was typed;
- "handoff": the customer asks for a person, or says yes to the person the last answer offered
  (answered with the contact centre's number and hours as the KB states them);
- "document": a question about the customer's uploaded document that code computes from its
  extracted fields (`agent.doc_answers`: balances, totals, expiry, reconciliation);
- "grounded": everything else goes through rewrite → retrieve → … → cite.
"""

from __future__ import annotations

import re

from agent.doc_answers import answer_document_question
from agent.pipeline.cite import citation_from_hit
from agent.pipeline.types import Route, Turn
from docteller.model import Citation, SearchHit
from docteller.protocols import KnowledgeBase

_HANDOFF_RE = re.compile(
    r"\b((talk|speak|chat)\s+(to|with)\s+(a|an|some|the|your|real|live)?\s*(one|body|person|human|agent|"
    r"representative|rep|staff|advisor|adviser|banker|someone|somebody|people)|real person|live (agent|person)|"
    r"human( being| agent)?( please)?$|agent,? please|representative|operator|call me back|customer service agent)\b",
    re.IGNORECASE,
)
# An answer that offers a person ("Would you like me to connect you with a member of our team?").
_OFFERS_PERSON_RE = re.compile(r"\b(?:connect you with|put you through to|transfer you to)\b", re.IGNORECASE)
# A reply that accepts an offer, and nothing else: "yes", "yes please", "please", "sure", "ok".
_ACCEPT_RE = re.compile(
    r"^(?:yes|yeah|yep|yup|ya|y|sure|ok|okay|please|pls|plz|go ahead|do it|of course|definitely|"
    r"i would|i'd like that|i would like that|connect me)"
    r"(?:[\s,.!]+(?:yes|please|pls|thanks|thank you|go ahead|do it|that would be great|that'd be great))*[\s,.!]*$",
    re.IGNORECASE,
)


def is_handoff_request(question: str) -> bool:
    return bool(_HANDOFF_RE.search(question.strip()))


def is_acceptance(reply: str) -> bool:
    """A short reply that says yes to an offer ("yes", "please", "sure, thanks")."""
    return bool(_ACCEPT_RE.match(reply.strip()))


def offers_person(answer_text: str) -> bool:
    """The answer offers to connect the customer with a person (a "yes" next takes it up)."""
    return bool(_OFFERS_PERSON_RE.search(answer_text))


def route(turn: Turn) -> Route:
    if not turn.question:
        return Route("empty")
    if is_handoff_request(turn.question) or (turn.offered_person and is_acceptance(turn.question)):
        return Route("handoff")
    doc_answer = answer_document_question(turn.question, list(turn.uploads))
    if doc_answer is not None:
        return Route("document", doc_answer)
    return Route("grounded")


_PHONE_RE = re.compile(r"(?:\+?1[-\s.])?\(?\d{3}\)?[-\s.]\d{3}[-\s.]\d{4}")
# What banks call their general line: "Customer Service", "Customer Care", "Client Services",
# "Member Support", "Contact Centre", "Call Center" (English names, not one KB's word).
_GENERAL_CONTACT_RE = re.compile(
    r"\b(?:customer|client|member)\s+(?:services?|care|support)\b|\b(?:contact|call)\s+cent(?:er|re)\b", re.IGNORECASE
)


def contact_from_kb(kb: KnowledgeBase) -> tuple[str, list[Citation]]:
    """The handoff text, with the general line's number and hours (Customer Service, Customer
    Care, a contact centre: `_GENERAL_CONTACT_RE`) as the KB states them."""
    hits: list[SearchHit] = kb.search("Customer Service phone number hours contact us", k=5)
    for hit in hits:
        for line in hit.chunk.text.splitlines():
            if _GENERAL_CONTACT_RE.search(line) and (phone := _PHONE_RE.search(line)):
                hours = line[phone.end():].strip(" |:-–,;")
                hours_text = f" ({hours.replace(' | ', ', ')})" if hours else ""
                c = hit.chunk
                text = (
                    "I'll hand you over to a person. Our Customer Service team is at "
                    f"{phone.group(0)}{hours_text} [{c.title}, p. {c.page_start}]. "
                    "I've logged your request so they can see this conversation."
                )
                return text, [citation_from_hit(hit, "kb")]
    text = (
        "I'll hand you over to a person. Please visit any branch or use the phone number on the back "
        "of your card; I've logged your request so they can see this conversation."
    )
    return text, []
