"""``QueueMonitor``: one session's view of a server's queue, kept fresh by one daemon thread.

Why a thread and not the page's fragment tick: a fragment must not block on HTTP (a slow server
would freeze the page), and the hold queue must keep feeding while the user is on another page.
So the thread polls ``/queue`` about once a second (``/history`` only when the queue changed, after a
reconnect, or on demand), feeds the hold queue, and publishes an immutable :class:`QueueView`;
the page's fragment only reads :meth:`QueueMonitor.view` and the listener's snapshots. The thread
belongs to a session-scoped Streamlit resource whose ``on_release`` calls :meth:`stop`, so it ends
with the session (it never calls Streamlit).

Trust rules (comfyui-api.md §4.3–4.4): a job is finished when ``/history`` has it. A job that was in
the queue and is now in neither ``/queue`` nor ``/history`` was removed while pending
(``cancelled``) — or, when it was running or the server restarted/reconnected meanwhile, ``lost``.
Nothing is left spinning.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import errors as E
from .holdqueue import Feeder, FeedResult, HeldJob, HoldQueue
from .types import HistoryEntry, QueueItem, QueueState

__all__ = ["Finished", "QueueView", "QueueMonitor"]

log = logging.getLogger("comfypanel.queuewatch")


@dataclass(frozen=True, slots=True)
class Finished:
    """A job that ended: from ``/history``, or inferred (``cancelled`` / ``lost``)."""

    prompt_id: str
    status: str  # succeeded | failed | interrupted | cancelled | lost
    reason: str | None = None
    ended_at: float | None = None  # time.time() seconds
    entry: HistoryEntry | None = field(default=None, repr=False)
    client_id: str | None = None
    prompt: Mapping[str, Any] = field(default_factory=dict, repr=False)  # for inferred ends


@dataclass(frozen=True, slots=True)
class QueueView:
    running: tuple[QueueItem, ...] = ()
    pending: tuple[QueueItem, ...] = ()
    held: tuple[HeldJob, ...] = ()
    rejected: tuple[HeldJob, ...] = ()  # held jobs the server refused (not retried)
    paused: bool = False
    concurrency: int = 1
    finished: tuple[Finished, ...] = ()  # newest first
    polled_at: float | None = None  # time.time() of the last good /queue
    error: str | None = None  # the last poll's failure, one sentence (None when the last poll worked)
    reconnected_at: float | None = None  # time.time() when the socket or the server last came back
    feed: FeedResult | None = None
    held_by_prompt: dict[str, HeldJob] = field(default_factory=dict, repr=False)
    generation: int = 0

    @property
    def active(self) -> bool:
        """Something is running, pending or held-and-feedable: the page keeps refreshing."""
        return bool(self.running or self.pending or (self.held and not self.paused))

    @property
    def count(self) -> int:
        return len(self.running) + len(self.pending)


class QueueMonitor:
    """Polls one client's server in a daemon thread. Thread-safe; ``view()`` never blocks on HTTP.

    Args:
        client: the session's ``ComfyClient``.
        hold: the hold queue (None: no feeding).
        listener: the session's ``EventListener`` (reconnects are noticed through it).
        owner: who feeds (the session's client id); ``submitter``: the session's label (its own
        partner-node key goes only with its own held jobs); ``interval``: seconds between polls.
    """

    def __init__(self, client, *, hold: HoldQueue | None = None, listener: Any = None,
                 owner: str | None = None, interval: float = 1.0, history_items: int = 20,
                 history_every: float = 5.0, name: str = "comfy-queue", submitter: str | None = None) -> None:
        self.client = client
        self.hold = hold
        self.listener = listener
        self.server_id = client.connection.server_id()
        self.feeder = (Feeder(hold, client, owner=owner or client.client_id, submitter=submitter)
                       if hold is not None else None)
        self.interval = interval
        self.history_items = history_items
        self.history_every = history_every
        self._name = name
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._view = QueueView()
        self._history: dict[str, HistoryEntry] = {}
        self._inferred: dict[str, Finished] = {}
        self._last_ids: dict[str, str] = {}  # prompt id -> "running" | "pending" at the last poll
        self._last_items: dict[str, QueueItem] = {}
        self._cancelled: set[str] = set()
        self._reconnects = getattr(listener, "reconnects", 0) if listener is not None else 0
        self._suspect_restart = False
        self._need_history = True
        self._history_at = float("-inf")

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> "QueueMonitor":
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        if self.feeder is not None:
            self.feeder.stop()
        return t is None or not t.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self, *, resync: bool = False) -> None:
        """Poll soon, with history. ``resync``: the socket came back (the listener's ``on_resync``),
        so jobs that vanished meanwhile may have been lost to a restart."""
        self._need_history = True
        if resync:
            self._suspect_restart = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the thread must survive anything; the view carries the sentence
                log.exception("queue poll failed unexpectedly")
            self._wake.wait(self.interval)
            self._wake.clear()

    # -- reading ------------------------------------------------------------------------------------
    def view(self) -> QueueView:
        return self._view

    def note_cancelled(self, prompt_id: str) -> None:
        """This session removed ``prompt_id`` while pending: when it vanishes, it was cancelled."""
        with self._lock:
            self._cancelled.add(prompt_id)

    # -- one poll -------------------------------------------------------------------------------------
    def poll(self, *, history: bool = False) -> QueueView:
        """Read ``/queue`` (and ``/history`` when needed), feed the hold queue, publish a view.

        Blocking: call it from the thread or from a script run, never inside a fragment.
        """
        with self._poll_lock:
            return self._poll(history)

    def _poll(self, want_history: bool) -> QueueView:
        old = self._view
        reconnected = False
        lst = self.listener
        if lst is not None:
            n = getattr(lst, "reconnects", 0)
            if n != self._reconnects:
                self._reconnects = n
                self._suspect_restart = True
                self._need_history = True
                reconnected = True
        try:
            state: QueueState = self.client.queue()
        except E.ComfyPanelError as exc:
            self._suspect_restart = True
            self._need_history = True
            return self._publish(old, error=exc.user_message)
        ids = {i.prompt_id: "running" for i in state.running}
        ids.update({i.prompt_id: "pending" for i in state.pending})
        vanished = [p for p in self._last_ids if p not in ids]
        # History is re-read when the queue changed, after trouble, on demand, and at least every
        # ``history_every`` seconds (a job can come and go between two polls of /queue).
        stale = time.monotonic() - self._history_at >= self.history_every
        if want_history or self._need_history or vanished or old.error or stale or set(ids) != set(self._last_ids):
            try:
                hist = self.client.history(max_items=self.history_items)
                self._history = hist
                self._history_at = time.monotonic()
                self._need_history = False
            except E.ComfyPanelError as exc:
                return self._publish(old, error=exc.user_message)
        restart = self._suspect_restart
        for pid in vanished:
            if pid in self._history:
                continue
            was = self._last_ids[pid]
            item = self._last_items.get(pid)
            with self._lock:
                mine_cancel = pid in self._cancelled
            if was == "pending" and (mine_cancel or not restart):
                status, reason = "cancelled", "removed from the queue before it ran"
            else:
                status = "lost"
                reason = ("the server restarted or the connection dropped; it is no longer in the queue or history"
                          if restart else "it left the queue without a history entry")
            self._inferred[pid] = Finished(pid, status, reason, time.time(), None,
                                           item.client_id if item else None, item.prompt if item else {})
        self._suspect_restart = False
        self._last_ids = ids
        self._last_items = {i.prompt_id: i for i in state.running + state.pending}
        if lst is not None and state.running and reconnected:
            pid = state.running[0].prompt_id
            try:
                if lst.snapshot(pid) is not None and not lst.snapshot(pid).finished:
                    lst.mark_running(pid)
            except Exception:
                log.debug("mark_running failed", exc_info=True)
        feed = None
        held: tuple[HeldJob, ...] = ()
        rejected: tuple[HeldJob, ...] = ()
        paused, conc = False, 1
        held_by_prompt: dict[str, HeldJob] = {}
        if self.hold is not None:
            try:
                if self.feeder is not None:
                    feed = self.feeder.tick(len(state), frozenset(ids), frozenset(self._history))
                    if feed.action == "sent":
                        self._need_history = True
                held = tuple(self.hold.held(self.server_id))
                rejected = tuple(self.hold.failed(self.server_id, limit=5))
                paused = self.hold.is_paused(self.server_id)
                conc = self.hold.concurrency(self.server_id)
                known = list(ids) + list(self._history) + list(self._inferred)
                held_by_prompt = self.hold.by_prompt_ids(self.server_id, known)
            except Exception:  # a locked or broken database must not stop the queue view
                log.exception("hold queue access failed")
        if feed is not None and feed.action == "sent":
            # Show the job in the server's queue at once (it was just accepted).
            try:
                state = self.client.queue()
                self._last_ids = {i.prompt_id: "running" for i in state.running}
                self._last_ids.update({i.prompt_id: "pending" for i in state.pending})
                self._last_items = {i.prompt_id: i for i in state.running + state.pending}
                held = tuple(self.hold.held(self.server_id))
            except E.ComfyPanelError:
                pass
        finished = self._finished()
        return self._publish(old, running=state.running, pending=state.pending, held=held, rejected=rejected,
                             paused=paused,
                             concurrency=conc, finished=finished, polled_at=time.time(), error=None,
                             reconnected_at=time.time() if reconnected or old.error else old.reconnected_at,
                             feed=feed,
                             held_by_prompt=held_by_prompt)

    def _finished(self) -> tuple[Finished, ...]:
        out: list[Finished] = []
        for pid, entry in self._history.items():
            end = entry.ended_at / 1000.0 if entry.ended_at else None
            reason = entry.error.user_message if entry.error and entry.status == "failed" else None
            status = entry.status
            with self._lock:
                if status == "interrupted" and pid in self._cancelled:
                    reason = "interrupted from the panel"
            out.append(Finished(pid, status, reason, end, entry, entry.extra_data.get("client_id")))
        for pid, fin in self._inferred.items():
            if pid not in self._history:
                out.append(fin)
        out.sort(key=lambda f: f.ended_at or 0, reverse=True)
        # Inferred entries are kept for a while; history already keeps its own window.
        if len(self._inferred) > 50:
            for pid in sorted(self._inferred, key=lambda p: self._inferred[p].ended_at or 0)[:-50]:
                del self._inferred[pid]
        return tuple(out[: max(self.history_items, 20)])

    def _publish(self, old: QueueView, **changes: Any) -> QueueView:
        base = {f: getattr(old, f) for f in QueueView.__dataclass_fields__}
        base.update(changes)
        base["generation"] = old.generation + 1
        view = QueueView(**base)
        self._view = view
        return view
