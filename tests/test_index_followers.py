"""A serving process follows what another process commits to the shared index (several app
processes behind one port, or `docteller index` run while the app serves)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import retrieval.store as store
import retrieval.units as units
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
    from retrieval.indexing import index_paths

    first = tmp_path / "cards.md"
    first.write_text("# Cards\n\nA lost debit card is blocked at once by calling the card line.\n")
    serving = KnowledgeIndex.open(get_settings().index_dir)
    try:
        index_paths([first], index=serving)  # this process's own write is no "other" commit
        assert [d.title for d in serving.documents()] and not any(
            "Safe deposit" in h.chunk.text for h in serving.search("safe deposit box yearly fee", k=3))
        generation = serving.generation
        file_reads: list[str] = []  # the vector files this process reads from now on
        for module in (store, units):
            monkeypatch.setattr(module, "load_reconciled",
                                lambda *a, _read=module.load_reconciled, **k: file_reads.append(str(a[0])) or _read(*a, **k))
        id_scans = _spy_on_id_scans(monkeypatch, serving)
        vault = tmp_path / "vault.md"
        vault.write_text(VAULT)
        _index_in_another_process(docteller_home, vault)  # while `serving` stays open
        hits = serving.search("how much is a safe deposit box a year", k=3)
        assert hits and "$85 a year" in hits[0].chunk.text  # the new document, by vector and BM25
        assert serving.generation > generation  # derived caches (evidence units) refresh too
        assert len(serving.documents()) == 2
        assert file_reads == []  # followed from the manifest: the writer's files are not read
        assert id_scans == []  # …from its change (new row ids, removal log), not a read of every id

        writer = KnowledgeIndex.open(get_settings().index_dir)  # another connection deletes a document
        cards = next(d.doc_id for d in writer.documents() if d.source.endswith("cards.md"))
        assert writer.delete(cards)
        writer.close()
        file_reads.clear()
        hits = serving.search("lost debit card blocked", k=5)
        assert all(h.chunk.doc_id != cards for h in hits) and [d.title for d in serving.documents()] == ["Safe deposit boxes"]
        assert file_reads == [] and id_scans == []
    finally:
        serving.close()


def _spy_on_id_scans(monkeypatch, index: KnowledgeIndex) -> list[str]:
    """Record every read of all the chunk or unit ids by `index` (not by the writer's connection)."""
    from retrieval.manifest import Manifest

    scans: list[str] = []
    for name in ("row_ids", "unit_row_ids"):
        original = getattr(Manifest, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if self is index.manifest and not args and not kwargs:
                scans.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Manifest, name, spy)
    return scans


def test_a_follower_behind_the_pruned_removal_log_compares_every_id(tmp_path: Path, docteller_home: Path,
                                                                     monkeypatch) -> None:
    """The removal log keeps only the newest entries: a process whose marks fall behind it finds
    every change by comparing ids, and answers from the same documents as the writer."""
    from docteller.settings import get_settings
    from retrieval.indexing import index_paths

    monkeypatch.setattr(store, "FOLLOW_INTERVAL_S", 0.0)
    cards, vault = tmp_path / "cards.md", tmp_path / "vault.md"
    cards.write_text("# Cards\n\nA lost debit card is blocked at once by calling the card line.\n")
    vault.write_text(VAULT)
    index_dir = get_settings().index_dir
    writer = KnowledgeIndex.open(index_dir)
    index_paths([cards], index=writer)
    serving = KnowledgeIndex.open(index_dir)
    try:
        assert serving.search("lost debit card", k=1)
        id_scans = _spy_on_id_scans(monkeypatch, serving)
        index_paths([vault], index=writer)
        assert writer.delete(next(d.doc_id for d in writer.documents() if d.source.endswith("cards.md")))
        assert writer.manifest.prune_removed_log(keep=0) >= 1  # the card document's removal is forgotten
        assert writer.manifest.prune_removed_log(keep=0) == 0  # nothing new to drop
        hits = serving.search("lost debit card blocked", k=5)
        assert hits and all("Safe deposit" in h.chunk.text for h in hits)
        assert {"row_ids", "unit_row_ids"} <= set(id_scans)  # compared every id, once
        id_scans.clear()
        index_paths([cards], index=writer)  # caught up: the next change is read from the log again
        assert any("lost debit card" in h.chunk.text for h in serving.search("lost debit card blocked", k=3))
        assert id_scans == []
    finally:
        serving.close()
        writer.close()
