"""Reading a choice (\"yes\" / \"no\") off a model's next-token distribution, for every backend.

A reply may start "yes", "Yes" or " yes" (tokenizers differ on the leading space), so each
choice collects the probability of the first token of each of those spellings."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any


def spellings(choice: str) -> list[str]:
    word = choice.strip()
    forms = [word, word.lower(), word.capitalize(), word.upper()]
    return list(dict.fromkeys(forms + [f" {f}" for f in forms]))


def choice_token_ids(tokenize: Callable[[str], list[int]], choices: Sequence[str]) -> dict[str, set[int]]:
    """{choice: ids of the first token of each of its spellings}; a token shared by two
    choices (a tokenizer that splits both into the same first piece) is dropped from both."""
    ids = {c: {tokens[0] for s in spellings(c) if (tokens := tokenize(s))} for c in choices}
    for a in choices:
        for b in choices:
            if a != b:
                shared = ids[a] & ids[b]
                ids[a] -= shared
                ids[b] -= shared
    empty = [c for c, found in ids.items() if not found]
    if empty:
        raise ValueError(f"the tokenizer gives no distinct first token for {empty}")
    return ids


def normalised(token_probability: Callable[[Any], float], ids: Mapping[str, set[Hashable]]) -> dict[str, float]:
    """Sum each choice's token probabilities and normalise over the choices."""
    mass = {c: sum(token_probability(t) for t in tokens) for c, tokens in ids.items()}
    total = sum(mass.values())
    if total <= 0:
        return {c: 1.0 / len(mass) for c in mass}
    return {c: m / total for c, m in mass.items()}


def choice_from_text(reply: str, choices: Sequence[str]) -> dict[str, float]:
    """Fallback for a backend without token probabilities: the generated reply's first word."""
    words = reply.strip().split()
    first = words[0].strip(".,:;!\"'").lower() if words else ""
    return {c: 1.0 if first == c.strip().lower() else 0.0 for c in choices}
