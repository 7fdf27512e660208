"""Ingestion throughput: parse+chunk pages/s (text PDFs), OCR s/page (scanned), embedding overhead,
and whole `index_paths` runs, in-process engine vs the Ray engine, on 1 and 2 CPUs.

    python benchmarks/bench_ingest.py [--repeat 5] [--workers 2]       # everything
    python benchmarks/bench_ingest.py --engines-only [--text-pages 520] [--scanned-pages 8]

Targets: ≥ 100 text-PDF pages/s on 2 cores, ≤ 3 s per scanned page, embed() ≤ 1.15× the time of
plain `SentenceTransformer.encode` on the same texts in the same process.

Engines: text PDFs are generated with pymupdf from the bundled KB's Markdown/text (each page
unique), scanned pages are some of those pages rasterised into image-only PDFs (so they go
through OCR). Each engine run is a fresh subprocess pinned to its CPUs (sched_setaffinity, which
Ray's worker processes inherit) indexing into a fresh index; it reports pages/s over the whole
`index_paths` call (model loads included; Ray's start is timed apart) and the peak memory of its
process tree (Ray's GCS, raylet and workers included), sampled each second from this process,
as summed RSS and summed PSS (shared pages counted once, e.g. the object store).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docteller  # noqa: E402,F401  (offline environment)

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
TEXT_PDFS = [
    CORPUS / "kb/bank_tc_pdfs/bank_of_america_online_banking_service_agreement_2025-07-21.pdf",
    *sorted((CORPUS / "statements").rglob("*.pdf")),
]
SCANNED = CORPUS / "statements/bank_statement_ocr_nz/tutorial_everyday_scanned.pdf"


def parse_and_chunk(path: str) -> tuple[int, int]:
    from ingest.chunking import chunk_document
    from ingest.loaders import load_document

    doc = load_document(path)
    return doc.page_count, len(chunk_document(doc))


def micro(args: argparse.Namespace) -> None:
    pdfs = [str(p) for p in TEXT_PDFS if p.exists() and p.name != SCANNED.name and "scanned" not in p.name]
    parse_and_chunk(pdfs[0])  # warm imports
    jobs = pdfs * args.repeat
    started = time.perf_counter()
    pages = sum(parse_and_chunk(p)[0] for p in jobs)
    single = pages / (time.perf_counter() - started)
    print(f"parse+chunk, 1 process : {pages} pages in {len(jobs)} files -> {single:.1f} pages/s")

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        list(pool.map(parse_and_chunk, pdfs[: args.workers]))  # start and warm the workers
        started = time.perf_counter()
        pages = sum(n for n, _ in pool.map(parse_and_chunk, jobs))
        multi = pages / (time.perf_counter() - started)
    print(f"parse+chunk, {args.workers} processes: {pages} pages -> {multi:.1f} pages/s")

    from ingest.loaders import load_document
    from ingest.ocr import get_ocr_engine

    get_ocr_engine()  # model load is paid once per process, not per page
    started = time.perf_counter()
    doc = load_document(SCANNED)
    ocr_seconds = (time.perf_counter() - started) / doc.page_count
    print(f"OCR fallback (200 dpi)  : {doc.page_count} scanned pages -> {ocr_seconds:.2f} s/page "
          f"({'Kowhai' in doc.text and 'text recovered' or 'TEXT MISSING'})")

    from ingest.chunking import chunk_document
    from ingest.embed import SentenceTransformerEmbedder

    texts = [c.embedding_text() for p in pdfs[:1] for c in chunk_document(load_document(p))]
    embedder = SentenceTransformerEmbedder()
    model = embedder.model
    model.encode(texts[:16], batch_size=64)  # warm-up
    plain, ours = [], []
    for _ in range(3):  # interleaved so machine load affects both alike
        t = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        embedder.embed(texts)
        ours.append(time.perf_counter() - t)
    ratio = min(ours) / min(plain)
    print(f"embedding               : {len(texts)} chunks, plain encode {min(plain):.2f} s, "
          f"Embedder.embed {min(ours):.2f} s -> ratio {ratio:.3f} ({len(texts) / min(ours):.1f} chunks/s)")



# --- engines: in-process vs Ray on the same generated corpus ---------------------------------------

KB_TEXT = Path(__file__).resolve().parent.parent / "knowledge_base" / "documents"
LINES_PER_PAGE, PAGES_PER_PDF = 48, 26


def _kb_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted(KB_TEXT.iterdir()):
        if path.suffix in (".md", ".txt"):
            for paragraph in path.read_text(encoding="utf-8").splitlines():
                lines.extend(textwrap.wrap(paragraph.strip("# "), 92) or [""])
    return lines


def make_corpus(folder: Path, text_pages: int, scanned_pages: int) -> None:
    """Text PDFs of PAGES_PER_PDF pages from the KB's text, and image-only PDFs of some of those pages."""
    import pymupdf

    lines = _kb_lines()
    made, n = 0, 0
    while made < text_pages:
        pdf = pymupdf.open()
        for p in range(min(PAGES_PER_PDF, text_pages - made)):
            start = (made * 37) % max(1, len(lines) - LINES_PER_PAGE)  # every page a different window
            page = pdf.new_page()  # A4 portrait in points
            body = [f"Policy pack {n + 1}, page {p + 1}", ""] + lines[start : start + LINES_PER_PAGE]
            page.insert_text((48, 56), "\n".join(body), fontsize=9, fontname="helv")
            made += 1
        pdf.save(folder / f"policy-pack-{n + 1:03d}.pdf")
        pdf.close()
        n += 1
    with pymupdf.open(folder / "policy-pack-001.pdf") as source:
        for i in range(0, scanned_pages, 4):
            scan = pymupdf.open()
            for page in list(source)[i : min(i + 4, scanned_pages)]:
                pix = page.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
                scan.new_page(width=page.rect.width, height=page.rect.height).insert_image(page.rect, pixmap=pix)
            scan.save(folder / f"scanned-{i // 4 + 1:02d}.pdf")
            scan.close()


