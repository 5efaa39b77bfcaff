"""The job ledger: every submission, written before it is sent, completed when it ends (SQLite).

ComfyUI keeps its history in memory (a restart empties it) and stores a graph, not the values the
user chose. The panel is the submitter, so it records exactly what was asked and what came back:
recipe, exact API prompt, flattened parameters (for search), server (never a credential), user
label, outputs with their file refs.

Concurrency: WAL mode; a small lock-protected pool of connections (``check_same_thread=False``,
each used by one thread at a time); writes run in ``BEGIN IMMEDIATE`` transactions with a busy
timeout, so several Streamlit sessions, threads and processes can write the same file. A process
killed mid-write leaves the last committed state (SQLite's journal guarantees it).

Storage faults (disk full, a read-only file, a lock held too long, an I/O error): job-lifecycle
writes (``record_submission``, ``mark_*``, ``complete``, output sizes) are kept in memory, in order,
and written by themselves as soon as the file takes writes again (every later write and read tries);
``problem`` holds the one-sentence ``LedgerUnavailable`` message meanwhile. Edits a user makes by hand
(favourite, tags, delete) raise ``LedgerUnavailable`` instead, so the page can say "try again".

Location: ``COMFYPANEL_LEDGER`` (a file path, or a ``file:`` URI such as ``file:/x.db?mode=ro``), else
``$COMFYPANEL_DATA_DIR/ledger.sqlite3``, else the platform's user data directory.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from .errors import LedgerUnavailable
from .storage import data_dir
from .types import FileRef

__all__ = [
    "Ledger",
    "JobRecord",
    "OutputRecord",
    "ReconcileReport",
    "data_dir",
    "ledger_path",
    "reconcile",
    "flatten_params",
    "export_zip",
    "SCHEMA_VERSION",
    "ACTIVE_STATES",
]

log = logging.getLogger(__name__)

ACTIVE_STATES = ("submitting", "queued", "running")
_FINAL_STATES = frozenset({"succeeded", "failed", "interrupted", "cancelled", "lost", "rejected"})
# A "submitting" row younger than this may be on its way to the server right now: never call it lost.
SUBMIT_GRACE_S = 120.0


def _storage_fault(exc: BaseException) -> str | None:
    """``full`` | ``readonly`` | ``busy`` | ``open`` | ``io`` when an SQLite error is about the file or disk
    (it goes away when the disk does), ``None`` for a real error (a constraint, bad SQL)."""
    if not isinstance(exc, sqlite3.Error) or isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return "full"
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM")) or "readonly" in text or "read-only" in text:
        return "readonly"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
        return "busy"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "open"
    if name.startswith("SQLITE_IOERR") or "disk i/o" in text:
        return "io"
    return None


def _fault_of(exc: BaseException) -> str | None:
    if isinstance(exc, LedgerUnavailable):
        return exc.kind
    return _storage_fault(exc)


def ledger_path() -> Path:
    """``$COMFYPANEL_LEDGER`` (a file path), else ``ledger.sqlite3`` in the panel's data directory."""
    env = (os.environ.get("COMFYPANEL_LEDGER") or "").strip()
    if env:
        return Path(env).expanduser()
    return data_dir() / "ledger.sqlite3"


# -- records -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutputRecord:
    ref: FileRef
    size: int | None = None
    missing: bool = False  # the server no longer has the file


@dataclass(frozen=True, slots=True)
class JobRecord:
    prompt_id: str
    status: str  # submitting | queued | running | succeeded | failed | interrupted | cancelled | lost | rejected
    created_at: float  # epoch seconds
    updated_at: float
    completed_at: float | None
    server_id: str
    user_label: str
    workflow_name: str
    recipe_json: str = field(repr=False)
    api: Mapping[str, Any] = field(repr=False)
    params: Mapping[str, Any] = field(repr=False)
    batch_id: str | None
    grid_label: str | None
    number: float | None
    error: str | None
    duration_s: float | None
    favourite: bool
    external: bool  # imported from the server's history, not submitted by the panel
    tags: tuple[str, ...]
    outputs: tuple[OutputRecord, ...]

    @property
    def files(self) -> tuple[FileRef, ...]:
        return tuple(o.ref for o in self.outputs)

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_at)

    @property
    def seeds(self) -> dict[str, Any]:
        """The seeds used, ``{"node.input": value}``: from the recipe, else seed-like inputs of the prompt."""
        try:
            seeds = json.loads(self.recipe_json).get("seeds")
        except (ValueError, AttributeError):
            seeds = None
        if isinstance(seeds, Mapping) and seeds:
            return dict(seeds)
        return {k: v for k, v in flatten_params(self.api).items() if k.rsplit(".", 1)[-1] in ("seed", "noise_seed")}


