"""The session's queue monitor and the shared hold queue database.

* ``hold()``: the hold queue (``comfypanel.holdqueue.HoldQueue``). A global resource keyed by the
  database path: it holds no credential, only a path; every call opens its own SQLite connection.
* ``monitor()``: this session's ``QueueMonitor`` (one daemon thread polling ``/queue``, feeding the
  hold queue), a session-scoped resource released with the session — like the listener in
  ``live.py`` — so thread counts return to baseline when sessions end.
* ``hold_job(...)``: what a page (Generate) calls to submit into the hold queue instead of the server.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import streamlit as st

from comfypanel.client import ComfyClient
from comfypanel.holdqueue import HeldJob, HoldQueue, default_path
from comfypanel.queuewatch import QueueMonitor

from . import live, session

log = logging.getLogger("comfypanel.ui.queue")


@st.cache_resource(show_spinner=False)
def _hold_queue(path: str) -> HoldQueue:
    return HoldQueue(path)


def hold() -> HoldQueue:
    return _hold_queue(str(default_path()))


def _release(monitor: QueueMonitor) -> None:
    try:
        monitor.stop(timeout=3.0)
    except Exception:  # releasing must never break a session's teardown
        log.debug("monitor stop failed", exc_info=True)


@st.cache_resource(scope="session", on_release=_release, show_spinner=False, max_entries=4)
def _session_monitor(fingerprint: str, client_id: str, path: str, _client: ComfyClient,
                     _listener: Any) -> QueueMonitor:
    monitor = QueueMonitor(_client, hold=_hold_queue(path), listener=_listener, owner=client_id,
                           name=f"comfy-queue-{client_id[:8]}", submitter=session.session_label())
    monitor.poll(history=True)  # the first view is there before the page draws
    return monitor.start()


def monitor() -> QueueMonitor | None:
    """This session's monitor for its current client (started on first use); None when not connected."""
    client = session.client()
    if client is None:
        return None
    lst = live.listener()
    return _session_monitor(client.connection.fingerprint(), client.client_id, str(default_path()), client, lst)


def hold_job(prompt: Mapping[str, Any], *, workflow_name: str, priority: int = 0,
             extra_data: Mapping[str, Any] | None = None) -> HeldJob | None:
    """Put an API-format prompt into this server's hold queue (None when not connected)."""
    client = session.client()
    if client is None:
        return None
    job = hold().add(client.connection.server_id(), prompt, workflow_name=workflow_name,
                     submitter=session.session_label(), priority=priority, extra_data=extra_data)
    mon = monitor()
    if mon is not None:
        mon.wake()
    return job
