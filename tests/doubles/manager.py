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


class ManagerDouble(ComfyDouble):
    _thread_name = "manager-double"

    def __init__(self, *args, flavour: str = "v4", refuse: str | None = None, listen: str = "127.0.0.1",
                 reboot_downtime: float = 0.6, task_failure: str = "Cannot resolve install target: 'comfyui-impact-pack@latest'", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if flavour not in ("v4", "legacy"):
            raise ValueError(flavour)
        self.flavour = flavour
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
        if self.flavour == "v4":
            return {
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
        self.queued.append({"ui_id": body["ui_id"], "kind": body["kind"], "params": body["params"]})
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

    async def m_start(self, request):
        body, refusal = await self._body(request)
        self.manager_posts.append((request.path, body))
        if refusal is not None:
            return refusal
        started = bool(self.queued)
        for task in self.queued:
            params = task["params"]
            pack = str(params.get("id"))
            if self.refuse == "task_failed":
                self.task_history[task["ui_id"]] = {  # the shape observed on 4.3 (offline)
                    "ui_id": task["ui_id"], "kind": task["kind"], "result": self.task_failure,
                    "status": {"status_str": "error", "completed": True, "messages": [self.task_failure]},
                }
            else:
                self.installed[pack] = {"ver": params.get("version") or "1.0.0", "cnr_id": pack,
                                        "aux_id": None, "enabled": True}
                self.task_history[task["ui_id"]] = {
                    "ui_id": task["ui_id"], "kind": task["kind"], "result": "success",
                    "status": {"status_str": "success", "completed": True, "messages": []},
                }
            self._done += 1
        self.queued.clear()
        return web.Response(status=200 if started else 201)

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


__all__ = ["ManagerDouble", "SECURITY_TEXT", "FORM_REFUSAL"]
