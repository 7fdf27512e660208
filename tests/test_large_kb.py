"""A generated 2,500-document KB, served as the web app serves it: answers cite the one branch
notice asked about among 2,499 look-alikes, a document added by staff is answered from at once,
and a deleted one is never cited again.

The documents are generated here (branch notices of a fictional bank network: the same wording,
other branch numbers, towns, hours and fees), as plain text and Markdown. Their vectors come from
`bench_scale.HashedEmbedder` (bag-of-words, 384-d): MiniLM would take minutes to embed 2,500
documents on 2 cores, and what is under test here (the hybrid index, the unit index, the agent's
answer path, staff adds and deletes at this size) does not depend on where the vectors come from.
Sizes and timings at 1k-100k chunks are `benchmarks/bench_scale.py`'s job, not a test's.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_scale import BANKS, HashedEmbedder  # noqa: E402

DOCUMENTS = 2500
TOWNS = ["Lakeside", "Millbrook", "Northgate", "Eastwood", "Riverbend", "Oakridge", "Stonebridge", "Westfield"]


def _notice(n: int, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """(file name, text, facts) of branch notice `n`."""
    bank, town = rng.choice(BANKS), rng.choice(TOWNS)
    facts = {
        "opens": f"{rng.randint(7, 10)}:{rng.choice(['00', '30'])} a.m.",
        "fee": f"${rng.randint(20, 240)}.00",
        "code": f"{n:04d}",
    }
    lines = [
        f"{bank} Bank — {town} branch {facts['code']}",
        "",
        f"The {town} branch {facts['code']} opens at {facts['opens']} Monday to Friday.",
        f"A safe deposit box at branch {facts['code']} costs {facts['fee']} a year.",
        "Coin counting is free for customers with a checking account.",
    ]
    if n % 5 == 0:  # one in five is Markdown, with a heading and a list
        text = "\n".join([f"# {lines[0]}", "", "## Hours and fees", "", *(f"- {line}" for line in lines[2:])])
        return f"notice-{n:05d}.md", text + "\n", facts
    return f"notice-{n:05d}.txt", "\n".join(lines) + "\n", facts


@pytest.fixture(scope="module")
def large_kb(tmp_path_factory):
    """(index, facts by notice number, the folder): 2,500 notices indexed with their units."""
    from agent.evidence import KBUnitTexts
    from docteller.settings import Settings
    from retrieval.indexing import index_paths
    from retrieval.store import KnowledgeIndex

    folder = tmp_path_factory.mktemp("large-kb")
    rng = random.Random(7)
    facts: dict[int, dict[str, str]] = {}
    for n in range(DOCUMENTS):
        name, text, facts[n] = _notice(n, rng)
        (folder / name).write_text(text, encoding="utf-8")
    home = tmp_path_factory.mktemp("large-home")
    index = KnowledgeIndex.open(home / "index", embedder=HashedEmbedder())
    index.unit_splitter = KBUnitTexts()  # as `docteller index` does
    summary = index_paths([folder], settings=Settings(home=home, workers=1), index=index)
    assert summary.count("indexed") == DOCUMENTS and summary.count("failed") == 0
    yield index, facts, folder
    index.close()


@pytest.fixture()
def ask(large_kb, docteller_home: Path, scripted_model):
    """`ask(question)`: a fresh session's extractive answer over the large KB."""
    from agent.resources import AgentResources
    from docteller.settings import get_settings

    index = large_kb[0]
    settings = get_settings().model_copy(update={"answer_style": "extractive"})
    resources = AgentResources(index, scripted_model(lambda m: "yes"), embedder=index.embedder, settings=settings)
    return lambda question: resources.new_session().ask(question)


def _cited(answer) -> set[str]:
    return {Path(c.source).name for c in answer.citations}


def test_every_document_chunk_and_unit_is_stored(large_kb) -> None:
    index, _, _ = large_kb
    stats = index.stats()
    assert stats["documents"] == DOCUMENTS
    assert stats["vectors"] == stats["chunks"] >= DOCUMENTS
    assert stats["units"] >= 3 * DOCUMENTS  # every notice's sentences are searchable on their own
    assert len(index.manifest.chunk_rows_without_units()) == 0


@pytest.mark.parametrize("n", [7, 1234, 2495])
def test_the_answer_cites_the_one_notice_asked_about(large_kb, ask, n: int) -> None:
    _, facts, _ = large_kb
    code = facts[n]["code"]
    answer = ask(f"How much is a safe deposit box at branch {code} per year?")
    assert not answer.abstained, answer.reason
    assert facts[n]["fee"] in answer.answer
    assert _cited(answer) == {f"notice-{n:05d}.{'md' if n % 5 == 0 else 'txt'}"}


def test_a_notice_added_by_staff_is_answered_and_a_deleted_one_never_cited(large_kb, ask, monkeypatch) -> None:
    from docteller.settings import Settings
    from retrieval.indexing import index_paths

    index, facts, folder = large_kb
    index.prepare_search()  # BM25 built, as `serve` does at start
    read = index.manifest.search_texts
    reads: list = []  # BM25's reads of chunk texts from now on
    monkeypatch.setattr(index.manifest, "search_texts", lambda rows=None: reads.append(rows) or read(rows))
    added = folder.parent / "staff-upload"
    added.mkdir()
    (added / "notice-new.txt").write_text(
        "Summit Ridge Bank — Harbourview branch 9876\n\n"
        "The Harbourview branch 9876 opens at 8:15 a.m. Monday to Friday.\n"
        "A safe deposit box at branch 9876 costs $315.00 a year.\n",
        encoding="utf-8",
    )
    summary = index_paths([added], settings=Settings(home=folder.parent, workers=1), index=index)
    assert summary.count("indexed") == 1
    first = ask("How much is a safe deposit box at branch 9876 per year?")  # the first answer after the upload
    assert not first.abstained and "$315.00" in first.answer and _cited(first) == {"notice-new.txt"}
    assert index.search("Harbourview", k=1)[0].bm25_rank == 1  # a word only the new notice has

    gone = next(r for r in index.documents() if r.source.endswith("notice-01234.txt"))
    units_before = index.stats()["units"]
    assert index.delete(gone.doc_id)
    assert index.stats()["units"] < units_before
    question = f"How much is a safe deposit box at branch {facts[1234]['code']} per year?"
    assert "notice-01234.txt" not in _cited(ask(question))
    assert all(h.chunk.doc_id != gone.doc_id for h in index.search(question, k=50))
    assert all(h.chunk.doc_id != gone.doc_id for h in index.search_units(question, k=50))
    assert reads == []  # the upload and the delete updated BM25 in place: no chunk was read back
