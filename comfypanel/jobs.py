"""Follow a job to its end: **polling decides, the WebSocket accelerates**.

A job is finished when the server's record says so (``/history/{id}`` locally, the job-status
routes on Cloud). WebSocket events give live progress and previews and wake the poller early; a
missed event, a dropped socket or a restarted server therefore never loses a job or leaves a caller
waiting forever:

- the socket drops → we keep polling at the normal rate;
- the server restarts → polls fail for a while (reported as ``connection="reconnecting"``), then the
  job is in neither queue nor history and is reported **lost**;
- ``executing`` null arrives before history is written (ComfyUI #11540) → we poll again quickly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from . import errors as E
from .client import ComfyClient
from .types import ExecutionFailure, FileRef, HistoryEntry, JobState, JobStatus, QueuedPrompt

__all__ = ["JobProgress", "JobResult", "follow", "submit_and_wait"]

log = logging.getLogger("comfypanel.jobs")

ConnectionState = Literal["live", "polling", "reconnecting"]


@dataclass(frozen=True, slots=True)
class JobProgress:
    """What a live view shows while a job runs. Built from the listener snapshot and the last poll."""

    prompt_id: str
    state: JobState
    position: int | None = None  # 0 running, 1.. place among pending jobs
    current_node: str | None = None
    nodes_done: int = 0
    nodes_total: int | None = None
    step: tuple[float, float] | None = None  # (value, max) of the running node's own progress
    preview: Any = field(default=None, repr=False)  # events.PreviewImage
    connection: ConnectionState = "polling"
    elapsed_s: float = 0.0
    raw_state: str | None = None

    @property
    def fraction(self) -> float | None:
        """Overall progress 0..1 when it can be estimated (nodes done + the running node's steps)."""
        if self.state == "succeeded":
            return 1.0
        if not self.nodes_total:
            return None
        part = 0.0
        if self.step and self.step[1]:
            part = max(0.0, min(1.0, self.step[0] / self.step[1]))
        return max(0.0, min(1.0, (self.nodes_done + part) / self.nodes_total))


@dataclass(frozen=True, slots=True)
class JobResult:
    prompt_id: str
    state: JobState
    files: tuple[FileRef, ...] = ()
    outputs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    error: ExecutionFailure | None = None
    duration_s: float | None = None
    history: HistoryEntry | None = field(default=None, repr=False)
    queued: QueuedPrompt | None = None  # the submission's answer (node_errors on a 200: dropped branches)

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    @property
    def user_message(self) -> str:
        """One sentence for the page."""
        if self.state == "succeeded":
            n = len(self.files)
            return f"Finished: {n} file{'s' if n != 1 else ''}." if n else "Finished (the workflow produced no files)."
        if self.state == "failed":
            return self.error.user_message if self.error else "The job failed on the server."
        if self.state == "interrupted":
            return "The job was stopped before it finished."
        if self.state == "cancelled":
            return "The job was cancelled."
        if self.state == "lost":
            return (
                "The server no longer knows this job: it was removed from the queue or the server "
                "restarted. Generate again to run it."
            )
        return f"The job is {self.state}."


_TRANSIENT = (E.CannotConnect, E.RequestTimedOut, E.ServerError, E.BadResponse)


def follow(
    client: ComfyClient,
    prompt_id: str,
    *,
    listener: Any = None,
    timeout: float | None = None,
    poll_interval: float = 1.0,
    live_poll_interval: float = 3.0,
    on_update: Callable[[JobProgress], None] | None = None,
    stop: threading.Event | None = None,
    nodes_total: int | None = None,
    queued: QueuedPrompt | None = None,
) -> JobResult:
    """Wait until ``prompt_id`` ends and return how it ended.

    Args:
        listener: an ``EventListener`` of the same client (optional). While it is connected the
            server is polled only every ``live_poll_interval`` seconds, and at once when an event
            says the job ended.
        timeout: seconds; ``None`` waits as long as the job is alive on the server.
        on_update: called (in this thread) with a ``JobProgress`` after every change or poll.
        stop: set it to stop following (raises ``JobTimedOut`` with the elapsed time).

    Raises:
        JobTimedOut: ``timeout`` passed (the job may still be running on the server).
        AuthFailed, InsufficientCredits, SubscriptionInactive, Forbidden: polling is refused.
    """
    start = time.monotonic()
    deadline = start + timeout if timeout else None
    if listener is not None:
        try:
            listener.track(prompt_id)
        except Exception:  # a listener that cannot track must not break following
            log.debug("listener.track failed", exc_info=True)
    # With a live socket the first poll waits: events will say when to look. Without one, poll now.
    last_poll = start if listener is not None and getattr(listener, "connected", False) else 0.0
    lost_strikes = 0
    status: JobStatus | None = None
    server_ok = True
    ended_hint = False  # a terminal event arrived on the socket
    ready_polled = False  # history was read after `executing` null
    last_progress: JobProgress | None = None

    while True:
        now = time.monotonic()
        snap = listener.snapshot(prompt_id) if listener is not None else None
        live = bool(listener is not None and getattr(listener, "connected", False))
        history_ready = bool(snap is not None and getattr(snap, "history_ready", False))
        ended_hint = ended_hint or bool(snap is not None and (getattr(snap, "finished", False) or history_ready))
        interval = live_poll_interval if live and server_ok else poll_interval
        if history_ready and not ready_polled:
            interval = 0.0  # `executing` null: history is written, read it at once
        elif ended_hint:
            interval = 0.1  # a terminal event came before the history write (#11540): confirm soon
        if lost_strikes:
            interval = 0.3
        if now - last_poll >= interval:
            last_poll = now
            ready_polled = ready_polled or history_ready
            try:
                status = client.job_status(prompt_id)
                server_ok = True
            except _TRANSIENT as exc:
                server_ok = False
                log.info("polling %s failed: %s", prompt_id, exc.user_message)
            if status is not None and server_ok and status.terminal:
                if status.state == "lost":
                    lost_strikes += 1
                    if lost_strikes >= 2:  # confirmed twice: it is really gone
                        return _result(status, start, queued)
                else:
                    return _result(status, start, queued)
            elif server_ok:
                lost_strikes = 0

        progress = _progress(prompt_id, status, snap, live, server_ok, now - start, nodes_total)
        if on_update is not None and progress != last_progress:
            on_update(progress)
            last_progress = progress

        if stop is not None and stop.is_set():
            raise E.JobTimedOut(round(time.monotonic() - start, 1))
        if deadline is not None and time.monotonic() >= deadline:
            raise E.JobTimedOut(timeout or 0)

        wait_for = max(0.02, min(interval - (time.monotonic() - last_poll), 0.5))
        if deadline is not None:
            wait_for = max(0.0, min(wait_for, deadline - time.monotonic()))
        if listener is not None and live and not ended_hint:
            listener.wait(prompt_id, wait_for)  # wakes early on any event for this prompt
        elif listener is not None and live and not ready_polled:
            listener.wait_any(wait_for)  # ended: wake as soon as `executing` null (or anything) arrives
        elif stop is not None:
            stop.wait(wait_for)
        else:
            time.sleep(wait_for)


def submit_and_wait(
    client: ComfyClient,
    prompt: Mapping[str, Any],
    *,
    listener: Any = None,
    timeout: float | None = None,
    on_update: Callable[[JobProgress], None] | None = None,
    stop: threading.Event | None = None,
    poll_interval: float = 1.0,
    **queue_kwargs: Any,
) -> JobResult:
    """``queue_prompt`` + ``follow``. With a listener, it is connected before submitting (events of
    a prompt sent before the socket exists are lost).

    Raises:
        PromptRejected: the server refused the workflow; nothing was queued.
        JobTimedOut, and the errors of ``follow``.
    """
    if listener is not None and hasattr(listener, "wait_connected"):
        listener.wait_connected(5.0)
    queued = client.queue_prompt(prompt, **queue_kwargs)
    if listener is not None:
        listener.track(queued.prompt_id)
    return follow(client, queued.prompt_id, listener=listener, timeout=timeout, on_update=on_update,
                  stop=stop, nodes_total=len(prompt), queued=queued, poll_interval=poll_interval)


def _result(status: JobStatus, start: float, queued: QueuedPrompt | None) -> JobResult:
    duration = status.history.duration_s if status.history else None
    return JobResult(
        prompt_id=status.prompt_id,
        state=status.state,
        files=status.files,
        outputs=status.outputs,
        error=status.error,
        duration_s=duration if duration is not None else round(time.monotonic() - start, 3),
        history=status.history,
        queued=queued,
    )


def _progress(prompt_id: str, status: JobStatus | None, snap: Any, live: bool, server_ok: bool,
              elapsed: float, nodes_total: int | None) -> JobProgress:
    state: JobState = status.state if status is not None and not status.terminal else "queued"
    position = status.position if status is not None else None
    current = None
    done = 0
    step = None
    preview = None
    if snap is not None:
        if getattr(snap, "state", None) == "running" or getattr(snap, "current_node", None):
            state = "running"
            position = 0
        current = getattr(snap, "current_node", None)
        nodes = getattr(snap, "nodes", None) or {}
        done = sum(1 for n in nodes.values() if getattr(n, "state", None) == "finished")
        done += len(getattr(snap, "cached_nodes", ()) or ())
        step = getattr(snap, "step", None)
        preview = getattr(snap, "latest_preview", None)
    connection: ConnectionState = "reconnecting" if not server_ok else ("live" if live else "polling")
    return JobProgress(
        prompt_id=prompt_id,
        state=state,
        position=position,
        current_node=current,
        nodes_done=min(done, nodes_total) if nodes_total else done,
        nodes_total=nodes_total,
        step=tuple(step) if step else None,
        preview=preview,
        connection=connection,
        elapsed_s=round(elapsed, 1),
        raw_state=status.raw_state if status is not None else None,
    )
