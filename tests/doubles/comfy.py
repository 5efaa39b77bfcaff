"""``ComfyDouble``: a fake local ComfyUI server (0.3.75 by default) for tests.

Start it as a context manager (``with ComfyDouble() as comfy: ...``) or with ``start()``/``stop()``.
It listens on ``comfy.url`` (``http://127.0.0.1:PORT``) and answers the routes of the real server with
the status codes, content types, shapes and quirks of ``shared/recordings`` (every route also under
``/api``, except ``/internal/*``). Prompts really run: one worker executes them in ComfyUI's node
order, emits the recorded WebSocket sequence and writes real PNG files into a temp dir the double
owns (``comfy.input_dir``, ``output_dir``, ``temp_dir``).

Test controls, all callable from the test thread:

* ``script(...)``: how long nodes take, how many progress ticks they report, which node fails;
* ``drop_websockets()``, ``drop_websockets_at(prompt_id, after_messages=N)``, ``restart()``,
  ``set_slow()``, ``fail_next()``, ``serve_html_instead()``, ``send_raw_ws()``;
* ``requests`` (every request seen), ``wait_idle()``, ``add_model()``, ``history()``.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime as _dt
import hashlib
import heapq
import json
import mimetypes
import os
import random
import re
import shutil
import tempfile
import time
import urllib.parse
import uuid
from io import BytesIO
from typing import Any, Callable

from aiohttp import WSMsgType, web
from PIL import Image, PngImagePlugin

from . import _engine as E
from ._base import BackgroundServer, trouble_middleware
from ._recordings import object_info_shared

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000
MAX_UPLOAD_SIZE = 100 * 1024 * 1024

MODEL_FOLDER_KEYS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models",
    "latent_upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]
# folder key -> directories (relative to the double's root), as folder_paths has them on 0.3.75
EXTRA_FOLDER_PATHS = {
    "checkpoints": ["models/checkpoints", "output/checkpoints"],
    "loras": ["models/loras", "output/loras"],
    "vae": ["models/vae", "output/vae"],
    "text_encoders": ["models/text_encoders", "models/clip", "output/clip"],
    "diffusion_models": ["models/unet", "models/diffusion_models", "output/diffusion_models"],
    "controlnet": ["models/controlnet", "models/t2i_adapter"],
    "custom_nodes": ["custom_nodes"],
}
TINY_UPSCALE_MODEL = "tiny_compact_x1.safetensors"
TINY_UPSCALE_METADATA = {
    "modelspec.architecture": "Compact",
    "num_conv": "4",
    "num_feat": "32",
    "modelspec.title": "tiny random Compact (test fixture)",
}
DEFAULT_MODELS = {"upscale_models": {TINY_UPSCALE_MODEL: TINY_UPSCALE_METADATA}}

CORE_EXTENSIONS = [
    "/extensions/core/groupNode.js",
    "/extensions/core/maskEditorOld.js",
    "/extensions/core/clipspace.js",
    "/extensions/core/widgetInputs.js",
    "/extensions/core/groupNodeManage.js",
]

INDEX_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="UTF-8"><title>ComfyUI</title></head>'
    "<body><div id=\"vue-app\"></div><!-- ComfyDouble --></body></html>"
)

STARTUP_LOG = [
    "Checkpoint files will always be loaded safely.\n",
    "Total VRAM 24106 MB, total RAM 24106 MB\n",
    "pytorch version: 2.13.0+cpu\n",
    "Set vram state to: DISABLED\n",
    "Device: cpu\n",
    "Python version: 3.11.7\n",
    "ComfyUI version: {version}\n",
    "Starting server\n",
    "\n",
    "To see the GUI go to: http://127.0.0.1:{port}\n",
]


def _example_png() -> bytes:
    """A 768x768 RGB gradient standing in for ComfyUI's ``input/example.png``."""
    global _EXAMPLE_PNG
    if _EXAMPLE_PNG is None:
        gradient = Image.linear_gradient("L").resize((768, 768))
        image = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), Image.new("L", (768, 768), 96)))
        buffer = BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        _EXAMPLE_PNG = buffer.getvalue()
    return _EXAMPLE_PNG


_EXAMPLE_PNG: bytes | None = None


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in ("localhost",):
        return True
    return host.startswith("127.") or host == "::1"


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class _LocalMessenger(E.Messenger):
    """Targets of ComfyUI 0.3.75: lifecycle to the submitting client only, progress to it or to everyone."""

    def __init__(self, double: "ComfyDouble", client_id: str | None, prompt_id: str) -> None:
        self.d = double
        self.client_id = client_id
        self.prompt_id = prompt_id

    async def lifecycle(self, event: str, data: dict) -> None:
        if self.client_id is not None:
            self.d._emit(event, data, self.client_id, self.prompt_id)

    async def interrupted(self, event: str, data: dict) -> None:
        self.d._emit(event, data, self.client_id, self.prompt_id)

    async def progress(self, event: str, data: dict) -> None:
        self.d._emit(event, data, self.client_id, self.prompt_id)

    async def progress_with_preview(self, progress: dict, image, metadata: dict) -> None:
        sid = self.client_id
        if image is None:
            self.d._emit("progress", progress, sid, self.prompt_id)
            return
        supports = sid is not None and self.d._supports_metadata(sid)
        if supports:
            self.d._emit_bytes(E.preview_frame_type4(image, metadata), sid, self.prompt_id)
        self.d._emit("progress", progress, sid, self.prompt_id)
        if not supports:
            self.d._emit_bytes(E.preview_frame_type1(image), sid, self.prompt_id)

    async def text_frame(self, node_id: str, text: str) -> None:
        self.d._emit_bytes(E.text_frame(node_id, text), None, self.prompt_id)

    def on_executing(self, node_id: str | None) -> None:
        if self.client_id is not None:  # only then does a reconnecting client get the replay
            self.d._last_node_id = node_id


