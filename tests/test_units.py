"""The evidence-unit index (retrieval.units) on the bundled KB: it follows documents as they are
added and deleted, loads once, survives crashes like the chunk index, and re-embeds only what changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.evidence import EvidenceSelector, KBUnitTexts, KnowledgeUnits
from docteller.settings import DEFAULT_KB_DIR
from retrieval.manifest import Manifest
from retrieval.store import VECTORS_FILE, KnowledgeIndex
from retrieval.units import UNITS_FILE

COIN_QUESTION = "can non customers use your coin counter? whats it cost"
CASH_QUESTION = "most foreign cash i can buy in one day"
CASHIERS_CHECK_QUESTION = "how much is a cashier's check"


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        from ingest.embed import get_embedder

        self.inner = get_embedder()
        self.model_id, self.dim, self.texts = self.inner.model_id, self.inner.dim, 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


def _load(name: str):
    from ingest.loaders import load_document

    return load_document(DEFAULT_KB_DIR / name)


def _consistent(index: KnowledgeIndex) -> None:
    """Every chunk has a unit set; the FAISS ids are exactly the manifest's unit rows."""
    manifest = index.manifest
    assert len(manifest.chunk_rows_without_units()) == 0
    assert set(index.units.ids().tolist()) == set(manifest.unit_row_ids().tolist())
    assert index.stats()["units"] == len(manifest.unit_row_ids())


def _doc_id(index: KnowledgeIndex, name: str) -> str:
    return next(r.doc_id for r in index.documents() if r.source.endswith(name))


def test_units_follow_documents_added_and_deleted(tmp_path: Path, monkeypatch) -> None:
    embedder = CountingEmbedder()
    index = KnowledgeIndex.open(tmp_path / "index", embedder=embedder)
    index.unit_splitter = KBUnitTexts()
    for name in ("faq.csv", "fee-schedule.pdf"):
        index.add_document(_load(name))
    _consistent(index)
    fee_id = _doc_id(index, "fee-schedule.pdf")
    assert any(h.chunk.doc_id == fee_id for h in index.search_units(COIN_QUESTION, k=3))
    # Search fuses each chunk's best unit into its ranking: the fee table whose one row reads
    # "Cashier's check | $10" comes first, above a FAQ row it outranked as a whole chunk.
    assert index.search(CASHIERS_CHECK_QUESTION, k=3)[0].chunk.doc_id == fee_id
    monkeypatch.setattr("retrieval.store.UNIT_WEIGHT", 0.0)
    assert index.search(CASHIERS_CHECK_QUESTION, k=3)[0].chunk.doc_id != fee_id
    monkeypatch.undo()

    # Adding a document embeds its own chunks and units, nothing of the rest of the KB…
    doc = _load("foreign-exchange-and-travel.txt")
    before = embedder.texts
    added = index.add_document(doc)
    chunks = [index.get_chunk(f"{doc.id[:16]}:{n}") for n in range(added.chunks)]
    assert embedder.texts - before == added.chunks + sum(len(KBUnitTexts()(c)) for c in chunks)
    # …and its units are found by the very next question.
    assert doc.id in {h.chunk.doc_id for h in index.search_units(CASH_QUESTION, k=3)}
    _consistent(index)

    # A deleted document's units never come back, in this process or the next.
    assert index.delete(fee_id)
    assert all(h.chunk.doc_id != fee_id for h in index.search_units(COIN_QUESTION, k=30))
    _consistent(index)
    index.close()

    # Loading reads each vector file once, and catching up embeds and re-reads nothing.
    import faiss

    reads: list[str] = []
    real_read = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda path, *a: reads.append(Path(path).name) or real_read(path, *a))
    chunk_reads: list[int] = []
    real_chunks = Manifest.chunks_by_row
    monkeypatch.setattr(Manifest, "chunks_by_row", lambda self, rows: chunk_reads.append(len(rows)) or real_chunks(self, rows))
    monkeypatch.setattr(Manifest, "unit_embeddings", lambda self, rows: pytest.fail("vectors re-read from the manifest"))
    embedder.texts = 0
    reopened = KnowledgeIndex.open(tmp_path / "index", embedder=embedder)
    units = KnowledgeUnits(EvidenceSelector(embedder), reopened)
    units.refresh()
    assert sorted(reads) == sorted(["vectors.faiss", UNITS_FILE]) and chunk_reads == [] and embedder.texts == 0
    assert doc.id in {h.chunk.doc_id for h in reopened.search_units(CASH_QUESTION, k=3)}
    assert all(h.chunk.doc_id != fee_id for h in units.search(COIN_QUESTION, k=30))
    _consistent(reopened)
    reopened.close()


