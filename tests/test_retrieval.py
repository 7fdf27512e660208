"""Vector index, BM25 and rank fusion as units (synthetic vectors: fast and exact)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from retrieval.bm25 import BM25Index, index_terms, tokenize
from retrieval.store import reciprocal_rank_fusion
from retrieval.vector import FaissVectorIndex


def _unit(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_is_exact_cosine_and_removes() -> None:
    vectors = _unit(200)
    ids = np.arange(1000, 1200)
    index = FaissVectorIndex.build(ids, vectors, dim=32, hnsw_threshold=10_000)
    assert index.kind == "flat" and len(index) == 200
    scores, found = index.search(vectors[7], k=5)
    expected = np.argsort(-(vectors @ vectors[7]))[:5] + 1000
    assert found[0].tolist() == expected.tolist()
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)
    index.remove(np.array([1007]))
    assert 1007 not in index.search(vectors[7], k=5)[1][0]
    allowed = np.array([1100, 1150])
    assert set(index.search(vectors[7], k=5, allowed_ids=allowed)[1][0]) - {-1} == {1100, 1150}


def test_switches_to_hnsw_above_threshold_and_masks_removed(tmp_path: Path) -> None:
    vectors = _unit(600, seed=1)
    index = FaissVectorIndex(dim=32, hnsw_threshold=300)
    index.add(np.arange(300), vectors[:300])
    assert index.kind == "flat"
    index.add(np.arange(300, 600), vectors[300:])
    assert index.kind == "hnsw" and len(index) == 600
    recall = np.mean([index.search(vectors[i], k=1)[1][0][0] == i for i in range(0, 600, 7)])
    assert recall >= 0.95
    index.remove(np.array([14, 21]))
    assert len(index) == 598 and 14 not in index.search(vectors[14], k=10)[1][0]
    path = tmp_path / "v.faiss"
    index.save(path)
    loaded = FaissVectorIndex.load(path, dim=32, hnsw_threshold=300)
    assert loaded.kind == "hnsw" and len(loaded) == 598
    assert set(loaded.ids().tolist()) == set(range(600)) - {14, 21}
    assert not list(tmp_path.glob(".*.tmp")), "temp files are renamed into place"


def test_dimension_mismatch_rejected() -> None:
    index = FaissVectorIndex(dim=8)
    with pytest.raises(ValueError):
        index.add(np.arange(2), _unit(2, dim=16))


def test_tokenize_stems_and_drops_stopwords() -> None:
    assert tokenize("The transfers are Charged") == ["transfer", "charged"]
    assert tokenize("Fees: $45.00 for wires") == ["fee", "45.00", "wire"]
    assert tokenize("policies status") == ["policy", "status"]


def test_a_hyphenated_word_meets_its_closed_up_spelling() -> None:
    """"pre-approval" in a policy and "preapproval" typed by a customer share a term, and BM25
    ranks the passage that has it first; a phone number's parts are not joined into a word."""
    assert tokenize("Pre-approval letters") == ["pre", "approval", "preapproval", "letter"]
    assert tokenize("call 1-800-555-0199") == ["call", "1", "800", "555", "0199"]
    index = BM25Index()
    index.build(np.arange(3), ["Pre-approval letters are valid for 90 days.",
                               "Approval of a loan depends on your credit.",
                               "Letters of credit are issued by the trade desk."])
    ids, _ = index.search("how long is a preapproval letter good for", k=3)
    assert ids[0] == 0


def test_bm25_meets_a_word_in_another_form(corpus: Path) -> None:
    """A customer's "acknowledge" meets the statute's "acknowledgment" (stemmed terms): the
    paragraph with the creditor's deadline to acknowledge a billing-error notice ranks first."""
    assert index_terms("acknowledge acknowledgment disputed disputes") == ["acknowledg"] * 2 + ["disput"] * 2
    assert index_terms("Fee 45.00 on 1-800-555-0199") == ["fee", "45.00", "1", "800", "555", "0199"]
    statute = (corpus / "kb" / "us_code" / "fair_credit_billing_15usc1666.md").read_text(encoding="utf-8")
    paragraphs = [p for p in statute.split("\n\n") if p.strip()]
    index = BM25Index()
    index.build(np.arange(len(paragraphs)), paragraphs)
    ids, _ = index.search("how soon must the creditor acknowledge my letter", k=3)
    assert "acknowledgment" in paragraphs[ids[0]]


