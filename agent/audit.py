"""Audit log: one JSON line per answer at `settings.audit_path`.

Each line records when, which session, the question, the chunks retrieved, the fields used, the
answer, whether it abstained or handed off, and the model with its weights' sha256, so any
answer can be traced to its evidence and model. Account and document numbers are masked
(`docteller.redact`) before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from docteller.redact import redact_text

log = logging.getLogger(__name__)


class AuditEntry(BaseModel):
    time: str
    session_id: str
    question: str
    standalone_query: str | None = None
    retrieved_chunk_ids: list[str]
    fields_used: list[str]
    answer: str
    abstained: bool
    handoff: bool = False
    model_id: str
    model_sha256: str
    citations: list[dict[str, Any]] = []
    reason: str | None = None  # why it abstained, when it did


class AuditLog:
    """Append-only JSONL writer, safe to share between sessions (one lock per file)."""

    _locks: dict[Path, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self._locks_guard:
            self._lock = self._locks.setdefault(self.path.resolve(), threading.Lock())

    def write(self, entry: AuditEntry) -> None:
        record = entry.model_dump()
        for key in ("question", "standalone_query", "answer"):
            if record.get(key):
                record[key] = redact_text(record[key])
        line = json.dumps(record, ensure_ascii=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            # Never fail the customer's answer because the audit disk is full; shout in the logs.
            log.error("could not write audit entry to %s: %s", self.path, exc)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
