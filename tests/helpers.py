"""Shared test helpers: where the recordings are, and how to read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.doubles._recordings import recordings_dir, workflow, ws_log

__all__ = ["REPO", "follow_manager_tasks", "page_texts", "unescape", "recording", "recordings_dir", "workflow", "ws_log"]

REPO = Path(__file__).resolve().parents[1]


def recording(name: str) -> dict[str, Any]:
    """One ``http/NAME.json`` sample."""
    return json.loads((recordings_dir() / "http" / f"{name}.json").read_text())


def follow_manager_tasks(manager: Any, timeout: float = 10.0) -> tuple[Any, Any]:
    """A ``TaskTracker`` fed by a started WebSocket listener with the manager client's id (as the Admin
    page does); returns ``(tracker, listener)`` — stop the listener when done."""
    from comfypanel.manager import TaskTracker

    tracker = TaskTracker()
    listener = manager.client.listener(name="test-cm")
    listener.subscribe(tracker.feed_event)
    listener.start()
    assert listener.wait_connected(timeout)
    return tracker, listener


def unescape(text: str) -> str:
    """Undo the backslash escaping the panel puts on author and server strings (``text.plain``)."""
    import re

    return re.sub(r"\\(.)", r"\1", text)


def page_texts(at: Any, where: Any = None) -> str:
    """Every sentence an AppTest page (or one of its containers) shows, unescaped, one per line."""
    root = where if where is not None else at
    parts = []
    for kind in ("markdown", "caption", "text", "info", "success", "warning", "error"):
        parts += [unescape(str(e.value)) for e in root.get(kind)]
    return "\n".join(parts)
