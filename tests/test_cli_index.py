"""The CLI verbs end to end: index, docs list/delete, search, eval retrieval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docteller.cli import app

runner = CliRunner()


@pytest.fixture()
def folder(tmp_path: Path, corpus: Path) -> Path:
    f = tmp_path / "docs"
    f.mkdir()
    shutil.copy(corpus / "kb/us_code/fair_credit_billing_15usc1666.md", f / "billing.md")
    (f / "cards.md").write_text("# Lost cards\n\nReport a lost card in the app; a replacement costs $15.\n")
    (f / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj\n<<")
    (f / "empty.txt").write_bytes(b"")
    return f


def test_index_search_docs_eval(folder: Path, docteller_home: Path, tmp_path: Path, monkeypatch) -> None:
    result = runner.invoke(app, ["index", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["totals"]["indexed"] == 2 and summary["totals"]["failed"] == 2
    failed = {Path(f["path"]).name: f["reason"] for f in summary["files"] if f["status"] == "failed"}
    assert "empty file" in failed["empty.txt"] and "PDF" in failed["broken.pdf"]
    # The indexed documents' sentences are embedded for answer evidence at indexing time, and
    # stored with their chunks: every chunk has its unit set, every unit its vector in units.faiss.
    import sqlite3

    import faiss

    manifest = docteller_home / "index" / "manifest.sqlite"

    def unit_counts() -> tuple[int, int, int]:
        with sqlite3.connect(manifest) as conn:
            chunks = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            sets = conn.execute("SELECT COUNT(*) FROM unit_sets").fetchone()[0]
            units = conn.execute("SELECT COUNT(*) FROM units").fetchone()[0]
        return chunks, sets, units

    chunks, sets, units = unit_counts()
    assert chunks == sets and units >= chunks
    assert faiss.read_index(str(docteller_home / "index" / "units.faiss")).ntotal == units

    strict = runner.invoke(app, ["index", str(folder), "--strict"])
    assert strict.exit_code == 1
    assert "unchanged" in strict.stdout and "Index summary" in strict.stdout

    listed = json.loads(runner.invoke(app, ["docs", "list", "--json"]).stdout)
    assert sorted(Path(d["source"]).name for d in listed) == ["billing.md", "cards.md"]

    out = runner.invoke(app, ["search", "how much does a replacement card cost", "-k", "2", "--json"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.stdout)
    assert len(hits) == 2 and set(hits[0]) >= {"doc_id", "title", "source", "page", "text", "score"}
    assert "$15" in hits[0]["text"] and hits[0]["score"] >= hits[1]["score"]

    cards = next(d for d in listed if d["source"].endswith("cards.md"))
    only = json.loads(runner.invoke(app, ["search", "billing error", "--json", "--doc", cards["doc_id"][:12]]).stdout)
    assert only and all(h["doc_id"] == cards["doc_id"] for h in only)
    assert json.loads(runner.invoke(app, ["search", "billing", "--json", "--type", "pdf"]).stdout) == []

    questions = tmp_path / "q.jsonl"
    questions.write_text(
        json.dumps({"id": "a", "question": "replacement card cost", "answerable": True, "doc": "cards.md", "page": 1,
                    "answer": "$15", "must_include": ["$15"]}) + "\n"
        + json.dumps({"id": "b", "question": "mortgage rates?", "answerable": False, "doc": None, "page": None,
                      "answer": "", "must_include": []}) + "\n"
    )
    report = json.loads(runner.invoke(app, ["eval", "retrieval", "--questions", str(questions), "--json"]).stdout)
    assert report["questions"] == 1 and report["hit_at_1"] == 1.0 and report["mrr"] == 1.0

    deleted = runner.invoke(app, ["docs", "delete", cards["doc_id"][:10]])
    assert deleted.exit_code == 0
    # The document's units went with it, from the manifest and from the saved FAISS file.
    after = unit_counts()
    assert after[0] == after[1] < chunks and after[2] < units
    assert faiss.read_index(str(docteller_home / "index" / "units.faiss")).ntotal == after[2]
    assert runner.invoke(app, ["docs", "delete", "nope"]).exit_code == 1
    listed = json.loads(runner.invoke(app, ["docs", "list", "--json"]).stdout)
    assert [Path(d["source"]).name for d in listed] == ["billing.md"]
