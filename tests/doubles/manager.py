"""``ManagerDouble``: a ``ComfyDouble`` with a ComfyUI-Manager in it.

``flavour="v4"`` copies the shapes of comfyui-manager 4.3 recorded in ``shared/recordings/manager``
(text ``V4.3``, ``{}`` installed, the 5-key queue status, 400 for form posts, legacy paths 404).
``flavour="legacy"`` follows the v3.41 custom node of comfyui-api.md §8.2/§8.4 (``/manager/...``,
``/customnode/...``, the 403/404 refusal shapes). Installs really happen here (the recordings are
offline, so a successful install was never observed): queue → start → the pack shows up in the
installed list, and v4 writes a history entry.

``refuse`` makes install/reboot refuse the way the real Manager does:

* ``"security_text"``: 403 text "A security error has occurred…" (legacy entry gate);
* ``"unlisted"``: 404 with the same text (legacy, unlisted URL or ``block`` risk);
* ``"comfyui_outdated"``/``"security_level"``: 403 JSON ``{"error": ...}`` (legacy reboot);
* ``"strong"``: v4 with ``security_level = strong``: reboot answers 403 with an empty body
  (observed on the real 4.3);
* ``"task_failed"``: v4 accepts the task (200) and the worker fails it: history
  ``{"result": <message>, "status": {"status_str": "error", "messages": [<message>]}}``, as the real
  4.3 does offline for any registry id ("Cannot resolve install target: 'x@latest'").

* ``"git_flag"``: git-URL install refused by ``allow_git_url_install`` (v3.41: 403 JSON ``{"error":
  flag}``; 4.3 legacy UI: 403 JSON ``{"reason": flag}``, observed);
* ``"model_download"``: a model install is accepted and its download fails in the worker with
  "Model installation error: <url>" (what the real 4.3 legacy UI reports offline, observed).

``legacy_ui=True`` (v4 only) serves what comfyui-manager 4.3 serves with ``--enable-manager-legacy-ui``
(observed on the real 4.3 with the shim): ``is_legacy_manager_ui`` true, ``/v2/externalmodel/getlist``,
``/v2/manager/queue/install_model``, ``/v2/manager/queue/batch`` (``{"failed": [...]}``, starts the queue
itself), ``/v2/customnode/install/git_url`` (raw URL body); no ``queue/task``; ``queue/history`` 400.

Task progress goes out on the WebSocket as the real Managers send it: v4 new UI ``cm-task-started`` and
``cm-task-completed`` to the requesting ``client_id``, then ``cm-queue-status`` ``all-done``; the legacy
Manager ``cm-queue-status`` ``in_progress`` per task and ``done`` with ``nodepack_result`` /
``model_result``; the v4 legacy UI ``in_progress``, ``batch-done`` and ``all-done``.

``listen`` changes the ``--listen`` value in ``/system_stats`` argv.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from .comfy import ComfyDouble

SECURITY_TEXT = "A security error has occurred. Please check the terminal logs"
FORM_REFUSAL = "Invalid Content-Type for this endpoint. Use application/json or omit body."
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


# Entries in the shape of the real model-list.json served by the Manager (fields as observed on 4.3).
MODEL_LIST = [
    {"name": "TAEF1 Decoder", "type": "TAESD", "base": "FLUX.1", "save_path": "vae_approx",
     "description": "(FLUX.1 Verison) To view the preview in high quality while running samples in ComfyUI, "
                    "you will need this model.", "reference": "https://github.com/madebyollin/taesd",
     "filename": "taef1_decoder.pth", "url": "https://github.com/madebyollin/taesd/raw/main/taef1_decoder.pth",
     "size": "4.71MB"},
    {"name": "EasyNegative", "type": "embedding", "base": "SD1.5", "save_path": "embeddings/SD1.5",
     "description": "A textual inversion embedding for negative prompts.", "reference": "https://civitai.com/models/7808",
     "filename": "easynegative.safetensors", "url": "https://civitai.com/api/download/models/9208",
     "size": "25KB"},
    {"name": "4x-UltraSharp", "type": "upscale", "base": "upscale", "save_path": "default",
     "description": "An upscaler model.", "reference": "https://upscale.wiki/wiki/Model_Database",
     "filename": "4x-UltraSharp.pth", "url": "https://huggingface.co/lokCX/4x-Ultrasharp/resolve/main/4x-UltraSharp.pth",
     "size": "66.9MB"},
]


class ManagerDouble(ComfyDouble):
    _thread_name = "manager-double"

    def __init__(self, *args, flavour: str = "v4", refuse: str | None = None, listen: str = "127.0.0.1",
                 reboot_downtime: float = 0.6, task_failure: str = "Cannot resolve install target: 'comfyui-impact-pack@latest'",
                 legacy_ui: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if flavour not in ("v4", "legacy"):
            raise ValueError(flavour)
        self.flavour = flavour
        self.legacy_ui = bool(legacy_ui and flavour == "v4")
        self.models_installed: dict[str, dict] = {}  # filename -> model-list entry
        self.git_installs: list[str] = []
        self.refuse = refuse
        self.listen = listen
        self.reboot_downtime = reboot_downtime
        self.task_failure = task_failure
        self.manager_version = "V4.3" if flavour == "v4" else "V3.41"
        self.installed: dict[str, dict] = {}
        self.queued: list[dict] = []
        self.task_history: dict[str, dict] = {}
        self.manager_posts: list[tuple[str, object]] = []  # (path, body) of every Manager POST
        self.reboots = 0
        self._done = 0
        self._total = 0

    # ------------------------------------------------------------------ app
    def _build_app(self) -> web.Application:
        app = super()._build_app()
        app.middlewares.append(self._manager_middleware)  # innermost: after auth, origin and faults
        return app

    async def h_system_stats(self, request):
        resp = await super().h_system_stats(request)
        body = json.loads(resp.body)
        body["system"]["argv"] = ["main.py", "--cpu", "--listen", self.listen, "--port", str(self.port)]
        return web.json_response(body)

    def _features(self) -> dict:
        feats = super()._features()
        if self.flavour == "v4":
            feats["extension"] = {"manager": {"supports_csrf_post": True}}
        return feats

    @web.middleware
    async def _manager_middleware(self, request: web.Request, handler):
        path = request.path[4:] if request.path.startswith("/api/") else request.path
        route = self._routes().get((request.method, path))
        if route is None:
            return await handler(request)
        return await route(request)

    def _routes(self) -> dict:
        if self.flavour == "v4" and self.legacy_ui:
            return {
                ("GET", "/v2/manager/version"): self.m_version,
                ("GET", "/v2/manager/is_legacy_manager_ui"): self.m_is_legacy_ui,
                ("GET", "/v2/customnode/installed"): self.m_installed,
                ("GET", "/v2/manager/queue/status"): self.m_status,
                ("GET", "/v2/manager/queue/history"): self.m_history_legacy_ui,
                ("GET", "/v2/externalmodel/getlist"): self.m_model_list,
                ("POST", "/v2/manager/queue/batch"): self.m_batch,
                ("POST", "/v2/manager/queue/install_model"): self.m_install_model,
                ("POST", "/v2/customnode/install/git_url"): self.m_git_url,
                ("POST", "/v2/manager/queue/start"): self.m_start,
                ("POST", "/v2/manager/queue/reset"): self.m_reset,
                ("POST", "/v2/manager/reboot"): self.m_reboot,
            }
        if self.flavour == "v4":
            return {
                ("GET", "/v2/manager/is_legacy_manager_ui"): self.m_is_legacy_ui,
                ("GET", "/v2/manager/version"): self.m_version,
                ("GET", "/v2/customnode/installed"): self.m_installed,
                ("GET", "/v2/manager/queue/status"): self.m_status,
                ("GET", "/v2/manager/queue/history"): self.m_history,
                ("POST", "/v2/manager/queue/task"): self.m_task,
                ("POST", "/v2/manager/queue/start"): self.m_start,
                ("POST", "/v2/manager/queue/reset"): self.m_reset,
                ("POST", "/v2/manager/reboot"): self.m_reboot,
            }
        return {
            ("GET", "/manager/version"): self.m_version,
            ("GET", "/customnode/installed"): self.m_installed,
            ("GET", "/manager/queue/status"): self.m_status,
            ("POST", "/manager/queue/install"): self.m_legacy_install,
            ("GET", "/externalmodel/getlist"): self.m_model_list,
            ("POST", "/manager/queue/install_model"): self.m_install_model,
            ("POST", "/customnode/install/git_url"): self.m_git_url,
            ("POST", "/manager/queue/start"): self.m_start,
            ("POST", "/manager/queue/reset"): self.m_reset,
            ("POST", "/manager/reboot"): self.m_reboot,
        }

    # ------------------------------------------------------------------ handlers
    async def _body(self, request) -> tuple[object, web.Response | None]:
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        raw = await request.read()
        if raw and ctype in FORM_TYPES:
            return None, web.Response(status=400, text=FORM_REFUSAL, content_type="text/plain")
        if not raw:
            return None, None
        try:
            return json.loads(raw), None
        except ValueError:
            return None, web.Response(status=400, text="Invalid JSON", content_type="text/plain")

    async def m_version(self, request):
        return web.Response(text=self.manager_version, content_type="text/plain")

    async def m_is_legacy_ui(self, request):
        return web.json_response({"is_legacy_manager_ui": self.legacy_ui})

    async def m_history_legacy_ui(self, request):  # observed: 400 with an empty body for ?ui_id=
        return web.Response(status=400)

    async def m_model_list(self, request):
        if "mode" not in request.rel_url.query:  # the real route reads query["mode"]: KeyError → 500
            return web.Response(status=500, text="500 Internal Server Error")
        models = [dict(m, installed="True" if m["filename"] in self.models_installed else "False")
                  for m in MODEL_LIST]
        return web.json_response({"models": models})

    async def m_install_model(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        if self.refuse in ("security_text", "comfyui_outdated", "security_level"):
            return web.Response(status=403, text=SECURITY_TEXT, content_type="text/plain")
        keys = ("name", "type", "base", "save_path", "url", "filename")
        listed = isinstance(body, dict) and any(all(body.get(k) == m[k] for k in keys) for m in MODEL_LIST)
        if not listed:  # check_whitelist_for_model
            return web.Response(status=400, text="Invalid model install request is detected", content_type="text/plain")
        self.queued.append({"ui_id": body.get("ui_id"), "kind": "install-model", "params": body,
                            "client_id": body.get("client_id")})
        self._total += 1
        return web.Response(status=200)

    async def m_batch(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        failed = []
        for item in (body or {}).get("install", []) if isinstance(body, dict) else []:
            if self.refuse in ("security_text", "comfyui_outdated", "security_level", "unlisted"):
                failed.append(item.get("id"))
                continue
            self.queued.append({"ui_id": item.get("ui_id"), "kind": "install", "params": item})
            self._total += 1
        await self._run_queue()
        return web.json_response({"failed": failed})

    async def m_git_url(self, request):
        raw = await request.read()
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        self.manager_posts.append((request.path, raw.decode("utf-8", "replace")))
        if self.flavour == "v4" and ctype in FORM_TYPES:
            return web.Response(status=400, text=FORM_REFUSAL, content_type="text/plain")
        if self.refuse == "git_flag":
            key = "reason" if self.flavour == "v4" else "error"
            return web.json_response({key: "allow_git_url_install"}, status=403)
        if self.flavour == "legacy":  # v3.41 reads JSON {"url"}
            try:
                url = json.loads(raw)["url"]
            except (ValueError, KeyError, TypeError):
                return web.Response(status=400, text="Invalid request body: expected JSON object with a 'url' field")
        else:
            url = raw.decode("utf-8", "replace")
        if not url.startswith("https://"):
            return web.Response(status=400)
        self.git_installs.append(url)
        name = url.rstrip("/").split("/")[-1].removesuffix(".git")
        self.installed[name] = {"ver": "nightly", "cnr_id": "", "aux_id": url.split("/", 3)[-1], "enabled": True}
        return web.Response(status=200)

    async def m_installed(self, request):
        return web.json_response(self.installed)

    async def m_status(self, request):
        body = {"total_count": self._total, "done_count": self._done,
                "in_progress_count": 0, "is_processing": False}
        if self.flavour == "v4":
            body["pending_count"] = len(self.queued)
        return web.json_response(body)

    async def m_history(self, request):
        ui_id = request.rel_url.query.get("ui_id")
        if ui_id:
            return web.json_response({"history": self.task_history.get(ui_id, {})})
        return web.json_response({"history": self.task_history})

    async def m_task(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        if not (isinstance(body, dict) and isinstance(body.get("params"), dict) and body.get("kind") and body.get("ui_id")):
            return web.Response(status=400, text="Invalid task data", content_type="text/plain")
        self.queued.append({"ui_id": body["ui_id"], "kind": body["kind"], "params": body["params"],
                            "client_id": body.get("client_id")})
        self._total += 1
        return web.Response(status=200)

    async def m_legacy_install(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        if self.refuse == "security_text":
            return web.Response(status=403, text=SECURITY_TEXT, content_type="text/plain")
        if self.refuse == "comfyui_outdated":  # the entry gate of queue/install answers with text
            return web.Response(status=403, text=SECURITY_TEXT, content_type="text/plain")
        if self.refuse == "unlisted":
            return web.Response(status=404, text=SECURITY_TEXT, content_type="text/plain")
        if not isinstance(body, dict) or not body.get("id"):
            return web.Response(status=400, text="Invalid request", content_type="text/plain")
        self.queued.append({"ui_id": body.get("ui_id"), "kind": "install", "params": body})
        self._total += 1
        return web.Response(status=200)

    def _ws(self, event: str, data: dict, client_id: str | None = None) -> None:
        self._emit(event, data, client_id if client_id in self._sockets else None)

    async def m_start(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        started = bool(self.queued)
        await self._run_queue()
        return web.Response(status=200 if started else 201)

    async def _run_queue(self) -> None:
        """Run every queued task at once and send the progress messages of this flavour."""
        nodepack_result: dict[str, str] = {}
        model_result: dict[str, str] = {}
        tasks = list(self.queued)
        self.queued.clear()
        total = self._total
        for task in tasks:
            ui_id, params, kind = task["ui_id"], task["params"], task["kind"]
            new_ui = self.flavour == "v4" and not self.legacy_ui
            if new_ui:
                self._ws("cm-task-started", {"ui_id": ui_id, "kind": kind, "timestamp": "2026-11-28T00:00:00",
                                             "state": {}}, task.get("client_id"))
            if kind == "install-model":
                if self.refuse == "model_download":
                    result = f"Model installation error: {params.get('url')}"
                else:
                    self.models_installed[str(params.get("filename"))] = dict(params)
                    result = "success"
                model_result[ui_id] = result
            elif self.refuse == "task_failed":
                result = self.task_failure
                nodepack_result[ui_id] = result
            else:
                pack = str(params.get("id"))
                self.installed[pack] = {"ver": params.get("version") or "1.0.0", "cnr_id": pack,
                                        "aux_id": None, "enabled": True}
                result = "success"
                nodepack_result[ui_id] = result
            status_str = "success" if result == "success" else "error"
            if self.flavour == "v4" and not self.legacy_ui:
                self.task_history[ui_id] = {  # the shape observed on 4.3 (offline)
                    "ui_id": ui_id, "kind": kind, "result": result,
                    "status": {"status_str": status_str, "completed": True,
                               "messages": [] if result == "success" else [result]},
                }
                self._ws("cm-task-completed", {"ui_id": ui_id, "kind": kind, "result": result,
                                               "status": self.task_history[ui_id]["status"],
                                               "timestamp": "2026-11-28T00:00:00", "state": {}}, task.get("client_id"))
            self._done += 1
            self._ws("cm-queue-status", {"status": "in_progress", "target": ui_id,
                                         "ui_target": "model_manager" if kind == "install-model" else "nodepack_manager",
                                         "total_count": total, "done_count": self._done})
        if not tasks:
            return
        if self.flavour == "legacy":
            self._ws("cm-queue-status", {"status": "done", "nodepack_result": nodepack_result,
                                         "model_result": model_result, "total_count": total, "done_count": self._done})
        else:
            if self.legacy_ui:
                self._ws("cm-queue-status", {"status": "batch-done", "nodepack_result": nodepack_result,
                                             "model_result": model_result, "total_count": total,
                                             "done_count": self._done, "batch_id": "b1", "remaining_batch_count": 0})
            self._ws("cm-queue-status", {"status": "all-done"})

    async def m_reset(self, request):
        body, refusal = await self._body(request)
        if refusal is not None:
            return refusal
        self.queued.clear()
        self._total = self._done = 0
        return web.Response(status=200)

    async def m_reboot(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        if self.refuse in ("comfyui_outdated", "security_level"):
            return web.json_response({"error": self.refuse}, status=403)
        if self.refuse == "security_text":
            return web.Response(status=403, text=SECURITY_TEXT, content_type="text/plain")
        if self.refuse == "strong":
            return web.Response(status=403)
        self.reboots += 1

        async def later():  # like the real re-exec: the port closes, every connection drops
            await asyncio.sleep(0.05)  # let this answer go out first
            await self._site.stop()
            server = self._runner.server if self._runner is not None else None
            for conn in list(getattr(server, "connections", ()) or ()):
                conn.force_close()
            await asyncio.sleep(self.reboot_downtime)
            await self._listen(self.port)
            await self._arestart(0)

        asyncio.ensure_future(later())
        return web.Response(status=200)


__all__ = ["ManagerDouble", "SECURITY_TEXT", "FORM_REFUSAL", "MODEL_LIST"]
