"""The panel-side hold queue: jobs waiting in the panel before they go to the server.

Stock ComfyUI has one FIFO queue with no pause, no reordering and no priorities. The hold queue
keeps jobs in SQLite (so they survive an app restart) and a :class:`Feeder` hands them to the server
one at a time (or ``N`` at a time for Comfy Cloud tiers): it submits the next held job only when
the server's queue (running + pending) is shorter than ``N``. Until then a job can be moved,
re-prioritised or removed, and a server's hold queue can be paused.

Storage: ``$COMFYPANEL_DATA_DIR/holdqueue.sqlite3`` else the platform's user data directory. WAL
mode; every write is one short ``BEGIN IMMEDIATE`` transaction, so several Streamlit sessions (and
processes) can share the file. Jobs are keyed by ``Connection.server_id()`` — never a credential.

Order: ``priority`` descending, then ``position`` ascending (lower = earlier).

Only one feeder per server submits at a time, across sessions and processes: a short lease row in
the database (renewed on every tick, expiring after ``LEASE_S``) says whose turn it is, and
:meth:`HoldQueue.claim_next` moves a job from ``held`` to ``sending`` atomically, so a job is never
submitted twice by two feeders.

No Streamlit here: the feeder is driven by :class:`comfypanel.queuewatch.QueueMonitor`'s thread.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

from . import errors as E
from .storage import data_dir

__all__ = ["HeldJob", "HoldQueue", "Feeder", "FeedResult", "default_path", "HELD_STATES"]

log = logging.getLogger("comfypanel.holdqueue")

FILE_NAME = "holdqueue.sqlite3"
LEASE_S = 10.0
HoldState = Literal["held", "sending", "sent", "failed", "removed"]
HELD_STATES = ("held", "sending")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id     TEXT NOT NULL,
    workflow_name TEXT NOT NULL DEFAULT '',
    submitter     TEXT NOT NULL DEFAULT '',
    prompt_json   TEXT NOT NULL,
    extra_json    TEXT NOT NULL DEFAULT '{}',
    priority      INTEGER NOT NULL DEFAULT 0,
    position      REAL NOT NULL,
    created_at    REAL NOT NULL,
    state         TEXT NOT NULL DEFAULT 'held',
    prompt_id     TEXT,
    sent_at       REAL,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS jobs_server_state ON jobs (server_id, state);
CREATE INDEX IF NOT EXISTS jobs_prompt ON jobs (prompt_id);
CREATE TABLE IF NOT EXISTS servers (
    server_id   TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    concurrency INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS leases (
    server_id TEXT PRIMARY KEY,
    owner     TEXT NOT NULL,
    expires   REAL NOT NULL
);
"""


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """``$COMFYPANEL_DATA_DIR/holdqueue.sqlite3`` or the user data directory's one."""
    return data_dir(env) / FILE_NAME


@dataclass(frozen=True, slots=True)
class HeldJob:
    id: int
    server_id: str
    workflow_name: str
    submitter: str
    prompt: Mapping[str, Any]
    extra_data: Mapping[str, Any]
    priority: int
    position: float
    created_at: float  # time.time()
    state: str
    prompt_id: str | None = None
    sent_at: float | None = None
    error: str | None = None

    @classmethod
    def _from_row(cls, r: sqlite3.Row) -> "HeldJob":
        return cls(
            id=r["id"], server_id=r["server_id"], workflow_name=r["workflow_name"],
            submitter=r["submitter"], prompt=json.loads(r["prompt_json"]),
            extra_data=json.loads(r["extra_json"] or "{}"), priority=r["priority"],
            position=r["position"], created_at=r["created_at"], state=r["state"],
            prompt_id=r["prompt_id"], sent_at=r["sent_at"], error=r["error"],
        )


_ORDER = "priority DESC, position ASC, id ASC"


