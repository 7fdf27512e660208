"""Moved to `agent.pipeline.compose` (the answer pipeline's compose stage); kept so existing
imports of the extractive answer writer keep working."""

from agent.pipeline.compose import compose_answer, lead_is_supported, lead_sentence, plain

__all__ = ["compose_answer", "lead_is_supported", "lead_sentence", "plain"]
