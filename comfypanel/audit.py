"""The admin audit log: who did what to which server, with which parameters, and what happened.

SQLite in WAL mode (readers never block the writer; several Streamlit sessions and processes can
write at once, each write is one short transaction with a busy timeout). One connection per call:
``sqlite3`` connections must not cross threads, and Streamlit runs each session in its own thread.

The schema is versioned with ``PRAGMA user_version``; ``_MIGRATIONS[i]`` moves version ``i`` to
``i + 1`` and runs exactly once per database.

Never stored: credentials. Parameters are cleaned by ``clean_params`` (keys that look like a key,
token, password or secret are dropped; string values go through ``transport.redact``) and the
server is ``Connection.server_id()``, which carries no credential.

Location: ``$COMFYPANEL_DATA_DIR/audit.sqlite3``, else the platform's user data directory
(``platformdirs.user_data_dir("comfypanel")``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from .transport import redact
from .storage import data_dir

__all__ = ["AuditLog", "AuditEntry", "Result", "RESULTS", "clean_params", "default_path", "to_csv", "SCHEMA_VERSION"]

Result = Literal["ok", "refused", "failed"]
RESULTS: tuple[str, ...] = ("ok", "refused", "failed")
FILE_NAME = "audit.sqlite3"

# A parameter whose name looks like one of these is never stored, whatever its value.
_SECRET_KEY = re.compile(r"(?i)(key|token|passw|secret|auth|cookie|credential|signature|sig$)")
_MAX_TEXT = 2000  # a parameter value or a result sentence longer than this is cut

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1
    """
    CREATE TABLE audit (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at         TEXT NOT NULL,             -- ISO 8601 UTC, sortable
        actor      TEXT NOT NULL,             -- e-mail (st.login) or a session label
        server     TEXT NOT NULL,             -- Connection.server_id(): kind + address, no credential
        action     TEXT NOT NULL,             -- e.g. free_memory, clear_queue, manager_install
        params     TEXT NOT NULL DEFAULT '{}',-- JSON, cleaned of secrets
        result     TEXT NOT NULL CHECK (result IN ('ok', 'refused', 'failed')),
        message    TEXT NOT NULL DEFAULT ''   -- one plain sentence
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_action ON audit (action);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """``$COMFYPANEL_DATA_DIR/audit.sqlite3`` or the user data directory's ``audit.sqlite3``."""
    return data_dir(env) / FILE_NAME


def clean_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``params`` that is safe to store: secret-looking keys dropped (at any depth),
    strings redacted and cut to a sane length."""

    def clean(value: Any, depth: int = 0) -> Any:
        if depth > 5:
            return "…"
        if isinstance(value, Mapping):
            return {str(k): clean(v, depth + 1) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
        if isinstance(value, (list, tuple)):
            return [clean(v, depth + 1) for v in list(value)[:100]]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = redact(str(value))
        return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "…"

    return clean(dict(params or {}))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    server: str
    action: str
    params: dict[str, Any]
    result: str
    message: str

    def as_row(self) -> dict[str, Any]:
        """For tables and CSV: the time in ISO format, parameters as compact JSON."""
        return {
            "id": self.id,
            "at": self.at.isoformat(timespec="seconds"),
            "actor": self.actor,
            "server": self.server,
            "action": self.action,
            "params": json.dumps(self.params, sort_keys=True, ensure_ascii=False),
            "result": self.result,
            "message": self.message,
        }


CSV_COLUMNS = ("id", "at", "actor", "server", "action", "params", "result", "message")


class AuditLog:
    """The audit log in one SQLite file. Cheap to construct; safe to share between threads (it
    holds only the path)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._ready = False

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)  # explicit transactions
        conn.execute("PRAGMA busy_timeout = 10000")
        if not self._ready:
            self._migrate(conn)
            self._ready = True
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: set once per file
        conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"The audit log at {self.path} was written by a newer Comfy Panel (schema {version}); "
                    "update the panel."
                )
            for step in range(version, SCHEMA_VERSION):
                # executescript() would COMMIT mid-transaction: run the statements one by one.
                for statement in _statements(_MIGRATIONS[step]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with _closing(self._connect()) as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # ------------------------------------------------------------------------------------------
    def record(
        self,
        *,
        actor: str,
        server: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        result: Result,
        message: str = "",
        at: datetime | None = None,
    ) -> int:
        """Append one entry; returns its id. ``params`` are cleaned of secrets first."""
        if result not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}, not {result!r}")
        when = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        row = (
            when.isoformat(timespec="microseconds"),
            redact(actor or "unknown")[:200],
            redact(server or "")[:300],
            action[:100],
            json.dumps(clean_params(params), sort_keys=True, ensure_ascii=False, default=str),
            result,
            redact(message or "")[:_MAX_TEXT],
        )
        with _closing(self._connect()) as conn:
            cur = conn.execute(
                "INSERT INTO audit (at, actor, server, action, params, result, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cur.lastrowid)

    def query(
        self,
        *,
        actor: str | None = None,
        server: str | None = None,
        action: str | None = None,
        result: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Entries newest first. ``actor``/``server``/``action``/``result`` match exactly; ``text``
        is a case-insensitive substring of actor, action, parameters or message."""
        where, args = [], []
        for column, value in (("actor", actor), ("server", server), ("action", action), ("result", result)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("at >= ?")
            args.append(since.astimezone(timezone.utc).isoformat(timespec="microseconds"))
        if until is not None:
            where.append("at <= ?")
            args.append(until.astimezone(timezone.utc).isoformat(timespec="microseconds"))
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                "(actor LIKE ? ESCAPE '\\' OR action LIKE ? ESCAPE '\\' OR params LIKE ? ESCAPE '\\' "
                "OR message LIKE ? ESCAPE '\\')"
            )
            args += [like] * 4
        sql = "SELECT id, at, actor, server, action, params, result, message FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        args.append(max(1, int(limit)))
        with _closing(self._connect()) as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_entry(r) for r in rows]

    def distinct(self, column: Literal["actor", "server", "action", "result"]) -> list[str]:
        """The values present in one column (for filter widgets)."""
        if column not in ("actor", "server", "action", "result"):
            raise ValueError(column)
        with _closing(self._connect()) as conn:
            return [r[0] for r in conn.execute(f"SELECT DISTINCT {column} FROM audit ORDER BY {column}")]


def to_csv(entries: Iterable[AuditEntry]) -> str:
    """CSV text with a header. Cells that a spreadsheet would run as a formula are quoted with a
    leading apostrophe (server strings and user input end up here)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow({k: _csv_safe(v) for k, v in entry.as_row().items()})
    return out.getvalue()


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _entry(row: tuple) -> AuditEntry:
    try:
        params = json.loads(row[5])
    except ValueError:
        params = {}
    return AuditEntry(int(row[0]), datetime.fromisoformat(row[1]), row[2], row[3], row[4],
                      params if isinstance(params, dict) else {}, row[6], row[7])


def _statements(script: str) -> list[str]:
    body = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


class _closing:
    """``with`` for a connection that also closes it (sqlite3's own context manager only commits)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        self.conn.close()