class HoldQueue:
    """The hold queue database. Thread-safe (one connection per call, short transactions).

    Raises ``KeyError`` for an unknown job id on the editing methods.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, clock=time.time) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        db = self._connect()
        try:
            db.executescript(_SCHEMA)  # IF NOT EXISTS: safe when several sessions open the file at once
        finally:
            db.close()

    # -- plumbing ---------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        db = self._connect()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    # -- adding and reading -------------------------------------------------------------------------
    def add(self, server_id: str, prompt: Mapping[str, Any], *, workflow_name: str = "",
            submitter: str = "", priority: int = 0, extra_data: Mapping[str, Any] | None = None) -> HeldJob:
        """Hold ``prompt`` (API format) for ``server_id``, last among jobs of its priority."""
        if not isinstance(prompt, Mapping) or not prompt:
            raise E.InvalidInput("The workflow is empty; load a workflow with at least one node.")
        extra = {k: v for k, v in dict(extra_data or {}).items()
                 if k not in ("api_key_comfy_org", "auth_token_comfy_org")}  # never stored
        with self._tx() as db:
            top = db.execute("SELECT MAX(position) FROM jobs WHERE server_id=?", (server_id,)).fetchone()[0]
            cur = db.execute(
                "INSERT INTO jobs (server_id, workflow_name, submitter, prompt_json, extra_json, priority,"
                " position, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (server_id, workflow_name, submitter, json.dumps(dict(prompt)), json.dumps(extra),
                 int(priority), (top or 0) + 1, self._clock()),
            )
            row = db.execute("SELECT * FROM jobs WHERE id=?", (cur.lastrowid,)).fetchone()
        return HeldJob._from_row(row)

    def get(self, job_id: int) -> HeldJob | None:
        rows = self._read("SELECT * FROM jobs WHERE id=?", (job_id,))
        return HeldJob._from_row(rows[0]) if rows else None

    def held(self, server_id: str) -> list[HeldJob]:
        """Jobs still in the panel (held, or being sent right now), in feeding order."""
        rows = self._read(f"SELECT * FROM jobs WHERE server_id=? AND state IN ('held','sending') ORDER BY {_ORDER}",
                          (server_id,))
        return [HeldJob._from_row(r) for r in rows]

    def by_prompt_ids(self, server_id: str, prompt_ids) -> dict[str, HeldJob]:
        """Jobs this hold queue sent, by server prompt id (to name their workflow and submitter)."""
        ids = [p for p in prompt_ids if p]
        if not ids:
            return {}
        out: dict[str, HeldJob] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._read(f"SELECT * FROM jobs WHERE server_id=? AND prompt_id IN ({marks})",
                                (server_id, *chunk)):
                out[r["prompt_id"]] = HeldJob._from_row(r)
        return out

    def failed(self, server_id: str, limit: int = 20) -> list[HeldJob]:
        rows = self._read("SELECT * FROM jobs WHERE server_id=? AND state='failed' ORDER BY sent_at DESC LIMIT ?",
                          (server_id, limit))
        return [HeldJob._from_row(r) for r in rows]

    # -- editing ------------------------------------------------------------------------------------
    def remove(self, job_id: int) -> bool:
        """Take a held job out. False when it was already sent (or being sent) meanwhile."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state='removed' WHERE id=? AND state='held'", (job_id,))
            return cur.rowcount == 1

    def dismiss(self, job_id: int) -> None:
        """Hide a refused (``failed``) job from the list."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='removed' WHERE id=? AND state='failed'", (job_id,))

    def set_priority(self, job_id: int, priority: int) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET priority=? WHERE id=? AND state='held'", (int(priority), job_id))
            return cur.rowcount == 1

    def move(self, job_id: int, delta: int) -> bool:
        """Move a held job ``delta`` places (negative = earlier). Crossing into a neighbour of another
        priority adopts that priority (the list the user sees is the order that counts)."""
        with self._tx() as db:
            me = db.execute("SELECT * FROM jobs WHERE id=? AND state='held'", (job_id,)).fetchone()
            if me is None:
                return False
            rows = db.execute(f"SELECT id, priority, position FROM jobs WHERE server_id=? AND state='held'"
                              f" ORDER BY {_ORDER}", (me["server_id"],)).fetchall()
            order = [r["id"] for r in rows]
            i = order.index(job_id)
            j = max(0, min(len(order) - 1, i + int(delta)))
            if i == j:
                return False
            order.insert(j, order.pop(i))
            prio = {r["id"]: r["priority"] for r in rows}
            # The neighbour the job lands next to decides its priority band.
            neighbour = order[j + 1] if delta < 0 else order[j - 1]
            prio[job_id] = prio[neighbour]
            # Renumber positions in the new order (priorities keep the list sorted as shown).
            for n, jid in enumerate(order, 1):
                db.execute("UPDATE jobs SET position=?, priority=? WHERE id=?", (float(n), prio[jid], jid))
            return True

    # -- per-server settings ------------------------------------------------------------------------
    def _server(self, server_id: str) -> sqlite3.Row | None:
        rows = self._read("SELECT * FROM servers WHERE server_id=?", (server_id,))
        return rows[0] if rows else None

    def is_paused(self, server_id: str) -> bool:
        row = self._server(server_id)
        return bool(row and row["paused"])

    def set_paused(self, server_id: str, paused: bool) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO servers (server_id, paused) VALUES (?, ?) ON CONFLICT(server_id)"
                       " DO UPDATE SET paused=excluded.paused", (server_id, int(bool(paused))))

    def pause(self, server_id: str) -> None:
        self.set_paused(server_id, True)

    def resume(self, server_id: str) -> None:
        self.set_paused(server_id, False)

    def concurrency(self, server_id: str) -> int:
        row = self._server(server_id)
        return max(1, int(row["concurrency"])) if row else 1

    def set_concurrency(self, server_id: str, n: int) -> None:
        n = max(1, min(int(n), 16))
        with self._tx() as db:
            db.execute("INSERT INTO servers (server_id, concurrency) VALUES (?, ?) ON CONFLICT(server_id)"
                       " DO UPDATE SET concurrency=excluded.concurrency", (server_id, n))

    # -- feeding --------------------------------------------------------------------------------------
    def take_lease(self, server_id: str, owner: str, *, ttl: float = LEASE_S) -> bool:
        """Become (or stay) the one feeder of ``server_id`` for ``ttl`` seconds."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute("SELECT owner, expires FROM leases WHERE server_id=?", (server_id,)).fetchone()
            if row is not None and row["owner"] != owner and row["expires"] > now:
                return False
            db.execute("INSERT INTO leases (server_id, owner, expires) VALUES (?,?,?) ON CONFLICT(server_id)"
                       " DO UPDATE SET owner=excluded.owner, expires=excluded.expires", (server_id, owner, now + ttl))
            return True

    def drop_lease(self, server_id: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE server_id=? AND owner=?", (server_id, owner))

    def claim_next(self, server_id: str, prompt_id: str) -> HeldJob | None:
        """Atomically move the first held job to ``sending`` with ``prompt_id`` (None if none / paused)."""
        with self._tx() as db:
            srv = db.execute("SELECT paused FROM servers WHERE server_id=?", (server_id,)).fetchone()
            if srv is not None and srv["paused"]:
                return None
            row = db.execute(f"SELECT * FROM jobs WHERE server_id=? AND state='held' ORDER BY {_ORDER} LIMIT 1",
                             (server_id,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state='sending', prompt_id=? WHERE id=?", (prompt_id, row["id"]))
            row = db.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone()
        return HeldJob._from_row(row)

    def mark_sent(self, job_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='sent', sent_at=?, error=NULL WHERE id=?", (self._clock(), job_id))

    def mark_failed(self, job_id: int, sentence: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='failed', sent_at=?, error=? WHERE id=?",
                       (self._clock(), sentence[:500], job_id))

    def release(self, job_id: int) -> None:
        """A send that did not reach the server: back to ``held`` at the same place."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state='held' WHERE id=? AND state='sending'", (job_id,))

    def sending(self, server_id: str) -> list[HeldJob]:
        rows = self._read("SELECT * FROM jobs WHERE server_id=? AND state='sending'", (server_id,))
        return [HeldJob._from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class FeedResult:
    action: Literal["sent", "failed", "idle", "paused", "busy", "not_feeder", "error"]
    job: HeldJob | None = None
    message: str | None = None


class Feeder:
    """Feeds one server from the hold queue: one ``tick()`` submits at most one job.

    ``tick`` is called by the owner's thread (``QueueMonitor``) with the queue it just read, so the
    feeder itself makes no extra ``/queue`` request. Never raises for server trouble.
    """

    def __init__(self, hold: HoldQueue, client, *, owner: str, submitter: str | None = None) -> None:
        """``submitter``: this session's label (what ``HoldQueue.add`` stored as ``submitter``). The
        session's *own* partner-node key then goes only with its own jobs: another session's held job
        is sent without it (an operator's key, from the secrets, is for everyone)."""
        self.hold = hold
        self.client = client
        self.server_id = client.connection.server_id()
        self.owner = owner
        self.submitter = submitter
        self._lock = threading.Lock()

    def stop(self) -> None:
        try:
            self.hold.drop_lease(self.server_id, self.owner)
        except Exception:
            log.debug("dropping the feeder lease failed", exc_info=True)

    def tick(self, in_flight: int, server_ids: frozenset[str] | None = None,
             history_ids: frozenset[str] | None = None) -> FeedResult:
        """``in_flight`` = running + pending on the server now; ``server_ids`` / ``history_ids``
        (when known) settle jobs left in ``sending`` by a crash."""
        with self._lock:
            hold, sid = self.hold, self.server_id
            if not hold.take_lease(sid, self.owner):
                return FeedResult("not_feeder")
            if server_ids is not None:
                for job in hold.sending(sid):  # a send interrupted by an app restart
                    if job.prompt_id in server_ids or job.prompt_id in (history_ids or ()):
                        hold.mark_sent(job.id)
                    else:
                        hold.release(job.id)
            if hold.is_paused(sid):
                return FeedResult("paused")
            if in_flight >= hold.concurrency(sid):
                return FeedResult("busy")
            from .client import new_prompt_id

            job = hold.claim_next(sid, new_prompt_id())
            if job is None:
                return FeedResult("idle")
            try:
                conn = self.client.connection
                # (Cloud: the hold queue is per account, so every job in it is paid by that account)
                users_own_key = bool(conn.partner_key) and conn.source == "explicit" and not conn.is_cloud
                foreign = self.submitter is not None and job.submitter != self.submitter
                self.client.queue_prompt(job.prompt, prompt_id=job.prompt_id, extra_data=job.extra_data or None,
                                         partner_key=not (users_own_key and foreign))
            except E.PromptRejected as exc:
                hold.mark_failed(job.id, exc.user_message)
                return FeedResult("failed", job, exc.user_message)
            except E.ComfyPanelError as exc:
                # Maybe sent (a timeout), maybe not: the job stays ``sending`` and the next tick
                # settles it from /queue + /history (sent if the server has it, else held again), so
                # it is never submitted twice.
                return FeedResult("error", job, exc.user_message)
            hold.mark_sent(job.id)
            return FeedResult("sent", job)
