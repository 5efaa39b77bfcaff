"""A background poller of RAM, VRAM and queue length for the Admin page's live chart.

The page's fragment only reads ``samples()`` (no HTTP inside a fragment); this thread does the
polling. It polls only while someone reads: when nobody has called ``samples()`` for ``idle_after``
seconds (the page was closed or another page is shown) it pauses, and the next read wakes it.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .client import ComfyClient
from .errors import ComfyPanelError

__all__ = ["Sample", "StatsMonitor"]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time()
    ram_used_gib: float
    vram_used_gib: float  # 0 when the server has no GPU
    queue: int


class StatsMonitor:
    """Polls ``/system_stats`` and ``/prompt`` every ``interval`` seconds into a ring buffer of
    ``window`` seconds. Thread-safe; ``stop()`` ends the thread."""

    def __init__(self, client: ComfyClient, *, interval: float = 2.0, window: float = 600.0,
                 idle_after: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.interval = interval
        self.idle_after = idle_after
        self._clock = clock
        self._samples: collections.deque[Sample] = collections.deque(maxlen=max(2, int(window / interval)))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_read = clock()
        self.error: str | None = None  # the last poll's failure, one sentence
        self._thread = threading.Thread(target=self._run, name="comfypanel-stats-monitor", daemon=True)

    def start(self) -> "StatsMonitor":
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def polling(self) -> bool:
        return self._thread.is_alive() and self._clock() - self._last_read < self.idle_after

    def samples(self) -> list[Sample]:
        """The samples of the window, oldest first (and a sign that someone is watching)."""
        self._last_read = self._clock()
        self._wake.set()
        with self._lock:
            return list(self._samples)

    def poll_once(self) -> None:
        try:
            stats = self.client.system_stats()
            queue = self.client.queue_remaining()
        except ComfyPanelError as exc:
            self.error = exc.user_message
            return
        self.error = None
        vram = sum(max(0, d.vram_total - d.vram_free) for d in stats.devices if d.type != "cpu")
        sample = Sample(time.time(), max(0, stats.ram_total - stats.ram_free) / 1024**3, vram / 1024**3, queue)
        with self._lock:
            self._samples.append(sample)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._clock() - self._last_read >= self.idle_after:
                self._wake.clear()
                self._wake.wait()  # nobody watches: sleep until the next samples()
                continue
            self.poll_once()
            self._stop.wait(self.interval)