class ComfyDouble(BackgroundServer):
    """A fake ComfyUI. See the module docstring; every public method is safe to call from tests."""

    _thread_name = "comfy-double"

    def __init__(
        self,
        version: str = "0.3.75",
        jobs_api: bool = False,
        token: str | None = None,
        *,
        models: dict[str, dict[str, dict[str, str] | None]] | None = None,
        keep_files: bool = False,
    ) -> None:
        """
        version:   reported by /system_stats; >= 0.25.0 also enables UUID-only ``prompt_id`` (400
                   ``invalid_prompt_id``) and duplicate ids -> 409.
        jobs_api:  adds GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/cancel, POST /api/jobs/cancel.
        token:     if set, every request without ``Authorization: Bearer <token>`` gets 401 (a reverse
                   proxy in front of ComfyUI; the real server has no auth).
        models:    ``{folder: {filename: metadata-or-None}}`` written as fake .safetensors files at start.
                   Default: the tiny upscale fixture of docs §12.4 (``models={}`` for none).
        keep_files: keep the temp dir after ``stop()`` (it is deleted by default).
        """
        super().__init__()
        self.version = version
        self.jobs_api = jobs_api
        self.token = token
        self._models_seed = DEFAULT_MODELS if models is None else models
        self._keep_files = keep_files
        self.root: str | None = None
        self._scripts = E.ScriptBook()
        self._rng = random.Random()
        self._base_info = object_info_shared()
        self._reset_state()
        self._settings: dict[str, Any] = {}
        self._users: dict[str, str] = {"default": "default"}
        self._logs: collections.deque = collections.deque(maxlen=300)
        self._log_subscribers: dict[str, bool] = {}
        self._drop_at: tuple[str | None, int] | None = None
        self._worker_task: asyncio.Task | None = None
        self._publisher_task: asyncio.Task | None = None
        self._outbox: asyncio.Queue | None = None
        self._wake: asyncio.Event | None = None
        self._ws_requests: dict[web.WebSocketResponse, web.Request] = {}

    def _reset_state(self) -> None:
        self.number = 0
        self._queue: list[tuple] = []
        self._running: dict[int, tuple] = {}
        self._task_counter = 0
        self._history: dict[str, dict] = {}
        self._cache = E.NodeCache()
        self._flags: dict[str, Any] = {}
        self._interrupt = False
        self._current_client: str | None = None
        self._current_prompt: str | None = None
        self._last_node_id: str | None = None
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._socket_flags: dict[str, dict] = {}

    # ================================================================== public helpers
    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    @property
    def input_dir(self) -> str:
        return self._dir("input")

    @property
    def output_dir(self) -> str:
        return self._dir("output")

    @property
    def temp_dir(self) -> str:
        return self._dir("temp")

    @property
    def user_dir(self) -> str:
        return self._dir("user", "default")

    def models_dir(self, folder: str) -> str:
        """The first (main) directory of a model folder key, e.g. ``models/upscale_models``."""
        return self.folder_paths(folder)[0]

    def folder_paths(self, folder: str) -> list[str]:
        """Every directory of a folder key (what /internal/folder_paths reports)."""
        relative = EXTRA_FOLDER_PATHS.get(folder, [f"models/{folder}"])
        return [self._dir(*r.split("/")) for r in relative]

    def _list_models(self, folder: str) -> list[str]:
        found: list[str] = []
        for directory in self.folder_paths(folder):
            for name in E.list_model_files(directory):
                if name not in found:
                    found.append(name)
        return sorted(found)

    def _dir(self, *parts: str) -> str:
        if self.root is None:
            raise RuntimeError("ComfyDouble is not started")
        return os.path.join(self.root, *parts)

    def start(self):
        if self.root is None:
            self.root = os.path.realpath(tempfile.mkdtemp(prefix="comfy-double-"))
            self._create_tree()
        return super().start()

    def stop(self) -> None:
        super().stop()
        if self.root is not None and not self._keep_files:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _create_tree(self) -> None:
        for sub in ("input", "output", "temp", os.path.join("user", "default")):
            os.makedirs(self._dir(sub), exist_ok=True)
        for key in MODEL_FOLDER_KEYS:
            os.makedirs(self.models_dir(key), exist_ok=True)
        with open(os.path.join(self.input_dir, "example.png"), "wb") as fh:
            fh.write(_example_png())
        open(os.path.join(self.output_dir, "_output_images_will_be_put_here"), "w").close()
        with open(os.path.join(self.models_dir("custom_nodes"), "example_node.py.example"), "w") as fh:
            fh.write("# example custom node\n")
        with open(os.path.join(self.models_dir("custom_nodes"), "websocket_image_save.py"), "w") as fh:
            fh.write("# SaveImageWebsocket\n")
        for folder, files in self._models_seed.items():
            for name, metadata in files.items():
                self.add_model(folder, name, metadata)

    def add_model(self, folder: str, name: str, metadata: dict[str, str] | None = None) -> str:
        """Write a fake model file (a metadata-only .safetensors) so that lists and combos show it."""
        path = os.path.join(self.models_dir(folder), name)
        E.write_fake_safetensors(path, metadata)
        return path

    def remove_model(self, folder: str, name: str) -> None:
        os.remove(os.path.join(self.models_dir(folder), name))

    def script(
        self,
        match: Any = None,
        *,
        per_node_delay: float = 0.0,
        class_delays: dict[str, float] | None = None,
        node_delays: dict[str, float] | None = None,
        progress_steps: int | dict[str, int] | None = None,
        preview_every_step: bool = False,
        fail_at_node: str | None = None,
        exception_type: str = "RuntimeError",
        exception_message: str = "Scripted failure",
        times: int | None = None,
    ) -> E.Script:
        """Decide how matching prompts run; the newest matching script wins. Returns the script
        (pass it to ``unscript``).

        match:            None (every prompt), a prompt_id or client_id string, or ``callable(prompt) -> bool``.
        per_node_delay:   seconds each executed node takes (default 0).
        class_delays:     per class_type, e.g. ``{"ImageBlur": 0.5}``; ``node_delays`` per node id (wins).
        progress_steps:   int: the tick count of nodes that report progress (ImageUpscaleWithModel,
                          KSampler, ...); dict ``{node_id_or_class: N}``: make those nodes report N ticks
                          (1..N of N). A node's delay is spread over its ticks; an interrupt lands at the
                          next tick, otherwise at the next node boundary.
        preview_every_step: send a binary preview with every tick (type 1, or 4 if negotiated).
        fail_at_node:     node id or class_type that raises at run time -> ``execution_error`` with
                          ``exception_type`` / ``exception_message`` (a newline is appended, as ComfyUI does).
        times:            apply to this many prompts, then forget the script.
        """
        return self._scripts.add(E.Script(
            match=match,
            per_node_delay=per_node_delay,
            class_delays=dict(class_delays or {}),
            node_delays=dict(node_delays or {}),
            progress_steps=progress_steps,
            preview_every_step=preview_every_step,
            fail_at_node=fail_at_node,
            exception_type=exception_type,
            exception_message=exception_message,
            times=times,
        ))

    def unscript(self, script: E.Script | None = None) -> None:
        """Forget one script, or all of them."""
        if script is None:
            self._scripts.clear()
        else:
            self._scripts.remove(script)

    def history(self, prompt_id: str | None = None) -> dict:
        """A copy of the history (or of one entry, ``{}`` when absent)."""
        def read():
            if prompt_id is None:
                return copy.deepcopy(self._history)
            entry = self._history.get(prompt_id)
            return copy.deepcopy(entry) if entry is not None else {}
        return self._call(read)

    @property
    def queue_remaining(self) -> int:
        return self._call(lambda: len(self._queue) + len(self._running))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until nothing is queued or running (and queued messages were sent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._call(lambda: not self._queue and not self._running and self._outbox.empty()):
                return
            time.sleep(0.01)
        raise TimeoutError("ComfyDouble still busy")

    def log(self, message: str) -> None:
        """Append a server log line (seen by /internal/logs and subscribed sockets)."""
        self._call(lambda: self._log(message))

    # ---------------------------------------------------------------- fault injection
    def drop_websockets(self, abrupt: bool = True) -> None:
        """Close every WebSocket now (``abrupt``: TCP abort without a close frame)."""
        self._call(lambda: self._drop_all(abrupt))

    def drop_websockets_at(self, prompt_id: str | None, after_messages: int) -> None:
        """Drop every socket right after the N-th message of ``prompt_id`` (any message if None) was sent."""
        def arm():
            self._drop_at = (prompt_id, int(after_messages))
            self._drop_count = 0
        self._call(arm)

    def restart(self, downtime: float = 0.0) -> None:
        """Simulate a server restart: sockets dropped, queue/history/cache cleared, ``number`` back to 0,
        the running prompt vanishes (no more messages, no history), temp/ wiped; other files stay.
        With ``downtime`` the port refuses connections for that many seconds."""
        self._call(lambda: self._arestart(downtime), timeout=15 + downtime)

    def send_raw_ws(self, data: str | bytes) -> None:
        """Send ``data`` as-is to every socket (text frame for str, binary frame for bytes)."""
        def send():
            self._outbox.put_nowait(("raw", data, None, None))
        self._call(send)

    def interrupt(self) -> None:
        """Same as a global POST /interrupt."""
        self._call(lambda: setattr(self, "_interrupt", True))

    # ================================================================== loop-side machinery
    async def _on_startup(self) -> None:
        self._reset_state()  # a stop() + start() comes back like a restarted server (same port)
        self._log_subscribers.clear()
        self._drop_at = None
        self._outbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._drop_count = 0
        self._logs.clear()
        for line in STARTUP_LOG:
            self._logs.append({"t": _dt.datetime.now().isoformat(), "m": line.format(version=self.version, port=self.port)})
        self._worker_task = asyncio.ensure_future(self._worker())
        self._publisher_task = asyncio.ensure_future(self._publisher())

    async def _on_shutdown(self) -> None:
        for task in (self._worker_task, self._publisher_task):
            if task is not None:
                task.cancel()
        for task in (self._worker_task, self._publisher_task):
            if task is not None:
                try:
                    await task
                except BaseException:  # noqa: BLE001
                    pass
        self._drop_all(abrupt=True)

    async def _arestart(self, downtime: float) -> None:
        self._drop_all(abrupt=True)
        if self._worker_task is not None:
            self._worker_task.cancel()
            try:
                await self._worker_task
            except BaseException:  # noqa: BLE001
                pass
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if downtime > 0 and self._site is not None:
            await self._site.stop()
            await asyncio.sleep(downtime)
            await self._listen(self.port)
        sockets = self._sockets
        self._reset_state()
        self._sockets = sockets  # sockets were dropped; their handlers clean up
        self._log_subscribers.clear()
        self._drop_at = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        os.makedirs(self.temp_dir, exist_ok=True)
        self._logs.append({"t": _dt.datetime.now().isoformat(), "m": "Starting server\n"})
        self._worker_task = asyncio.ensure_future(self._worker())

    def _drop_all(self, abrupt: bool = True) -> None:
        for ws, request in list(self._ws_requests.items()):
            transport = request.transport
            if abrupt and transport is not None:
                transport.abort()
            else:
                asyncio.ensure_future(ws.close(code=1001, message=b"going away"))

    # ---------------------------------------------------------------- messages
    def _emit(self, event: str, data: Any, sid: str | None, prompt_id: str | None = None) -> None:
        self._outbox.put_nowait(("json", {"type": event, "data": data}, sid, prompt_id))

    def _emit_bytes(self, payload: bytes, sid: str | None, prompt_id: str | None = None) -> None:
        self._outbox.put_nowait(("bytes", payload, sid, prompt_id))

    def _supports_metadata(self, sid: str) -> bool:
        return bool(self._socket_flags.get(sid, {}).get("feature_flags", {}).get("supports_preview_metadata", False))

    async def _publisher(self) -> None:
        while True:
            kind, payload, sid, prompt_id = await self._outbox.get()
            if sid is None:
                targets = list(self._sockets.values())
            else:
                targets = [self._sockets[sid]] if sid in self._sockets else []
            for ws in targets:
                try:
                    if kind == "json":
                        await ws.send_json(payload)
                    elif kind == "bytes":
                        await ws.send_bytes(payload)
                    elif isinstance(payload, bytes):
                        await ws.send_bytes(payload)
                    else:
                        await ws.send_str(payload)
                except (ConnectionError, RuntimeError, OSError):
                    pass
            if self._drop_at is not None and kind != "raw":
                wanted, limit = self._drop_at
                if wanted is None or wanted == prompt_id:
                    self._drop_count += 1
                    if self._drop_count >= limit:
                        self._drop_at = None
                        self._drop_all(abrupt=True)

    def _queue_updated(self) -> None:
        self._emit("status", {"status": self._queue_info()}, None)

    def _queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": len(self._queue) + len(self._running)}}

    def _log(self, message: str) -> None:
        entry = {"t": _dt.datetime.now().isoformat(), "m": message if message.endswith("\n") else message + "\n"}
        self._logs.append(entry)
        for sid, size_sent in list(self._log_subscribers.items()):
            size = None if size_sent else {"cols": 80, "rows": 24}
            self._log_subscribers[sid] = True
            self._emit("logs", {"entries": [entry], "size": size}, sid)

    # ---------------------------------------------------------------- the worker
    async def _worker(self) -> None:
        while True:
            while not self._queue:
                self._apply_flags()
                self._wake.clear()
                await self._wake.wait()
            item = heapq.heappop(self._queue)
            task_id = self._task_counter
            self._task_counter += 1
            self._running[task_id] = item
            self._queue_updated()
            try:
                await self._execute(item, task_id)
            except Exception as exc:  # noqa: BLE001 - a bug in the double must not wedge the queue
                self._crashed(item, task_id, exc)
            self._apply_flags()

    def _apply_flags(self) -> None:
        flags, self._flags = self._flags, {}
        if flags.get("free_memory"):
            self._cache.clear()

    async def _execute(self, item: tuple, task_id: int) -> None:
        number, prompt_id, prompt, extra_data, outputs_to_execute = item[:5]
        started = time.perf_counter()
        self._interrupt = False
        client_id = extra_data.get("client_id")
        self._current_client = client_id
        self._current_prompt = prompt_id
        script = self._scripts.resolve(prompt_id, prompt, extra_data)
        run = E.PromptRun(
            prompt_id=prompt_id,
            prompt=prompt,
            extra_data=extra_data,
            outputs_to_execute=outputs_to_execute,
            catalog=self._catalog(),
            cache=self._cache,
            messenger=_LocalMessenger(self, client_id, prompt_id),
            script=script,
            dirs={"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir},
            models_dir=self.models_dir,
            interrupt_flag=lambda: self._interrupt,
            is_changed=self._is_changed,
            rng=self._rng,
        )
        result = await run.run()
        # PromptQueue.task_done: the history entry is written before status + executing null
        self._running.pop(task_id, None)
        if len(self._history) > MAXIMUM_HISTORY_SIZE:
            self._history.pop(next(iter(self._history)))
        self._history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra_data, outputs_to_execute],
            "outputs": result.outputs,
            "status": {"status_str": result.status_str, "completed": result.completed, "messages": result.messages},
            "meta": result.meta,
        }
        self._queue_updated()
        if client_id is not None:
            self._emit("executing", {"node": None, "prompt_id": prompt_id}, client_id, prompt_id)
        self._current_client = None
        self._current_prompt = None
        self._log("Prompt executed in {:.2f} seconds".format(time.perf_counter() - started))

    def _crashed(self, item: tuple, task_id: int, exc: Exception) -> None:
        """Record a run that crashed inside the double itself as a failed prompt."""
        number, prompt_id, prompt, extra_data, outputs_to_execute = item[:5]
        self._running.pop(task_id, None)
        self._history[prompt_id] = {
            "prompt": [number, prompt_id, prompt, extra_data, outputs_to_execute],
            "outputs": {},
            "status": {"status_str": "error", "completed": False, "messages": [
                ["execution_error", {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                                     "exception_message": f"ComfyDouble crashed: {exc!r}\n",
                                     "exception_type": type(exc).__name__, "traceback": [], "current_inputs": {},
                                     "current_outputs": [], "timestamp": E.now_ms()}]]},
            "meta": {},
        }
        self._log(f"ComfyDouble crashed while running {prompt_id}: {exc!r}")
        self._queue_updated()
        if extra_data.get("client_id") is not None:
            self._emit("executing", {"node": None, "prompt_id": prompt_id}, extra_data["client_id"], prompt_id)
        self._current_client = None
        self._current_prompt = None
        self._last_node_id = None

    def _is_changed(self, node_id: str, node: dict) -> Any:
        cls = node.get("class_type")
        if cls in ("LoadImage", "LoadImageMask"):
            path = self._annotated_path(str(node.get("inputs", {}).get("image", "")))
            try:
                with open(path, "rb") as fh:
                    return hashlib.sha256(fh.read()).hexdigest()
            except OSError:
                return "missing"
        if cls == "SaveImageWebsocket":
            return self._rng.random()  # IS_CHANGED returns time.time(): never cached
        return None

    def _annotated_path(self, name: str) -> str:
        base = self.input_dir
        for tag, folder in (("input", self.input_dir), ("output", self.output_dir), ("temp", self.temp_dir)):
            if name.endswith(f" [{tag}]"):
                name, base = name[: -len(tag) - 3], folder
                break
        return os.path.join(base, name)

    # ---------------------------------------------------------------- node catalog
    def _catalog(self) -> E.NodeCatalog:
        return E.NodeCatalog(self._base_info, self._patch_node, lambda name: os.path.exists(self._annotated_path(name)))

    def _input_images(self) -> list[str]:
        names = [n for n in os.listdir(self.input_dir) if os.path.isfile(os.path.join(self.input_dir, n))]
        return sorted(E.iter_images(names))

    def _patch_node(self, class_type: str, entry: dict) -> dict:
        dynamic = [(inp, folder) for (cls, inp), folder in E.DYNAMIC_MODEL_INPUTS.items() if cls == class_type]
        if class_type not in ("LoadImage", "LoadImageMask") and not dynamic:
            return entry
        entry = copy.deepcopy(entry)
        required = entry["input"].get("required", {})
        if class_type in ("LoadImage", "LoadImageMask") and "image" in required:
            required["image"][0] = self._input_images()
        for inp, folder in dynamic:
            for category in ("required", "optional"):
                spec = entry["input"].get(category, {}).get(inp)
                if spec is None:
                    continue
                files = self._list_models(folder)
                if isinstance(spec[0], list):
                    spec[0] = files
                elif spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
                    spec[1]["options"] = files
        return entry

    def _object_info(self) -> dict:
        out = dict(self._base_info)
        for class_type in {"LoadImage", "LoadImageMask", *(c for c, _ in E.DYNAMIC_MODEL_INPUTS)}:
            if class_type in out:
                out[class_type] = self._patch_node(class_type, out[class_type])
        return out

    # ================================================================== the web app
    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_UPLOAD_SIZE,
            middlewares=[self._front_middleware, self._auth_middleware, self._origin_middleware, trouble_middleware],
        )
        mirrored: list[tuple[str, str, Callable]] = [
            ("GET", "/ws", self.h_ws),
            ("GET", "/embeddings", self.h_embeddings),
            ("GET", "/models", self.h_models),
            ("GET", "/models/{folder}", self.h_models_folder),
            ("GET", "/extensions", self.h_extensions),
            ("POST", "/upload/image", self.h_upload_image),
            ("POST", "/upload/mask", self.h_upload_mask),
            ("GET", "/view", self.h_view),
            ("GET", "/view_metadata/{folder_name}", self.h_view_metadata),
            ("GET", "/system_stats", self.h_system_stats),
            ("GET", "/features", self.h_features),
            ("GET", "/prompt", self.h_get_prompt),
            ("POST", "/prompt", self.h_post_prompt),
            ("GET", "/object_info", self.h_object_info),
            ("GET", "/object_info/{node_class}", self.h_object_info_node),
            ("GET", "/history", self.h_history),
            ("GET", "/history/{prompt_id}", self.h_history_id),
            ("POST", "/history", self.h_post_history),
            ("GET", "/queue", self.h_queue),
            ("POST", "/queue", self.h_post_queue),
            ("POST", "/interrupt", self.h_interrupt),
            ("POST", "/free", self.h_free),
            ("GET", "/users", self.h_users),
            ("POST", "/users", self.h_post_users),
            ("GET", "/userdata", self.h_userdata_list),
            ("GET", "/v2/userdata", self.h_userdata_v2),
            ("GET", "/userdata/{file}", self.h_userdata_get),
            ("POST", "/userdata/{file}", self.h_userdata_post),
            ("DELETE", "/userdata/{file}", self.h_userdata_delete),
            ("POST", "/userdata/{file}/move/{dest}", self.h_userdata_move),
            ("GET", "/settings", self.h_settings),
            ("GET", "/settings/{id}", self.h_setting),
            ("POST", "/settings", self.h_post_settings),
            ("POST", "/settings/{id}", self.h_post_setting),
            ("GET", "/experiment/models", self.h_experiment_models),
            ("GET", "/experiment/models/{folder}", self.h_experiment_models_folder),
            ("GET", "/workflow_templates", self.h_empty_object),
            ("GET", "/i18n", self.h_empty_object),
            ("GET", "/global_subgraphs", self.h_empty_object),
        ]
        for method, path, handler in mirrored:
            app.router.add_route(method, "/api" + path, handler)
            app.router.add_route(method, path, handler)
        if self.jobs_api:
            app.router.add_get("/api/jobs", self.h_jobs)
            app.router.add_post("/api/jobs/cancel", self.h_jobs_cancel_batch)
            app.router.add_get("/api/jobs/{job_id}", self.h_job)
            app.router.add_post("/api/jobs/{job_id}/cancel", self.h_job_cancel)
        app.router.add_get("/internal/logs", self.h_internal_logs)
        app.router.add_get("/internal/logs/raw", self.h_internal_logs_raw)
        app.router.add_route("PATCH", "/internal/logs/subscribe", self.h_internal_logs_subscribe)
        app.router.add_get("/internal/folder_paths", self.h_internal_folder_paths)
        app.router.add_get("/internal/files/{directory_type}", self.h_internal_files)
        app.router.add_get("/", self.h_index)
        app.router.add_get("/{tail:.*}", self.h_static_fallback)
        return app

    # ---------------------------------------------------------------- middlewares
    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler):
        if self.token is not None:
            if request.headers.get("Authorization", "") != f"Bearer {self.token}":
                return web.Response(status=401, text="401: Unauthorized", content_type="text/plain")
        return await handler(request)

    @web.middleware
    async def _origin_middleware(self, request: web.Request, handler):
        if "Host" in request.headers and "Origin" in request.headers:
            host_domain = request.headers["Host"].lower()
            parsed = urllib.parse.urlparse(request.headers["Origin"])
            origin_domain = parsed.netloc.lower()
            host_parsed = urllib.parse.urlsplit("//" + host_domain)
            loopback = _is_loopback(host_parsed.hostname)
            if parsed.port is None:
                host_domain = host_parsed.hostname
            if host_parsed.port is None:
                origin_domain = parsed.hostname
            if loopback and host_domain and origin_domain and host_domain != origin_domain:
                return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response()
        return await handler(request)

    # ---------------------------------------------------------------- websocket
    async def h_ws(self, request: web.Request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self._sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self._sockets[sid] = ws
        self._socket_flags[sid] = {"feature_flags": {}}
        self._ws_requests[ws] = request
        try:
            await ws.send_json({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            if self._current_client == sid and self._last_node_id is not None:
                await ws.send_json({"type": "executing", "data": {"node": self._last_node_id}})
            first_message = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                        if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                            self._socket_flags.setdefault(sid, {})["feature_flags"] = data.get("data", {})
                            await ws.send_json({"type": "feature_flags", "data": self._features()})
                        first_message = False
                    except (ValueError, ConnectionError, RuntimeError):
                        pass
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            # ComfyUI 0.3.75 pops the sid unconditionally (a reconnect racing with the old socket's
            # cleanup loses its registration: issue #16010). Kept on purpose.
            self._sockets.pop(sid, None)
            self._socket_flags.pop(sid, None)
            self._ws_requests.pop(ws, None)
            self._log_subscribers.pop(sid, None)
        return ws

    # ---------------------------------------------------------------- simple GETs
    def _features(self) -> dict:
        return {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}

    async def h_index(self, request):
        return web.Response(text=INDEX_HTML, content_type="text/html",
                            headers={"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"})

    async def h_static_fallback(self, request):
        return web.Response(status=404, content_type="application/octet-stream")

    async def h_empty_object(self, request):
        return web.json_response({})

    async def h_system_stats(self, request):
        total, free = 25276502016, 24433287168
        return web.json_response({
            "system": {
                "os": "posix",
                "ram_total": total,
                "ram_free": free,
                "comfyui_version": self.version,
                "required_frontend_version": "1.32.9",
                "installed_templates_version": "0.7.25",
                "required_templates_version": "0.7.25",
                "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
                "pytorch_version": "2.13.0+cpu",
                "embedded_python": False,
                "argv": ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)],
            },
            "devices": [{
                "name": "cpu", "type": "cpu", "index": None,
                "vram_total": total, "vram_free": free, "torch_vram_total": total, "torch_vram_free": free,
            }],
        })

    async def h_features(self, request):
        return web.json_response(self._features())

    async def h_get_prompt(self, request):
        return web.json_response(self._queue_info())

    async def h_extensions(self, request):
        return web.json_response(CORE_EXTENSIONS)

    async def h_embeddings(self, request):
        files = self._list_models("embeddings")
        return web.json_response([os.path.splitext(f)[0] for f in files])

    async def h_models(self, request):
        return web.json_response(MODEL_FOLDER_KEYS)

    async def h_models_folder(self, request):
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDER_KEYS:
            return web.Response(status=404)
        if folder == "custom_nodes":
            return web.json_response(sorted(os.listdir(self.models_dir(folder))))
        return web.json_response(self._list_models(folder))

    async def h_experiment_models(self, request):
        return web.json_response([
            {"name": key, "folders": self.folder_paths(key)}
            for key in MODEL_FOLDER_KEYS if key not in ("configs", "custom_nodes")
        ])

    async def h_experiment_models_folder(self, request):
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDER_KEYS or folder in ("configs", "custom_nodes"):
            return web.Response(status=404)
        out = []
        for index, directory in enumerate(self.folder_paths(folder)):
            for name in E.list_model_files(directory):
                st = os.stat(os.path.join(directory, name))
                out.append({"name": name, "pathIndex": index, "modified": st.st_mtime, "created": st.st_ctime,
                            "size": st.st_size})
        return web.json_response(out)

    async def h_object_info(self, request):
        return web.json_response(self._object_info())

    async def h_object_info_node(self, request):
        node_class = request.match_info.get("node_class")
        out = {}
        if node_class in self._base_info:
            out[node_class] = self._patch_node(node_class, self._base_info[node_class])
        return web.json_response(out)

    # ---------------------------------------------------------------- prompt / queue / history
    async def h_post_prompt(self, request: web.Request):
        self._log("got prompt")
        json_data = await request.json()
        if "number" in json_data:
            number = float(json_data["number"])
        else:
            number = self.number
            if "front" in json_data:
                if json_data["front"]:
                    number = -number
            self.number += 1

        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        prompt = json_data["prompt"]
        newer = E.parse_version(self.version) >= (0, 25, 0)
        if newer:
            client_prompt_id = json_data.get("prompt_id")
            if client_prompt_id is None:
                prompt_id = str(uuid.uuid4())
            else:
                try:
                    if not isinstance(client_prompt_id, str) or str(uuid.UUID(client_prompt_id)) != client_prompt_id:
                        raise ValueError(client_prompt_id)
                except ValueError:
                    error = {
                        "type": "invalid_prompt_id",
                        "message": "prompt_id must be a valid UUID",
                        "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                                   "omit it to let the server generate one",
                        "extra_info": {},
                    }
                    return web.json_response({"error": error, "node_errors": {}}, status=400)
                prompt_id = client_prompt_id
                if self._known_prompt_id(prompt_id):
                    # Guess: the 409 body is not recorded anywhere; same envelope as the 400s.
                    error = {
                        "type": "duplicate_prompt_id",
                        "message": "prompt_id already exists",
                        "details": f"A job with prompt_id {prompt_id} is already queued, running or in history",
                        "extra_info": {},
                    }
                    return web.json_response({"error": error, "node_errors": {}}, status=409)
        else:
            prompt_id = str(json_data.get("prompt_id", uuid.uuid4()))

        partial = json_data.get("partial_execution_targets") if "partial_execution_targets" in json_data else None
        valid = E.validate_prompt(prompt, partial, self._catalog())
        extra_data = {}
        if "extra_data" in json_data:
            extra_data = json_data["extra_data"]
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not valid[0]:
            return web.json_response({"error": valid[1], "node_errors": valid[3]}, status=400)
        sensitive = {}
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            if key in extra_data:
                sensitive[key] = extra_data.pop(key)
        extra_data["create_time"] = E.now_ms()
        heapq.heappush(self._queue, (number, prompt_id, prompt, extra_data, valid[2], sensitive))
        self._queue_updated()
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": valid[3]})

    def _known_prompt_id(self, prompt_id: str) -> bool:
        return (
            prompt_id in self._history
            or any(item[1] == prompt_id for item in self._queue)
            or any(item[1] == prompt_id for item in self._running.values())
        )

    async def h_queue(self, request):
        return web.json_response({
            "queue_running": [list(item[:5]) for item in self._running.values()],
            "queue_pending": [list(item[:5]) for item in self._queue],
        })

    def _delete_pending(self, prompt_id: str) -> bool:
        for index, item in enumerate(self._queue):
            if item[1] == prompt_id:
                if len(self._queue) == 1:
                    self._queue = []
                    self._queue_updated()
                else:
                    self._queue.pop(index)
                    heapq.heapify(self._queue)
                self._queue_updated()
                return True
        return False

    async def h_post_queue(self, request):
        json_data = await request.json()
        if "clear" in json_data:
            if json_data["clear"]:
                self._queue = []
                self._queue_updated()
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._delete_pending(prompt_id)
        return web.Response(status=200)

    async def h_interrupt(self, request):
        try:
            json_data = await request.json()
        except ValueError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        if prompt_id:
            if any(item[1] == prompt_id for item in self._running.values()):
                self._interrupt = True
                self._log(f"Interrupting prompt {prompt_id}")
            else:
                self._log(f"Prompt {prompt_id} is not currently running, skipping interrupt")
        else:
            self._interrupt = True
        return web.Response(status=200)

    async def h_free(self, request):
        json_data = await request.json()
        if json_data.get("unload_models", False):
            self._flags["unload_models"] = True
        if json_data.get("free_memory", False):
            self._flags["free_memory"] = True
        self._wake.set()
        return web.Response(status=200)

    async def h_history(self, request):
        max_items = request.rel_url.query.get("max_items")
        if max_items is not None:
            max_items = int(max_items)
        offset = request.rel_url.query.get("offset")
        offset = int(offset) if offset is not None else -1
        out = {}
        i = 0
        if offset < 0 and max_items is not None:
            offset = len(self._history) - max_items
        for key, entry in self._history.items():
            if i >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
            i += 1
        return web.json_response(out)

    async def h_history_id(self, request):
        prompt_id = request.match_info["prompt_id"]
        if prompt_id in self._history:
            return web.json_response({prompt_id: self._history[prompt_id]})
        return web.json_response({})

    async def h_post_history(self, request):
        json_data = await request.json()
        if "clear" in json_data:
            if json_data["clear"]:
                self._history = {}
        if "delete" in json_data:
            for prompt_id in json_data["delete"]:
                self._history.pop(prompt_id, None)
        return web.Response(status=200)

    # ---------------------------------------------------------------- jobs API (newer servers)
    def _job_from_queue(self, item: tuple, status: str, include_workflow: bool = False) -> dict:
        number, prompt_id, prompt, extra_data, _ = item[:5]
        workflow_id = ((extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")
        job = _prune({
            "id": prompt_id, "status": status, "priority": number, "create_time": extra_data.get("create_time"),
            "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id,
        })
        if include_workflow:
            job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
        return job

    def _job_from_history(self, prompt_id: str, entry: dict, include_outputs: bool = False) -> dict:
        number, _, prompt, extra_data, _ = entry["prompt"]
        workflow_id = ((extra_data.get("extra_pnginfo") or {}).get("workflow") or {}).get("id")
        status_info = entry.get("status") or {}
        start = end = error = None
        interrupted = False
        for event, data in status_info.get("messages", []):
            if event == "execution_start":
                start = data.get("timestamp")
            elif event in ("execution_success", "execution_error", "execution_interrupted"):
                end = data.get("timestamp")
                if event == "execution_error":
                    error = data
                elif event == "execution_interrupted":
                    interrupted = True
        if status_info.get("status_str") == "error":
            status = "cancelled" if interrupted else "failed"
        else:
            status = "completed"
        count, preview, previewable = 0, None, 0
        fallback = None
        for node_id, node_outputs in entry.get("outputs", {}).items():
            for media_type, items in (node_outputs or {}).items():
                if media_type == "animated" or not isinstance(items, list):
                    continue
                for item in items:
                    if not isinstance(item, dict):
                        continue
                    count += 1
                    if media_type in ("images", "video", "audio", "3d", "text"):
                        previewable += 1
                        enriched = {**item, "nodeId": node_id, "mediaType": media_type}
                        if preview is None and item.get("type") == "output":
                            preview = enriched
                        elif fallback is None:
                            fallback = enriched
        job = _prune({
            "id": prompt_id, "status": status, "priority": number, "create_time": extra_data.get("create_time"),
            "execution_start_time": start, "execution_end_time": end, "execution_error": error,
            "outputs_count": count, "previewable_outputs_count": previewable,
            "preview_output": preview or fallback, "workflow_id": workflow_id,
        })
        if include_outputs:
            job["outputs"] = entry.get("outputs", {})
            job["execution_status"] = status_info
            job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
        return job

    async def h_jobs(self, request):
        query = request.rel_url.query
        all_statuses = ["pending", "in_progress", "completed", "failed", "cancelled"]
        status_filter = None
        if query.get("status"):
            status_filter = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
            invalid = [s for s in status_filter if s not in all_statuses]
            if invalid:
                return web.json_response(
                    {"error": f"Invalid status value(s): {', '.join(invalid)}. Valid values: {', '.join(all_statuses)}"},
                    status=400)
        sort_by = query.get("sort_by", "created_at").lower()
        sort_order = query.get("sort_order", "desc").lower()
        if sort_by not in ("created_at", "execution_duration"):
            return web.json_response({"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400)
        if sort_order not in ("asc", "desc"):
            return web.json_response({"error": "sort_order must be 'asc' or 'desc'"}, status=400)
        limit = None
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                return web.json_response({"error": "limit must be an integer"}, status=400)
            if limit <= 0:
                return web.json_response({"error": "limit must be a positive integer"}, status=400)
        offset = 0
        if "offset" in query:
            try:
                offset = max(0, int(query["offset"]))
            except ValueError:
                return web.json_response({"error": "offset must be an integer"}, status=400)
        wanted = status_filter or all_statuses
        jobs = []
        if "in_progress" in wanted:
            jobs += [self._job_from_queue(item, "in_progress") for item in self._running.values()]
        if "pending" in wanted:
            jobs += [self._job_from_queue(item, "pending") for item in self._queue]
        for prompt_id, entry in self._history.items():
            job = self._job_from_history(prompt_id, entry)
            if job["status"] in wanted:
                jobs.append(job)
        if query.get("workflow_id"):
            jobs = [j for j in jobs if j.get("workflow_id") == query["workflow_id"]]
        if sort_by == "execution_duration":
            def key(job):
                s, e = job.get("execution_start_time", 0), job.get("execution_end_time", 0)
                return e - s if e and s else 0
        else:
            def key(job):
                return job.get("create_time", 0)
        jobs.sort(key=key, reverse=(sort_order == "desc"))
        total = len(jobs)
        page = jobs[offset:]
        if limit is not None:
            page = page[:limit]
        return web.json_response({
            "jobs": page,
            "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total},
        })

    async def h_job(self, request):
        job_id = request.match_info["job_id"]
        if job_id in self._history:
            return web.json_response(self._job_from_history(job_id, self._history[job_id], include_outputs=True))
        for item in self._running.values():
            if item[1] == job_id:
                return web.json_response(self._job_from_queue(item, "in_progress", include_workflow=True))
        for item in self._queue:
            if item[1] == job_id:
                return web.json_response(self._job_from_queue(item, "pending", include_workflow=True))
        return web.json_response({"error": "Job not found"}, status=404)

    def _cancel(self, job_id: str) -> bool:
        if any(item[1] == job_id for item in self._running.values()):
            self._interrupt = True
            return True
        return self._delete_pending(job_id)

    async def h_job_cancel(self, request):
        return web.json_response({"cancelled": self._cancel(request.match_info["job_id"])})

    async def h_jobs_cancel_batch(self, request):
        try:
            json_data = await request.json()
        except ValueError:
            return web.json_response({"error": "Request body must be valid JSON"}, status=400)
        job_ids = json_data.get("job_ids") if isinstance(json_data, dict) else None
        if not isinstance(job_ids, list):
            return web.json_response({"error": "job_ids must be a list"}, status=400)
        invalid = []
        for jid in job_ids:
            try:
                if not isinstance(jid, str) or str(uuid.UUID(jid)) != jid:
                    raise ValueError
            except ValueError:
                invalid.append(jid if isinstance(jid, str) else repr(jid))
        if invalid:
            return web.json_response({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400)
        cancelled = False
        for jid in job_ids:
            cancelled = self._cancel(jid) or cancelled
        return web.json_response({"cancelled": cancelled})

    # ---------------------------------------------------------------- files: view / upload
    def _dir_by_type(self, kind: str | None) -> str | None:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(kind or "")

    def _split_annotation(self, name: str) -> tuple[str, str | None]:
        for tag in ("input", "output", "temp"):
            if name.endswith(f" [{tag}]"):
                return name[: -len(tag) - 3], self._dir_by_type(tag)
        return name, None

    async def h_view(self, request: web.Request):
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, output_dir = self._split_annotation(query["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = self._dir_by_type(query.get("type", "output"))
        if output_dir is None:
            return web.Response(status=400)
        if "subfolder" in query:
            full_output_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_output_dir
        filename = os.path.basename(filename)
        file = os.path.join(output_dir, filename)
        if not os.path.isfile(file):
            return web.Response(status=404)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            with Image.open(file) as img:  # a non-image raises -> 500 like the real server
                preview_info = query["preview"].split(";")
                image_format = preview_info[0]
                if image_format not in ("webp", "jpeg") or "a" in query.get("channel", ""):
                    image_format = "webp"
                quality = int(preview_info[-1]) if preview_info[-1].isdigit() else 90
                buffer = BytesIO()
                if image_format == "jpeg" or query.get("channel", "") == "rgb":
                    img = img.convert("RGB")
                img.save(buffer, format=image_format, quality=quality)
            return web.Response(body=buffer.getvalue(), content_type=f"image/{image_format}", headers=disposition)
        channel = query.get("channel", "rgba")
        if channel == "rgb":
            with Image.open(file) as img:
                new_img = Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA" else img.convert("RGB")
                buffer = BytesIO()
                new_img.save(buffer, format="PNG")
            return web.Response(body=buffer.getvalue(), content_type="image/png", headers=disposition)
        if channel == "a":
            with Image.open(file) as img:
                alpha = img.split()[3] if img.mode == "RGBA" else Image.new("L", img.size, 255)
                alpha_img = Image.new("RGBA", img.size)
                alpha_img.putalpha(alpha)
                buffer = BytesIO()
                alpha_img.save(buffer, format="PNG")
            return web.Response(body=buffer.getvalue(), content_type="image/png", headers=disposition)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in ("text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"):
            content_type = "application/octet-stream"
        return web.FileResponse(file, headers={**disposition, "Content-Type": content_type})

    async def h_view_metadata(self, request):
        folder = request.match_info["folder_name"]
        filename = request.rel_url.query.get("filename")
        if filename is None or not filename.endswith(".safetensors"):
            return web.Response(status=404)
        if folder not in MODEL_FOLDER_KEYS:
            return web.Response(status=404)
        path = None
        for base in self.folder_paths(folder):
            candidate = os.path.abspath(os.path.join(base, filename))
            if os.path.commonpath((base, candidate)) == base and os.path.isfile(candidate):
                path = candidate
                break
        if path is None:
            return web.Response(status=404)
        metadata = E.read_safetensors_metadata(path)
        if metadata is None:
            return web.Response(status=404)
        return web.json_response(metadata)

    def _image_upload(self, post, save_function=None) -> web.Response:
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type")
        if upload_type is None:
            upload_type = "input"
        upload_dir = self._dir_by_type(upload_type)
        if upload_dir is None:
            # ComfyUI's get_dir_by_type leaves type_dir unbound -> UnboundLocalError -> 500
            raise UnboundLocalError("cannot access local variable 'type_dir' where it is not associated with a value")
        if not (image and image.file):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        full_output_folder = os.path.join(upload_dir, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(full_output_folder, filename))
        if os.path.commonpath((upload_dir, filepath)) != upload_dir:
            return web.Response(status=400)
        os.makedirs(full_output_folder, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        data = image.file.read()
        image.file.seek(0)
        duplicate = False
        if not (overwrite is not None and overwrite in ("true", "1")):
            i = 1
            while os.path.exists(filepath):
                with open(filepath, "rb") as fh:
                    if hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest():
                        duplicate = True
                        break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(full_output_folder, filename)
                i += 1
        if not duplicate:
            if save_function is not None:
                save_function(image, post, filepath)
            else:
                with open(filepath, "wb") as fh:
                    fh.write(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})

    async def h_upload_image(self, request):
        post = await request.post()
        return self._image_upload(post)

    async def h_upload_mask(self, request):
        post = await request.post()

        def save(image, post, filepath):
            original_ref = json.loads(post.get("original_ref"))
            filename, output_dir = self._split_annotation(original_ref["filename"])
            if not filename or filename[0] == "/" or ".." in filename:
                return  # the real server builds a 400 here and throws it away
            if output_dir is None:
                output_dir = self._dir_by_type(original_ref.get("type", "output"))
            if output_dir is None:
                return
            if original_ref.get("subfolder", "") != "":
                full_output_dir = os.path.join(output_dir, original_ref["subfolder"])
                if os.path.commonpath((os.path.abspath(full_output_dir), output_dir)) != output_dir:
                    return
                output_dir = full_output_dir
            file = os.path.join(output_dir, filename)
            if os.path.isfile(file):
                with Image.open(file) as original_pil:
                    metadata = PngImagePlugin.PngInfo()
                    for key, value in getattr(original_pil, "text", {}).items():
                        metadata.add_text(key, value)
                    original_pil = original_pil.convert("RGBA")
                    mask_pil = Image.open(image.file).convert("RGBA")
                    original_pil.putalpha(mask_pil.getchannel("A"))
                    original_pil.save(filepath, compress_level=4, pnginfo=metadata)

        # Without original_ref, json.loads(None) raises inside save() -> 500, as observed.
        return self._image_upload(post, save)

    # ---------------------------------------------------------------- userdata, users, settings
    def _user_path(self, file: str | None) -> str | None:
        root = self.user_dir
        if file is None:
            return root
        if "%" in file:
            file = urllib.parse.unquote(file)
        path = os.path.abspath(os.path.join(root, file))
        if os.path.commonpath((root, path)) != root:
            return None
        return path

    async def h_users(self, request):
        return web.json_response({"storage": "server", "migrated": os.path.exists(self.user_dir)})

    async def h_post_users(self, request):
        body = await request.json()
        username = body["username"]
        if username in self._users.values():
            return web.json_response({"error": "Duplicate username."}, status=400)
        name = username.strip()
        if not name:
            raise ValueError("username not provided")
        user_id = re.sub("[^a-zA-Z0-9-_]+", "-", name) + "_" + str(uuid.uuid4())
        self._users[user_id] = name
        return web.json_response(user_id)

    async def h_userdata_list(self, request):
        directory = request.rel_url.query.get("dir", "")
        if not directory:
            return web.Response(status=400, text="Directory not provided")
        path = self._user_path(directory)
        if not path:
            return web.Response(status=403, text="Invalid directory")
        if not os.path.exists(path):
            return web.Response(status=404, text="Directory not found")
        recurse = request.rel_url.query.get("recurse", "").lower() == "true"
        full_info = request.rel_url.query.get("full_info", "").lower() == "true"
        split = request.rel_url.query.get("split", "").lower() == "true"
        results = []
        for root, dirs, files in os.walk(path):
            for name in files:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                if full_info:
                    st = os.stat(full)
                    results.append({"path": rel, "size": st.st_size, "modified": st.st_mtime, "created": st.st_ctime})
                elif split:
                    results.append([rel] + rel.split("/"))
                else:
                    results.append(rel)
            if not recurse:
                break
        return web.json_response(results)

    async def h_userdata_v2(self, request):
        requested = urllib.parse.unquote(request.rel_url.query.get("path", ""))
        base = self.user_dir
        target = self._user_path(requested) if requested else base
        if not target:
            return web.Response(status=400, text="Invalid path requested")
        if not os.path.exists(target):
            if target == base:
                return web.json_response([])
            return web.Response(status=404, text="Requested path not found")
        if not os.path.isdir(target):
            return web.Response(status=400, text="Requested path is not a directory")
        results = []
        for root, dirs, files in os.walk(target):
            for name in dirs:
                results.append({"name": name, "path": os.path.relpath(os.path.join(root, name), base).replace(os.sep, "/"),
                                "type": "directory"})
            for name in files:
                full = os.path.join(root, name)
                st = os.stat(full)
                results.append({"name": name, "path": os.path.relpath(full, base).replace(os.sep, "/"), "type": "file",
                                "size": st.st_size, "modified": st.st_mtime})
        results.sort(key=lambda x: (x["type"] != "directory", x["name"].lower()))
        return web.json_response(results)

    def _userdata_path(self, request, check_exists: bool = False, param: str = "file"):
        file = request.match_info.get(param)
        if not file:
            return web.Response(status=400)
        path = self._user_path(file)
        if not path:
            return web.Response(status=403)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if check_exists and not os.path.exists(path):
            return web.Response(status=404)
        return path

    async def h_userdata_get(self, request):
        path = self._userdata_path(request, check_exists=True)
        if not isinstance(path, str):
            return path
        return web.FileResponse(path)

    async def h_userdata_post(self, request):
        path = self._userdata_path(request)
        if not isinstance(path, str):
            return path
        overwrite = request.query.get("overwrite", "true") != "false"
        full_info = request.query.get("full_info", "false").lower() == "true"
        if not overwrite and os.path.exists(path):
            return web.Response(status=409, text="File already exists")
        body = await request.read()
        with open(path, "wb") as fh:
            fh.write(body)
        return web.json_response(self._file_info(path) if full_info else os.path.relpath(path, self.user_dir))

    def _file_info(self, path: str) -> dict:
        st = os.stat(path)
        return {"path": os.path.relpath(path, self.user_dir).replace(os.sep, "/"), "size": st.st_size,
                "modified": st.st_mtime, "created": st.st_ctime}

    async def h_userdata_delete(self, request):
        path = self._userdata_path(request, check_exists=True)
        if not isinstance(path, str):
            return path
        os.remove(path)
        return web.Response(status=204)

    async def h_userdata_move(self, request):
        source = self._userdata_path(request, check_exists=True)
        if not isinstance(source, str):
            return source
        dest = self._userdata_path(request, param="dest")
        if not isinstance(dest, str):
            return dest
        overwrite = request.query.get("overwrite", "true") != "false"
        full_info = request.query.get("full_info", "false").lower() == "true"
        if not overwrite and os.path.exists(dest):
            return web.Response(status=409, text="File already exists")
        shutil.move(source, dest)
        return web.json_response(self._file_info(dest) if full_info else os.path.relpath(dest, self.user_dir))

    async def h_settings(self, request):
        return web.json_response(self._settings)

    async def h_setting(self, request):
        return web.json_response(self._settings.get(request.match_info["id"]))

    async def h_post_settings(self, request):
        self._settings.update(await request.json())
        return web.Response(status=200)

    async def h_post_setting(self, request):
        self._settings[request.match_info["id"]] = await request.json()
        return web.Response(status=200)

    # ---------------------------------------------------------------- internal
    async def h_internal_logs(self, request):
        return web.json_response("".join(entry["t"] + " - " + entry["m"] for entry in self._logs))

    async def h_internal_logs_raw(self, request):
        return web.json_response({"entries": list(self._logs), "size": {"cols": 80, "rows": 24}})

    async def h_internal_logs_subscribe(self, request):
        json_data = await request.json()
        client_id = json_data["clientId"]
        if json_data["enabled"]:
            self._log_subscribers.setdefault(client_id, False)
        else:
            self._log_subscribers.pop(client_id, None)
        return web.Response(status=200)

    async def h_internal_folder_paths(self, request):
        return web.json_response({key: self.folder_paths(key) for key in MODEL_FOLDER_KEYS})

    async def h_internal_files(self, request):
        kind = request.match_info["directory_type"]
        if kind not in ("output", "input", "temp"):
            return web.json_response({"error": "Invalid directory type"}, status=400)
        directory = self._dir_by_type(kind)
        entries = sorted((e for e in os.scandir(directory) if e.is_file()), key=lambda e: -e.stat().st_mtime)
        return web.json_response([e.name for e in entries])


__all__ = ["ComfyDouble", "DEFAULT_MODELS", "TINY_UPSCALE_MODEL"]
