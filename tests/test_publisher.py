"""Another institution's documents in the KB: indexed with a publisher, cited by its name, never
"our policy"; the bank's own documents still are. The manifest of an older docteller gains the
publisher column in place."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from docteller.cli import app
from docteller.model import Chunk, clean_publisher
from docteller.settings import DEFAULT_KB_DIR, get_settings
from retrieval.manifest import SCHEMA_VERSION, Manifest

runner = CliRunner()
AGREEMENT = "kb/bank_tc_pdfs/bank_of_america_online_banking_service_agreement_2025-07-21.pdf"
OWN_POLICY = "cards-lost-stolen-and-disputes.md"

# The documents table as docteller wrote it before publishers (schema 1).
OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT NOT NULL, mime TEXT NOT NULL,
    doc_type TEXT NOT NULL, pages INTEGER NOT NULL, chunks INTEGER NOT NULL, origin TEXT NOT NULL,
    indexed_at TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE chunks (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents (doc_id) ON DELETE CASCADE, ordinal INTEGER NOT NULL,
    doc_type TEXT NOT NULL, search_text TEXT NOT NULL, data TEXT NOT NULL, embedding BLOB NOT NULL
);
"""


def test_an_old_manifest_gains_the_publisher_column_in_place(tmp_path: Path) -> None:
    path = tmp_path / "manifest.sqlite"
    chunk = Chunk(id="abc:0", doc_id="abc", ordinal=0, text="Fees apply.", page_start=1, page_end=1, title="Fees")
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO meta VALUES ('schema', '1')")
        conn.execute(
            "INSERT INTO documents VALUES ('abc', 'fees.md', 'Fees', 'text/markdown', 'md', 1, 1, 'kb', "
            "'2026-01-01T00:00:00+00:00', '{}')"
        )
        conn.execute(
            "INSERT INTO chunks (chunk_id, doc_id, ordinal, doc_type, search_text, data, embedding) VALUES (?, ?, 0, 'md', ?, ?, ?)",
            ("abc:0", "abc", chunk.text, chunk.model_dump_json(exclude={"publisher"}), b"\0" * 16),
        )
    manifest = Manifest(path)
    try:
        (record,) = manifest.documents()
        assert record.publisher is None and manifest.chunk("abc:0").publisher is None  # the bank's own
        assert manifest.meta("schema") == SCHEMA_VERSION
        assert manifest.set_publisher("abc", " Bank of\x1b America\n")
        assert manifest.document("abc").publisher == "Bank of America"
        assert manifest.chunk("abc:0").publisher == "Bank of America"  # chunks read it from their document
        assert manifest.chunks_by_row([1])[1].publisher == "Bank of America"
        assert not manifest.set_publisher("missing", "X")
    finally:
        manifest.close()
    Manifest(path).close()  # opening a migrated manifest again is a no-op
    with sqlite3.connect(path) as conn:
        assert [r[1] for r in conn.execute("PRAGMA table_info(documents)")].count("publisher") == 1


def test_publisher_names_are_capped_and_cleaned() -> None:
    assert clean_publisher("  ") is None and clean_publisher(None) is None
    assert clean_publisher("Bank\u202e of\tAmerica") == "Bank of America"  # no direction overrides
    assert len(clean_publisher("x" * 500)) == 80


def cli(home: Path, *args: str):
    """`docteller ARGS` with DOCTELLER_HOME=home (settings are re-read for the call)."""
    get_settings.cache_clear()
    try:
        return runner.invoke(app, list(args), env={"DOCTELLER_HOME": str(home)})
    finally:
        get_settings.cache_clear()


def listed(home: Path) -> dict[str, dict]:
    return {Path(d["source"]).name: d for d in json.loads(cli(home, "docs", "list", "--json").stdout)}


@pytest.fixture(scope="module")
def kb_home(tmp_path_factory, corpus: Path):
    """A home indexed by the CLI: one of the bank's own policies, and Bank of America's agreement
    (its first pages) indexed with --publisher."""
    home = tmp_path_factory.mktemp("home")
    docs = tmp_path_factory.mktemp("docs")
    shutil.copy(DEFAULT_KB_DIR / OWN_POLICY, docs / OWN_POLICY)
    agreement = docs / "boa-agreement.pdf"
    # Its first 8 of 29 pages (the transfer limits are on page 4), metadata and all: the test is
    # about whose document it is, and indexing the other 21 pages took half a minute.
    import pymupdf

    with pymupdf.open(corpus / AGREEMENT) as pdf:
        pdf.select(range(8))
        pdf.save(agreement)
    own = cli(home, "index", str(docs / OWN_POLICY), "--json")
    assert own.exit_code == 0, own.output
    theirs = cli(home, "index", str(agreement), "--publisher", "Bank of America", "--json")
    assert theirs.exit_code == 0, theirs.output
    assert json.loads(theirs.stdout)["totals"]["indexed"] == 1
    return home, agreement


