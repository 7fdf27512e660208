"""The answer path as a pipeline of small typed stages, one module and one job each:

    route → rewrite → retrieve → select → judge → compose → check → cite

`AnswerPipeline` runs them and yields `AnswerEvent`s; `ChatSession` keeps the conversation's
state and records each answer. Stage inputs and outputs are in `agent.pipeline.types`;
`ABLATIONS` lists the stages `docteller eval answers --ablate STAGE` can replace.
"""

from agent.pipeline.pipeline import ABLATIONS, Ablation, AnswerPipeline, answer_pieces, progressive_tokens
from agent.pipeline.types import (
    Answer,
    AnswerEvent,
    CheckedDraft,
    Cited,
    Draft,
    Evidence,
    Judgement,
    Query,
    Retrieved,
    Route,
    Turn,
)

__all__ = [
    "ABLATIONS", "Ablation", "Answer", "AnswerEvent", "AnswerPipeline", "CheckedDraft", "Cited", "Draft",
    "Evidence", "Judgement", "Query", "Retrieved", "Route", "Turn", "answer_pieces", "progressive_tokens",
]
