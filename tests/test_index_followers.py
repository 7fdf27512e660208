"""A serving process follows what another process commits to the shared index (several app
processes behind one port, or `docteller index` run while the app serves)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import retrieval.store as store
from retrieval.store import KnowledgeIndex

VAULT = """# Safe deposit boxes

Safe deposit boxes are rented per calendar year. A small box costs $85 a year and a large box
$190 a year. Two keys are issued; a lost key is replaced by drilling the lock for $150.
"""


def _index_in_another_process(home: Path, *paths: Path) -> None:
    env = {**os.environ, "DOCTELLER_HOME": str(home), "DOCTELLER_WORKERS": "1"}
    done = subprocess.run([sys.executable, "-m", "docteller.cli", "index", *map(str, paths)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_document_indexed_by_another_process_is_found_without_a_restart(
    tmp_path: Path, docteller_home: Path, monkeypatch
) -> None:
    from docteller.settings import get_settings

    monkeypatch.setattr(store, "FOLLOW_INTERVAL_S", 0.0)
    from ingest.pipeline import index_paths

    first = tmp_path / "cards.md"
    first.write_text("# Cards\n\nA lost debit card is blocked at once by calling the card line.\n")
    serving = KnowledgeIndex.open(get_settings().index_dir)
    try:
        index_paths([first], index=serving)  # this process's own write is no "other" commit
        assert [d.title for d in serving.documents()] and not any(
            "Safe deposit" in h.chunk.text for h in serving.search("safe deposit box yearly fee", k=3))
        generation = serving.generation
        vault = tmp_path / "vault.md"
        vault.write_text(VAULT)
        _index_in_another_process(docteller_home, vault)  # while `serving` stays open
        hits = serving.search("how much is a safe deposit box a year", k=3)
        assert hits and "$85 a year" in hits[0].chunk.text  # the new document, by vector and BM25
        assert serving.generation > generation  # derived caches (evidence units) refresh too
        assert len(serving.documents()) == 2
    finally:
        serving.close()