class TreeMemory:
    """Peak summed RSS and PSS of process `root` and all its descendants, sampled every second.

    Run from the parent, not inside the measured run: reading smaps_rollup costs CPU, which must
    not come out of the CPUs the run is pinned to.
    """

    def __init__(self, root: int, interval: float = 1.0) -> None:
        self.root, self.interval = root, interval
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = pss = 0
            for pid in self._tree():
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1]) * 1024
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1]) * 1024
                except OSError:
                    continue
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


def engine_run(engine: str, cpus: int, data: Path, home: Path) -> dict:
    """One measured `index_paths` run; called in a fresh subprocess (see `engines`)."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))
    os.environ["DOCTELLER_HOME"] = str(home)
    from docteller.settings import Settings
    from retrieval.indexing import index_paths

    settings = Settings(home=home, workers=cpus)
    start_s = 0.0
    if engine == "ray":
        from ingest.ray_engine import ray_session

        t = time.perf_counter()
        with ray_session(None, cpus=cpus):
            start_s = time.perf_counter() - t
            t = time.perf_counter()
            summary = index_paths([data], settings=settings, engine="ray")
            seconds = time.perf_counter() - t
    else:
        t = time.perf_counter()
        summary = index_paths([data], settings=settings)
        seconds = time.perf_counter() - t
    totals = summary.totals()
    return {
        "engine": engine, "cpus": cpus, "pages": totals["pages"], "chunks": totals["chunks"],
        "failed": totals["failed"], "seconds": seconds, "start_s": start_s,
        "pages_per_s": totals["pages"] / seconds,
    }


def engines(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        data = Path(tmp) / "corpus"
        data.mkdir()
        make_corpus(data, args.text_pages, args.scanned_pages)
        print(f"engines: {args.text_pages} text-PDF pages in {len(list(data.glob('policy-*')))} files + "
              f"{args.scanned_pages} scanned pages (image-only PDFs, OCR'd); load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        header = f"{'engine':<12}{'CPUs':>5}{'pages':>7}{'chunks':>8}{'seconds':>9}{'pages/s':>9}" \
                 f"{'Ray start s':>13}{'peak RSS MB':>13}{'peak PSS MB':>13}{'load avg':>10}"
        print(header)
        rows = []
        for engine, cpus in args.runs:
            load = os.getloadavg()[0]  # other jobs on the machine slow every figure: say how busy it was
            child = subprocess.Popen(
                [sys.executable, __file__, "--engine-run", engine, "--cpus", str(cpus), "--data", str(data),
                 "--home", str(Path(tmp) / f"home-{engine}-{cpus}")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            with TreeMemory(child.pid) as memory:
                stdout, stderr = child.communicate()
            if child.returncode != 0:
                sys.exit(f"{engine} on {cpus} CPU(s) failed:\n{stderr[-3000:]}")
            r = json.loads(stdout.strip().splitlines()[-1])
            r.update(peak_rss_mb=memory.peak_rss / 2**20, peak_pss_mb=memory.peak_pss / 2**20)
            rows.append(r)
            name = "in-process" if engine == "process" else "ray"
            print(f"{name:<12}{cpus:>5}{r['pages']:>7}{r['chunks']:>8}{r['seconds']:>9.1f}{r['pages_per_s']:>9.1f}"
                  f"{r['start_s']:>13.1f}{r['peak_rss_mb']:>13.0f}{r['peak_pss_mb']:>13.0f}{load:>10.1f}", flush=True)
        same = len({(r["pages"], r["chunks"], r["failed"]) for r in rows}) == 1
        print(f"same pages and chunks from every run: {'yes' if same else 'NO'}; "
              f"load average now {os.getloadavg()[0]:.1f}")
        writer_ceiling(data, Path(tmp))


def writer_ceiling(data: Path, home: Path, copies: int = 100) -> None:
    """Chunks/s the one writer commits when documents arrive already chunked and embedded (the Ray
    engine's driver): one generated PDF committed `copies` times under new ids, with its vectors."""
    import numpy as np

    from ingest.chunking import chunk_document
    from ingest.embed import get_embedder
    from ingest.loaders import load_document
    from retrieval.store import KnowledgeIndex

    doc = load_document(next(iter(sorted(data.glob("policy-*.pdf")))))
    chunks = chunk_document(doc)
    vectors = get_embedder().embed([c.embedding_text() for c in chunks])
    with KnowledgeIndex.open(home / "writer") as index:
        started = time.perf_counter()
        with index.bulk():  # as in index_paths; the vector file is written when the block ends
            for n in range(copies):
                doc_id = hashlib.sha256(f"{doc.id}#{n}".encode()).hexdigest()
                copy = doc.model_copy(update={"id": doc_id, "source": f"{doc.source}#{n}"})
                moved = [c.model_copy(update={"doc_id": doc_id, "id": f"{doc_id[:16]}:{c.ordinal}"}) for c in chunks]
                index.add_document(copy, prepared=(moved, np.array(vectors)))
        seconds = time.perf_counter() - started
    total = copies * len(chunks)
    print(f"one writer, prepared documents: {total} chunks in {seconds:.1f} s -> {total / seconds:.0f} chunks/s "
          f"({copies * doc.page_count / seconds:.0f} pages/s of these PDFs)")


def _runs(text: str) -> list[tuple[str, int]]:
    runs = []
    for item in text.split(","):
        engine, _, cpus = item.partition(":")
        if engine not in ("process", "ray") or not cpus.isdigit() or int(cpus) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: expected process:N or ray:N")
        runs.append((engine, int(cpus)))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines-only", action="store_true", help="only the in-process vs Ray runs")
    parser.add_argument("--text-pages", type=int, default=520)
    parser.add_argument("--scanned-pages", type=int, default=8)
    parser.add_argument(
        "--runs", type=_runs, default=_runs("process:1,ray:1,process:2,ray:2"),
        help="engine:CPUs runs, in order (default process:1,ray:1,process:2,ray:2)",
    )
    parser.add_argument("--writer-only", action="store_true", help="only the one-writer commit rate")
    parser.add_argument("--engine-run", choices=("process", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer_only:
        with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
            os.environ["DOCTELLER_HOME"] = tmp
            make_corpus(Path(tmp), PAGES_PER_PDF, 0)
            writer_ceiling(Path(tmp), Path(tmp))
        return
    if args.engine_run:
        print(json.dumps(engine_run(args.engine_run, args.cpus, args.data, args.home)))
        return
    if not args.engines_only:
        micro(args)
    engines(args)


if __name__ == "__main__":
    main()