def test_unit_file_is_repaired_like_the_chunk_file(tmp_path: Path) -> None:
    """A process killed between the manifest commit and the file's save leaves an old
    units.faiss: the manifest decides, missing vectors come back, deleted ones stay out."""
    index_dir = tmp_path / "index"
    index = KnowledgeIndex.open(index_dir, embedder=CountingEmbedder())
    index.unit_splitter = KBUnitTexts()
    for name in ("overdraft-services.md", "fee-schedule.pdf"):
        index.add_document(_load(name))
    index.close()
    old_file = tmp_path / "units-before.faiss"
    shutil.copy(index_dir / UNITS_FILE, old_file)

    index = KnowledgeIndex.open(index_dir, embedder=CountingEmbedder())
    index.unit_splitter = KBUnitTexts()
    index.add_document(_load("foreign-exchange-and-travel.txt"))
    fee_id = _doc_id(index, "fee-schedule.pdf")
    index.delete(fee_id)
    index.close()
    shutil.copy(old_file, index_dir / UNITS_FILE)  # as if killed before either save

    embedder = CountingEmbedder()
    index = KnowledgeIndex.open(index_dir, embedder=embedder)
    _consistent(index)
    assert embedder.texts == 0  # repaired from the stored vectors, not re-embedded
    assert any("FOREIGN" in h.chunk.title.upper() for h in index.search_units(CASH_QUESTION, k=3))
    assert all(h.chunk.doc_id != fee_id for h in index.search_units(COIN_QUESTION, k=30))
    index.close()

    (index_dir / UNITS_FILE).write_bytes(b"not a faiss file")  # damaged: rebuilt from the manifest
    index = KnowledgeIndex.open(index_dir, embedder=CountingEmbedder())
    _consistent(index)
    index.close()


def test_a_staff_upload_rewrites_no_vector_file_and_nothing_is_lost_without_a_close(tmp_path: Path) -> None:
    """The vector files are written after batches (`UNSAVED_CHUNKS_MAX` chunks) and on close, not
    after each document: one upload into a large KB rewrote both whole files. A process that ends
    without writing them (killed) loses nothing: the next open takes the rest from the manifest."""
    index_dir = tmp_path / "index"
    index = KnowledgeIndex.open(index_dir, embedder=CountingEmbedder())
    index.unit_splitter = KBUnitTexts()
    index.add_document(_load("overdraft-services.md"))
    index.close()
    written = {name: (index_dir / name).read_bytes() for name in (VECTORS_FILE, UNITS_FILE)}

    serving = KnowledgeIndex.open(index_dir, embedder=CountingEmbedder())  # the web app's index
    serving.unit_splitter = KBUnitTexts()
    serving.add_document(_load("foreign-exchange-and-travel.txt"))  # a Staff upload
    serving.delete(_doc_id(serving, "overdraft-services.md"))  # and a deletion
    assert {name: (index_dir / name).read_bytes() for name in written} == written  # neither file rewritten

    embedder = CountingEmbedder()
    restarted = KnowledgeIndex.open(index_dir, embedder=embedder)  # `serving` never closed: as if killed
    _consistent(restarted)
    assert restarted.stats()["vectors"] == restarted.stats()["chunks"]
    assert embedder.texts == 0  # the upload's vectors come from the manifest, not embedded again
    assert any("FOREIGN" in h.chunk.title.upper() for h in restarted.search_units(CASH_QUESTION, k=3))
    assert all("overdraft" not in h.chunk.source for h in restarted.search("overdraft fee", k=10))
    restarted.close()
    serving.close()


def test_a_failed_add_stores_neither_chunks_nor_units(tmp_path: Path, monkeypatch) -> None:
    index = KnowledgeIndex.open(tmp_path / "index", embedder=CountingEmbedder())
    index.unit_splitter = KBUnitTexts()
    index.add_document(_load("overdraft-services.md"))
    stored = (index.stats()["chunks"], index.stats()["units"])
    calls = []

    def failing(self, conn, chunk_row, digest, vectors):
        calls.append(chunk_row)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, conn, chunk_row, digest, vectors)

    real = Manifest.replace_units
    monkeypatch.setattr(Manifest, "replace_units", failing)
    with pytest.raises(OSError):
        index.add_document(_load("savings-and-cd-rates.md"))
    monkeypatch.undo()
    assert len(index.documents()) == 1 and (index.stats()["chunks"], index.stats()["units"]) == stored
    _consistent(index)
    index.close()