@dataclass
class ReconcileReport:
    imported: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    missing_files: int = 0
    checked_files: int = 0

    @property
    def summary(self) -> str:
        return (f"{len(self.imported)} run(s) imported from the server, {len(self.completed)} finished, "
                f"{len(self.lost)} lost, {self.missing_files} file(s) no longer on the server.")


# -- migrations --------------------------------------------------------------------------------
def _run(c: sqlite3.Connection, statements: Sequence[str]) -> None:
    # Not executescript(): it COMMITs first, and a migration must be one transaction.
    for sql in statements:
        c.execute(sql)


def _m1(c: sqlite3.Connection, fts: bool) -> None:
    _run(c, [
        """CREATE TABLE jobs (
            prompt_id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            completed_at REAL,
            server_id TEXT NOT NULL,
            user_label TEXT NOT NULL DEFAULT '',
            workflow_name TEXT NOT NULL DEFAULT '',
            recipe_json TEXT NOT NULL DEFAULT '{}',
            api_json TEXT NOT NULL DEFAULT '{}',
            params_json TEXT NOT NULL DEFAULT '{}',
            search_text TEXT NOT NULL DEFAULT '',
            batch_id TEXT,
            grid_label TEXT,
            number REAL,
            error TEXT,
            duration_s REAL,
            favourite INTEGER NOT NULL DEFAULT 0,
            external INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE outputs (
            prompt_id TEXT NOT NULL REFERENCES jobs(prompt_id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            filename TEXT NOT NULL,
            subfolder TEXT NOT NULL DEFAULT '',
            type TEXT NOT NULL DEFAULT 'output',
            node_id TEXT,
            kind TEXT NOT NULL DEFAULT 'images',
            animated INTEGER NOT NULL DEFAULT 0,
            size INTEGER,
            PRIMARY KEY (prompt_id, idx)
        )""",
        """CREATE TABLE tags (
            prompt_id TEXT NOT NULL REFERENCES jobs(prompt_id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (prompt_id, tag)
        )""",
        "CREATE INDEX jobs_created ON jobs(created_at DESC)",
    ])


def _m2(c: sqlite3.Connection, fts: bool) -> None:
    """v2: outputs can be marked missing; filter indexes; full-text index over search_text."""
    _run(c, [
        "ALTER TABLE outputs ADD COLUMN missing INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at DESC)",
        "CREATE INDEX IF NOT EXISTS jobs_server ON jobs(server_id, created_at DESC)",
        "CREATE INDEX IF NOT EXISTS tags_tag ON tags(tag)",
    ])
    if fts:
        _run(c, [
            "CREATE VIRTUAL TABLE jobs_fts USING fts5(search_text, content='jobs', content_rowid='rowid', "
            "tokenize='unicode61 remove_diacritics 2')",
            """CREATE TRIGGER jobs_fts_ai AFTER INSERT ON jobs BEGIN
                INSERT INTO jobs_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
            END""",
            """CREATE TRIGGER jobs_fts_ad AFTER DELETE ON jobs BEGIN
                INSERT INTO jobs_fts(jobs_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
            END""",
            """CREATE TRIGGER jobs_fts_au AFTER UPDATE OF search_text ON jobs BEGIN
                INSERT INTO jobs_fts(jobs_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
                INSERT INTO jobs_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
            END""",
            "INSERT INTO jobs_fts(jobs_fts) VALUES ('rebuild')",
        ])


# Ordered: MIGRATIONS[n-1] takes the schema from version n-1 to n.
MIGRATIONS: tuple[Callable[[sqlite3.Connection, bool], None], ...] = (_m1, _m2)
SCHEMA_VERSION = len(MIGRATIONS)


