"""The index manifest: one SQLite file holding documents, chunks (text, metadata, embedding) and errors.

SQLite is the source of truth. Each document is written in one transaction, so a crash leaves
every committed document whole and nothing half-written. The FAISS file is a cache of the
`embedding` column: if it disagrees with the manifest after a crash it is repaired from here.
The embedding model id and dimension are recorded; an index is never mixed across models.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from docteller.model import Chunk, Document, clean_publisher

SCHEMA_VERSION = "2"  # 2: documents.publisher

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    mime TEXT NOT NULL,
    doc_type TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    origin TEXT NOT NULL,
    indexed_at TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    publisher TEXT              -- another institution's document: its name; NULL: the bank's own
);
CREATE INDEX IF NOT EXISTS documents_source ON documents (source);
CREATE TABLE IF NOT EXISTS chunks (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS vector id
    chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents (doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    doc_type TEXT NOT NULL,
    search_text TEXT NOT NULL,  -- heading path + text: what BM25 and the embedder see
    data TEXT NOT NULL,         -- the Chunk as JSON
    embedding BLOB NOT NULL     -- float32, normalised
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc_id);
-- Evidence units (sentences, table rows) of each chunk, embedded for sentence-level search
-- (retrieval.units). A chunk's set is written in its document's transaction and goes with it.
CREATE TABLE IF NOT EXISTS unit_sets (
    chunk_row INTEGER PRIMARY KEY REFERENCES chunks (row_id) ON DELETE CASCADE,
    digest TEXT NOT NULL        -- identifies the unit texts the vectors were embedded from
);
CREATE TABLE IF NOT EXISTS units (
    unit_row INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS vector id in units.faiss
    chunk_row INTEGER NOT NULL REFERENCES chunks (row_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,  -- order of the unit within its chunk
    embedding BLOB NOT NULL     -- float32, normalised
);
CREATE INDEX IF NOT EXISTS units_chunk ON units (chunk_row);
-- Rows deleted, in commit order: a serving process follows another's deletes from here, and its
-- additions from the row ids above the highest it has seen (ids only grow: AUTOINCREMENT), so a
-- commit costs it the change, not a read of every id (`changes_since`). Kept to the newest
-- `REMOVED_LOG_KEEP` entries; a process further behind re-reads every id once.
CREATE TABLE IF NOT EXISTS removed_rows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,         -- 'chunk' or 'unit'
    row_id INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS chunk_removed AFTER DELETE ON chunks BEGIN
    INSERT INTO removed_rows (kind, row_id) VALUES ('chunk', old.row_id);
END;
CREATE TRIGGER IF NOT EXISTS unit_removed AFTER DELETE ON units BEGIN
    INSERT INTO removed_rows (kind, row_id) VALUES ('unit', old.unit_row);
END;
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


REMOVED_LOG_KEEP = 1_000_000
_LOG_PRUNED_KEY = "removed_log_pruned_through"


class ChangeMarks(BaseModel):
    """How far a reader has taken in the manifest: the highest chunk and unit row ids, and the
    last removal logged."""

    chunk_row: int = 0
    unit_row: int = 0
    removed_seq: int = 0


class Changes(BaseModel):
    """What the manifest gained and lost since some `ChangeMarks` (row ids), and the new marks."""

    marks: ChangeMarks
    added_chunks: list[int]
    removed_chunks: list[int]
    added_units: list[int]
    removed_units: list[int]


class EmbeddingModelMismatch(RuntimeError):
    """The index was built with another embedding model; mixing vectors would silently break search."""


class DocumentRecord(BaseModel):
    doc_id: str
    title: str
    source: str
    mime: str
    pages: int
    chunks: int
    indexed_at: datetime
    origin: str
    doc_type: str = ""
    publisher: str | None = None  # None: the bank's own document


def _chunk(data: str, publisher: str | None) -> Chunk:
    """A stored chunk, with its document's current publisher (changed without re-indexing)."""
    chunk = Chunk.model_validate_json(data)
    chunk.publisher = publisher
    return chunk


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """Thin data-access layer over the SQLite manifest (`:memory:` for session indexes)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._conn = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA foreign_keys = ON")
        if path:
            self._conn.execute("PRAGMA journal_mode = WAL")  # readers never block the indexer
            self._conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints, never corrupt
        self._conn.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a manifest written by older code up to this schema, in place (adding columns
        only: an older docteller can still read it)."""
        with self._lock:
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(documents)")}
            if "publisher" not in columns:
                try:
                    self._conn.execute("ALTER TABLE documents ADD COLUMN publisher TEXT")
                except sqlite3.OperationalError as exc:  # another process migrated it meanwhile
                    if "duplicate column" not in str(exc):
                        raise
            if self._conn.execute("SELECT 1 FROM meta WHERE key = 'schema'").fetchone() is not None:
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to this database."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # -- model identity ----------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def ensure_model(self, model_id: str, dim: int) -> None:
        """Record the embedding model on first use; refuse a different one afterwards."""
        stored_model, stored_dim = self.meta("embedding_model"), self.meta("embedding_dim")
        if stored_model is None:
            with self.transaction() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("embedding_model", model_id), ("embedding_dim", str(dim)), ("schema", SCHEMA_VERSION)],
                )
            return
        if stored_model != model_id or int(stored_dim or 0) != dim:
            where = self.path.parent if self.path else "this index"
            raise EmbeddingModelMismatch(
                f"index at {where} was built with embedding model {stored_model!r} (dim {stored_dim}), "
                f"but the configured model is {model_id!r} (dim {dim}). Re-index into a new "
                "DOCTELLER_HOME, or set DOCTELLER_EMBEDDING_MODEL back to the index's model."
            )

    # -- documents ---------------------------------------------------------------------------

    def has_document(self, doc_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone() is not None

    def is_current(self, doc_id: str, parser_version: str | None) -> bool:
        """Indexed, and read by the same parser version (no version given: indexed at all)."""
        with self._lock:
            row = self._conn.execute("SELECT metadata FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return False
        return parser_version is None or json.loads(row[0] or "{}").get("parser_version") == parser_version

    def doc_ids_for_source(self, source: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT doc_id FROM documents WHERE source = ?", (source,))]

    def resolve_doc_id(self, doc_id: str) -> str | None:
        """A full id, or a prefix that matches exactly one document."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT doc_id FROM documents WHERE doc_id = ? OR doc_id LIKE ? LIMIT 2", (doc_id, f"{doc_id}%")
            ).fetchall()
        ids = {r[0] for r in rows}
        if doc_id in ids:
            return doc_id
        return rows[0][0] if len(rows) == 1 and doc_id else None

    def insert_document(
        self, conn: sqlite3.Connection, doc: Document, doc_type: str, chunks: list[Chunk], vectors: np.ndarray
    ) -> np.ndarray:
        """Insert a document and its chunks inside `conn`'s transaction; returns the chunk row ids."""
        conn.execute(
            "INSERT INTO documents (doc_id, source, title, mime, doc_type, pages, chunks, origin, indexed_at, metadata,"
            " publisher) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc.id,
                doc.source,
                doc.title,
                doc.mime,
                doc_type,
                doc.page_count,
                len(chunks),
                doc.origin,
                _now(),
                json.dumps(doc.metadata, default=str),
                doc.publisher,
            ),
        )
        row_ids = np.empty(len(chunks), dtype=np.int64)
        for i, (chunk, vector) in enumerate(zip(chunks, vectors)):
            cur = conn.execute(
                "INSERT INTO chunks (chunk_id, doc_id, ordinal, doc_type, search_text, data, embedding)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    chunk.id,
                    chunk.doc_id,
                    chunk.ordinal,
                    chunk.doc_type,
                    chunk.embedding_text(),
                    chunk.model_dump_json(),
                    np.asarray(vector, dtype=np.float32).tobytes(),
                ),
            )
            row_ids[i] = cur.lastrowid
        return row_ids

    def set_publisher(self, doc_id: str, publisher: str | None) -> bool:
        """Change who published an indexed document (None: the bank's own); False if not indexed.
        Chunks read their publisher from their document's row, so this is the one place to change."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE documents SET publisher = ? WHERE doc_id = ?", (clean_publisher(publisher), doc_id))
        return cur.rowcount > 0

    def publisher_for_source(self, source: str) -> str | None:
        """The publisher recorded for the document indexed from `source` (a new version of a
        third-party file keeps its publisher unless it is given again)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT publisher FROM documents WHERE source = ? ORDER BY indexed_at DESC LIMIT 1", (source,)
            ).fetchone()
        return row[0] if row else None

    def delete_document(self, conn: sqlite3.Connection, doc_id: str) -> np.ndarray:
        """Delete inside `conn`'s transaction; returns the removed chunk row ids."""
        rows = conn.execute("SELECT row_id FROM chunks WHERE doc_id = ?", (doc_id,)).fetchall()
        conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def unit_rows_of_document(self, conn: sqlite3.Connection, doc_id: str) -> np.ndarray:
        """The unit row ids of a document's chunks (read before deleting it: they go by cascade)."""
        rows = conn.execute(
            "SELECT unit_row FROM units WHERE chunk_row IN (SELECT row_id FROM chunks WHERE doc_id = ?)", (doc_id,)
        ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def replace_units(
        self, conn: sqlite3.Connection, chunk_row: int, digest: str, vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Store a chunk's unit vectors inside `conn`'s transaction, replacing any earlier set.

        Returns (removed unit row ids, new unit row ids)."""
        old = [r[0] for r in conn.execute("SELECT unit_row FROM units WHERE chunk_row = ?", (chunk_row,))]
        conn.execute("DELETE FROM units WHERE chunk_row = ?", (chunk_row,))
        conn.execute("INSERT OR REPLACE INTO unit_sets (chunk_row, digest) VALUES (?, ?)", (chunk_row, digest))
        new = np.empty(len(vectors), dtype=np.int64)
        for position, vector in enumerate(vectors):
            cur = conn.execute(
                "INSERT INTO units (chunk_row, position, embedding) VALUES (?, ?, ?)",
                (chunk_row, position, np.asarray(vector, dtype=np.float32).tobytes()),
            )
            new[position] = cur.lastrowid
        return np.array(old, dtype=np.int64), new

    # -- following other processes' commits --------------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state of the database (a WAL read transaction)."""
        with self._lock:
            if self._conn.in_transaction:  # inside this connection's own write: already one state
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    def marks(self) -> ChangeMarks:
        """Where the manifest stands now (three index lookups)."""
        with self._lock:
            chunk_row, unit_row, seq = self._conn.execute(
                "SELECT (SELECT COALESCE(MAX(row_id), 0) FROM chunks), (SELECT COALESCE(MAX(unit_row), 0) FROM units),"
                " (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'removed_rows')"  # pruned or not
            ).fetchone()
        return ChangeMarks(chunk_row=chunk_row, unit_row=unit_row, removed_seq=seq)

    def changes_since(self, marks: ChangeMarks) -> Changes | None:
        """The chunk and unit rows added and removed since `marks`, read from one state of the
        database by the row-id and log indexes: the cost is the change's, not the KB's. None when
        the removal log no longer reaches back to `marks` (the reader must compare every id).
        An added row may already be known to the reader (its own write) and a removed one may be
        unknown to it: applying them must ignore both."""
        with self.snapshot():
            pruned = int(self.meta(_LOG_PRUNED_KEY) or 0)
            if marks.removed_seq < pruned:
                return None
            now = self.marks()
            conn = self._conn
            added_chunks = [r[0] for r in conn.execute("SELECT row_id FROM chunks WHERE row_id > ?", (marks.chunk_row,))]
            added_units = [r[0] for r in conn.execute("SELECT unit_row FROM units WHERE unit_row > ?", (marks.unit_row,))]
            removed: dict[str, list[int]] = {"chunk": [], "unit": []}
            for kind, row_id in conn.execute(
                "SELECT kind, row_id FROM removed_rows WHERE seq > ? ORDER BY seq", (marks.removed_seq,)
            ):
                removed[kind].append(row_id)
        return Changes(marks=now, added_chunks=added_chunks, removed_chunks=removed["chunk"],
                       added_units=added_units, removed_units=removed["unit"])

    def prune_removed_log(self, keep: int | None = None) -> int:
        """Drop all but the newest `keep` removals (the writer calls it when it saves); returns
        how many went."""
        keep = REMOVED_LOG_KEEP if keep is None else keep
        with self._lock:  # a read first: the write lock is taken only when there is something to drop
            (last,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM removed_rows").fetchone()
        if last - keep <= int(self.meta(_LOG_PRUNED_KEY) or 0):
            return 0
        with self.transaction() as conn:
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM removed_rows").fetchone()
            through = last - keep
            if through <= int(self.meta(_LOG_PRUNED_KEY) or 0):
                return 0
            gone = conn.execute("DELETE FROM removed_rows WHERE seq <= ?", (through,)).rowcount
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_LOG_PRUNED_KEY, str(through)))
        return gone

    def has_unit_sets(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM unit_sets LIMIT 1").fetchone() is not None

    def unit_row_ids(self) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute("SELECT unit_row FROM units").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def unit_embeddings(self, unit_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unit row ids, float32 matrix) of the given units."""
        return _matrix(self._by_ids("SELECT unit_row, embedding FROM units WHERE unit_row IN ({})", unit_rows))

    def unit_embeddings_of_chunks(self, chunk_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each unit's chunk row, float32 matrix) of every unit of the given chunks (read by the
        `units_chunk` index: the cost is these chunks', not the KB's)."""
        return _matrix(self._by_ids("SELECT chunk_row, embedding FROM units WHERE chunk_row IN ({})", chunk_rows))

    def unit_owners(self, unit_rows: np.ndarray) -> dict[int, int]:
        """{unit row: its chunk's row id}."""
        return dict(self._by_ids("SELECT unit_row, chunk_row FROM units WHERE unit_row IN ({})", unit_rows))

    def unit_digests(self, chunk_rows: np.ndarray) -> dict[int, str]:
        """{chunk row: digest of its stored unit set} for the chunks that have one."""
        return dict(self._by_ids("SELECT chunk_row, digest FROM unit_sets WHERE chunk_row IN ({})", chunk_rows))

    def chunk_units(self, chunk_id: str) -> tuple[str, np.ndarray] | None:
        """(digest, unit vectors in order) of a chunk, or None when it has no stored set."""
        with self._lock:
            head = self._conn.execute(
                "SELECT s.chunk_row, s.digest FROM unit_sets s JOIN chunks c ON c.row_id = s.chunk_row"
                " WHERE c.chunk_id = ?", (chunk_id,)
            ).fetchone()
            if head is None:
                return None
            rows = self._conn.execute(
                "SELECT embedding FROM units WHERE chunk_row = ? ORDER BY position", (head[0],)
            ).fetchall()
        vectors = [np.frombuffer(r[0], dtype=np.float32) for r in rows]
        return head[1], (np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32))

    def chunk_rows_without_units(self) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute(
                "SELECT row_id FROM chunks WHERE row_id NOT IN (SELECT chunk_row FROM unit_sets) ORDER BY row_id"
            ).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def live_chunk_rows(self, conn: sqlite3.Connection, chunk_rows: list[int]) -> set[int]:
        """Those of `chunk_rows` still in the manifest, read inside `conn`'s transaction."""
        live: set[int] = set()
        for start in range(0, len(chunk_rows), 500):
            batch = [int(r) for r in chunk_rows[start : start + 500]]
            query = f"SELECT row_id FROM chunks WHERE row_id IN ({','.join('?' * len(batch))})"
            live.update(r[0] for r in conn.execute(query, batch))
        return live

    def _by_ids(self, query: str, ids: np.ndarray) -> list[tuple]:
        """Rows of `query` (one `IN ({})` placeholder) for many ids, in batches SQLite accepts."""
        values = [int(i) for i in ids]
        rows: list[tuple] = []
        with self._lock:
            for start in range(0, len(values), 500):
                batch = values[start : start + 500]
                rows += self._conn.execute(query.format(",".join("?" * len(batch))), batch).fetchall()
        return rows

    _RECORD = ("doc_id", "title", "source", "mime", "pages", "chunks", "indexed_at", "origin", "doc_type", "publisher")

    def documents(self) -> list[DocumentRecord]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(self._RECORD)} FROM documents ORDER BY indexed_at, title"
            ).fetchall()
        return [DocumentRecord(**dict(zip(self._RECORD, r))) for r in rows]

    def document(self, doc_id: str) -> DocumentRecord | None:
        """One document's record (a lookup, not a scan: called once per unchanged file)."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(self._RECORD)} FROM documents WHERE doc_id = ?", (doc_id,)
            ).fetchone()
        return DocumentRecord(**dict(zip(self._RECORD, row))) if row else None

    # -- chunks ------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        with self._lock:
            docs = self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            chunks = self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def row_ids(self, filters: dict | None = None) -> np.ndarray:
        clauses, params = [], []
        for key, column in (("doc_id", "doc_id"), ("doc_type", "doc_type")):
            value = (filters or {}).get(key)
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            if key == "doc_id":  # short ids as shown by `docs list` work too
                clauses.append("(" + " OR ".join("doc_id LIKE ?" for _ in values) + ")")
                params += [f"{v}%" for v in values]
            else:
                clauses.append(f"{column} IN ({','.join('?' for _ in values)})")
                params += values
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._conn.execute(f"SELECT row_id FROM chunks{where}", params).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def search_texts(self, row_ids: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """(row ids, the text BM25 indexes) of the given chunk rows, or of every chunk, by row."""
        if row_ids is None:
            with self._lock:
                rows = self._conn.execute("SELECT row_id, search_text FROM chunks ORDER BY row_id").fetchall()
        else:
            rows = sorted(self._by_ids("SELECT row_id, search_text FROM chunks WHERE row_id IN ({})", row_ids))
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def embeddings(self, row_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(row_ids, float32 matrix) for the given rows, or all rows."""
        if row_ids is None:
            with self._lock:
                rows = self._conn.execute("SELECT row_id, embedding FROM chunks ORDER BY row_id").fetchall()
        else:
            rows = self._by_ids("SELECT row_id, embedding FROM chunks WHERE row_id IN ({})", row_ids)
        return _matrix(rows)

    def chunks_by_row(self, row_ids: list[int]) -> dict[int, Chunk]:
        if not row_ids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.row_id, c.data, d.publisher FROM chunks c JOIN documents d ON d.doc_id = c.doc_id"
                f" WHERE c.row_id IN ({','.join('?' * len(row_ids))})",
                [int(i) for i in row_ids],
            ).fetchall()
        return {r[0]: _chunk(r[1], r[2]) for r in rows}

    def doc_ids_by_row(self, row_ids: list[int]) -> dict[int, str]:
        """Each chunk row's document id, reading no chunk text (the search's document ranking)."""
        if not row_ids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                f"SELECT row_id, doc_id FROM chunks WHERE row_id IN ({','.join('?' * len(row_ids))})",
                [int(i) for i in row_ids],
            ).fetchall()
        return dict(rows)

    def chunk(self, chunk_id: str) -> Chunk | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT c.data, d.publisher FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id = ?",
                (chunk_id,),
            ).fetchone()
        return _chunk(row[0], row[1]) if row else None

    # -- errors ------------------------------------------------------------------------------

    def record_error(self, path: str, reason: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO errors (path, reason, at) VALUES (?, ?, ?)", (path, reason, _now()))

    def errors(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, reason, at FROM errors ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"path": p, "reason": r, "at": a} for p, r, a in rows]


def _matrix(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 matrix) of (id, embedding blob) rows."""
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.array([r[0] for r in rows], dtype=np.int64), np.vstack([np.frombuffer(r[1], np.float32) for r in rows])
