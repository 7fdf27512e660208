"""`--engine ray` on real KB files: the same knowledge base (documents, chunks, evidence units,
vectors), report and errors as the in-process engine, and a worker killed mid-run is retried by
Ray with nothing lost.

A KB of real files (8 pages of the agreement PDF, a statute's first section, FAQ rows, a scanned
PDF that needs OCR, two bad files) is indexed through the CLI twice: by the in-process engine (the
reference) and by Ray (`cli_run`, which starts and stops its own local Ray, as a user's run does).
Both runs attach the agent's unit splitter, as `docteller index` does; the Ray run's actors split
and embed the units, the driver embeds nothing. The worker-killing runs share one local Ray
(`ray_cluster`), started after that.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from docteller.cli import app
from docteller.settings import Settings
from retrieval.indexing import index_paths
from retrieval.store import KnowledgeIndex

SCANNED = "statements/bank_statement_ocr_nz/tutorial_everyday_scanned.pdf"
QUERIES = (
    "What is the fee for an international wire transfer sent in US dollars?",
    "how long does the bank have to resolve a billing error",
    "can I close my account online",
    "text message short code for account takeover alerts",
)

runner = CliRunner()


@pytest.fixture(scope="module")
def kb(tmp_path_factory, corpus: Path, agreement_excerpt: Path) -> Path:
    """Real KB files: 8 pages of the agreement PDF, § 1666 of a statute (billing errors), 10 FAQ
    rows, a scanned PDF (OCR), two bad files."""
    folder = tmp_path_factory.mktemp("kb")
    shutil.copy(agreement_excerpt, folder / "agreement.pdf")
    statute = (corpus / "kb/us_code/fair_credit_billing_15usc1666.md").read_text(encoding="utf-8")
    end = statute.rindex("\n#### ", 0, statute.index("1666a. Regulation of credit reports"))
    (folder / "billing.md").write_text(statute[: end + 1], encoding="utf-8")  # (a) to (e) of § 1666
    shutil.copy(corpus / SCANNED, folder / "scanned.pdf")
    lines = (corpus / "kb/bankfaqs/BankFAQs.csv").read_text(encoding="utf-8").splitlines()[:11]
    (folder / "faq.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj\n<<")
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def small(tmp_path_factory, kb: Path) -> Path:
    """Two of the KB's quick files and a bad one, for the worker-killing runs."""
    folder = tmp_path_factory.mktemp("small")
    for name in ("billing.md", "faq.csv", "empty.txt"):
        shutil.copy(kb / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def embedder():
    from ingest.embed import get_embedder

    return get_embedder(Settings())  # the model instance the CLI runs in this process use too


def _cli_index(home: Path, paths: list[Path], *options: str):
    """`docteller index PATHS --json OPTIONS` into `home` (one worker: the reference loads here);
    (result, how many texts this process embedded)."""
    from docteller.settings import get_settings
    from ingest.embed import SentenceTransformerEmbedder

    encoded: list[int] = []
    real = SentenceTransformerEmbedder._encode
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DOCTELLER_HOME", str(home))
        env.setenv("DOCTELLER_WORKERS", "1")
        # Only this process's embedding is counted: Ray's workers import the class afresh.
        env.setattr(
            SentenceTransformerEmbedder, "_encode", lambda self, texts: encoded.append(len(texts)) or real(self, texts)
        )
        get_settings.cache_clear()
        try:
            return runner.invoke(app, ["index", *map(str, paths), "--json", *options]), sum(encoded)
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, kb: Path):
    """The reference: the same folder indexed by the in-process engine, through the CLI; (home, report)."""
    home = tmp_path_factory.mktemp("process-home")
    result, embedded = _cli_index(home, [kb])
    assert result.exit_code == 0, result.output
    assert embedded > 0  # chunks and units, embedded here
    return home, json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, kb: Path):
    """`docteller index KB --engine ray --json` into a fresh home; then its good files again.
    (home, first run, whether Ray was stopped after it, texts this process embedded in it,
    second run, how often the second run started Ray)."""
    import ray

    import ingest.ray_engine

    assert not ray.is_initialized()  # no Ray yet: the command has to start its own
    home = tmp_path_factory.mktemp("cli-home")
    first, embedded = _cli_index(home, [kb], "--engine", "ray")
    stopped = not ray.is_initialized()  # the local Ray the command started is stopped again
    # The bad files are read again on every run (they are not recorded as indexed); the good
    # ones alone must not even start Ray.
    sessions: list[str | None] = []
    with pytest.MonkeyPatch.context() as patch:
        real = ingest.ray_engine.ray_session
        patch.setattr(ingest.ray_engine, "ray_session", lambda *args: sessions.append(args[0]) or real(*args))
        good = sorted(p for p in kb.iterdir() if p.name not in ("broken.pdf", "empty.txt"))
        again, _ = _cli_index(home, good, "--engine", "ray")
    return home, first, stopped, embedded, again, len(sessions)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray (2 CPUs) for the module's tests; the engine joins it instead of starting its own."""
    import ray

    from ingest.ray_engine import ray_session

    with ray_session(None, cpus=2) as cpus:
        assert ray.is_initialized() and cpus == 2
        yield cpus
    assert not ray.is_initialized()


