"""``CloudDouble`` + ``StorageDouble``: a fake Comfy Cloud (v1 "compatible" API, docs §9).

``CloudDouble(api_key="test-key")`` listens on ``cloud.url``; every route is under ``/api`` and needs
the header ``X-API-Key: <key>`` (401 JSON otherwise; ``/api/system_stats`` is public). Prompts run
on the same engine as the local double (same validation envelopes, node emulation and WebSocket
messages), but with cloud semantics:

* raw job states (``GET /api/job/{id}/status``): submitted -> queued_waiting / queued_limited ->
  [preparing] -> executing -> success | error | cancelled (cancel_requested while an interrupt is
  pending); ``GET /api/jobs[/{id}]`` normalises them to pending / in_progress / completed / failed /
  cancelled;
* ``concurrency`` jobs run at once (1 / 3 / 5 by tier); ``POST /api/interrupt`` cancels ALL running
  jobs; ``POST /api/queue`` answers ``{deleted, cleared}``;
* WebSocket ``/ws?clientId=&token=KEY``: a bad token is refused with 401 before the upgrade; the
  clientId is IGNORED: every socket of the account receives every message (filter by prompt_id),
  plus ``notification`` messages (``cloud.notify``);
* uploads are content-addressed (``<sha256>.png``); ``GET /api/view`` answers 302 to the
  ``StorageDouble`` with ``?exp=...&sig=...``; with ``channel=`` it answers the PNG itself.

The ``StorageDouble`` is a second loopback server. It records a violation whenever a request carries
``X-API-Key`` or the key anywhere (headers, query, path); ``storage.violations`` lists them and
leaving ``with CloudDouble(...)`` raises AssertionError if there were any.

Shapes the docs do not pin down (error bodies, ``/api/job/{id}/status``, ``/api/jobs`` items, queue
positions, the mask ``metadata``) are educated guesses, marked "guess" below.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image, PngImagePlugin

from . import _engine as E
from ._base import BackgroundServer, trouble_middleware
from ._recordings import object_info_shared

PENDING_STATES = {"submitted", "queued_limited", "queued_waiting", "allocated", "preparing", "pending_execution"}
RUNNING_STATES = {"executing", "executed", "cancel_requested", "cancel_pending", "cancelling_preparing", "erroring"}
FAILED_STATES = {"error", "non_retryable_error", "lost"}
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_EDGE = 16384
MAX_PIXELS = 64 * 1024 * 1024
BILLING_STATES = ("ok", "no_credits", "inactive")


def normalise_status(raw: str) -> str:
    if raw in PENDING_STATES:
        return "pending"
    if raw in RUNNING_STATES:
        return "in_progress"
    if raw == "success":
        return "completed"
    if raw in FAILED_STATES:
        return "failed"
    if raw == "cancelled":
        return "cancelled"
    return "pending"


def _error(status: int, kind: str, message: str) -> web.Response:
    # guess: the v1 error body is not documented; same spirit as the local envelopes
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


# ============================================================================== storage


class StorageDouble(BackgroundServer):
    """Signed-URL object storage. Records a violation for any request that carries the API key."""

    _thread_name = "storage-double"

    def __init__(self, api_key: str, ttl: float = 300.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.ttl = ttl
        self._secret = os.urandom(16)
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self.violations: list[dict[str, str]] = []

    def put(self, data: bytes, filename: str, content_type: str) -> str:
        key = hashlib.sha256(data).hexdigest()[:32] + "/" + urllib.parse.quote(filename)
        with self._lock:
            self._objects[key] = (data, content_type)
        return key

    def signed_url(self, key: str, ttl: float | None = None) -> str:
        exp = int(time.time() + (self.ttl if ttl is None else ttl))
        sig = hmac.new(self._secret, f"{key}:{exp}".encode(), hashlib.sha256).hexdigest()
        return f"{self.url}/objects/{key}?exp={exp}&sig={sig}"

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._front_middleware, self._watch_middleware, trouble_middleware])
        app.router.add_get("/objects/{key:.+}", self.h_object)
        return app

    @web.middleware
    async def _watch_middleware(self, request: web.Request, handler):
        key = self.api_key
        where = []
        for name, value in request.headers.items():
            if name.lower() == "x-api-key":
                where.append("header X-API-Key")
            elif key and key in value:
                where.append(f"header {name}")
        raw = request.raw_path
        path, _, query = raw.partition("?")
        if key and (key in urllib.parse.unquote(query) or key in query):
            where.append("query")
        if key and (key in urllib.parse.unquote(path) or key in path):
            where.append("path")
        for w in where:
            self.violations.append({"method": request.method, "path": path, "where": w})
        return await handler(request)

    async def h_object(self, request: web.Request):
        key = request.match_info["key"]
        exp = request.rel_url.query.get("exp", "")
        sig = request.rel_url.query.get("sig", "")
        good = hmac.new(self._secret, f"{key}:{exp}".encode(), hashlib.sha256).hexdigest()
        if not exp.isdigit() or not hmac.compare_digest(sig, good):
            return web.Response(status=403, text="AccessDenied: bad signature", content_type="text/plain")
        if int(exp) < time.time():
            return web.Response(status=403, text="AccessDenied: request has expired", content_type="text/plain")
        with self._lock:
            found = self._objects.get(key)
        if found is None:
            return web.Response(status=404, text="NoSuchKey", content_type="text/plain")
        data, content_type = found
        return web.Response(body=data, content_type=content_type)


# ============================================================================== jobs


@dataclass
class CloudJob:
    prompt_id: str
    number: int
    prompt: dict
    extra_data: dict
    outputs_to_execute: list[str]
    create_time: int
    states: list[str] = field(default_factory=list)
    cancel: bool = False
    start_time: int | None = None
    end_time: int | None = None
    history: dict | None = None
    error: dict | None = None

    @property
    def state(self) -> str:
        return self.states[-1]

    def set(self, state: str) -> None:
        if not self.states or self.states[-1] != state:
            self.states.append(state)


class _CloudMessenger(E.Messenger):
    """clientId is ignored on cloud: every socket of the account receives every message."""

    def __init__(self, cloud: "CloudDouble", prompt_id: str) -> None:
        self.c = cloud
        self.prompt_id = prompt_id

    async def lifecycle(self, event, data):
        self.c._broadcast(event, data, self.prompt_id)

    async def interrupted(self, event, data):
        self.c._broadcast(event, data, self.prompt_id)

    async def progress(self, event, data):
        self.c._broadcast(event, data, self.prompt_id)

    async def progress_with_preview(self, progress, image, metadata):
        if image is None:
            self.c._broadcast("progress", progress, self.prompt_id)
            return
        self.c._outbox.put_nowait(("preview", (progress, E.preview_frame_type1(image),
                                               E.preview_frame_type4(image, metadata)), self.prompt_id))

    async def text_frame(self, node_id, text):
        self.c._outbox.put_nowait(("bytes", E.text_frame(node_id, text), self.prompt_id))


# ============================================================================== cloud


class CloudDouble(BackgroundServer):
    """A fake Comfy Cloud account. See the module docstring."""

    _thread_name = "cloud-double"

    def __init__(self, api_key: str = "test-key", *, concurrency: int = 1, version: str = "0.3.75") -> None:
        super().__init__()
        self.api_key = api_key
        self.concurrency = concurrency
        self.version = version
        self.billing_state = "ok"
        self.storage = StorageDouble(api_key)
        self.root: str | None = None
        self._scripts = E.ScriptBook()
        self._rng = random.Random()
        self._base_info = object_info_shared()
        self._jobs: dict[str, CloudJob] = {}
        self._pending: list[str] = []
        self._running: set[str] = set()
        self._history: dict[str, dict] = {}
        self._number = 0
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._socket_flags: dict[str, dict] = {}
        self._ws_requests: dict[web.WebSocketResponse, web.Request] = {}
        self._userdata: dict[str, bytes] = {}
        self._outbox: asyncio.Queue | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self.foreign_job_ids: set[str] = set()  # ids that belong to "another user" -> 403

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        if self.root is None:
            self.root = os.path.realpath(tempfile.mkdtemp(prefix="cloud-double-"))
            for sub in ("input", "output", "temp"):
                os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.storage.start()
        try:
            return super().start()
        except BaseException:
            self.storage.stop()
            raise

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.storage.stop()
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if self.storage.violations:
            message = f"storage saw the API key {len(self.storage.violations)} time(s): {self.storage.violations}"
            if exc is not None:
                raise AssertionError(message) from exc
            raise AssertionError(message)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    def _dir(self, kind: str) -> str:
        if self.root is None:
            raise RuntimeError("CloudDouble is not started")
        return os.path.join(self.root, kind)

    async def _on_startup(self) -> None:
        self._outbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._publisher())]
        self._tasks += [asyncio.ensure_future(self._worker()) for _ in range(max(1, self.concurrency))]

    async def _on_shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except BaseException:  # noqa: BLE001
                pass
        for ws, request in list(self._ws_requests.items()):
            if request.transport is not None:
                request.transport.abort()

    # ------------------------------------------------------------------ test controls
    def set_billing_state(self, state: str) -> None:
        """"ok", "no_credits" (POST /api/prompt -> 402) or "inactive" (every authenticated call -> 429)."""
        if state not in BILLING_STATES:
            raise ValueError(state)
        self.billing_state = state

    def fail_next(self, path: str, status: int = 503, body: str | bytes | None = None,
                  content_type: str | None = "application/json", times: int = 1, method: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """Like the local double's, but defaults to a 503 JSON error (``/api/prompt`` "service unavailable")."""
        if body is None:
            body = json.dumps({"error": {"type": "service_unavailable", "message": "Service unavailable"}})
        super().fail_next(path, status=status, body=body, content_type=content_type, times=times,
                          method=method, headers=headers)

    def script(self, match: Any = None, *, per_node_delay: float = 0.0, class_delays: dict | None = None,
               node_delays: dict | None = None, progress_steps: int | dict | None = None,
               preview_every_step: bool = False, fail_at_node: str | None = None,
               exception_type: str = "RuntimeError", exception_message: str = "Scripted failure",
               queue_delay: float = 0.0, times: int | None = None) -> E.Script:
        """Same as ``ComfyDouble.script`` plus ``queue_delay``: seconds a picked-up job spends in the
        raw state ``preparing`` before ``executing``."""
        return self._scripts.add(E.Script(
            match=match, per_node_delay=per_node_delay, class_delays=dict(class_delays or {}),
            node_delays=dict(node_delays or {}), progress_steps=progress_steps,
            preview_every_step=preview_every_step, fail_at_node=fail_at_node, exception_type=exception_type,
            exception_message=exception_message, times=times, queue_delay=queue_delay,
        ))

    def unscript(self, script: E.Script | None = None) -> None:
        if script is None:
            self._scripts.clear()
        else:
            self._scripts.remove(script)

    def notify(self, text: str) -> None:
        """Send a ``notification`` message ({"value": text}) to every socket."""
        self._call(lambda: self._broadcast("notification", {"value": text}, None))

    def send_raw_ws(self, data: str | bytes) -> None:
        self._call(lambda: self._outbox.put_nowait(("raw", data, None)))

    def drop_websockets(self) -> None:
        def drop():
            for ws, request in list(self._ws_requests.items()):
                if request.transport is not None:
                    request.transport.abort()
        self._call(drop)

    def job_states(self, prompt_id: str) -> list[str]:
        """Every raw state the job went through, in order."""
        return self._call(lambda: list(self._jobs[prompt_id].states))

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._call(lambda: not self._pending and not self._running and self._outbox.empty()):
                return
            time.sleep(0.01)
        raise TimeoutError("CloudDouble still busy")

    # ------------------------------------------------------------------ messages
    def _broadcast(self, event: str, data: Any, prompt_id: str | None) -> None:
        self._outbox.put_nowait(("json", {"type": event, "data": data}, prompt_id))

    def _status(self) -> None:
        self._broadcast("status", {"status": self._queue_info()}, None)

    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self._pending) + len(self._running)}}

    async def _publisher(self) -> None:
        while True:
            kind, payload, _prompt_id = await self._outbox.get()
            for sid, ws in list(self._sockets.items()):
                try:
                    if kind == "json":
                        await ws.send_json(payload)
                    elif kind == "bytes":
                        await ws.send_bytes(payload)
                    elif kind == "preview":
                        progress, type1, type4 = payload
                        flags = self._socket_flags.get(sid, {}).get("feature_flags", {})
                        if flags.get("supports_preview_metadata"):
                            await ws.send_bytes(type4)
                            await ws.send_json({"type": "progress", "data": progress})
                        else:
                            await ws.send_json({"type": "progress", "data": progress})
                            await ws.send_bytes(type1)
                    elif isinstance(payload, bytes):
                        await ws.send_bytes(payload)
                    else:
                        await ws.send_str(payload)
                except (ConnectionError, RuntimeError, OSError):
                    pass

    # ------------------------------------------------------------------ workers
    async def _worker(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            job = self._jobs[self._pending.pop(0)]
            self._running.add(job.prompt_id)
            for other in self._pending:
                self._jobs[other].set("queued_limited" if len(self._running) >= self.concurrency else "queued_waiting")
            try:
                await self._run(job)
            except Exception as exc:  # noqa: BLE001 - a bug in the double must not wedge the queue
                job.error = {"exception_type": type(exc).__name__, "exception_message": f"CloudDouble crashed: {exc!r}"}
                job.set("error")
            finally:
                self._running.discard(job.prompt_id)
                self._status()

    async def _run(self, job: CloudJob) -> None:
        script = self._scripts.resolve(job.prompt_id, job.prompt, job.extra_data)
        self._status()
        if script.queue_delay > 0:
            job.set("preparing")
            await asyncio.sleep(script.queue_delay)
        if job.cancel:
            job.set("cancelled")
            return
        job.set("executing")
        job.start_time = E.now_ms()
        run = E.PromptRun(
            prompt_id=job.prompt_id, prompt=job.prompt, extra_data=job.extra_data,
            outputs_to_execute=job.outputs_to_execute, catalog=self._catalog(), cache=E.NodeCache(),
            messenger=_CloudMessenger(self, job.prompt_id), script=script,
            dirs={"input": self._dir("input"), "output": self._dir("output"), "temp": self._dir("temp")},
            models_dir=lambda folder: os.path.join(self.root, "models", folder),
            interrupt_flag=lambda: job.cancel, is_changed=lambda n, node: self._rng.random(), rng=self._rng,
        )
        result = await run.run()
        job.end_time = E.now_ms()
        job.error = result.error
        entry = {
            "prompt": [job.number, job.prompt_id, job.prompt, job.extra_data, job.outputs_to_execute],
            "outputs": result.outputs,
            "status": {"status_str": result.status_str, "completed": result.completed, "messages": result.messages},
            "meta": result.meta,
        }
        job.history = entry
        self._history[job.prompt_id] = entry
        job.set({"success": "success", "error": "error", "interrupted": "cancelled"}[result.outcome])

    # ------------------------------------------------------------------ app
    def _catalog(self) -> E.NodeCatalog:
        def patch(class_type, entry):
            if class_type in ("LoadImage", "LoadImageMask"):
                entry = copy.deepcopy(entry)
                entry["input"]["required"]["image"][0] = sorted(os.listdir(self._dir("input")))
            return entry
        return E.NodeCatalog(self._base_info, patch, lambda name: os.path.isfile(os.path.join(self._dir("input"), name)))

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_UPLOAD_BYTES + 10 * 1024 * 1024,
            middlewares=[self._front_middleware, self._auth_middleware, trouble_middleware],
        )
        r = app.router
        r.add_get("/ws", self.h_ws)
        r.add_get("/api/system_stats", self.h_system_stats)
        r.add_get("/api/features", self.h_features)
        r.add_get("/api/user", self.h_user)
        r.add_get("/api/object_info", self.h_object_info)
        r.add_get("/api/prompt", self.h_get_prompt)
        r.add_post("/api/prompt", self.h_post_prompt)
        r.add_get("/api/job/{id}/status", self.h_job_status)
        r.add_get("/api/jobs", self.h_jobs)
        r.add_get("/api/jobs/{id}", self.h_job)
        r.add_get("/api/queue", self.h_queue)
        r.add_post("/api/queue", self.h_post_queue)
        r.add_post("/api/interrupt", self.h_interrupt)
        r.add_get("/api/history_v2", self.h_history_v2)
        r.add_get("/api/history_v2/{id}", self.h_history_v2_id)
        r.add_post("/api/history", self.h_post_history)
        r.add_post("/api/upload/image", self.h_upload_image)
        r.add_post("/api/upload/mask", self.h_upload_mask)
        r.add_get("/api/view", self.h_view)
        r.add_get("/api/userdata", self.h_userdata_list)
        r.add_get("/api/userdata/{file}", self.h_userdata_get)
        r.add_post("/api/userdata/{file}", self.h_userdata_post)
        r.add_delete("/api/userdata/{file}", self.h_userdata_delete)
        r.add_get("/api/experiment/models", self.h_experiment_models)
        r.add_get("/api/experiment/models/{folder}", self.h_experiment_models_folder)
        r.add_get("/api/global_subgraphs", self.h_empty_object)
        r.add_route("*", "/{tail:.*}", self.h_not_found)
        return app

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler):
        path = request.path
        if path == "/ws":
            token = request.rel_url.query.get("token") or request.headers.get("X-API-Key")
            if token != self.api_key:
                return _error(401, "unauthorized", "Invalid or missing API key")
            return await handler(request)
        if path == "/api/system_stats":
            return await handler(request)
        if request.headers.get("X-API-Key") != self.api_key:
            return _error(401, "unauthorized", "Invalid or missing API key")
        if self.billing_state == "inactive":
            return _error(429, "inactive_subscription", "Your subscription is inactive")
        return await handler(request)

    async def h_not_found(self, request):
        return _error(404, "not_found", "Not Found")

    async def h_empty_object(self, request):
        return web.json_response({})

    # ------------------------------------------------------------------ websocket
    async def h_ws(self, request: web.Request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId") or uuid.uuid4().hex
        key = f"{sid}#{uuid.uuid4().hex[:6]}"  # several sockets may share a clientId: all get everything
        self._sockets[key] = ws
        self._socket_flags[key] = {"feature_flags": {}}
        self._ws_requests[ws] = request
        try:
            await ws.send_json({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                        if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                            self._socket_flags[key]["feature_flags"] = data.get("data", {})
                            await ws.send_json({"type": "feature_flags", "data": self._features()})
                        first = False
                    except (ValueError, ConnectionError, RuntimeError):
                        pass
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self._sockets.pop(key, None)
            self._socket_flags.pop(key, None)
            self._ws_requests.pop(ws, None)
        return ws

    # ------------------------------------------------------------------ simple routes
    def _features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_BYTES}

    async def h_features(self, request):
        return web.json_response(self._features())

    async def h_system_stats(self, request):
        return web.json_response({
            "system": {
                "os": "posix", "ram_total": 68719476736, "ram_free": 60000000000,
                "comfyui_version": self.version, "required_frontend_version": "1.32.9",
                "python_version": "3.11.7", "pytorch_version": "2.8.0+cu128", "embedded_python": False,
                "argv": ["main.py"],
            },
            "devices": [{"name": "cuda:0 NVIDIA L40S", "type": "cuda", "index": 0,
                         "vram_total": 48305799168, "vram_free": 47000000000,
                         "torch_vram_total": 0, "torch_vram_free": 0}],
        })

    async def h_user(self, request):
        # guess: minimal account record
        return web.json_response({"id": "user-test", "status": "active" if self.billing_state != "inactive" else "inactive"})

    async def h_object_info(self, request):
        out = dict(self._base_info)
        catalog = self._catalog()
        out["LoadImage"] = catalog.get("LoadImage")
        return web.json_response(out)

    async def h_get_prompt(self, request):
        return web.json_response(self._queue_info())

    async def h_experiment_models(self, request):
        return web.json_response([])

    async def h_experiment_models_folder(self, request):
        return web.json_response([])

    # ------------------------------------------------------------------ prompt
    async def h_post_prompt(self, request: web.Request):
        if self.billing_state == "no_credits":
            return _error(402, "insufficient_credits", "Insufficient credits")
        try:
            json_data = await request.json()
        except ValueError:
            return _error(400, "invalid_request", "The request body is not valid JSON")
        if not isinstance(json_data, dict) or "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = json_data.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        else:
            try:
                if not isinstance(prompt_id, str) or str(uuid.UUID(prompt_id)) != prompt_id:
                    raise ValueError(prompt_id)
            except ValueError:
                error = {"type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID",
                         "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form",
                         "extra_info": {}}
                return web.json_response({"error": error, "node_errors": {}}, status=400)
            if prompt_id in self._jobs:
                error = {"type": "duplicate_prompt_id", "message": "prompt_id already exists", "details": prompt_id,
                         "extra_info": {}}
                return web.json_response({"error": error, "node_errors": {}}, status=409)
        if not isinstance(prompt, dict):
            return web.json_response({"error": {"type": "invalid_prompt", "message": "prompt must be an object",
                                                "details": "", "extra_info": {}}, "node_errors": {}}, status=400)
        valid = E.validate_prompt(prompt, json_data.get("partial_execution_targets"), self._catalog())
        if not valid[0]:
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)
        extra_data = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        for key in ("api_key_comfy_org", "auth_token_comfy_org"):
            extra_data.pop(key, None)
        extra_data["create_time"] = E.now_ms()
        number = self._number
        self._number += 1
        job = CloudJob(prompt_id=prompt_id, number=number, prompt=prompt, extra_data=extra_data,
                       outputs_to_execute=valid[2], create_time=extra_data["create_time"])
        job.set("submitted")
        self._jobs[prompt_id] = job
        self._pending.append(prompt_id)
        job.set("queued_limited" if len(self._running) >= self.concurrency else "queued_waiting")
        self._status()
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})

    # ------------------------------------------------------------------ jobs
    def _lookup(self, job_id: str) -> CloudJob | web.Response:
        if job_id in self.foreign_job_ids:
            return _error(403, "forbidden", "This job belongs to another user")
        job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "not_found", "Job not found")
        return job

    async def h_job_status(self, request):
        job = self._lookup(request.match_info["id"])
        if isinstance(job, web.Response):
            return job
        # guess: {"id", "status"} with the RAW state
        return web.json_response({"id": job.prompt_id, "status": job.state})

    def _job_summary(self, job: CloudJob, detail: bool = False) -> dict:
        outputs = (job.history or {}).get("outputs", {})
        count = 0
        preview = None
        for node_id, node_outputs in outputs.items():
            for media, items in (node_outputs or {}).items():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict):
                        count += 1
                        if preview is None:
                            preview = {**item, "nodeId": node_id, "mediaType": media}
        workflow_id = ((job.extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")
        out = {k: v for k, v in {
            "id": job.prompt_id, "status": normalise_status(job.state), "create_time": job.create_time,
            "execution_start_time": job.start_time, "execution_end_time": job.end_time,
            "outputs_count": count, "preview_output": preview, "workflow_id": workflow_id,
        }.items() if v is not None}
        if detail:
            out["outputs"] = outputs
            out["execution_status"] = (job.history or {}).get("status")
            out["execution_error"] = job.error
            out["workflow"] = {"prompt": job.prompt, "extra_data": job.extra_data}
        return out

    async def h_jobs(self, request):
        query = request.rel_url.query
        statuses = ["pending", "in_progress", "completed", "failed", "cancelled"]
        wanted = statuses
        if query.get("status"):
            wanted = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
            bad = [s for s in wanted if s not in statuses]
            if bad:
                return _error(400, "invalid_request", f"Invalid status value(s): {', '.join(bad)}")
        sort_by = query.get("sort_by", "create_time")
        sort_order = query.get("sort_order", "desc")
        if sort_by not in ("create_time", "execution_time"):
            return _error(400, "invalid_request", "sort_by must be 'create_time' or 'execution_time'")
        if sort_order not in ("asc", "desc"):
            return _error(400, "invalid_request", "sort_order must be 'asc' or 'desc'")
        try:
            limit = int(query.get("limit", "100"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            return _error(400, "invalid_request", "limit and offset must be integers")
        if not 1 <= limit <= 1000 or offset < 0:
            return _error(400, "invalid_request", "limit must be 1-1000 and offset >= 0")
        output_type = query.get("output_type")
        jobs = [self._job_summary(j) for j in self._jobs.values() if normalise_status(j.state) in wanted]
        if query.get("workflow_id"):
            jobs = [j for j in jobs if j.get("workflow_id") == query["workflow_id"]]
        if output_type:
            media = {"image": "images", "video": "video", "audio": "audio"}.get(output_type, output_type)
            jobs = [j for j in jobs if (j.get("preview_output") or {}).get("mediaType") == media]
        if sort_by == "execution_time":
            def key(j):
                s, e = j.get("execution_start_time"), j.get("execution_end_time")
                return e - s if s and e else 0
        else:
            def key(j):
                return j.get("create_time", 0)
        jobs.sort(key=key, reverse=(sort_order == "desc"))
        total = len(jobs)
        page = jobs[offset:offset + limit]
        return web.json_response({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                                               "has_more": offset + len(page) < total}})

    async def h_job(self, request):
        job = self._lookup(request.match_info["id"])
        if isinstance(job, web.Response):
            return job
        return web.json_response(self._job_summary(job, detail=True))

    async def h_queue(self, request):
        # guess: positions number running jobs first, then pending ones, from 0
        def item(position: int, job: CloudJob) -> list:
            return [position, job.prompt_id, job.prompt, job.outputs_to_execute, {"create_time": job.create_time}]
        running = [self._jobs[i] for i in self._jobs if i in self._running]
        pending = [self._jobs[i] for i in self._pending]
        return web.json_response({
            "queue_running": [item(n, j) for n, j in enumerate(running)],
            "queue_pending": [item(len(running) + n, j) for n, j in enumerate(pending)],
        })

    async def h_post_queue(self, request):
        json_data = await request.json()
        deleted: list[str] = []
        cleared = 0
        if json_data.get("clear"):
            for job_id in self._pending:
                self._jobs[job_id].set("cancelled")
            cleared = len(self._pending)
            self._pending = []
        for job_id in json_data.get("delete") or []:
            if job_id in self._pending:
                self._pending.remove(job_id)
                self._jobs[job_id].set("cancelled")
                deleted.append(job_id)
        if deleted or cleared:
            self._status()
        # guess: {"deleted": [ids], "cleared": count}
        return web.json_response({"deleted": deleted, "cleared": cleared})

    async def h_interrupt(self, request):
        for job_id in list(self._running):
            job = self._jobs[job_id]
            job.cancel = True
            job.set("cancel_requested")
        return web.Response(status=200)

    async def h_history_v2(self, request):
        query = request.rel_url.query
        items = [{"prompt_id": pid, **entry} for pid, entry in self._history.items()]
        if "offset" in query:
            items = items[int(query["offset"]):]
        if "max_items" in query:
            items = items[: int(query["max_items"])]
        return web.json_response({"history": items})

    async def h_history_v2_id(self, request):
        pid = request.match_info["id"]
        if pid in self._history:
            return web.json_response({pid: self._history[pid]})
        return web.json_response({})

    async def h_post_history(self, request):
        json_data = await request.json()
        if json_data.get("clear"):
            self._history = {}
        for pid in json_data.get("delete") or []:
            self._history.pop(pid, None)
        return web.Response(status=200)

    # ------------------------------------------------------------------ files
    def _check_image(self, data: bytes) -> str | None:
        if len(data) > MAX_UPLOAD_BYTES:
            return "File too large (max 50 MB)"
        try:
            with Image.open(BytesIO(data)) as img:
                w, h = img.size
        except Exception:  # noqa: BLE001
            return "Invalid image file"
        if w > MAX_EDGE or h > MAX_EDGE:
            return f"Image dimensions exceed {MAX_EDGE}px"
        if w * h > MAX_PIXELS:
            return "Image exceeds 64 megapixels"
        return None

    def _store_input(self, data: bytes, filename: str) -> str:
        ext = os.path.splitext(filename)[1].lower() or ".png"
        name = hashlib.sha256(data).hexdigest() + ext
        path = os.path.join(self._dir("input"), name)
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(data)
        return name

    async def h_upload_image(self, request):
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file"):
            return _error(400, "invalid_request", "No image provided")
        data = image.file.read()
        problem = self._check_image(data)
        if problem:
            return _error(400, "invalid_image", problem)
        name = self._store_input(data, image.filename or "upload.png")
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    async def h_upload_mask(self, request):
        post = await request.post()
        image = post.get("image")
        if image is None or not hasattr(image, "file"):
            return _error(400, "invalid_request", "No image provided")
        data = image.file.read()
        problem = self._check_image(data)
        if problem:
            return _error(400, "invalid_image", problem)
        try:
            original_ref = json.loads(post.get("original_ref") or "null")
        except ValueError:
            return _error(400, "invalid_request", "original_ref must be JSON")
        if not isinstance(original_ref, dict) or not original_ref.get("filename"):
            return _error(400, "invalid_request", "original_ref is required")
        original = os.path.join(self._dir("input"), os.path.basename(str(original_ref["filename"]).split(" [")[0]))
        if os.path.isfile(original):
            with Image.open(original) as base:
                info = PngImagePlugin.PngInfo()
                for key, value in getattr(base, "text", {}).items():
                    info.add_text(key, value)
                merged = base.convert("RGBA")
                merged.putalpha(Image.open(BytesIO(data)).convert("RGBA").getchannel("A"))
                buffer = BytesIO()
                merged.save(buffer, format="PNG", pnginfo=info)
                data = buffer.getvalue()
        name = self._store_input(data, "mask.png")
        # guess: what the cloud puts in "metadata" is not documented
        return web.json_response({"name": name, "subfolder": "", "type": "input",
                                  "metadata": {"original_ref": original_ref, "is_mask": True}})

    def _find_file(self, kind: str, filename: str) -> str | None:
        base = self._dir(kind) if kind in ("input", "output", "temp") else None
        if base is None or not filename or "/" in filename or ".." in filename:
            return None
        for root, _dirs, files in os.walk(base):
            if filename in files:
                return os.path.join(root, filename)
        return None

    async def h_view(self, request):
        query = request.rel_url.query
        path = self._find_file(query.get("type", "output"), query.get("filename", ""))  # subfolder ignored
        if path is None:
            return _error(404, "not_found", "File not found")
        channel = query.get("channel")
        if channel:
            with Image.open(path) as img:
                if channel == "rgb":
                    out = img.convert("RGB")
                elif channel == "a":
                    alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
                    out = Image.new("RGBA", img.size)
                    out.putalpha(alpha)
                else:
                    out = img.convert("RGBA")
                buffer = BytesIO()
                out.save(buffer, format="PNG")
            return web.Response(body=buffer.getvalue(), content_type="image/png")
        with open(path, "rb") as fh:
            data = fh.read()
        import mimetypes
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        key = self.storage.put(data, os.path.basename(path), content_type)
        raise web.HTTPFound(self.storage.signed_url(key))

    # ------------------------------------------------------------------ userdata
    async def h_userdata_list(self, request):
        directory = request.rel_url.query.get("dir", "")
        if not directory.endswith("/"):
            # guess: the docs only say the cloud needs the trailing "/"
            return _error(400, "invalid_request", "dir must end with '/'")
        names = sorted(k[len(directory):] for k in self._userdata if k.startswith(directory))
        return web.json_response(names)

    async def h_userdata_get(self, request):
        data = self._userdata.get(request.match_info["file"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/json")

    async def h_userdata_post(self, request):
        file = request.match_info["file"]
        if request.query.get("overwrite", "true") == "false" and file in self._userdata:
            return web.Response(status=409, text="File already exists")
        self._userdata[file] = await request.read()
        return web.json_response(file)

    async def h_userdata_delete(self, request):
        if self._userdata.pop(request.match_info["file"], None) is None:
            return web.Response(status=404)
        return web.Response(status=204)


__all__ = ["CloudDouble", "StorageDouble", "normalise_status"]
