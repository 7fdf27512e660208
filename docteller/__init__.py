"""docteller: a bank customer-service assistant that reads documents.

Core shared pieces live here: the typed document model (`docteller.model`), settings
(`docteller.settings`), stage protocols (`docteller.protocols`), PII masking
(`docteller.redact`) and the `docteller` CLI (`docteller.cli`).
"""

from __future__ import annotations

import os

# No model hub is reachable in production or CI: make every HF library fail fast instead of
# hanging on network calls, and keep Gradio from phoning home. Set before any HF import.
for _name, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("HF_HUB_DISABLE_TELEMETRY", "1"),
    ("GRADIO_ANALYTICS_ENABLED", "False"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