def test_units_prepared_elsewhere_are_stored_as_given() -> None:
    """The Ray engine's commit: a document's chunks, vectors and units, split and embedded by its
    actors, go in as they are (nothing is embedded here) and equal what the index computes
    itself; units that do not fit the chunks are refused before anything is written."""
    from ingest.chunking import chunk_document

    embedder = CountingEmbedder()
    reference = KnowledgeIndex.in_memory(embedder=embedder)
    reference.unit_splitter = KBUnitTexts()
    doc = _load("overdraft-services.md")
    reference.add_document(doc)
    chunks = chunk_document(doc, reference.settings.chunk_size, reference.settings.chunk_overlap)
    texts = [KBUnitTexts()(chunk) for chunk in chunks]
    vectors = embedder.embed([c.embedding_text() for c in chunks])
    unit_vectors = embedder.embed([text for chunk_texts in texts for text in chunk_texts])

    index = KnowledgeIndex.in_memory(embedder=embedder)
    index.unit_splitter = KBUnitTexts()
    with pytest.raises(ValueError, match="units need a float32"):
        index.add_document(doc, prepared=(chunks, vectors), units=(texts, unit_vectors[1:]))
    assert index.documents() == [] and index.stats()["units"] == 0
    before = embedder.texts
    assert index.add_document(doc, prepared=(chunks, vectors), units=(texts, unit_vectors)).status == "indexed"
    assert embedder.texts == before
    _consistent(index)
    assert index.stats()["units"] == reference.stats()["units"] == len(unit_vectors) > len(chunks)
    for chunk in chunks:
        (digest, got), (expected_digest, expected) = index.chunk_units(chunk.id), reference.chunk_units(chunk.id)
        assert digest == expected_digest and np.allclose(got, expected, rtol=0, atol=1e-4)
    index.close()
    reference.close()


def test_new_splitting_code_re_embeds_only_the_chunks_whose_units_changed(tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    index = KnowledgeIndex.in_memory(embedder=embedder)
    for name in ("overdraft-services.md", "savings-and-cd-rates.md"):
        index.add_document(_load(name))  # no splitter attached: units are caught up by sync
    units = KnowledgeUnits(EvidenceSelector(embedder), index)
    units.refresh()
    _consistent(index)
    savings = _doc_id(index, "savings-and-cd-rates.md")
    savings_chunks = sum(r.chunks for r in index.documents() if r.doc_id == savings)

    class NewSplitting(KBUnitTexts):
        """Code that splits the savings policy differently and everything else the same."""

        def __init__(self) -> None:
            self.fingerprint = "new splitting code"

        def __call__(self, chunk):
            texts = super().__call__(chunk)
            return [t.upper() for t in texts] if chunk.doc_id == savings else texts

    index.unit_splitter = NewSplitting()
    assert index.sync_units() == savings_chunks
    assert index.sync_units() == 0  # checked once per splitting code
    _consistent(index)
    stored = index.chunk_units(f"{savings[:16]}:0")
    chunk = index.get_chunk(f"{savings[:16]}:0")
    expected = embedder.inner.embed(NewSplitting()(chunk))
    assert stored is not None and np.allclose(stored[1], expected, atol=1e-5)


def test_staff_uploads_and_deletes_keep_units_in_step(tmp_path: Path) -> None:
    """The Staff view's backend: an uploaded document's units are embedded as it is indexed
    (the first question after it embeds nothing but itself), and a deletion takes them away."""
    from docteller.settings import Settings
    from ui.backend import Backend

    staged = tmp_path / "upload"
    staged.mkdir()
    shutil.copy(DEFAULT_KB_DIR / "foreign-exchange-and-travel.txt", staged / "travel.txt")
    backend = Backend(Settings(home=tmp_path / "home", workers=1))
    try:
        summary = backend.index_files([staged / "travel.txt"])
        assert summary.count("indexed") == 1
        _consistent(backend.index)
        assert backend.index.stats()["units"] > 0
        hits = backend.index.search_units(CASH_QUESTION, k=3)
        assert hits and all(h.chunk.source.endswith("travel.txt") for h in hits)
        assert backend.delete_document(summary.files[0].doc_id)
        assert backend.index.stats()["units"] == 0 and backend.index.search_units(CASH_QUESTION, k=3) == []
        _consistent(backend.index)
    finally:
        backend.close()