def _faq_rows(corpus: Path) -> list[str]:
    with (corpus / "kb" / "bankfaqs" / "BankFAQs.csv").open(newline="", encoding="utf-8") as f:
        return [f"{row['Question']} {row['Answer']}" for row in csv.DictReader(f)]


def test_bm25_scores_as_bm25s_does_on_a_real_faq_sheet(corpus: Path) -> None:
    """The in-place index scores as the bm25s index it replaced (Lucene BM25, k1 1.5, b 0.75)."""
    import bm25s

    texts = _faq_rows(corpus)
    reference = bm25s.BM25()
    reference.index([index_terms(t) for t in texts], show_progress=False)
    ours = BM25Index()
    ours.build(np.arange(len(texts)), texts)
    for question in [texts[i].split("?")[0] for i in range(0, len(texts), 97)]:
        expected = reference.get_scores([t for t in index_terms(question) if t in reference.vocab_dict])
        ids, scores = ours.search(question, k=10)
        assert len(ids) == 10
        np.testing.assert_allclose(scores, expected[ids], rtol=1e-4)
        assert scores[-1] >= np.sort(expected)[-10] - 1e-4  # no passage bm25s ranks higher is missed


def test_bm25_updated_in_place_equals_a_rebuild(corpus: Path) -> None:
    """Documents added one batch at a time (past the segment merge) and deleted (past a segment's
    compaction) give the same statistics, ids and scores as an index built from the live rows."""
    texts = _faq_rows(corpus)
    grown = BM25Index()
    grown.build(np.arange(1000), texts[:1000])
    batches = [np.arange(start, min(start + 60, len(texts))) for start in range(1000, len(texts), 60)]
    for rows in batches[:6]:
        grown.add(rows, [texts[i] for i in rows])
    early = np.concatenate([np.arange(0, 1000, 7), np.arange(1000, 1020)])  # dead rows the merge must drop
    assert grown.remove(early) == len(early)
    for rows in batches[6:]:  # 13 small segments in all: merged on the way
        grown.add(rows, [texts[i] for i in rows])
    assert grown.segments <= 9
    late = np.arange(1720, 1760)  # most of the last segment: compacted
    assert grown.remove(late) == len(late)
    assert grown.remove(late) == 0  # removing again changes nothing
    gone = np.concatenate([early, late])
    live = np.setdiff1d(np.arange(len(texts)), gone)
    rebuilt = BM25Index()
    rebuilt.build(live, [texts[i] for i in live])
    assert len(grown) == len(rebuilt) == len(live)
    assert sorted(grown.ids().tolist()) == live.tolist()
    for question in [texts[i].split("?")[0] for i in range(3, len(texts), 131)]:
        terms = tokenize(question)
        assert grown.document_frequencies(terms) == rebuilt.document_frequencies(terms)
        got, want = grown.search(question, k=20), rebuilt.search(question, k=20)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
        assert set(got[0][got[1] > want[1][-1] + 1e-4]) <= set(want[0].tolist())
        assert not set(got[0].tolist()) & set(gone.tolist())


