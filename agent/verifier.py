"""Answerability verifier: do the selected evidence lines answer the question, or decline?

One typed stage at the decline/judge step of the answer path: input the question and the
evidence lines that would be quoted (`agent.evidence.EvidenceLine`) plus the chat model's P(yes)
that they answer it; output a `Verdict` (answer or decline, a probability, a reason).

The decision is a logistic regression over a few general features, fitted on synthetic data
generated from KB text itself (`agent.testset`: questions written from a unit, and the six
UAEval4RAG kinds of unanswerable question, each paired with the lines retrieval actually
selects for it) — never on eval questions, and with no product, word or figure list:

- the judge's P(yes), as a logit (when the fitted model uses it: a forward pass per question);
- the retrieved chunks' best cosine similarity and the best line's evidence score;
- how much of the question the lines cover (its terms, weighted by their rarity in the KB,
  found in the lines with their headings, and in the line texts alone);
- how much of the question the KB never uses at all (nonsense, or a topic it doesn't cover);
- the rarest question term the lines lack (an adjacent fact: the product is there, the asked
  attribute is not);
- the question asks for a kind of value (an amount, a time, a phone number) no line holds;
- a capitalised name or a figure of the question that no line states;
- how specific the question is (its terms the KB knows), and whether it opens like a question
  (computed, but the shipped model leaves it out: customers type fragments, "fee for a cash
  advance?", and it declined them).

A question's terms are the KB's search terms less function words typed as words ("whats",
"im", "u": contractions without their apostrophe are not words the KB never uses). The
threshold keeps false declines of each training KB's synthetic dev answerable questions ≤ 5 %.

Two fitted models ship, each with its coefficients, feature scaling and decision threshold,
written by `python -m agent.verifier_training` (which documents how they were fitted):
`agent/verifier-judged.json` weighs the chat model's P(yes) with the retrieved chunks' best
similarity and the best line's evidence score (one forward pass per question; the default with
the packaged model, whose probabilities it was fitted on), and `agent/verifier.json` decides from
all the features but the judge's (no model call). On real dev questions the model's P(yes)
separates answerable from unanswerable far better (AUC 0.89) than the word features do (0.75):
those were learned on template-written questions, which reuse the KB's words, and real
customers' questions don't (`Settings.answer_judge` chooses).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from agent.evidence import EvidenceLine, required_answers
from agent.grounding import unknown_entities, unsupported_numbers
from retrieval.bm25 import INDEX_STOPWORDS, tokenize

log = logging.getLogger(__name__)

VERIFIER_PATH = Path(__file__).resolve().parent / "verifier.json"  # the lexical model: no model call
# The model fitted with the chat model's P(yes) as a feature (`judge_logit`): a forward pass per
# question, for a chat model that gives token probabilities (`docteller.protocols.ChoiceScorer`).
JUDGED_VERIFIER_PATH = VERIFIER_PATH.with_name("verifier-judged.json")

FEATURES = (
    "judge_logit",
    "similarity",
    "line_score",
    "coverage",
    "line_coverage",
    "unseen_share",
    "missing_rarity",
    "type_missing",
    "names_missing",
    "figures_missing",
    "specificity",
    "question_form",
)

# How an English question or request opens: an interrogative, an auxiliary verb ("can", "is"),
# a conjunction that starts a condition or a follow-up ("if", "after", "and"), a greeting, or a
# first-person statement of a need ("I lost my card"). A word salad rarely does.
_QUESTION_OPENINGS = frozenset(
    """what whats what's how when where which who whom whose why can could do does did is are was
    were will would should shall may might must have has i i'm im i've my we our please if after
    before since while once so and but also or then hey hi hello tell any""".split()
)
# Numbers written as words ("sixty days", "ten business days"): statutes and agreements spell them.
_NUMBER_WORDS = {w: str(n) for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({w: str(10 * n) for n, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)})
_NUMBER_WORD_RE = re.compile(rf"\b({'|'.join(_NUMBER_WORDS)})\b", re.IGNORECASE)


def with_digits(text: str) -> str:
    """Number words as digits, so "sixty days" holds a period like "60 days" does."""
    return _NUMBER_WORD_RE.sub(lambda m: _NUMBER_WORDS[m.group(1).lower()], text)


def question_form(question: str) -> float:
    """1 when the question opens the way English questions and requests do, else 0."""
    words = re.findall(r"[a-z']+", question.lower())
    return float(bool(words) and words[0] in _QUESTION_OPENINGS)

# English contractions typed without their apostrophe ("im", "dont", "youre"), and the pieces an
# apostrophe leaves ("I've" -> "ve"): grammar, not any KB's words.
_CONTRACTIONS = frozenset("""im ive youre youve youll youd theyre theyve theyll theyd weve whats thats
    theres heres wheres hows whos lets dont doesnt didnt isnt arent wasnt werent cant couldnt wouldnt
    shouldnt wont havent hasnt hadnt aint ve ll re""".split())


# English closed-class words the search stopwords keep (they match nothing a KB is about, and a
# policy rarely writes them, so each read as a word the KB never uses): pronouns, quantifiers,
# the light verbs of chat ("got", "went", "doing", "saying"), and discourse words ("ok", "like").
_CLOSED_CLASS = frozenset("""he him his she her hers herself himself they're someone somebody anyone
    anybody everyone everybody something anything everything nothing nobody much many more most
    few several enough less get got gets getting go goes went going gone doing done
    say says said saying ok okay yeah yes no please thanks thank like just really even still already""".split())


def _function_word(term: str) -> bool:
    """A term that says nothing about the topic: a single letter ("u", the "s" of "what's"), a
    stopword the stemmer made ("whats" -> "what"), a contraction without its apostrophe, or an
    English closed-class word ("much", "his", "got")."""
    if len(term) == 1 and not term.isdigit():
        return True
    return term in INDEX_STOPWORDS or term in _CONTRACTIONS or term in _CLOSED_CLASS


def question_terms(question: str) -> list[str]:
    """The question's topic terms, each once: the KB's search terms less the function words
    customers type as words ("whats the cutoff if im paying a bill online" -> "cutoff", "paying", "bill", "online")."""
    return [t for t in dict.fromkeys(tokenize(question)) if not _function_word(t)]


# A figure right after a first-person singular word (at most two words between; a policy's "we"
# and "us" are the bank's) is the customer's own situation ("before my $8,000 transfer goes out",
# "what would I get on 20k", "if I'm 67"): what they have or are, to be compared with the bank's
# terms, not a claim about those terms that the lines must state (a false presupposition: "why did
# the fee go up to $45?", "since the rule limits my overdraft charge to $3").
_OWN_FIGURE_RE = re.compile(
    r"(\b(?:i|i'm|im|i've|ive|i'd|my|me)(?:\s+[a-z'-]+){0,2}\s+)[$€£]?\d[\d,.]*(?:\s?%|[kK]\b)?",
    re.IGNORECASE,
)


def claimed_figures_text(question: str) -> str:
    """`question` without the figures that describe the customer's own situation (`_OWN_FIGURE_RE`)."""
    return _OWN_FIGURE_RE.sub(r"\1", question)