def _ray_index(tmp_path: Path, folder: Path, embedder, **kwargs):
    index = KnowledgeIndex.open(tmp_path / "index-ray", embedder=embedder)
    summary = index_paths([folder], settings=Settings(home=tmp_path), index=index, engine="ray", **kwargs)
    return index, summary


def _by_name(files: list, names: set[str] | None = None) -> dict[str, tuple]:
    """{file name: (status, doc id, pages, chunks, reason)} of a summary's files or a --json report's."""
    rows = [f if isinstance(f, dict) else f.model_dump() for f in files]
    return {
        Path(f["path"]).name: (f["status"], f["doc_id"], f["pages"], f["chunks"], f["reason"])
        for f in rows
        if names is None or Path(f["path"]).name in names
    }


def _chunks(index: KnowledgeIndex, doc_ids: set[str] | None = None) -> tuple[list[str], np.ndarray]:
    chunks, matrix = index.chunks_with_embeddings()
    keep = [i for i, c in enumerate(chunks) if doc_ids is None or c.doc_id in doc_ids]
    keep.sort(key=lambda i: chunks[i].id)
    return [chunks[i].id for i in keep], matrix[keep]


def test_cli_ray_engine_starts_and_stops_its_own_ray(cli_run, in_process, embedder) -> None:
    home, result, stopped, _, again, sessions = cli_run
    assert result.exit_code == 0, result.output
    assert stopped
    report = json.loads(result.stdout)
    _, reference = in_process
    assert report["totals"] | {"seconds": 0} == reference["totals"] | {"seconds": 0}
    got = _by_name(report["files"])
    assert got == _by_name(reference["files"])
    assert "empty file" in got["empty.txt"][4] and "PDF" in got["broken.pdf"][4]
    assert got["scanned.pdf"][0] == "indexed" and got["agreement.pdf"][2] == 8
    # The bad files land in the manifest's error table, as with the in-process engine.
    with KnowledgeIndex.open(home / "index", embedder=embedder) as index:
        assert {Path(e["path"]).name for e in index.manifest.errors()} == {"broken.pdf", "empty.txt"}

    assert again.exit_code == 0, again.output
    # Hashed before Ray is even asked: every good file unchanged, the same pages and chunks, no Ray.
    unchanged = report["totals"] | {"files": 4, "indexed": 0, "unchanged": 4, "failed": 0, "seconds": 0}
    assert json.loads(again.stdout)["totals"] | {"seconds": 0} == unchanged
    assert sessions == 0


def test_cli_rejects_bad_engine_options(kb: Path, docteller_home: Path) -> None:
    bad = runner.invoke(app, ["index", str(kb), "--engine", "spark"])
    assert bad.exit_code == 2 and "--engine must be" in bad.output
    stray = runner.invoke(app, ["index", str(kb), "--ray-address", "127.0.0.1:6379"])
    assert stray.exit_code == 2 and "needs --engine ray" in stray.output
    # Nothing listens on port 1: a clear error at once, not minutes of Ray retrying the address.
    nowhere = runner.invoke(app, ["index", str(kb), "--engine", "ray", "--ray-address", "127.0.0.1:1"])
    assert nowhere.exit_code == 2 and "cannot reach the Ray cluster at '127.0.0.1:1'" in nowhere.output


