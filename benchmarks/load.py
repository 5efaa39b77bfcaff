"""Load: 100 queued jobs followed by 25 concurrent panel sessions and a few real browsers.

Server: the ComfyUI double (``tests/doubles/comfy.py``, a fake ComfyUI 0.3.75 that really runs
model-free prompts and speaks the recorded HTTP/WebSocket protocol) in this process. What is
measured is the panel's cost per session, not ComfyUI's; a real server would only add its own CPU
work to a 2-core machine. Jobs are ``EmptyImage → PreviewImage`` with a distinct colour each, paced
by the double (see "Pacing").

What runs, in one process plus one ``streamlit run`` subprocess:

* ``--sessions`` AppTest sessions of the Queue page, each with **its own Streamlit session id**.
  (AppTest gives every instance the id ``"test session id"``; with that, the session-scoped
  resources of ``components/live.py`` / ``queue_live.py`` — listener, monitor, ``max_entries=4`` —
  would be shared and evicted between "sessions". Here each AppTest runs under its own id, as
  separate browser tabs do.) Every session has its own client, WebSocket listener thread and queue
  monitor thread, all truly concurrent; the script runs themselves are driven round-robin from this
  thread, because AppTest swaps process-wide globals (the Runtime instance, ``st.secrets``) per run.
* ``--jobs`` jobs, queued all at once right after the sessions opened, submitted through the
  sessions' own clients in turn (so each session has its own jobs, and sees everyone else's).
* ``--browsers`` Chromium pages (Playwright, Debian's ``chromium``) on ``/queue`` of the panel
  under ``streamlit run``, connected to the same double, following the same jobs live.

A session "sees" a job reach its final state when the job's card is in the page's "Recently
finished" list with its status badge (AppTest: the rendered element tree; browsers: the DOM).

Pacing: the Queue page lists the 20 most recent finished jobs, so a session looking every R seconds
must not have more than 20 jobs end in between. A gate job (queued first from outside the panel,
interrupted after the first round) holds the server while every job is queued, the browsers open and
every session has had its first look (that round is timed: it is the page with every job pending);
from then on each job takes max(0.1 s, R / 5) on the double, R being the slowest round so far, so
about 5 jobs end between two looks (a round can be twice as slow as any before it and still see
every job: rounds slow down as the finished list fills). This keeps the check about the panel, not about
how fast the harness looks. (The gate shows up as "Interrupted" on every page; it is not one of
the jobs checked.)

Measures (PASS/FAIL against the targets below):

* errors: exceptions and error boxes on any page, "Reconnecting…" warnings (the server never went
  away), ERROR log records, uncaught thread exceptions, browser page errors            target 0
* every session (AppTest and browser) saw every job end, as "Succeeded"             target all
* each AppTest session toasted each of its own jobs exactly once
* threads: ``threading.active_count()`` back to the baseline (taken after a warm-up session came
  and went) once every session ended (``clear_session_cache(session id)``, what the Streamlit
  runtime does when a browser disconnects — it runs the ``on_release`` hooks)       target = baseline
  and for the ``streamlit run`` process after its browsers closed: no session thread left, and
  its threads back to baseline apart from Streamlit's worker pools (AnyIO worker threads and the
  asyncio executor grow with concurrent requests up to their bounds and are reused, not per
  session; their counts are printed). Names come from ``benchmarks/_serve_panel.py`` (SIGUSR1).
* memory per AppTest session: Python heap growth with every session live after following every
  job, over the heap before the first one opened, per session (tracemalloc; shared growth such as
  the double's history is included, so this is an upper bound)                     target ≤ 16 MiB
  (16 MiB: 60 sessions in 1 GiB; the figure is well under 1 MiB today, so the target only catches a
  session that starts keeping what it sees — events, previews, history)
  and for information: the heap freed per session when they ended, the heap left after all ended
  (the double's history and request log, shared caches), RSS growth of this process per session
  after opening them all (it includes what tracemalloc cannot see: protobuf messages, C buffers),
  the peak RSS growth of the ``streamlit run`` process per browser session, and the time of one
  Queue page run per session with every job pending and over the whole run.

Run time: a Queue page run grows with the jobs it lists (every pending job is a card), and every
session's monitor polls ``/queue`` each second, so the first rounds dominate. On a quiet 2-core
machine ``--jobs 40`` takes about 3 minutes; the full 100 jobs × 25 sessions is far longer there
(the harness's double shares this process), so give it a bigger machine or ``--jobs 40``.

    python benchmarks/load.py [--jobs 100] [--sessions 25] [--browsers 2] [--json PATH] [--verbose]

The CI form of this run (20 jobs, 6 sessions, no browser) is ``tests/apptest/test_load.py``, which
calls :func:`run_load` and asserts on the same figures (never on time).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import platform
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._report import record, write_json  # noqa: E402

APP = ROOT / "streamlit_app.py"
QUEUE = "pages/queue.py"
DONE_PREFIX = "cp_w_queue_done_"
WINDOW = 20  # the Queue page's "Recently finished" list (QueueMonitor.history_items)
PER_ROUND = 5  # jobs allowed to end between two looks of a session (a quarter of the window)
TARGET_MEM_MIB = 16.0
SESSION_THREAD_PREFIXES = ("comfy-queue-", "comfy-ws-")
POOL_THREAD_PREFIXES = ("AnyIO worker thread", "ThreadPoolExecutor-")
_BADGE = re.compile(r"-badge\[:material/[a-z_]+: (\w+)\]")
MiB = 1024 * 1024


# -- one Streamlit session id per AppTest -------------------------------------------------------------
_current_sid = threading.local()


@contextlib.contextmanager
def apptest_sessions() -> Iterator[type]:
    """Patch AppTest for the duration: each instance of the returned class runs under its own session
    id (``at.session_id``), and the app stays on the ``st.navigation`` path (see
    tests/apptest/conftest.py). Both patches are undone on exit."""
    import streamlit.testing.v1.app_test as app_test_mod
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    class SessionScriptRunner(LocalScriptRunner):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            sid = getattr(_current_sid, "value", None)
            if sid:
                self._session_id = sid  # read when the script thread builds its ScriptRunContext

    class SessionAppTest(AppTest):
        def __init__(self, script_path: str, session_id: str, **kwargs: Any) -> None:
            super().__init__(script_path, **kwargs)
            self.session_id = session_id

        def _run(self, *a: Any, **k: Any):  # noqa: ANN202
            _current_sid.value = self.session_id
            try:
                return super()._run(*a, **k)
            finally:
                _current_sid.value = None

    original_runner = app_test_mod.LocalScriptRunner
    original_init = PagesManager.__init__

    def init(self, *a: Any, **k: Any) -> None:
        original_init(self, *a, **k)
        PagesManager.uses_pages_directory = False

    app_test_mod.LocalScriptRunner = SessionScriptRunner
    PagesManager.__init__ = init
    try:
        yield SessionAppTest
    finally:
        app_test_mod.LocalScriptRunner = original_runner
        PagesManager.__init__ = original_init


def end_session(session_id: str) -> None:
    """What the Streamlit runtime does when a browser session disconnects: release its session-scoped
    resources (``on_release`` stops the listener and the monitor)."""
    from streamlit.runtime.caching import cache_data_api, cache_resource_api

    cache_data_api.clear_session_cache(session_id)
    cache_resource_api.clear_session_cache(session_id)


# -- what a page shows ---------------------------------------------------------------------------------
def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _walk(node: Any) -> Iterator[Any]:
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


def finished_cards(at: Any) -> dict[str, str]:
    """prompt id → the status word on its "Recently finished" card ("Succeeded", "Failed", ...)."""
    out: dict[str, str] = {}
    for block in at.get("flex_container"):
        key = getattr(block, "key", None) or ""
        if not key.startswith(DONE_PREFIX):
            continue
        status = "?"
        for el in _walk(block):
            m = _BADGE.search(str(getattr(el, "value", "")))
            if m:
                status = m.group(1)
                break
        out[key[len(DONE_PREFIX):]] = status
    return out


def page_problems(at: Any) -> list[str]:
    problems = [f"exception: {e.value}" for e in at.exception]
    problems += [f"error box: {_unescape(str(e.value))}" for e in at.error]
    problems += [f"warning: {_unescape(str(w.value))}" for w in at.warning if "Reconnecting" in str(w.value)]
    return problems


GATE_PROMPT = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


def _is_gate(prompt: dict) -> bool:
    return prompt.get("1", {}).get("inputs", {}).get("width") == 8


def job_prompt(n: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1,
                                                     "color": (n * 7919) % 0xFFFFFF}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


# -- process figures ---------------------------------------------------------------------------------
def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def session_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(SESSION_THREAD_PREFIXES))


def wait_until(pred, timeout: float, step: float = 0.1) -> float:
    """Poll ``pred`` until true or ``timeout``; returns the seconds waited (a figure, never asserted)."""
    t0 = time.monotonic()
    while not pred() and time.monotonic() - t0 < timeout:
        time.sleep(step)
    return time.monotonic() - t0


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, rec: logging.LogRecord) -> None:
        self.records.append(f"log {rec.name}: {rec.getMessage()}")


@contextlib.contextmanager
def error_capture() -> Iterator[list[str]]:
    """ERROR log records and uncaught thread exceptions while the block runs."""
    found: list[str] = []
    handler = _ErrorCounter()
    root = logging.getLogger()
    root.addHandler(handler)
    old_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        found.append(f"thread {getattr(args.thread, 'name', '?')}: {args.exc_type.__name__}: {args.exc_value}")
        old_hook(args)

    threading.excepthook = hook
    try:
        yield found
    finally:
        threading.excepthook = old_hook
        root.removeHandler(handler)
        found.extend(handler.records)


# -- browsers -------------------------------------------------------------------------------------------
_DOM_CARDS = """() => Array.from(document.querySelectorAll('[class*="st-key-%s"]')).map(e => [
    Array.from(e.classList).find(c => c.startsWith('st-key-%s')).slice(%d), e.innerText])""" % (
    DONE_PREFIX, DONE_PREFIX, len("st-key-" + DONE_PREFIX))
_DOM_PROBLEMS = """() => {
    const out = [];
    document.querySelectorAll('[data-testid="stException"]').forEach(e => out.push('exception: ' + e.innerText));
    document.querySelectorAll('[data-testid="stAlertContentError"]').forEach(
        e => out.push('error box: ' + e.innerText));
    document.querySelectorAll('[data-testid="stAlertContentWarning"]').forEach(e => {
        if (e.innerText.includes('Reconnecting')) out.push('warning: ' + e.innerText); });
    return out; }"""
_FINAL_WORDS = ("Succeeded", "Failed", "Interrupted", "Cancelled", "Lost")


def _panel_process(env_extra: dict[str, str], work: Path):
    """The panel under ``streamlit run`` (tests/e2e/conftest.py's ``PanelServer``), started through
    ``benchmarks/_serve_panel.py`` so that its thread names can be read (SIGUSR1)."""
    import signal

    from tests.e2e.conftest import PanelServer

    class PanelProcess(PanelServer):
        def thread_names(self) -> list[str]:
            self.dump.unlink(missing_ok=True)
            self.proc.send_signal(signal.SIGUSR1)
            wait_until(self.dump.exists, 5.0, 0.05)
            return self.dump.read_text().splitlines() if self.dump.exists() else []

    dump = work / "threads.txt"
    server = PanelProcess({**env_extra, "COMFYPANEL_THREAD_DUMP": str(dump)}, work / "streamlit.log",
                          work / "no-secrets.toml",
                          launcher=(sys.executable, str(Path(__file__).with_name("_serve_panel.py"))))
    server.dump = dump
    server.wait_healthy()
    return server


class Browsers:
    """N Chromium pages, each its own browser context (its own Streamlit session), on the Queue page of
    the panel under ``streamlit run``."""

    def __init__(self, comfy_url: str, count: int, work: Path) -> None:
        import shutil

        from playwright.sync_api import sync_playwright

        from tests.e2e.conftest import CHROMIUM_ARGS

        self.count = count
        self.problems: list[str] = []
        self.seen: list[dict[str, str]] = [{} for _ in range(count)]
        self.server = _panel_process({"COMFYUI_URL": comfy_url, "COMFYPANEL_DATA_DIR": str(work / "panel-data")},
                                     work)
        self._pw = sync_playwright().start()
        exe = shutil.which("chromium")
        if exe is None:
            raise SystemExit("Debian's chromium is not installed (apt-get install chromium)")
        self.browser = self._pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        self.contexts: list[Any] = []
        self.pages: list[Any] = []
        # warm-up visit: the server's process-lifetime threads and imports exist before the baseline
        ctx, page = self._open()
        self._close(ctx)
        wait_until(lambda: not self.session_threads(), 10.0, 0.25)
        self.threads_baseline = proc_threads(self.server.proc.pid)
        self.names_baseline = self.server.thread_names()
        self.rss_baseline = rss_bytes(self.server.proc.pid)
        self.threads_peak = self.threads_baseline
        self.session_threads_peak = 0
        self.threads_after: int | None = None
        self.names_after: list[str] = []
        self.rss_per_session = 0.0
        self.rss_peak = self.rss_baseline

    def session_threads(self) -> list[str]:
        return [n for n in self.server.thread_names() if n.startswith(SESSION_THREAD_PREFIXES)]

    def _open(self) -> tuple[Any, Any]:
        ctx = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.on("pageerror", lambda exc: self.problems.append(f"browser page error: {exc}"))
        page.goto(self.server.url + "/queue")
        page.wait_for_selector("[data-test-script-state='notRunning']")
        page.get_by_text("Recently finished").first.wait_for()  # connected, the live view is drawn
        return ctx, page

    def _close(self, ctx: Any) -> None:
        ctx.close()

    def open_all(self) -> None:
        for _ in range(self.count):
            ctx, page = self._open()
            self.contexts.append(ctx)
            self.pages.append(page)
        self.rss_per_session = (rss_bytes(self.server.proc.pid) - self.rss_baseline) / max(1, self.count)

    def look(self) -> None:
        """Read every page once: its finished cards and any problem shown."""
        for i, page in enumerate(self.pages):
            for pid, text in page.evaluate(_DOM_CARDS):
                word = next((w for w in _FINAL_WORDS if w in text), "?")
                self.seen[i][pid] = word
            for p in page.evaluate(_DOM_PROBLEMS):
                msg = f"browser {i}: {p}"
                if msg not in self.problems:
                    self.problems.append(msg)
        self.threads_peak = max(self.threads_peak, proc_threads(self.server.proc.pid))
        self.session_threads_peak = max(self.session_threads_peak, len(self.session_threads()))
        self.rss_peak = max(self.rss_peak, rss_bytes(self.server.proc.pid))

    def close_all(self) -> None:
        for ctx in self.contexts:
            self._close(ctx)
        self.contexts, self.pages = [], []
        pid = self.server.proc.pid
        wait_until(lambda: proc_threads(pid) <= self.threads_baseline, 30.0, 0.25)
        self.threads_after = proc_threads(pid)
        self.names_after = self.server.thread_names()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            for ctx in self.contexts:
                ctx.close()
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._pw.stop()
        self.server.stop()


# -- the run ----------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    jobs: int
    sessions: int
    browsers: int
    job_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # per AppTest session: job ids it never saw as "Succeeded" in its finished list
    unseen: dict[int, list[str]] = field(default_factory=dict)
    not_succeeded: dict[str, str] = field(default_factory=dict)  # job id -> status somebody saw instead
    toasts: list[int] = field(default_factory=list)  # per session: toasts shown
    own_jobs: list[int] = field(default_factory=list)  # per session: jobs it submitted
    browser_unseen: dict[int, list[str]] = field(default_factory=dict)
    threads_baseline: int = 0
    threads_peak: int = 0
    session_threads_peak: int = 0  # comfy-ws-* / comfy-queue-* threads alive at the peak
    threads_after: int = 0
    leftover_threads: list[str] = field(default_factory=list)
    release_s: float = 0.0  # ending every session (on_release hooks), seconds
    threads_wait_s: float = 0.0  # after that, until back to baseline
    mem_per_session: float = 0.0  # bytes, tracemalloc: (heap with every session live − before) / sessions
    mem_freed_per_session: float = 0.0  # bytes, tracemalloc: (live − after ending them) / sessions
    mem_retained: float = 0.0  # bytes still traced after the end vs before the first session
    rss_per_session: float = 0.0  # bytes, RSS growth per session after opening them all
    browser_threads_baseline: int | None = None
    browser_threads_peak: int | None = None
    browser_threads_after: int | None = None
    # the same without the server's worker pools (AnyIO worker threads, the asyncio executor's
    # ThreadPoolExecutor-*): those grow with concurrent requests up to their bound and idle on
    browser_own_threads_baseline: int | None = None
    browser_own_threads_after: int | None = None
    browser_pool_threads: tuple[int, int] | None = None  # (baseline, after)
    browser_session_threads_peak: int | None = None
    browser_leftover_threads: list[str] = field(default_factory=list)
    browser_rss_per_session: float | None = None
    rounds: int = 0
    first_round_s: float = 0.0  # the first round: every job pending, nothing ran yet
    round_s: float = 0.0  # median seconds for one round of every session's script run
    job_seconds: float = 0.0  # the pacing reached
    duration_s: float = 0.0


def run_load(double: Any, *, jobs: int, sessions: int, browsers: int = 0, trace_memory: bool = True,
             follow_timeout: float | None = None, per_round: int = PER_ROUND, work: Path | None = None,
             verbose: bool = False) -> LoadResult:
    """Queue ``jobs`` on ``double`` (a running ComfyDouble), follow them from ``sessions`` AppTest
    sessions of the Queue page (+ ``browsers`` Chromium pages), end everything, and measure.

    The environment must already point the panel at the double (``COMFYUI_URL``) with a private
    ``COMFYPANEL_DATA_DIR`` and a working directory without ``.streamlit/secrets.toml``.
    """
    from components import session as ui_session

    res = LoadResult(jobs, sessions, browsers)
    work = work or Path(tempfile.mkdtemp(prefix="load-bench-"))
    t_start = time.monotonic()
    job_seconds = 1.0  # until the first round has been timed (see "Pacing" in the module docstring)
    double.script(per_node_delay=job_seconds / 2)
    brs: Browsers | None = None
    ats: list[Any] = []
    with apptest_sessions() as SessionAppTest, error_capture() as captured:
        try:
            def open_session(n: int, sid: str) -> Any:
                at = SessionAppTest(str(APP), sid, default_timeout=60)
                at.run()
                at.switch_page(QUEUE).run()
                for p in page_problems(at):
                    res.errors.append(f"session {n}: {p}")
                if ui_session.K_CLIENT not in at.session_state or at.session_state[ui_session.K_CLIENT] is None:
                    res.errors.append(f"session {n}: not connected to {double.url}")
                return at

            # warm-up: imports, global resources (hold queue, ledger) and lazily created process-lifetime
            # threads exist before the baselines are taken.
            warm = open_session(-1, "load-warmup")
            end_session("load-warmup")
            del warm
            gc.collect()
            wait_until(lambda: not session_threads(), 10.0)
            if browsers:
                brs = Browsers(double.url, browsers, work)
                res.browser_threads_baseline = brs.threads_baseline
            res.threads_baseline = threading.active_count()
            if trace_memory:
                tracemalloc.start()
            mem0 = tracemalloc.get_traced_memory()[0] if trace_memory else 0
            rss0 = rss_bytes()

            def phase(text: str) -> None:
                if verbose:
                    print(f"  [{time.monotonic() - t_start:6.1f} s] {text}", flush=True)

            phase("baselines taken; opening the sessions")
            ats = [open_session(n, f"load-session-{n:03d}") for n in range(sessions)]
            phase(f"{sessions} sessions open")
            res.rss_per_session = (rss_bytes() - rss0) / max(1, sessions)
            res.threads_peak = threading.active_count()
            res.session_threads_peak = len(session_threads())

            # a gate job holds the server while every job is queued and every page has had one look
            import requests

            gate = double.script(match=_is_gate, node_delays={"1": 900.0}, progress_steps={"1": 1800})
            gate_id = requests.post(double.url + "/prompt", json={"prompt": GATE_PROMPT},
                                    timeout=30).json()["prompt_id"]
            wait_until(lambda: gate_id in str(requests.get(double.url + "/queue", timeout=30).json()
                                              .get("queue_running")), 30.0)
            # queue every job at once, through the sessions' own clients in turn
            clients = [at.session_state[ui_session.K_CLIENT] for at in ats]
            res.own_jobs = [0] * sessions
            for j in range(jobs):
                k = j % sessions
                res.job_ids.append(clients[k].queue_prompt(job_prompt(j)).prompt_id)
                res.own_jobs[k] += 1
            all_ids = set(res.job_ids)
            del clients
            phase(f"{jobs} jobs queued behind the gate")
            if brs is not None:
                # Opened while the queue is busy, so their first look is the full queue (an idle Queue
                # page only looks every few seconds).
                brs.open_all()
                res.browser_rss_per_session = brs.rss_per_session
                phase(f"{browsers} browsers open")

            seen: list[dict[str, str]] = [{} for _ in range(sessions)]
            res.toasts = [0] * sessions
            deadline = time.monotonic() + (follow_timeout or 120.0 + jobs * 10.0)
            round_times: list[float] = []
            done_rounds = 0

            def complete() -> bool:
                ok = all(all(s.get(p) == "Succeeded" for p in all_ids) for s in seen)
                if brs is not None:
                    ok = ok and all(all(s.get(p) == "Succeeded" for p in all_ids) for s in brs.seen)
                return ok

            while time.monotonic() < deadline:
                if res.rounds == 1:  # the first look is done and timed: open the gate
                    double.interrupt()
                    wait_until(lambda: gate_id in double.history(), 30.0)
                    double.unscript(gate)
                t0 = time.perf_counter()
                for n, at in enumerate(ats):
                    try:
                        at.run()
                    except Exception as exc:  # a run that times out or breaks is an error, not a crash
                        res.errors.append(f"session {n}: run failed: {type(exc).__name__}: {exc}")
                        continue
                    for p in page_problems(at):
                        res.errors.append(f"session {n}: {p}")
                    res.toasts[n] += len(at.toast)
                    seen[n].update(finished_cards(at))
                if brs is not None:
                    t_look = time.perf_counter()
                    brs.look()
                    if verbose:
                        print(f"  browsers looked in {time.perf_counter() - t_look:.2f} s", flush=True)
                res.threads_peak = max(res.threads_peak, threading.active_count())
                res.session_threads_peak = max(res.session_threads_peak, len(session_threads()))
                dt = time.perf_counter() - t0
                round_times.append(dt)
                res.rounds += 1
                if res.rounds == 1:
                    res.first_round_s = dt
                hist = double.history()
                done_now = sum(1 for p in all_ids if p in hist)
                want = max(0.1, max(round_times) / per_round)  # pacing, see the module docstring
                if abs(want - job_seconds) > 0.2 * job_seconds:
                    job_seconds = want
                    double.script(per_node_delay=job_seconds / 2)
                if verbose:
                    print(f"  round {res.rounds}: {dt:.2f} s, {done_now}/{jobs} jobs done, "
                          f"job ≈ {job_seconds:.2f} s, threads {threading.active_count()}", flush=True)
                if done_now == jobs:
                    done_rounds += 1
                    if complete() or done_rounds > 3:  # nothing more to see after a few looks
                        break
            res.job_seconds = job_seconds
            round_times.sort()
            res.round_s = round_times[len(round_times) // 2] if round_times else 0.0

            for n, s in enumerate(seen):
                missing = sorted(p for p in all_ids if s.get(p) != "Succeeded")
                if missing:
                    res.unseen[n] = missing
                for p, word in s.items():
                    if p in all_ids and word != "Succeeded":
                        res.not_succeeded[p] = word
            if brs is not None:
                for n, s in enumerate(brs.seen):
                    missing = sorted(p for p in all_ids if s.get(p) != "Succeeded")
                    if missing:
                        res.browser_unseen[n] = missing

            # end every session, as the runtime does on disconnect, and measure what they held
            gc.collect()
            mem_live = tracemalloc.get_traced_memory()[0] if trace_memory else 0
            t0 = time.perf_counter()
            for at in ats:
                end_session(at.session_id)
            res.release_s = time.perf_counter() - t0
            ats.clear()
            res.threads_wait_s = wait_until(lambda: threading.active_count() <= res.threads_baseline, 15.0)
            gc.collect()
            res.threads_after = threading.active_count()
            res.leftover_threads = session_threads()
            if trace_memory:
                mem_end = tracemalloc.get_traced_memory()[0]
                res.mem_per_session = (mem_live - mem0) / max(1, sessions)
                res.mem_freed_per_session = (mem_live - mem_end) / max(1, sessions)
                res.mem_retained = mem_end - mem0
            if brs is not None:
                brs.close_all()
                res.browser_threads_peak = brs.threads_peak
                res.browser_rss_per_session = (brs.rss_peak - brs.rss_baseline) / max(1, browsers)
                res.browser_threads_after = brs.threads_after
                res.browser_session_threads_peak = brs.session_threads_peak
                own0 = [n for n in brs.names_baseline if not n.startswith(POOL_THREAD_PREFIXES)]
                own1 = [n for n in brs.names_after if not n.startswith(POOL_THREAD_PREFIXES)]
                res.browser_own_threads_baseline, res.browser_own_threads_after = len(own0), len(own1)
                res.browser_pool_threads = (len(brs.names_baseline) - len(own0), len(brs.names_after) - len(own1))
                res.browser_leftover_threads = [n for n in own1 if n.startswith(SESSION_THREAD_PREFIXES)]
                res.errors.extend(brs.problems)
        finally:
            if trace_memory and tracemalloc.is_tracing():
                tracemalloc.stop()
            for at in ats:  # only after a failure above
                with contextlib.suppress(Exception):
                    end_session(at.session_id)
            if brs is not None:
                brs.stop()
            double.unscript()
    res.errors.extend(captured)
    res.duration_s = time.monotonic() - t_start
    return res


# -- the report ---------------------------------------------------------------------------------------------
def evaluate(res: LoadResult) -> list[dict[str, Any]]:
    """The figures of a run as --json records, with PASS/FAIL against the targets."""
    recs = [
        record("errors (exceptions, error boxes, reconnect warnings, ERROR logs, page errors)", len(res.errors),
               "count", target="= 0", ok=not res.errors),
        record("AppTest sessions that saw every job end as Succeeded", res.sessions - len(res.unseen),
               f"of {res.sessions}", target=f"= {res.sessions}", ok=not res.unseen and not res.not_succeeded,
               ratio=(res.sessions - len(res.unseen)) / max(1, res.sessions)),
        record("AppTest sessions that toasted each own job once",
               sum(1 for t, o in zip(res.toasts, res.own_jobs) if t == o), f"of {res.sessions}",
               target=f"= {res.sessions}", ok=res.toasts == res.own_jobs),
        record("threads after all sessions ended (baseline %d)" % res.threads_baseline, res.threads_after,
               "threads", target=f"≤ {res.threads_baseline}",
               ok=res.threads_after <= res.threads_baseline and not res.leftover_threads,
               ratio=res.threads_after / max(1, res.threads_baseline)),
        record("session threads at the peak (listener + monitor per session)", res.session_threads_peak,
               "threads", target=f"= {2 * res.sessions}", ok=res.session_threads_peak == 2 * res.sessions),
        record("Python heap growth per live session (tracemalloc)", round(res.mem_per_session / MiB, 2), "MiB",
               target=f"≤ {TARGET_MEM_MIB:g} MiB", ok=0 < res.mem_per_session <= TARGET_MEM_MIB * MiB),
        record("heap freed per session when the sessions ended (tracemalloc)",
               round(res.mem_freed_per_session / MiB, 2), "MiB"),
        record("heap retained after every session ended (shared: history, caches)",
               round(res.mem_retained / MiB, 2), "MiB"),
        record("RSS growth per session, opening them all", round(res.rss_per_session / MiB, 2), "MiB"),
        record("seconds to release every session (on_release)", round(res.release_s, 2), "s"),
        record(f"first round, {res.jobs} jobs pending: seconds per session's Queue page run",
               round(res.first_round_s / max(1, res.sessions), 2), "s"),
        record("median round: seconds per session's Queue page run", round(res.round_s / max(1, res.sessions), 2),
               "s"),
    ]
    if res.browsers:
        recs += [
            record("browsers that saw every job end as Succeeded", res.browsers - len(res.browser_unseen),
                   f"of {res.browsers}", target=f"= {res.browsers}", ok=not res.browser_unseen),
            record("streamlit run session threads at the peak (listener + monitor per browser)",
                   res.browser_session_threads_peak, "threads", target=f"= {2 * res.browsers}",
                   ok=res.browser_session_threads_peak == 2 * res.browsers),
            record("streamlit run threads after browsers closed, worker pools aside (baseline %s)"
                   % res.browser_own_threads_baseline, res.browser_own_threads_after, "threads",
                   target=f"≤ {res.browser_own_threads_baseline}",
                   ok=res.browser_own_threads_after is not None and not res.browser_leftover_threads
                   and res.browser_own_threads_after <= (res.browser_own_threads_baseline or 0)),
            record("streamlit run threads after browsers closed, all (baseline %s)" % res.browser_threads_baseline,
                   res.browser_threads_after, "threads"),
            record("streamlit run RSS peak growth per browser session",
                   round((res.browser_rss_per_session or 0) / MiB, 2), "MiB"),
        ]
    return recs


def print_report(res: LoadResult, recs: list[dict[str, Any]], url: str) -> None:
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"jobs: {res.jobs} (EmptyImage 16² → PreviewImage) on the ComfyUI double at {url}; "
          f"{res.sessions} AppTest sessions + {res.browsers} Chromium on the Queue page")
    print(f"run: {res.duration_s:.1f} s, {res.rounds} rounds (median {res.round_s:.2f} s), job pacing reached "
          f"{res.job_seconds:.2f} s/job; threads baseline {res.threads_baseline}, peak {res.threads_peak}, "
          f"after {res.threads_after} (back within {res.threads_wait_s:.1f} s of ending, release took "
          f"{res.release_s:.2f} s)")
    if res.browsers:
        print(f"streamlit run: threads baseline {res.browser_threads_baseline}, peak {res.browser_threads_peak}, "
              f"after {res.browser_threads_after}; of which worker pools (AnyIO, asyncio executor) "
              f"{res.browser_pool_threads[0] if res.browser_pool_threads else '?'} → "
              f"{res.browser_pool_threads[1] if res.browser_pool_threads else '?'}")
        if res.browser_leftover_threads:
            print("  streamlit run threads left behind:", ", ".join(res.browser_leftover_threads))
    width = max(len(r["metric"]) for r in recs)
    print(f"\n{'metric':<{width}}  {'measured':>12}  {'target':<10}  result")
    for r in recs:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        measured = f"{r['measured']} {r['unit']}".strip()
        print(f"{r['metric']:<{width}}  {measured:>12}  {r['target'] or '':<10}  {verdict}")
    for e in res.errors[:20]:
        print("  error:", e)
    if len(res.errors) > 20:
        print(f"  … and {len(res.errors) - 20} more errors")
    for n, missing in sorted(res.unseen.items())[:10]:
        print(f"  session {n} never saw {len(missing)} job(s) finish: {', '.join(m[:8] for m in missing[:5])}")
    for n, missing in sorted(res.browser_unseen.items()):
        print(f"  browser {n} never saw {len(missing)} job(s) finish: {', '.join(m[:8] for m in missing[:5])}")
    if res.leftover_threads:
        print("  threads left behind:", ", ".join(res.leftover_threads))
    failed = [r for r in recs if r["pass"] is False]
    print("\nALL PASS" if not failed else f"\n{len(failed)} FAIL")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=25, help="concurrent AppTest sessions")
    ap.add_argument("--browsers", type=int, default=2, help="real Chromium pages (0: none)")
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the heap measurement")
    ap.add_argument("--verbose", action="store_true", help="print every round")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (for run_all.py)")
    args = ap.parse_args(argv)
    # AppTest.switch_page outside a run: "missing ScriptRunContext" warnings, harmless here (a filter,
    # because Streamlit resets its loggers' levels)
    import streamlit.runtime.scriptrunner_utils.script_run_context as src

    logging.getLogger(src.__name__).addFilter(lambda rec: "missing ScriptRunContext" not in rec.getMessage())

    from tests.doubles.comfy import ComfyDouble

    work = Path(tempfile.mkdtemp(prefix="load-bench-"))
    for name in ("COMFYUI_TOKEN", "COMFY_CLOUD_API_KEY", "COMFY_CLOUD_URL", "COMFY_PARTNER_API_KEY"):
        os.environ.pop(name, None)
    os.environ["COMFYPANEL_DATA_DIR"] = str(work / "data")
    cwd = os.getcwd()
    os.chdir(work)  # no .streamlit/secrets.toml from the developer's checkout
    try:
        with ComfyDouble() as double:
            os.environ["COMFYUI_URL"] = double.url
            res = run_load(double, jobs=args.jobs, sessions=args.sessions, browsers=args.browsers,
                           trace_memory=not args.no_tracemalloc, work=work, verbose=args.verbose)
            url = double.url
    finally:
        os.chdir(cwd)
    recs = evaluate(res)
    if args.no_tracemalloc:
        recs = [r for r in recs if "heap" not in r["metric"]]
    print_report(res, recs, url)
    write_json(args.json, recs)
    return 0 if all(r["pass"] is not False for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