# term -> number of KB chunks holding it, and the number of chunks (`KnowledgeIndex.term_frequencies`)
TermFrequencies = Callable[[str], tuple[dict[str, int], int]]


class Verdict(BaseModel):
    """The verifier's decision on one question and its evidence lines."""

    answerable: bool
    probability: float  # P(the lines answer the question)
    threshold: float
    reason: str
    features: dict[str, float]


class VerifierModel(BaseModel):
    """A fitted logistic regression: P = sigmoid(intercept + coef · (x - mean) / scale)."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float
    fitted_on: dict = {}

    def probability(self, values: dict[str, float]) -> float:
        x = (np.array([values[f] for f in self.features]) - np.array(self.mean)) / np.array(self.scale)
        z = self.intercept + float(np.dot(self.coef, x))
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _line_context(line: EvidenceLine) -> str:
    chunk = line.passage.hit.chunk
    return " ".join([chunk.title, *chunk.heading_path, line.text])


def features(
    question: str,
    lines: Sequence[EvidenceLine],
    judgement: float | None,
    frequencies: TermFrequencies | None = None,
) -> dict[str, float]:
    """The verifier's inputs for one question and the lines that would be quoted (`judgement`:
    the chat model's P(yes), None when the fitted model doesn't use it)."""
    terms = question_terms(question)
    df, n_chunks = frequencies(question) if frequencies else ({}, 0)

    def idf(term: str) -> float:  # rarity in the KB; a term the KB never uses counts as rarest
        return math.log((n_chunks + 1) / (df.get(term, 0) + 1)) + 1.0

    context = set(tokenize(" ".join(_line_context(line) for line in lines)))
    texts = set(tokenize(" ".join(line.text for line in lines)))
    total = sum(idf(t) for t in terms) or 1.0
    known = [t for t in terms if df.get(t, 0) > 0] if frequencies else terms
    missing = [idf(t) for t in terms if t not in context]
    wanted = required_answers(question)
    quoted = with_digits(" ".join(line.text for line in lines))
    return {
        "judge_logit": _logit(judgement) if judgement is not None else 0.0,
        "similarity": max((line.passage.hit.vector_score or 0.0 for line in lines), default=0.0),
        "line_score": lines[0].passage.score if lines else 0.0,
        "coverage": sum(idf(t) for t in terms if t in context) / total,
        "line_coverage": sum(idf(t) for t in terms if t in texts) / total,
        "unseen_share": (len(terms) - len(known)) / len(terms) if terms else 1.0,
        "missing_rarity": max(missing, default=0.0) / (math.log(n_chunks + 1) + 1.0),
        "type_missing": float(bool(wanted) and not any(p.search(quoted) for p in wanted)),
        "names_missing": float(min(len(unknown_entities(question, [_line_context(x) for x in lines])), 2)),
        # An amount or a rate the question states ("$5", "8%") must be in the lines as one; a bare
        # count only above 10 ("why did it go up to 45 days").
        "figures_missing": float(bool(unsupported_numbers(claimed_figures_text(question), [quoted]))),
        "specificity": math.log1p(len(known)),
        "question_form": question_form(question),
    }


class AnswerabilityVerifier:
    """Decides from `features` with the fitted model; loaded once per process."""

    def __init__(self, model: VerifierModel, frequencies: TermFrequencies | None = None) -> None:
        self.model = model
        self.frequencies = frequencies

    @classmethod
    def load(cls, frequencies: TermFrequencies | None = None, path: Path = VERIFIER_PATH) -> "AnswerabilityVerifier":
        try:
            model = VerifierModel.model_validate_json(path.read_text())
        except FileNotFoundError as exc:
            raise RuntimeError(f"{path} is missing: run `python -m agent.verifier train`") from exc
        except ValueError as exc:
            raise RuntimeError(f"{path} is malformed: {exc}") from exc
        return cls(model, frequencies)

    @classmethod
    def for_chat_model(cls, chat_model: object, choice: str = "auto",
                       frequencies: TermFrequencies | None = None) -> "AnswerabilityVerifier":
        """The shipped verifier for this chat model and `Settings.answer_judge` ("auto", "model",
        "lexical"). With "auto", the judged model decides when the chat model is the one whose
        token probabilities it was fitted on (the same weights file): another model's P(yes) is
        calibrated differently, and a text-only model's reply gives only 0 or 1."""
        from docteller.protocols import ChoiceScorer

        if choice == "lexical":
            return cls.load(frequencies, VERIFIER_PATH)
        judged = cls.load(frequencies, JUDGED_VERIFIER_PATH)
        if choice == "model":
            return judged
        fitted_with = judged.model.fitted_on.get("judge_model", {})
        if isinstance(chat_model, ChoiceScorer) and fitted_with.get("sha256") == getattr(chat_model, "model_hash", None):
            return judged
        log.info("the lexical verifier decides: the judged one was fitted on %s's token probabilities, not "
                 "this model's (DOCTELLER_ANSWER_JUDGE=model uses it anyway; `python -m "
                 "agent.verifier_training` fits one for this model)", fitted_with.get("id", "another model"))
        return cls.load(frequencies, VERIFIER_PATH)

    @property
    def name(self) -> str:
        """Which fitted model decides: "model-judged" (the chat model's P(yes) among its
        features) or "lexical"."""
        return "model-judged" if self.uses_judge else "lexical"

    @property
    def uses_judge(self) -> bool:
        """Whether the fitted model weighs the chat model's P(yes) (a forward pass per question)."""
        return "judge_logit" in self.model.features

    def decide(self, question: str, lines: Sequence[EvidenceLine], judgement: float | None = None) -> Verdict:
        values = features(question, lines, judgement, self.frequencies)
        if not lines:
            return Verdict(answerable=False, probability=0.0, threshold=self.model.threshold,
                           reason="no evidence lines", features=values)
        p = self.model.probability(values)
        ok = p >= self.model.threshold
        return Verdict(
            answerable=ok,
            probability=round(p, 4),
            threshold=self.model.threshold,
            reason=_explain(values, p, self.model, ok),
            features={k: round(v, 4) for k, v in values.items()},
        )