def test_ray_engine_builds_the_same_knowledge_base(cli_run, embedder, in_process, excerpt_page) -> None:
    """The index the Ray run committed (through the same manifest and vector files; opened afresh
    here) holds the same documents, chunks, evidence units, vectors and search results as the
    in-process one; the Ray workers embedded the units, the driver nothing."""
    home, _, _, driver_embedded, _, _ = cli_run
    ref_home, _ = in_process
    assert driver_embedded == 0
    with KnowledgeIndex.open(home / "index", embedder=embedder) as index, KnowledgeIndex.open(
        ref_home / "index", embedder=embedder
    ) as reference:
        docs = {(d.doc_id, d.source, d.pages, d.chunks, d.doc_type) for d in index.documents()}
        assert docs == {(d.doc_id, d.source, d.pages, d.chunks, d.doc_type) for d in reference.documents()}
        stats, ref_stats = index.stats(), reference.stats()
        assert stats["vectors"] == ref_stats["vectors"] == stats["chunks"]
        assert stats["units"] == ref_stats["units"] > stats["chunks"]
        ids, vectors = _chunks(index)
        ref_ids, ref_vectors = _chunks(reference)
        assert ids == ref_ids
        # Embedded in batches across documents by the actors: equal up to float rounding.
        assert np.abs(vectors - ref_vectors).max() < 1e-4
        # Each chunk's units: the same texts (digest), the same vectors, committed with the chunk.
        for chunk_id in ids:
            got, expected = index.chunk_units(chunk_id), reference.chunk_units(chunk_id)
            assert (got is None) == (expected is None), chunk_id
            if got is not None:
                assert got[0] == expected[0] and got[1].shape == expected[1].shape, chunk_id
                assert np.allclose(got[1], expected[1], rtol=0, atol=1e-4), chunk_id
        for query in QUERIES:
            got = [(h.chunk.id, h.chunk.page_start) for h in index.search(query, k=5)]
            assert got == [(h.chunk.id, h.chunk.page_start) for h in reference.search(query, k=5)], query
            got = [h.chunk.id for h in index.search_units(query, k=5)]
            assert got == [h.chunk.id for h in reference.search_units(query, k=5)], query
        top = index.search(QUERIES[0], k=1)[0]
        assert Path(top.chunk.source).name == "agreement.pdf" and top.chunk.page_start == excerpt_page(16)
        # The scanned page's words came through OCR on a Ray worker.
        scanned = [c for c in index.chunks_with_embeddings()[0] if Path(c.source).name == "scanned.pdf"]
        assert scanned and "salary acme" in " ".join(c.text for c in scanned).lower()


def _crash_once_on(name: str, marker_dir: Path):
    """A loader whose worker process dies (os._exit) the first time it is handed `name`."""

    def load(path, origin, settings):
        from ingest.loaders import load_document

        if Path(path).name == name:
            first = marker_dir / "killed.pid"
            if not first.exists():
                first.write_text(str(os.getpid()))
                os._exit(1)  # no exception, no cleanup: the process is gone, as with the OOM killer
            (marker_dir / "retried.pid").write_text(str(os.getpid()))
        return load_document(path, origin=origin, settings=settings)

    return load


def test_killed_worker_is_retried_and_nothing_is_lost(
    ray_cluster, tmp_path: Path, small: Path, embedder, in_process
) -> None:
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    index, summary = _ray_index(tmp_path, small, embedder, loader=_crash_once_on("billing.md", marker_dir))
    ref_home, reference = in_process
    try:
        killed = int((marker_dir / "killed.pid").read_text())
        retried = int((marker_dir / "retried.pid").read_text())
        assert killed != retried  # a new worker process (the restarted actor) read the file again
        names = {p.name for p in small.iterdir()}
        assert _by_name(summary.files) == _by_name(reference["files"], names)
        assert summary.count("indexed") == 2
        doc_ids = {d.doc_id for d in index.documents()}
        with KnowledgeIndex.open(ref_home / "index", embedder=embedder) as ref_index:
            assert _chunks(index)[0] == _chunks(ref_index, doc_ids)[0]
    finally:
        index.close()


def test_a_file_that_kills_every_worker_is_reported_and_the_rest_indexed(
    ray_cluster, tmp_path: Path, small: Path, embedder, in_process, monkeypatch
) -> None:
    import ingest.ray_engine

    monkeypatch.setattr(ingest.ray_engine, "MAX_RETRIES", 1)  # one restart is enough to prove the limit
    attempts = tmp_path / "attempts"

    def always_crash(path, origin, settings):
        from ingest.loaders import load_document

        if Path(path).name == "faq.csv":
            with attempts.open("a") as f:
                f.write(f"{os.getpid()}\n")
            os._exit(1)
        return load_document(path, origin=origin, settings=settings)

    index, summary = _ray_index(tmp_path, small, embedder, loader=always_crash)
    try:
        got = _by_name(summary.files)
        status, _, _, _, reason = got.pop("faq.csv")
        assert status == "failed" and "Ray workers processing it failed 2 times" in reason
        assert len(set(attempts.read_text().split())) == 2  # two processes died on it, then Ray gave up
        assert got == _by_name(in_process[1]["files"], {"billing.md", "empty.txt"})
        assert {Path(d.source).name for d in index.documents()} == {"billing.md"}
    finally:
        index.close()
