"""Shared plumbing of the test doubles: an aiohttp app on a free loopback port in its own thread.

Each double owns one thread with one event loop. Everything that touches the double's state runs on
that loop; the public methods called from test threads hand work over with ``_call``. Fault
injection (slow answers, canned failures, HTML instead of JSON) and the request log live here so
that both doubles behave the same way.
"""

from __future__ import annotations

import asyncio
import fnmatch
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web

HTML_PAGE = (
    "<!doctype html><html><head><title>Sign in</title></head>"
    "<body><h1>Please sign in</h1><p>This page was served instead of the API answer.</p></body></html>"
)
TROUBLE_500 = "500 Internal Server Error\n\nServer got itself in trouble"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the double saw it (``path`` keeps its percent-encoding)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class _FailRule:
    pattern: str
    status: int
    body: str | bytes
    content_type: str | None
    times: int
    method: str | None
    headers: dict[str, str] = field(default_factory=dict)


def _strip_api(path: str) -> str:
    if path == "/api":
        return "/"
    if path.startswith("/api/"):
        return path[4:]
    return path


def _path_matches(pattern: str, path: str) -> bool:
    """Patterns are fnmatch globs; ``/api`` prefixes are ignored on both sides."""
    return fnmatch.fnmatchcase(_strip_api(path), _strip_api(pattern))


class BackgroundServer:
    """Base class: subclasses build the app in ``_build_app`` and may hook start-up/shut-down."""

    _thread_name = "double"
    _shutdown_timeout = 1.0

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None
        self._stop_event: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self.port: int | None = None
        self.requests: list[RequestRecord] = []
        self._faults_lock = threading.Lock()
        self._fail_rules: list[_FailRule] = []
        self._slow: tuple[float, tuple[str, ...] | None] = (0.0, None)
        self._html_instead = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        """Start the server thread; returns ``self`` once the port accepts connections."""
        if self.running:
            return self
        ready = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name=self._thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError(f"{type(self).__name__} did not start within 15 s")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._start_error
        return self

    def stop(self) -> None:
        """Close every connection, stop the loop and join the thread (idempotent)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and thread.is_alive() and self._stop_event is not None:
            loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(15)
        if thread.is_alive():  # pragma: no cover - would mean a hung handler
            raise RuntimeError(f"{type(self).__name__} thread did not stop")
        self._thread = None
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                self._start_error = exc
                ready.set()
                return
            ready.set()
            loop.run_until_complete(self._stop_event.wait())
            loop.run_until_complete(self._astop())
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _astart(self) -> None:
        self._stop_event = asyncio.Event()
        app = self._build_app()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await self._runner.setup()
        await self._listen(self.port or 0)
        await self._on_startup()

    async def _listen(self, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def _astop(self) -> None:
        try:
            await self._on_shutdown()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None

    async def _on_startup(self) -> None:
        """Hook: start background tasks."""

    async def _on_shutdown(self) -> None:
        """Hook: close websockets, cancel background tasks."""

    def _build_app(self) -> web.Application:  # pragma: no cover - abstract
        raise NotImplementedError

    def _call(self, fn: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 15) -> Any:
        """Run ``fn`` on the server loop (awaiting it if it is a coroutine function) and return its result."""
        loop = self._loop
        if loop is None or not self.running:
            raise RuntimeError(f"{type(self).__name__} is not running")

        async def runner():
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), loop).result(timeout)

    # ------------------------------------------------------------------ faults
    def fail_next(
        self,
        path: str,
        status: int = 500,
        body: str | bytes | None = None,
        content_type: str | None = "text/plain",
        times: int = 1,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path matches ``path`` with a canned response.

        ``path`` is an fnmatch glob (``/history/*``); an ``/api`` prefix is ignored on both sides, so
        ``fail_next("/prompt")`` hits ``/prompt`` and ``/api/prompt``. The default body is ComfyUI's
        own 500 text. ``content_type=None`` sends no Content-Type.
        """
        if body is None:
            body = TROUBLE_500 if status == 500 else ""
        with self._faults_lock:
            self._fail_rules.append(
                _FailRule(path, status, body, content_type, times, method.upper() if method else None, dict(headers or {}))
            )

    def set_slow(self, seconds: float, paths: Iterable[str] | None = None) -> None:
        """Delay every HTTP answer (or those whose path matches one of ``paths``) by ``seconds``; 0 turns it off."""
        with self._faults_lock:
            self._slow = (float(seconds), tuple(paths) if paths is not None else None)

    def serve_html_instead(self, enabled: bool = True) -> None:
        """While enabled, every JSON answer is replaced by ``200 text/html`` (a proxy login page)."""
        self._html_instead = enabled

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._fail_rules.clear()
            self._slow = (0.0, None)
        self._html_instead = False

    def clear_requests(self) -> None:
        self.requests.clear()

    def _take_fail_rule(self, request: web.Request) -> _FailRule | None:
        with self._faults_lock:
            for rule in self._fail_rules:
                if rule.method and rule.method != request.method:
                    continue
                if _path_matches(rule.pattern, request.path):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._fail_rules.remove(rule)
                    return rule
        return None

    def _slow_delay(self, request: web.Request) -> float:
        with self._faults_lock:
            seconds, paths = self._slow
        if seconds <= 0:
            return 0.0
        if paths is None or any(_path_matches(p, request.path) for p in paths):
            return seconds
        return 0.0

    def _record(self, request: web.Request) -> None:
        self.requests.append(
            RequestRecord(
                method=request.method,
                path=request.raw_path.split("?", 1)[0],
                query=dict(request.rel_url.query),
                headers=dict(request.headers),
            )
        )

    @web.middleware
    async def _front_middleware(self, request: web.Request, handler):
        """Request log + injected faults. Always the outermost middleware."""
        self._record(request)
        delay = self._slow_delay(request)
        if delay:
            await asyncio.sleep(delay)
        rule = self._take_fail_rule(request)
        if rule is not None:
            kwargs: dict[str, Any] = {"status": rule.status, "headers": rule.headers}
            if isinstance(rule.body, bytes):
                kwargs["body"] = rule.body
            else:
                kwargs["text"] = rule.body
            response = web.Response(**kwargs)
            if rule.content_type is None:
                response.headers.pop("Content-Type", None)
            else:
                response.content_type = rule.content_type.split(";")[0]
            return response
        response = await handler(request)
        if self._html_instead and isinstance(response, web.Response) and response.content_type == "application/json":
            return web.Response(status=200, text=HTML_PAGE, content_type="text/html")
        return response


@web.middleware
async def trouble_middleware(request: web.Request, handler):
    """Unhandled handler exceptions -> ComfyUI's (aiohttp's) plain-text 500, without log noise."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - that is the point
        return text_500()


def json_error(status: int, payload: Any) -> web.Response:
    return web.json_response(payload, status=status)


def text_500() -> web.Response:
    """ComfyUI's answer to an unhandled handler exception."""
    return web.Response(status=500, text=TROUBLE_500, content_type="text/plain")