def _explain(values: dict[str, float], p: float, model: VerifierModel, ok: bool) -> str:
    """The decision and the feature that pushed hardest towards it."""
    contributions = {
        f: c * (values[f] - m) / s for f, c, m, s in zip(model.features, model.coef, model.mean, model.scale)
    }
    key = (max if ok else min)(contributions, key=contributions.get)
    verb = "answer it" if ok else "don't answer it"
    judge = (f"; the model's P(yes) {1 / (1 + math.exp(-values['judge_logit'])):.2f}"
             if "judge_logit" in model.features else "")
    return (
        f"the verifier judged that the evidence lines {verb} (P {p:.2f} "
        f"{'≥' if ok else '<'} {model.threshold:.2f}; strongest sign: {key} = {values[key]:.2f}{judge})"
    )


# --- fitting --------------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (x already standardised)."""
    n, d = x.shape
    design = np.hstack([np.ones((n, 1)), x])
    w = np.zeros(d + 1)
    penalty = np.eye(d + 1) * l2
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -40, 40)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[1:], float(w[0])


def fit(rows: Sequence[dict], max_false_decline: float = 0.05, names: Sequence[str] = FEATURES) -> VerifierModel:
    """Fit on `rows` ({"features": {...}, "answerable": bool, "split": "train"|"dev", "kb": …}):
    the coefficients on the train rows, the threshold on the dev rows: the lowest P that keeps
    false declines of dev answerable questions ≤ `max_false_decline` on every KB the rows come
    from (one KB's easy questions must not set a threshold that declines another's)."""
    train = [r for r in rows if r.get("split") != "dev"]
    dev = [r for r in rows if r.get("split") == "dev"] or train
    x = np.array([[r["features"][f] for f in names] for r in train], dtype=float)
    y = np.array([1.0 if r["answerable"] else 0.0 for r in train])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    coef, intercept = fit_logistic((x - mean) / scale, y)
    model = VerifierModel(features=list(names), mean=mean.tolist(), scale=scale.tolist(),
                          coef=coef.tolist(), intercept=intercept, threshold=0.5)
    thresholds = []
    for kb in sorted({str(r.get("kb", "")) for r in dev}):
        scored = [(model.probability(r["features"]), bool(r["answerable"])) for r in dev if str(r.get("kb", "")) == kb]
        thresholds.append(_threshold(scored, max_false_decline))
    model.threshold = min(thresholds)
    return model


