"""Shared pieces of the fault suite (hardening issue 8): the user-message check, the page's
record → send → follow order, and a ledger on a real SQLite file whose disk can fail.

Used by tests/unit/test_faults.py, tests/apptest/test_faults_ui.py and tests/real/test_faults_real.py.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sqlite3
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from PIL import Image

from comfypanel import errors as E
from comfypanel.client import ComfyClient, new_prompt_id
from comfypanel.ledger import Ledger
from comfypanel.watcher import Finished, JobWatcher

__all__ = ["KEY", "CODE_WORDS", "FlakyDisk", "assert_plain", "free_port", "is_png", "record", "recording_watcher",
           "result", "submit", "wait_for"]

KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 20.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:g} s")


CODE_WORDS = re.compile(r"Traceback|\bFile \"|\w+(Error|Exception)\b|\bsqlite3\.[A-Za-z]|urllib3|requests\.|HTTPConnection")


def assert_plain(message: str | None, *, problem: str, fix: str, secret: str = KEY) -> None:
    """One plain sentence naming the problem (``problem``, a regex) and the fix (``fix``, a regex).

    The project's sentences are "what is wrong[. / ;] what to do" in one line; a second clause or
    a short second sentence carrying the instruction is allowed, anything longer is not.
    """
    assert isinstance(message, str) and message.strip(), "no message at all"
    assert "\n" not in message, f"more than one line: {message!r}"
    assert not CODE_WORDS.search(message), f"code talk in a user message: {message!r}"
    assert "<" not in message and "{" not in message, f"markup or JSON in a user message: {message!r}"
    assert "trouble" not in message, f"the server's own 500 text leaked: {message!r}"
    assert secret not in message, "a credential in a user message"
    assert message.endswith("."), f"not a finished sentence: {message!r}"
    sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", message) if s]
    assert len(sentences) <= 2 and len(message) <= 320, f"not one short sentence: {message!r}"
    assert re.search(problem, message, re.I), f"does not say what is wrong ({problem}): {message!r}"
    assert re.search(fix, message, re.I), f"does not say what to do ({fix}): {message!r}"


def record(ledger: Ledger, client: ComfyClient, prompt: dict, *, big: bool = False) -> str:
    """What the Generate page does before sending: write the ledger row, status ``submitting``."""
    pid = new_prompt_id()
    recipe = {"source": prompt, "seeds": {}, "note": "x" * 65536 if big else ""}
    ledger.record_submission(prompt_id=pid, recipe_json=json.dumps(recipe), api=prompt,
                             server_id=client.connection.server_id(), user_label="faults",
                             workflow_name="fault suite", params={"prompt": "a red fox"})
    return pid


def submit(ledger: Ledger, client: ComfyClient, prompt: dict, watcher: JobWatcher | None = None, **kw) -> str:
    """Record, send, mark queued (or rejected with the sentence), start watching: the page's order."""
    pid = record(ledger, client, prompt, **kw)
    try:
        queued = client.queue_prompt(prompt, prompt_id=pid)
    except E.ComfyPanelError as exc:
        ledger.mark_rejected(pid, exc.user_message)
        raise
    ledger.mark_queued(pid, queued.number)
    if watcher is not None:
        watcher.watch(pid, nodes_total=len(prompt), queued=queued)
    return pid


def recording_watcher(client: ComfyClient, listener: Any, ledger: Ledger) -> JobWatcher:
    """A watcher that completes the ledger row when a job ends, as the Generate page does."""

    def on_finish(pid: str, done: Finished) -> None:
        if done.result is None:
            return  # following failed (auth...): the row stays active; reconcile completes it later
        ledger.complete(pid, state=done.state, files=done.result.files,
                        error=None if done.state == "succeeded" else done.message,
                        duration_s=done.result.duration_s)

    return JobWatcher(client, listener, on_finish=on_finish)


def result(watcher: JobWatcher, pid: str, timeout: float = 30.0) -> Finished:
    return wait_for(lambda: watcher.result(pid), f"job {pid[:8]} to end", timeout)


def is_png(data: bytes) -> bool:
    return Image.open(io.BytesIO(data)).format == "PNG"


class FlakyDisk(Ledger):
    """A ledger on a real SQLite file whose disk can fill up or turn read-only at any moment.

    ``full``: every connection handed out has ``PRAGMA max_page_count`` at the file's current size,
    so any write that needs a new page fails with SQLite's own SQLITE_FULL ("database or disk is
    full"), exactly what a full disk gives. ``readonly``: connections are opened through a
    read-only URI (``file:…?mode=ro``), so writes fail with SQLITE_READONLY. (chmod does not stop
    root, which runs these tests.)
    """

    full = False
    readonly = False

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            c = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                check_same_thread=False)
            c.row_factory = sqlite3.Row
            try:
                yield c
            finally:
                if c.in_transaction:
                    c.rollback()
                c.close()
            return
        with super()._connection() as c:
            c.execute(f"PRAGMA max_page_count = {1 if self.full else 1073741823}")
            yield c