def _fts_available() -> bool:
    try:
        c = sqlite3.connect(":memory:")
        try:
            c.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
            return True
        finally:
            c.close()
    except sqlite3.Error:
        return False


# -- helpers --------------------------------------------------------------------------------------
def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def flatten_params(api: Mapping[str, Any]) -> dict[str, Any]:
    """``{"node.input": value}`` for every input of an API graph that holds a value (not a link)."""
    out: dict[str, Any] = {}
    if not isinstance(api, Mapping):
        return out
    for nid, node in api.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name, value in inputs.items():
            if not _is_link(value):
                out[f"{nid}.{name}"] = value
    return out


def _words(value: Any, out: list[str], depth: int = 0) -> None:
    if depth > 6 or value is None:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, (int, float)):
        out.append(repr(value))
    elif isinstance(value, Mapping):
        for v in value.values():
            _words(v, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _words(v, out, depth + 1)


def _search_text(*parts: Any) -> str:
    words: list[str] = []
    for p in parts:
        _words(p, words)
    return "\n".join(words)[:200_000]


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError("since/until must be a datetime or epoch seconds")


def _fts_query(text: str) -> str:
    terms = [t for t in "".join(ch if ch.isalnum() else " " for ch in text).split() if t]
    return " AND ".join(f'"{t}"*' for t in terms)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


# -- the ledger --------------------------------------------------------------------------------
class Ledger:
    """The SQLite job ledger. Thread-safe; holds no credentials (safe in ``st.cache_resource``)."""

    POOL_SIZE = 4

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 30.0) -> None:
        """Open (and migrate) the ledger.

        Raises:
            LedgerUnavailable: the file cannot be opened at all, or it needs a schema change and
                cannot be written. A read-only file whose schema is current opens (reads work,
                job writes wait in memory, ``problem`` says why).
        """
        raw = os.fspath(path) if path is not None else None
        if isinstance(raw, str) and raw.startswith("file:"):
            self._target: str | Path = raw
            self._uri = True
            self.path = Path(urlsplit(raw).path)
        else:
            self.path = Path(raw) if raw is not None else ledger_path()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._target, self._uri = self.path, False
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        # Job writes that the file did not take (disk full, read-only...), oldest first; written by
        # themselves later. Guarded by ``_backlog_lock``, which also keeps them in order.
        self._backlog: list[tuple[str, Callable[[sqlite3.Connection], Any]]] = []
        self._backlog_lock = threading.RLock()
        self._problem: LedgerUnavailable | None = None
        self.fts = _fts_available()
        try:
            with self._connection() as c:
                c.execute("PRAGMA journal_mode=WAL")
                self._migrate(c)
                # A DB made where FTS5 was available may be opened where it is not (and vice versa).
                self.fts = self.fts and bool(c.execute(
                    "SELECT 1 FROM sqlite_master WHERE name='jobs_fts'").fetchone())
        except sqlite3.Error as exc:
            kind = _storage_fault(exc)
            if kind is None:
                raise
            self._open_degraded(kind)

    def _open_degraded(self, kind: str) -> None:
        """The file did not take the start-up writes: usable read-only if its schema is current."""
        try:
            with self._connection() as c:
                row = c.execute("SELECT version FROM schema_version").fetchone()
                has_fts = bool(c.execute("SELECT 1 FROM sqlite_master WHERE name='jobs_fts'").fetchone())
        except sqlite3.Error:
            raise LedgerUnavailable(kind, str(self.path), kept=False) from None
        if not row or row[0] != SCHEMA_VERSION:
            raise LedgerUnavailable(kind, str(self.path), kept=False) from None
        self.fts = self.fts and has_fts
        self._problem = LedgerUnavailable(kind, str(self.path))
        log.warning("the job ledger %s opened read-only: %s", self.path, self._problem.user_message)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- storage faults ---------------------------------------------------------------------------
    @property
    def problem(self) -> str | None:
        """One sentence while job records wait in memory because the file takes no writes; else None.

        Reading it tries to write what waits (see ``_read``), so a page showing it recovers by itself.
        """
        self._retry_quietly()
        problem = self._problem
        return problem.user_message if problem is not None else None

    @property
    def waiting(self) -> int:
        """How many job writes wait in memory for the file to take writes again."""
        with self._backlog_lock:
            return len(self._backlog)

    def flush(self) -> bool:
        """Write the waiting job records now, in order; True when nothing waits any more.

        Called by every write and read, so nobody has to: the ledger recovers by itself.
        """
        if not self._backlog:
            return True
        with self._backlog_lock:
            return self._flush_locked()

    def _retry_quietly(self) -> None:
        """For reads: try the waiting writes, unless the file is locked by someone else (a try would
        wait out the busy timeout, and reads in WAL mode never need to wait; the next write retries)."""
        problem = self._problem
        if self._backlog and not (problem is not None and problem.kind == "busy"):
            self.flush()

    def _flush_locked(self) -> bool:
        while self._backlog:
            what, fn = self._backlog[0]
            try:
                with self._write() as c:
                    fn(c)
            except (sqlite3.Error, LedgerUnavailable) as exc:
                kind = _fault_of(exc)
                if kind is not None:
                    self._problem = LedgerUnavailable(kind, str(self.path))
                    return False
                # e.g. a duplicate import another session wrote meanwhile: nothing to keep
                log.warning("a waiting ledger write (%s) failed and is dropped: %s", what, exc)
            self._backlog.pop(0)
        if self._problem is not None:
            log.warning("the job ledger takes writes again; every waiting record was saved")
        self._problem = None
        return True

    def _job_write(self, what: str, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run one job-lifecycle write; if the file does not take it, keep it for later (in order)."""
        with self._backlog_lock:
            if self._backlog and not self._flush_locked():
                self._backlog.append((what, fn))
                return None
            try:
                with self._write() as c:
                    out = fn(c)
            except (sqlite3.Error, LedgerUnavailable) as exc:
                kind = _fault_of(exc)
                if kind is None:
                    raise
                self._backlog.append((what, fn))
                self._problem = LedgerUnavailable(kind, str(self.path))
                log.warning("%s: %s (%s kept in memory)", self.path, self._problem.user_message, what)
                return None
            if self._problem is not None:  # e.g. opened read-only, writable again since
                log.warning("the job ledger %s takes writes again", self.path)
                self._problem = None
            return out

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading, after trying to write what waits (cheap when nothing does)."""
        self._retry_quietly()
        with self._connection() as c:
            yield c

    @contextmanager
    def _user_write(self) -> Iterator[sqlite3.Connection]:
        """A write a user asked for by hand: a storage fault raises ``LedgerUnavailable`` (try again).

        While job records still wait in memory, edits are refused without trying: an edit must never
        get ahead of the records it may belong to (it would silently change nothing).
        """
        if not self.flush():
            problem = self._problem
            raise LedgerUnavailable(problem.kind if problem is not None else "io", str(self.path), kept=False)
        try:
            with self._write() as c:
                yield c
        except sqlite3.Error as exc:
            kind = _storage_fault(exc)
            if kind is None:
                raise
            raise LedgerUnavailable(kind, str(self.path), kept=False) from None

    # -- connections --------------------------------------------------------------------------
    def _new_connection(self) -> sqlite3.Connection:
        try:
            c = sqlite3.connect(self._target, timeout=self._timeout, isolation_level=None,
                                check_same_thread=False, uri=self._uri)
        except sqlite3.Error as exc:
            kind = _storage_fault(exc)
            if kind is None:
                raise
            raise LedgerUnavailable(kind, str(self.path), kept=False) from None
        c.row_factory = sqlite3.Row
        c.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA synchronous=NORMAL")
        return c

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            c = self._idle.pop() if self._idle else None
        if c is None:
            c = self._new_connection()
        try:
            yield c
        except BaseException:
            if c.in_transaction:
                c.rollback()
            raise
        finally:
            with self._lock:
                if not self._closed and len(self._idle) < self.POOL_SIZE and not c.in_transaction:
                    self._idle.append(c)
                    c = None
            if c is not None:
                c.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.rollback()
                raise
            c.commit()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def _migrate(self, c: sqlite3.Connection) -> None:
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = c.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                c.execute("INSERT INTO schema_version VALUES (0)")
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"The job ledger at {self.path} was written by a newer Comfy Panel (schema {version}); "
                    "update the panel or point COMFYPANEL_LEDGER at another file.")
            for n in range(version, SCHEMA_VERSION):
                MIGRATIONS[n](c, self.fts)
                c.execute("UPDATE schema_version SET version = ?", (n + 1,))
            c.commit()
        except BaseException:
            c.rollback()
            raise

    def schema_version(self) -> int:
        with self._connection() as c:
            return c.execute("SELECT version FROM schema_version").fetchone()[0]

    # -- writes ------------------------------------------------------------------------------
    def record_submission(
        self,
        *,
        prompt_id: str,
        recipe_json: str,
        api: Mapping[str, Any],
        server_id: str,
        user_label: str,
        workflow_name: str,
        params: Mapping[str, Any],
        batch_id: str | None = None,
        grid_label: str | None = None,
        _status: str = "submitting",
        _external: bool = False,
        _created_at: float | None = None,
    ) -> None:
        """Write the job row **before** the prompt is sent (status ``submitting``)."""
        now = time.time()
        params = dict(params)
        text = _search_text(workflow_name, user_label, prompt_id, grid_label or "", params,
                            {k: v for k, v in flatten_params(api).items() if k not in params})
        row = (prompt_id, _status, _created_at or now, now, server_id, user_label or "", workflow_name or "",
               recipe_json, _json(api), _json(params), text, batch_id, grid_label, int(_external))

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO jobs (prompt_id, status, created_at, updated_at, server_id, user_label, workflow_name, "
                "recipe_json, api_json, params_json, search_text, batch_id, grid_label, external) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)

        self._job_write("record_submission", write)

    def _set(self, prompt_id: str, **values: Any) -> bool:
        values["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in values)
        with self._user_write() as c:
            cur = c.execute(f"UPDATE jobs SET {cols} WHERE prompt_id = ?", (*values.values(), prompt_id))
            return cur.rowcount > 0

    def mark_queued(self, prompt_id: str, number: float | None = None) -> None:
        now = time.time()
        self._job_write("mark_queued", lambda c: c.execute(
            "UPDATE jobs SET status = 'queued', number = ?, updated_at = ? "
            "WHERE prompt_id = ? AND status IN ('submitting', 'queued')", (number, now, prompt_id)))

    def mark_running(self, prompt_id: str) -> None:
        now = time.time()
        self._job_write("mark_running", lambda c: c.execute(
            "UPDATE jobs SET status = 'running', updated_at = ? "
            "WHERE prompt_id = ? AND status IN ('submitting', 'queued')", (now, prompt_id)))

    def mark_rejected(self, prompt_id: str, message: str) -> None:
        now = time.time()
        self._job_write("mark_rejected", lambda c: c.execute(
            "UPDATE jobs SET status = 'rejected', error = ?, completed_at = ?, updated_at = ? WHERE prompt_id = ?",
            (str(message), now, now, prompt_id)))

    def complete(
        self,
        prompt_id: str,
        *,
        state: str,
        files: Sequence[FileRef],
        error: str | None = None,
        duration_s: float | None = None,
        sizes: Mapping[int, int] | Sequence[int | None] | None = None,
    ) -> None:
        """The job ended: status, outputs (file refs; ``sizes`` by output index when known), error, timing."""
        if state not in _FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        if isinstance(sizes, Mapping):
            size_of = dict(sizes)
        else:
            size_of = {i: s for i, s in enumerate(sizes or ())}
        now = time.time()
        outputs = [(prompt_id, i, f.filename, f.subfolder, f.type, f.node_id, f.kind, int(f.animated), size_of.get(i))
                   for i, f in enumerate(files)]

        def write(c: sqlite3.Connection) -> None:
            c.execute("UPDATE jobs SET status = ?, error = ?, duration_s = COALESCE(?, duration_s), "
                      "completed_at = ?, updated_at = ? WHERE prompt_id = ?",
                      (state, error, duration_s, now, now, prompt_id))
            c.execute("DELETE FROM outputs WHERE prompt_id = ?", (prompt_id,))
            c.executemany(
                "INSERT INTO outputs (prompt_id, idx, filename, subfolder, type, node_id, kind, animated, size) "
                "VALUES (?,?,?,?,?,?,?,?,?)", outputs)

        self._job_write("complete", write)

    def set_output_size(self, prompt_id: str, ref: FileRef, size: int) -> None:
        self._job_write("set_output_size", lambda c: c.execute(
            "UPDATE outputs SET size = ?, missing = 0 WHERE prompt_id = ? AND filename = ? "
            "AND subfolder = ? AND type = ?", (size, prompt_id, ref.filename, ref.subfolder, ref.type)))

    def mark_missing(self, prompt_id: str, ref: FileRef, missing: bool = True) -> None:
        self._job_write("mark_missing", lambda c: c.execute(
            "UPDATE outputs SET missing = ? WHERE prompt_id = ? AND filename = ? "
            "AND subfolder = ? AND type = ?", (int(missing), prompt_id, ref.filename, ref.subfolder, ref.type)))

    def set_favourite(self, prompt_id: str, favourite: bool = True) -> None:
        self._set(prompt_id, favourite=int(bool(favourite)))

    def add_tag(self, prompt_id: str, tag: str) -> None:
        tag = " ".join(str(tag).split())[:64]
        if not tag:
            raise ValueError("a tag cannot be empty")
        with self._user_write() as c:
            if c.execute("SELECT 1 FROM jobs WHERE prompt_id = ?", (prompt_id,)).fetchone():
                c.execute("INSERT OR IGNORE INTO tags VALUES (?, ?)", (prompt_id, tag))

    def remove_tag(self, prompt_id: str, tag: str) -> None:
        with self._user_write() as c:
            c.execute("DELETE FROM tags WHERE prompt_id = ? AND tag = ?", (prompt_id, tag))

    def delete(self, prompt_ids: Iterable[str]) -> int:
        """Forget jobs (the ledger only: files on the server are untouched). Returns how many went."""
        ids = list(dict.fromkeys(prompt_ids))
        n = 0
        with self._user_write() as c:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                c.execute(f"DELETE FROM outputs WHERE prompt_id IN ({marks})", chunk)
                c.execute(f"DELETE FROM tags WHERE prompt_id IN ({marks})", chunk)
                n += c.execute(f"DELETE FROM jobs WHERE prompt_id IN ({marks})", chunk).rowcount
        return n

    # -- reads --------------------------------------------------------------------------------
    def _records(self, c: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[JobRecord]:
        if not rows:
            return []
        ids = [r["prompt_id"] for r in rows]
        marks = ",".join("?" * len(ids))
        outs: dict[str, list[OutputRecord]] = {}
        for o in c.execute(f"SELECT * FROM outputs WHERE prompt_id IN ({marks}) ORDER BY prompt_id, idx", ids):
            ref = FileRef(o["filename"], o["subfolder"], o["type"], o["node_id"], o["kind"], bool(o["animated"]))
            outs.setdefault(o["prompt_id"], []).append(OutputRecord(ref, o["size"], bool(o["missing"])))
        tags: dict[str, list[str]] = {}
        for t in c.execute(f"SELECT prompt_id, tag FROM tags WHERE prompt_id IN ({marks}) ORDER BY tag", ids):
            tags.setdefault(t[0], []).append(t[1])
        return [
            JobRecord(
                prompt_id=r["prompt_id"], status=r["status"], created_at=r["created_at"], updated_at=r["updated_at"],
                completed_at=r["completed_at"], server_id=r["server_id"], user_label=r["user_label"],
                workflow_name=r["workflow_name"], recipe_json=r["recipe_json"], api=json.loads(r["api_json"]),
                params=json.loads(r["params_json"]), batch_id=r["batch_id"], grid_label=r["grid_label"],
                number=r["number"], error=r["error"], duration_s=r["duration_s"], favourite=bool(r["favourite"]),
                external=bool(r["external"]), tags=tuple(tags.get(r["prompt_id"], ())),
                outputs=tuple(outs.get(r["prompt_id"], ())),
            )
            for r in rows
        ]

    def get(self, prompt_id: str) -> JobRecord | None:
        with self._read() as c:
            rows = c.execute("SELECT * FROM jobs WHERE prompt_id = ?", (prompt_id,)).fetchall()
            recs = self._records(c, rows)
        return recs[0] if recs else None

    def search(
        self,
        *,
        text: str | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        workflow: str | None = None,
        server_id: str | None = None,
        favourite: bool | None = None,
        tag: str | None = None,
        user_label: str | None = None,
        limit: int = 48,
        offset: int = 0,
    ) -> tuple[list[JobRecord], int]:
        """Jobs matching every given filter, newest first: (one page, total count)."""
        where: list[str] = []
        args: list[Any] = []
        if text and text.strip():
            if self.fts:
                q = _fts_query(text)
                if q:
                    where.append("rowid IN (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ?)")
                    args.append(q)
            for term in ([] if self.fts else text.split()):
                where.append("search_text LIKE ? ESCAPE '\\'")
                args.append("%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if status:
            statuses = [status] if isinstance(status, str) else list(status)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if since is not None:
            where.append("created_at >= ?")
            args.append(_ts(since))
        if until is not None:
            where.append("created_at < ?")
            args.append(_ts(until))
        for col, value in (("workflow_name", workflow), ("server_id", server_id), ("user_label", user_label)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if favourite is not None:
            where.append("favourite = ?")
            args.append(int(bool(favourite)))
        if tag:
            where.append("prompt_id IN (SELECT prompt_id FROM tags WHERE tag = ?)")
            args.append(tag)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._read() as c:
            total = c.execute(f"SELECT COUNT(*) FROM jobs{clause}", args).fetchone()[0]
            rows = c.execute(f"SELECT * FROM jobs{clause} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                             (*args, int(limit), int(offset))).fetchall()
            return self._records(c, rows), total

    def _distinct(self, sql: str, args: Sequence[Any] = ()) -> list[str]:
        with self._read() as c:
            return [r[0] for r in c.execute(sql, args) if r[0]]

    def workflows(self) -> list[str]:
        return self._distinct("SELECT DISTINCT workflow_name FROM jobs ORDER BY workflow_name")

    def servers(self) -> list[str]:
        return self._distinct("SELECT DISTINCT server_id FROM jobs ORDER BY server_id")

    def all_tags(self) -> list[str]:
        return self._distinct("SELECT DISTINCT tag FROM tags ORDER BY tag")

    def active(self, server_id: str) -> list[JobRecord]:
        with self._read() as c:
            rows = c.execute(f"SELECT * FROM jobs WHERE server_id = ? AND status IN "
                             f"({','.join('?' * len(ACTIVE_STATES))}) ORDER BY created_at",
                             (server_id, *ACTIVE_STATES)).fetchall()
            return self._records(c, rows)

    def known(self, prompt_ids: Iterable[str]) -> set[str]:
        ids = list(prompt_ids)
        found: set[str] = set()
        with self._read() as c:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                found.update(r[0] for r in c.execute(
                    f"SELECT prompt_id FROM jobs WHERE prompt_id IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def count(self) -> int:
        with self._read() as c:
            return c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    def check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a healthy file."""
        with self._read() as c:
            return c.execute("PRAGMA integrity_check").fetchone()[0]


# -- reconciliation ---------------------------------------------------------------------------------
def _external_params(prompt: Mapping[str, Any], object_info: Mapping[str, Any] | None) -> dict[str, Any]:
    if object_info:
        try:
            from .schema import Schema, discover

            found = discover(prompt, Schema.from_object_info(object_info))
            params = {p.id: p.value for p in (*found.simple, *found.advanced, *found.hidden)}
            if params:
                return params
        except Exception:  # an odd graph or schema: fall back to the raw inputs
            log.debug("parameter discovery failed for an external run", exc_info=True)
    return flatten_params(prompt)


def reconcile(
    ledger: Ledger,
    client: Any,
    server_id: str,
    *,
    object_info: Mapping[str, Any] | None = None,
    check_files: bool = True,
    file_check_limit: int = 200,
) -> ReconcileReport:
    """Bring the ledger in line with what the server knows.

    - runs in the server's history the ledger does not know are imported as ``external``;
    - ledger jobs still queued/running that the server has finished are completed from history;
      those gone from both queue and history (a restart) become ``lost``;
    - outputs of recent finished jobs the server no longer serves are marked missing (checked with
      ``view``, at most ``file_check_limit`` files).

    Raises what the client raises for an unreachable server (ComfyPanelError subclasses).
    """
    from .errors import ComfyPanelError, NotFound, ResponseTooLarge
    from .workflow import Recipe

    report = ReconcileReport()
    # The queue first, then history: a job moving from one to the other in between is seen in
    # history, never in neither (which would call it lost).
    try:
        queued_ids: set[str] | None = set(client.queue().ids)
    except ComfyPanelError:
        queued_ids = None  # unknown: nothing is called lost this time
    history = client.history()
    known = ledger.known(history)
    unknown = [pid for pid in history if pid not in known]
    if unknown and object_info is None:
        try:
            object_info = client.object_info()
        except ComfyPanelError:
            object_info = None
    for pid in unknown:
        entry = history[pid]
        prompt = dict(entry.prompt or {})
        extra = entry.extra_data or {}
        pnginfo = extra.get("extra_pnginfo") if isinstance(extra, Mapping) else None
        ui = pnginfo.get("workflow") if isinstance(pnginfo, Mapping) else None
        recipe = Recipe(source=ui if isinstance(ui, Mapping) else prompt,
                        source_format="ui" if isinstance(ui, Mapping) else "api",
                        name="external run", api=prompt)
        created = (entry.started_at / 1000.0) if entry.started_at else time.time()
        try:
            ledger.record_submission(
                prompt_id=pid, recipe_json=recipe.to_json(), api=prompt, server_id=server_id, user_label="external",
                workflow_name="external run", params=_external_params(prompt, object_info),
                _status="running", _external=True, _created_at=created,
            )
        except sqlite3.IntegrityError:  # another session imported it at the same moment
            continue
        ledger.complete(pid, state=entry.status, files=entry.files,
                        error=entry.error.user_message if entry.error else None, duration_s=entry.duration_s)
        report.imported.append(pid)

    now = time.time()
    for job in ledger.active(server_id):
        entry = history.get(job.prompt_id)
        if entry is not None:
            ledger.complete(job.prompt_id, state=entry.status, files=entry.files,
                            error=entry.error.user_message if entry.error else None, duration_s=entry.duration_s)
            report.completed.append(job.prompt_id)
        elif queued_ids is None or job.prompt_id in queued_ids:
            continue
        elif job.status != "submitting" or now - job.created_at > SUBMIT_GRACE_S:
            ledger.complete(job.prompt_id, state="lost", files=(),
                            error="The server no longer knows this job (it was restarted or the job was removed).")
            report.lost.append(job.prompt_id)

    if check_files:
        page, _ = ledger.search(server_id=server_id, status="succeeded", limit=file_check_limit)
        checked = 0
        for job in page:
            for out in job.outputs:
                if checked >= file_check_limit:
                    break
                checked += 1
                try:
                    # one byte is enough to know the file is there (ResponseTooLarge = it is)
                    client.view(out.ref, max_bytes=1)
                except NotFound:
                    if not out.missing:
                        ledger.mark_missing(job.prompt_id, out.ref, True)
                    report.missing_files += 1
                except ResponseTooLarge:
                    if out.missing:
                        ledger.mark_missing(job.prompt_id, out.ref, False)
                except ComfyPanelError:
                    continue
                else:
                    if out.missing:
                        ledger.mark_missing(job.prompt_id, out.ref, False)
        report.checked_files = checked
    return report


def export_zip(client: Any, records: Sequence[JobRecord], server_id: str | None) -> bytes:
    """A zip of the jobs' files (fetched with ``client.view``; only for jobs of ``server_id``, the
    server the client talks to) and each job's recipe and API prompt. Files the server no longer
    has are listed in ``missing.txt`` instead of failing the whole download."""
    import io
    import zipfile

    from .errors import ComfyPanelError

    buf = io.BytesIO()
    missing: list[str] = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # images are compressed already
        for rec in records:
            short = rec.prompt_id[:8]
            z.writestr(f"{short}/recipe.json", rec.recipe_json)
            z.writestr(f"{short}/prompt_api.json", json.dumps(rec.api, indent=2))
            for out in rec.outputs:
                name = out.ref.filename.replace("/", "_").replace("\\", "_")
                if client is None or rec.server_id != server_id or out.missing:
                    missing.append(f"{short}/{name}")
                    continue
                try:
                    z.writestr(f"{short}/{name}", client.view(out.ref))
                except ComfyPanelError:
                    missing.append(f"{short}/{name}")
        if missing:
            z.writestr("missing.txt", "These files could not be fetched from the server:\n" + "\n".join(missing))
    return buf.getvalue()
