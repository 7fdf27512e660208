"""Text normalisation and the words used to match texts: folding, clean-up, stopwords, stems.

Every place that compares words (BM25, the prompt's passage focus, grounding's overlap, label
matching on IDs and statements) takes its rules from here.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Typographic ligatures some PDF fonts store as single code points ("ﬁxed" must match "fixed").
_LIGATURES = str.maketrans({"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"})


def clean(text: str) -> str:
    """One line of document text: soft hyphens dropped, ligatures expanded, runs of spaces,
    tabs and no-break spaces made one space, ends trimmed."""
    return re.sub(r"[ \t\u00a0]+", " ", text.replace("\u00ad", "").translate(_LIGATURES)).strip()


def fold(text: str) -> str:
    """Lowercase, accents removed, typographic quotes and º normalised: for label matching
    ('Date de délivrance' matches 'date de delivrance', 'Débits' matches 'debits')."""
    text = text.replace("’", "'").replace("º", "o").replace("°", "o")
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


# Words a customer's question is made of that say nothing about its subject ("how do I", "what
# is my"). The base list; the two below adjust it for what their users compare.
STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i if in is it its may me my of on "
    "or our the their there this to we what when where which who will with you your".split()
)
# BM25 also drops the function words of running text (Lucene's English list has them), and
# keeps "may": a modal that policies use with meaning ("fees may apply").
INDEX_STOPWORDS = (STOPWORDS - {"may"}) | frozenset("but into so such that them then these they was were am".split())
# Content overlap between an answer and its passages: yes/no/not are answer words, not content.
CONTENT_STOPWORDS = (STOPWORDS - {"me"}) | frozenset({"not", "no", "yes"})


# A word joined by hyphens ("pre-approval", "e-mail"): people write the same word closed up
# ("preapproval", "email") or spaced. Letters only: a phone number's or a date's parts are no word.
_HYPHENATED_RE = re.compile(r"\b[A-Za-z]+(?:-[A-Za-z]+)+\b")


def with_closed_compounds(text: str) -> str:
    """`text` with each hyphenated word followed by its closed-up spelling ("pre-approval" ->
    "pre-approval preapproval"), so word matching finds it either way (Lucene's word-delimiter
    filter with catenation indexes the same)."""
    return _HYPHENATED_RE.sub(lambda m: f"{m.group()} {m.group().replace('-', '')}", text)


@lru_cache(maxsize=1 << 18)  # a KB has far fewer distinct words; cached, a rebuild tokenizes 3× faster
def plural_stem(token: str) -> str:
    """Plural folding ("transfers" → "transfer", "policies" → "policy", "fees" → "fee").

    Deliberately conservative: the singular and plural of a word meet, other forms stay apart
    (the verifier's question terms). The BM25 index and the test-set generator's vocabulary stem
    these tokens further with Snowball (`retrieval.bm25.index_term`).
    """
    if len(token) <= 3 or token[0].isdigit():
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith("sses"):
        return token[:-2]
    if token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def prefix_stem(word: str, length: int = 5) -> str:
    """A word's first letters: loose enough that "withdrawals" meets "withdraw" when judging
    whether two short texts talk about the same thing (never used for the index)."""
    return word[:length]