def test_bm25_ranks_exact_terms_and_filters() -> None:
    texts = [
        "Wire transfer fee is $45.00 for international wires",
        "Zelle limits depend on enrollment tenure",
        "ACH transfers take three business days",
    ]
    bm25 = BM25Index()
    bm25.build(np.array([10, 20, 30]), texts)
    ids, scores = bm25.search("international wire fee", k=3)
    assert ids[0] == 10 and scores[0] > 0
    ids, _ = bm25.search("transfer", k=3, allowed_ids=np.array([30]))
    assert ids.tolist() == [30]
    assert bm25.search("zzzz unknown", k=3)[0].size == 0


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 1])], rrf_k=60, k=3)
    assert [i for i, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_unit_fusion_ranks_chunks_by_their_best_sentence_and_ties_alike() -> None:
    """A chunk whose one sentence answers gains `UNIT_WEIGHT` times a first rank; chunks whose best
    sentences score the same (look-alike notices) gain the same, so the fused order decides."""
    from retrieval.store import UNIT_WEIGHT, unit_fusion

    fused = reciprocal_rank_fusion([np.array([1, 2, 3, 4])], rrf_k=60, k=4)
    ranked = unit_fusion(fused, {3: 0.9, 2: 0.5, 1: 0.4}, rrf_k=60, weight=UNIT_WEIGHT)
    assert [row for row, _ in ranked] == [3, 2, 1, 4]
    assert dict(ranked)[3] == pytest.approx(1 / 63 + UNIT_WEIGHT / 61)
    tied = unit_fusion(fused, {1: 0.7, 2: 0.7, 3: 0.7, 4: 0.7}, rrf_k=60, weight=UNIT_WEIGHT)
    assert [row for row, _ in tied] == [1, 2, 3, 4]


def test_document_fusion_lets_each_documents_best_chunk_compete() -> None:
    from retrieval.store import document_fusion

    # A FAQ sheet's rows fill the first ten places in both rankings; a statute's best section is 11th.
    rows = np.arange(1, 21)
    fused = reciprocal_rank_fusion([rows, rows], rrf_k=60, k=20)
    doc_of = {int(r): ("faq" if r <= 10 else "statute") for r in rows}
    ranked = [row for row, _ in document_fusion(fused, doc_of, rrf_k=60)]
    assert ranked.index(11) < 5 and ranked[0] == 1  # the statute's best chunk reaches the top five
    assert ranked.index(12) > 10  # its other chunks keep their places
    assert ranked[:3] == [1, 11, 2]
    # One document: nothing to fuse, the order stays.
    assert document_fusion(fused, {int(r): "faq" for r in rows}, rrf_k=60) == fused


def test_hnsw_deletions_are_saved_masked_and_rebuilt_only_in_bulk(tmp_path: Path) -> None:
    """Deleting a document from a large index must not rebuild the graph on every save: masked
    nodes are written as they are and stay masked after loading, until they pass a fifth."""
    import faiss

    from retrieval.vector import FaissVectors, load_reconciled

    vectors = _unit(600, seed=2)
    index = FaissVectorIndex(dim=32, hnsw_threshold=300)
    index.add(np.arange(600), vectors)
    index.remove(np.arange(10, 40))
    path = tmp_path / "units.faiss"
    index.save(path)
    assert faiss.read_index(str(path)).ntotal == 600  # written as is, not rebuilt
    expected = np.setdiff1d(np.arange(600), np.arange(10, 40))
    loaded, repaired = load_reconciled(
        path, 32, expected, lambda ids: pytest.fail("nothing is missing"), FaissVectors(hnsw_threshold=300, use_gpu=False)
    )
    assert not repaired and len(loaded) == 570 and set(loaded.ids().tolist()) == set(expected.tolist())
    found = {int(i) for q in range(10, 40) for i in loaded.search(vectors[q], k=5)[1][0]}
    assert found and not found & set(range(10, 40))
    loaded.remove(np.arange(100, 250))  # now 180 of 600 masked: the next save rebuilds the graph
    loaded.save(path)
    assert faiss.read_index(str(path)).ntotal == len(loaded) == 420


def test_search_returns_one_of_a_faq_rows_copies_and_keeps_its_look_alikes(corpus: Path, tmp_path: Path) -> None:
    """The shared FAQ sheet repeats rows word for word; each copy would take a place of the few
    the answer's evidence is drawn from. Rows that differ by a product name stay apart."""
    import csv

    from ingest.embed import get_embedder
    from ingest.loaders import load_document
    from retrieval.store import KnowledgeIndex

    with open(corpus / "kb" / "bankfaqs" / "BankFAQs.csv", encoding="utf-8") as fh:
        rows = [(r["Question"], r["Answer"]) for r in csv.DictReader(fh)]
    picked = [r for r in rows if r[0].startswith(("Will my accident policy cover me", "Does this policy cover natural death",
                                                  "What if I Forget my Activation Code", "Do I have an option to pay a skipped"))]
    texts = [f"{q.strip()}\n{a.strip()}" for q, a in picked]
    assert len(texts) > len(set(texts)) >= 4  # the sheet's own copies are among them
    sheet = tmp_path / "faq.csv"
    with open(sheet, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([("Question", "Answer"), *picked])
    index = KnowledgeIndex.in_memory(embedder=get_embedder())
    index.add_document(load_document(sheet))
    hits = index.search("does the policy still pay if I'm hurt abroad", k=len(picked))
    found = [" ".join(h.chunk.text.split()) for h in hits]
    assert len(found) == len(set(found))  # no text twice…
    assert len({" ".join(t.split()) for t in texts}) - len(found) <= 2  # …and no more than its copies left out
    for product in ("New Car Loans", "Pre-owned Car Loans", "Loan against Car"):  # one answer, three products: all kept
        assert any(t.startswith(f"Q: Do I have an option to pay a skipped/ missed EMI for {product}") for t in found)