def _threshold(scored: Sequence[tuple[float, bool]], max_false_decline: float) -> float:
    answerable = sorted(p for p, a in scored if a)
    if not answerable:
        return 0.5
    allowed = int(math.floor(max_false_decline * len(answerable)))
    # Declining the `allowed` lowest answerable scores at most: the threshold sits just above them.
    cut = answerable[allowed] if allowed < len(answerable) else answerable[-1]
    below = [p for p in answerable if p < cut]
    return round((cut + (below[-1] if below else 0.0)) / 2, 4)


def report(model: VerifierModel, rows: Sequence[dict]) -> dict[str, float | int | None]:
    """Correct declines / false declines of the model on `rows`, overall and per category."""
    out: dict[str, float | int | None] = {}
    decided = [(model.probability(r["features"]) >= model.threshold, r) for r in rows]
    pos = [ok for ok, r in decided if r["answerable"]]
    neg = [ok for ok, r in decided if not r["answerable"]]
    out["answerable"] = len(pos)
    out["unanswerable"] = len(neg)
    out["false_declines"] = round(1 - sum(pos) / len(pos), 4) if pos else None
    out["correct_declines"] = round(1 - sum(neg) / len(neg), 4) if neg else None
    for category in sorted({r["category"] for r in rows if not r["answerable"]}):
        got = [ok for ok, r in decided if r["category"] == category]
        out[f"declined_{category}"] = round(1 - sum(got) / len(got), 4)
    return out


def save(model: VerifierModel, path: Path = VERIFIER_PATH) -> None:
    path.write_text(json.dumps(model.model_dump(), indent=2) + "\n")