@pytest.fixture(scope="module")
def session_factory(kb_home, scripted_model):
    from agent.resources import AgentResources
    from retrieval.store import KnowledgeIndex

    home, _ = kb_home
    get_settings.cache_clear()
    settings = get_settings().model_copy(update={"home": home, "answer_style": "extractive"})
    index = KnowledgeIndex.open(home / "index")
    resources = AgentResources(index, scripted_model(lambda m: "yes"), embedder=index.embedder, settings=settings)
    yield resources.new_session
    index.close()


def test_the_cli_records_the_publisher_and_keeps_it_on_reindex(kb_home) -> None:
    home, agreement = kb_home
    docs = listed(home)
    assert docs["boa-agreement.pdf"]["publisher"] == "Bank of America" and docs[OWN_POLICY]["publisher"] is None
    again = cli(home, "index", str(agreement), "--json")  # no --publisher: the recorded one is kept
    assert json.loads(again.stdout)["totals"]["unchanged"] == 1
    assert listed(home)["boa-agreement.pdf"]["publisher"] == "Bank of America"
    renamed = cli(home, "index", str(agreement), "--publisher", "Bank of America, N.A.", "--json")
    assert json.loads(renamed.stdout)["totals"]["unchanged"] == 1  # not read again, only renamed
    assert listed(home)["boa-agreement.pdf"]["publisher"] == "Bank of America, N.A."
    cli(home, "index", str(agreement), "--publisher", "Bank of America")
    too_long = cli(home, "index", str(agreement), "--publisher", "B" * 200)
    assert too_long.exit_code == 2 and "longer than" in too_long.output


def test_a_third_party_document_is_cited_by_its_publishers_name(session_factory) -> None:
    answer = session_factory().ask("What is the dollar limit for transfers from my investment account to my checking account?")
    assert not answer.abstained, answer.reason
    assert "Bank of America's" in answer.answer and "says:" in answer.answer
    assert "our polic" not in answer.answer.lower()
    assert "$100,000.00" in answer.answer
    assert re.search(r"\[Bank of America: [^\]]+, p\. \d+\]", answer.answer)
    assert {c.publisher for c in answer.citations} == {"Bank of America"}


def test_the_banks_own_policy_is_still_our_policy(session_factory) -> None:
    answer = session_factory().ask("What is the daily limit for debit card purchases?")
    assert not answer.abstained, answer.reason
    assert "From our policy:" in answer.answer and "$5,000" in answer.answer
    assert "Bank of America" not in answer.answer
    assert all(c.publisher is None for c in answer.citations)



def test_a_generated_answer_is_told_whose_passages_and_never_says_our_policy_of_them() -> None:
    from agent.prompt import SYSTEM_POLICY, THIRD_PARTY_NOTE, SourcePassage, build_messages
    from agent.pipeline.cite import owned_wording as _owned_wording
    from docteller.model import SearchHit

    def passage(sid: str, publisher: str | None) -> SourcePassage:
        chunk = Chunk(id=f"{sid}:0", doc_id=sid, ordinal=0, text="Wires cost $30.", page_start=4, page_end=4,
                      title="Online Banking", publisher=publisher)
        return SourcePassage(sid=sid, hit=SearchHit(chunk=chunk, score=1.0), origin="kb")

    theirs, ours = passage("S1", "Bank of America"), passage("S2", None)
    prompt = build_messages("How much is a wire?", [theirs])
    assert prompt[0].content == SYSTEM_POLICY  # the cached system prefix never changes
    assert 'publisher="Bank of America"' in prompt[-1].content and THIRD_PARTY_NOTE in prompt[-1].content
    assert THIRD_PARTY_NOTE not in build_messages("How much is a wire?", [ours])[-1].content
    assert theirs.label == "[Bank of America: Online Banking, p. 4]" and ours.label == "[Online Banking, p. 4]"
    draft = "Under our policy a wire costs $30. [Bank of America: Online Banking, p. 4]"
    assert _owned_wording(draft, [theirs]).startswith("Under Bank of America's Online Banking a wire")
    assert _owned_wording(draft, [theirs, ours]) == draft  # the bank's own passage is cited too
