"""One WebSocket listener per browser session, for the live views (Generate, Queue).

The listener is a session-scoped resource (``st.cache_resource(scope="session")``): Streamlit
creates it once per browser session and per client, and calls ``on_release`` — which stops the
listener's thread — when the session ends or the client changes. Nothing here is shared between
sessions, and no credential is cached globally.

Pages never call ``st.*`` from the listener thread; they read ``listener.snapshot(...)`` inside a
fragment (``st.fragment(run_every=...)``) that only re-runs while something is in flight.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from comfypanel.client import ComfyClient
from comfypanel.events import EventListener

from . import session

log = logging.getLogger("comfypanel.ui.live")


def _release(listener: EventListener) -> None:
    try:
        listener.stop(timeout=3.0)
    except Exception:  # releasing must never break a session's teardown
        log.debug("listener stop failed", exc_info=True)


@st.cache_resource(scope="session", on_release=_release, show_spinner=False, max_entries=4)
def _session_listener(fingerprint: str, client_id: str, _client: ComfyClient) -> EventListener:
    # Keyed by the connection fingerprint and client id (the client object itself is not hashed):
    # a new connection in this session gets a new listener, and the old one is released.
    listener = _client.listener(name=f"comfy-ws-{client_id[:8]}")
    listener.start()
    return listener


def listener() -> EventListener | None:
    """This session's listener for its current client, started on first use; None when not connected."""
    client = session.client()
    if client is None:
        return None
    return _session_listener(client.connection.fingerprint(), client.client_id, client)


def release_all() -> None:
    """Stop this session's listeners (e.g. on disconnect)."""
    _session_listener.clear()


def is_live(lst: Any) -> bool:
    return bool(lst is not None and getattr(lst, "connected", False))


def _stop_watcher(watcher: Any) -> None:
    try:
        watcher.stop(wait=False)
    except Exception:
        log.debug("watcher stop failed", exc_info=True)


@st.cache_resource(scope="session", on_release=_stop_watcher, show_spinner=False, max_entries=4)
def _session_watcher(fingerprint: str, client_id: str, _client: ComfyClient, _listener: Any) -> Any:
    from comfypanel.watcher import JobWatcher

    return JobWatcher(_client, _listener)


def watcher() -> Any:
    """This session's ``JobWatcher`` (follows submitted jobs in worker threads); None when not connected."""
    client = session.client()
    if client is None:
        return None
    return _session_watcher(client.connection.fingerprint(), client.client_id, client, listener())


def ledger() -> Any:
    """The job ledger (SQLite, shared by every session: it holds no credential); None when its file
    cannot be opened at all, so that generating still works (the sidebar says why nothing is
    recorded, see ``queue_view.ledger_warning``)."""
    from comfypanel.errors import ComfyPanelError

    from .gallery_data import ledger as shared_ledger

    try:
        return shared_ledger()
    except ComfyPanelError as exc:
        log.warning("the job ledger is unavailable: %s", exc.user_message)
        return None


class LogTail:
    """The server log as it streams in over this session's socket (WS ``logs`` messages).

    Subscribes once (``PATCH /internal/logs/subscribe``), keeps the last ``maxlen`` lines in memory,
    and unsubscribes when the session ends. Pages read ``lines()``; nothing here touches Streamlit.
    """

    def __init__(self, client: ComfyClient, lst: EventListener, maxlen: int = 2000) -> None:
        import threading
        from collections import deque

        self._client = client
        self._lines: deque = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.error: str | None = None
        self._unsubscribe = lst.subscribe(self._on_event)
        try:
            client.subscribe_logs(True)
        except Exception as exc:  # a server without the route: the page falls back to snapshots
            self.error = getattr(exc, "user_message", "The server does not stream its log.")

    def _on_event(self, event: Any) -> None:
        if getattr(event, "type", None) == "logs":
            with self._lock:
                self._lines.extend(event.entries)

    def lines(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._lines)

    def close(self) -> None:
        self._unsubscribe()
        try:
            self._client.subscribe_logs(False)
        except Exception:
            log.debug("log unsubscribe failed", exc_info=True)


@st.cache_resource(scope="session", on_release=lambda tail: tail.close(), show_spinner=False, max_entries=2)
def _session_log_tail(fingerprint: str, client_id: str, _client: ComfyClient, _listener: Any) -> LogTail:
    return LogTail(_client, _listener)


def log_tail() -> LogTail | None:
    """This session's live server log (local servers only); None when not connected or on Cloud."""
    client = session.client()
    if client is None or client.is_cloud:
        return None
    lst = listener()
    if lst is None:
        return None
    return _session_log_tail(client.connection.fingerprint(), client.client_id, client, lst)


def preview_image(data: bytes, *, caption: str, width: int) -> None:
    """A live preview from the WebSocket; a frame whose bytes are not a readable image (a broken or
    foreign sender) is skipped with a caption instead of failing the page."""
    from comfypanel.errors import InvalidInput
    from comfypanel.images import open_image

    try:
        open_image(data).close()  # the header only: Streamlit's st.image opens it the same way
    except InvalidInput:
        st.caption("The server sent a preview that is not a readable image.")
        return
    st.image(data, caption=caption, width=width)
