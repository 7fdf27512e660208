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


class StaffAuditEntry(BaseModel):
    """A staff action on the knowledge base: who (a pseudonym of the token and the client
    address), when, what (action and the files or document ids), and the outcome."""

    time: str
    event: str  # "staff.index", "staff.delete", "staff.unlock_failed", "staff.extract_unmasked"
    actor: str
    client: str
    detail: dict[str, Any] = {}


class AuditLog:
    """Append-only JSONL writer, safe to share between sessions (one lock per file).

    The file rotates at `max_bytes` (audit.jsonl → audit.jsonl.1 → … → .`backups`, the oldest
    dropped), so a busy or abused server cannot fill its disk with audit lines.
    """

    _locks: dict[Path, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def __init__(self, path: Path, max_bytes: int = 50 * 1024 * 1024, backups: int = 10) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        with self._locks_guard:
            self._lock = self._locks.setdefault(self.path.resolve(), threading.Lock())

    def write(self, entry: AuditEntry) -> None:
        record = entry.model_dump()
        for key in ("question", "standalone_query", "answer"):
            if record.get(key):
                record[key] = redact_text(record[key])
        self._append(record)

    def write_staff(self, entry: StaffAuditEntry) -> None:
        self._append(entry.model_dump())

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._rotate_if_full(len(line.encode()))
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
        except OSError as exc:
            # Never fail the customer's answer because the audit disk is full; shout in the logs.
            log.error("could not write audit entry to %s: %s", self.path, exc)

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if self.max_bytes <= 0 or size + incoming <= self.max_bytes:
            return
        if self.backups <= 0:
            self.path.unlink()
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    @classmethod
    def for_settings(cls, settings: Any) -> "AuditLog":
        return cls(settings.audit_path, max_bytes=settings.audit_max_mb * 1024 * 1024, backups=settings.audit_backups)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
