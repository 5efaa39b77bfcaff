"""Follow submitted jobs in worker threads, so a page never blocks on HTTP.

A ``JobWatcher`` belongs to one browser session (the app keeps it in a session-scoped resource and
calls ``stop()`` when the session ends). ``watch(prompt_id)`` runs ``jobs.follow`` in a worker
thread — polling decides, the session's WebSocket listener accelerates — and, when a job ends
well, fetches its output files. Pages read ``progress(prompt_id)`` and ``result(prompt_id)``: plain
values behind a lock, never a Streamlit call from a thread.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from . import errors as E
from .client import ComfyClient
from .jobs import JobProgress, JobResult, follow
from .types import FileRef

__all__ = ["JobWatcher", "Finished", "OutputFile"]

log = logging.getLogger("comfypanel.watcher")

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class OutputFile:
    ref: FileRef
    data: bytes = field(repr=False)
    error: str | None = None  # why the bytes could not be fetched (file gone, too large)


@dataclass(frozen=True)
class Finished:
    """How a watched job ended, with its output files already fetched (for display and download)."""

    result: JobResult | None
    files: tuple[OutputFile, ...] = ()
    error: str | None = None  # a follow() failure (auth, timeout), one sentence

    @property
    def state(self) -> str:
        return self.result.state if self.result is not None else "failed"

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        return self.result.user_message if self.result is not None else "The job could not be followed."


class JobWatcher:
    """Threads that follow jobs of one client. Thread-safe; ``stop()`` ends every worker."""

    def __init__(self, client: ComfyClient, listener: Any = None, *, max_workers: int = 4,
                 timeout: float | None = 6 * 3600, fetch_outputs: bool = True,
                 on_finish: Callable[[str, Finished], None] | None = None) -> None:
        self.client = client
        self.listener = listener
        self.timeout = timeout
        self.fetch_outputs = fetch_outputs
        self.on_finish = on_finish
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._progress: dict[str, JobProgress] = {}
        self._finished: dict[str, Finished] = {}
        self._watching: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="comfy-job")

    def watch(self, prompt_id: str, *, nodes_total: int | None = None, queued: Any = None) -> None:
        """Start following ``prompt_id`` (idempotent)."""
        with self._lock:
            if self._stop.is_set() or prompt_id in self._watching or prompt_id in self._finished:
                return
            self._watching.add(prompt_id)
        if self.listener is not None:
            try:
                self.listener.track(prompt_id)
            except Exception:
                log.debug("listener.track failed", exc_info=True)
        self._pool.submit(self._run, prompt_id, nodes_total, queued)

    def _run(self, prompt_id: str, nodes_total: int | None, queued: Any) -> None:
        def update(p: JobProgress) -> None:
            with self._lock:
                self._progress[prompt_id] = p

        try:
            result = follow(self.client, prompt_id, listener=self.listener, timeout=self.timeout,
                            on_update=update, stop=self._stop, nodes_total=nodes_total, queued=queued)
            files = self._fetch(result) if self.fetch_outputs and result.ok else ()
            done = Finished(result, files)
        except E.ComfyPanelError as exc:
            if self._stop.is_set():
                return
            done = Finished(None, (), exc.user_message)
        except Exception:  # a bug must still end the job's spinner with a sentence
            log.exception("following %s failed", prompt_id)
            done = Finished(None, (), "Following the job failed unexpectedly; check the Queue page.")
        with self._lock:
            self._finished[prompt_id] = done
            self._watching.discard(prompt_id)
        if self.on_finish is not None:
            try:
                self.on_finish(prompt_id, done)
            except Exception:
                log.exception("on_finish for %s failed", prompt_id)

    def _fetch(self, result: JobResult) -> tuple[OutputFile, ...]:
        out = []
        for ref in result.files:
            if self._stop.is_set():
                break
            try:
                out.append(OutputFile(ref, self.client.view(ref, max_bytes=MAX_FILE_BYTES)))
            except E.ComfyPanelError as exc:
                out.append(OutputFile(ref, b"", exc.user_message))
        return tuple(out)

    # -- what pages read ------------------------------------------------------------------------
    def progress(self, prompt_id: str) -> JobProgress | None:
        with self._lock:
            return self._progress.get(prompt_id)

    def result(self, prompt_id: str) -> Finished | None:
        with self._lock:
            return self._finished.get(prompt_id)

    def active(self) -> bool:
        with self._lock:
            return bool(self._watching)

    def is_watching(self, prompt_id: str) -> bool:
        with self._lock:
            return prompt_id in self._watching

    def forget(self, prompt_id: str) -> None:
        with self._lock:
            self._finished.pop(prompt_id, None)
            self._progress.pop(prompt_id, None)

    def stop(self, wait: bool = True) -> None:
        """Stop following (workers end within one poll interval) and free the threads."""
        self._stop.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
