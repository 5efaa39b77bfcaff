"""ComfyUI-Manager adapter: which Manager a server has, what it has installed, its install queue,
registry installs and reboots, and every refusal as one plain sentence with the fix.

Flavours (comfyui-api.md §8.1):

* ``v4``: the pip ``comfyui-manager`` 4.x, routes under ``/v2/...`` (``GET /v2/manager/version`` →
  ``V4.3``);
* ``legacy``: the v3.x custom node, routes ``/manager/...`` and ``/customnode/...``;
* ``none``: neither answers (404);
* ``cloud``: Comfy Cloud curates its custom nodes; there is nothing to install.

Refusals (§8.3–§8.5) are raised as ``ManagerRefused`` with a ``reason`` code. Nothing here ever
sends an install twice: POSTs are not retried by the transport, and a refused install is reported,
not repeated.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from . import errors as E
from .client import ComfyClient
from .transport import Reply

__all__ = [
    "Flavour",
    "ManagerInfo",
    "InstalledPack",
    "QueueStatus",
    "TaskResult",
    "ManagerRefused",
    "Manager",
    "explain_refusal",
    "listen_address",
]

Flavour = Literal["v4", "legacy", "none", "cloud"]

CLOUD_SENTENCE = (
    "Comfy Cloud curates its custom nodes: there is no ComfyUI-Manager to install from. Ask Comfy "
    "support (or check the Cloud documentation) for nodes you need."
)
NONE_SENTENCE = (
    "This server has no ComfyUI-Manager. To install custom nodes from the panel, install "
    "ComfyUI-Manager on the server (ComfyUI ≥ 0.4: start it with --enable-manager) and restart it."
)


@dataclass(frozen=True, slots=True)
class ManagerInfo:
    flavour: Flavour
    version: str = ""  # as the Manager reports it, e.g. "V4.3"
    message: str = ""  # for "none" and "cloud": why nothing can be done, and what to do

    @property
    def present(self) -> bool:
        return self.flavour in ("v4", "legacy")

    @property
    def label(self) -> str:
        return {"v4": "ComfyUI-Manager 4 (pip package)", "legacy": "ComfyUI-Manager 3 (legacy custom node)",
                "none": "No ComfyUI-Manager", "cloud": "Comfy Cloud (curated nodes)"}[self.flavour]


@dataclass(frozen=True, slots=True)
class InstalledPack:
    name: str  # the folder name under custom_nodes
    version: str
    cnr_id: str
    aux_id: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class QueueStatus:
    total: int
    done: int
    in_progress: int
    pending: int
    is_processing: bool

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class TaskResult:
    ui_id: str
    status: str  # "success", or "error" (observed on 4.3) / "failed" (source), or other Manager text
    message: str

    @property
    def failed(self) -> bool:
        return self.status in ("error", "failed")


class ManagerRefused(E.ComfyPanelError):
    """The Manager (or the server in front of it) refused an action. ``reason`` is a short code:
    ``security_level``, ``comfyui_outdated``, ``allow_git_url_install``, ``allow_pip_install``,
    ``unlisted``, ``forbidden``, ``bad_request``, ``content_type``, ``network``, ``not_found``,
    ``no_manager``, ``cloud``, ``task_failed``."""

    def __init__(self, reason: str, user_message: str, *, status: int | None = None) -> None:
        self.reason = reason
        super().__init__(user_message, status=status)


# -- explaining refusals ------------------------------------------------------------------------------
def listen_address(system_stats_raw: Mapping[str, Any] | None) -> str | None:
    """The ``--listen`` value from ``/system_stats`` ``argv`` (``None`` when not given: ComfyUI then
    listens on 127.0.0.1)."""
    try:
        argv = list((system_stats_raw or {}).get("system", {}).get("argv") or [])
    except AttributeError:
        return None
    for i, arg in enumerate(argv):
        if arg == "--listen":
            nxt = argv[i + 1] if i + 1 < len(argv) and not str(argv[i + 1]).startswith("--") else "0.0.0.0"
            return str(nxt)
        if str(arg).startswith("--listen="):
            return str(arg).split("=", 1)[1]
    return None


def _is_loopback_listen(listen: str | None) -> bool:
    if listen is None:
        return True  # ComfyUI's default is 127.0.0.1
    hosts = [h.strip() for h in listen.split(",") if h.strip()]
    try:
        return all(h == "localhost" or ipaddress.ip_address(h).is_loopback for h in hosts)
    except ValueError:
        return False


def _version_tuple(text: str | None) -> tuple[int, ...]:
    out = []
    for piece in (text or "").strip().lstrip("vV").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


_SECURITY_FIX = (
    "On the server, set security_level = normal (or weak) in ComfyUI-Manager's config.ini "
    "(user/default/ComfyUI-Manager/config.ini, or user/__manager/config.ini on ComfyUI ≥ 0.3.76) "
    "and restart ComfyUI."
)
_LISTEN_FIX = (
    "ComfyUI listens on a network address (--listen {listen}); the Manager only allows installs when it "
    "listens on 127.0.0.1, or with network_mode = personal_cloud in its config.ini."
)


def explain_refusal(
    reply: Reply,
    *,
    action: str,
    comfyui_version: str | None = None,
    manager_version: str | None = None,
    listen: str | None = None,
    flavour: str | None = None,
) -> ManagerRefused:
    """One plain sentence (what happened, which gate, what to change) for a refused Manager call."""
    status = reply.status
    text = reply.text().strip()
    body: Any = None
    if reply.content_type == "application/json":
        try:
            body = reply.json()
        except E.BadResponse:
            body = None
    code = body.get("error") if isinstance(body, Mapping) and isinstance(body.get("error"), str) else None
    loopback = _is_loopback_listen(listen)
    old_comfy = bool(comfyui_version) and _version_tuple(comfyui_version) < (0, 3, 76)

    if status == 400 and "Content-Type" in text:
        return ManagerRefused("content_type", (
            f"The Manager refused the {action} request because of its format (a form-encoded POST). "
            "This is a panel bug; please report it."), status=400)
    if status == 400:
        detail = f" ({text[:120]})" if text and len(text) < 200 else ""
        return ManagerRefused("bad_request", (
            f"The Manager refused the {action} request as invalid{detail}. Check the node pack id and "
            "version (the id as listed on registry.comfy.org)."), status=400)
    if code == "comfyui_outdated" or (status == 403 and old_comfy and not code and text.startswith("A security")):
        return ManagerRefused("comfyui_outdated", (
            f"The Manager refused to {action}: ComfyUI {comfyui_version or ''} is older than 0.3.76, so "
            "ComfyUI-Manager 3.38 and later force the strictest security level (“strong”) and refuse "
            "every install, update and reboot. Update ComfyUI to 0.3.76 or newer (or pin "
            "ComfyUI-Manager to 3.37), then restart.").replace("ComfyUI  is", "ComfyUI is"), status=status)
    if code in ("allow_git_url_install", "allow_pip_install"):
        flag = code
        return ManagerRefused(code, (
            f"The Manager refused to {action}: installing from a {'git URL' if 'git' in flag else 'pip package'} "
            f"is switched off. Set {flag} = true in ComfyUI-Manager's config.ini and make ComfyUI listen on "
            "127.0.0.1 (both are needed), then restart ComfyUI."), status=status)
    if code == "security_level" or (status == 403 and text.startswith("A security")):
        why = _LISTEN_FIX.format(listen=listen) if not loopback else _SECURITY_FIX
        return ManagerRefused("security_level", (
            f"The Manager refused to {action} because of its security level. {why} The exact reason is "
            "in the ComfyUI server log."), status=status)
    if status == 404 and text.startswith("A security"):
        return ManagerRefused("unlisted", (
            f"The Manager refused to {action}: the node pack is not in its list of known nodes, or its "
            "risk is too high for the configured security level. Install it from the Comfy Registry id "
            "instead, or ask the server's operator."), status=404)
    if status == 403 and "banned" in text:
        return ManagerRefused("forbidden", (
            f"The Manager refused to {action}: more than one computer has talked to this server, so "
            "ComfyUI-Manager blocks installs. Set network_mode = personal_cloud in its config.ini if "
            "this is intended, then restart."), status=403)
    if status == 403 and not text and flavour == "v4":
        # Observed on 4.3 with security_level = strong: reboot and snapshot restore answer an empty 403.
        why = _LISTEN_FIX.format(listen=listen) if not loopback else _SECURITY_FIX.replace(
            "(user/default/ComfyUI-Manager/config.ini, or user/__manager/config.ini on ComfyUI ≥ 0.3.76)",
            "(user/__manager/config.ini)")
        return ManagerRefused("security_level", (
            f"ComfyUI-Manager refused to {action} (403): its security level does not allow it. {why} "
            "(A proxy that adds an Origin header to the panel's requests would get the same answer from "
            "ComfyUI's origin check; the ComfyUI log says which.)"), status=403)
    if status == 403:
        return ManagerRefused("forbidden", (
            f"The server refused to {action} (403) without saying why. Either ComfyUI's origin check "
            "blocked the request (a proxy that adds an Origin header), or the Manager's security level "
            "does; the ComfyUI log says which."), status=403)
    if status == 404:
        return ManagerRefused("not_found", (
            f"The server has no Manager route to {action} (404): the Manager version may not offer it, "
            "or the Manager is not installed any more."), status=404)
    if status == 410:
        message = body.get("message") if isinstance(body, Mapping) else None
        return ManagerRefused("not_found", (
            f"The Manager no longer supports this ({action}): {message or 'the endpoint is deprecated'}."),
            status=410)
    return ManagerRefused("failed", f"The Manager could not {action} ({status}). Check the ComfyUI log.",
                          status=status)


def explain_task_failure(message: str, *, network_mode_offline: bool | None = None) -> str:
    """A sentence for an install task that the (v4) Manager accepted and then failed in its worker."""
    low = (message or "").lower()
    if "cannot resolve install target" in low or "is not a cnr node" in low:  # observed on 4.3 offline
        return ("The Manager could not find that node pack in the Comfy Registry. Check the id on "
                "registry.comfy.org. If the Manager runs offline (network_mode = offline in its config.ini) "
                "it cannot reach the registry at all: set network_mode = public and restart ComfyUI.")
    if network_mode_offline or "offline" in low:
        return ("The install failed because ComfyUI-Manager is in offline mode (network_mode = offline): "
                "it cannot download node packs. Set network_mode = public in its config.ini and restart "
                "ComfyUI to install from the registry.")
    if "security" in low:
        return ("The install was refused by ComfyUI-Manager's security level. " + _SECURITY_FIX)
    if any(w in low for w in ("network", "connection", "resolve", "timed out", "unreachable")):
        return ("The install failed because the server could not reach the internet (the Comfy Registry or "
                "GitHub). Check the server's network, then install again.")
    detail = " ".join((message or "").split())[:200]
    return f"The install failed on the server: {detail or 'no reason given'}. See the ComfyUI log."


# -- the adapter --------------------------------------------------------------------------------------
class Manager:
    """ComfyUI-Manager on the server behind ``client``. Detects the flavour lazily (``info()``)."""

    def __init__(self, client: ComfyClient, info: ManagerInfo | None = None) -> None:
        """``info``: a detection result from earlier (skips the version probes)."""
        self.client = client
        self._info: ManagerInfo | None = info

    @property
    def transport(self):
        return self.client.transport

    def info(self, *, refresh: bool = False) -> ManagerInfo:
        """Which Manager is present: ``GET /api/v2/manager/version``, then ``/api/manager/version``."""
        if self._info is not None and not refresh:
            return self._info
        if self.client.is_cloud:
            self._info = ManagerInfo("cloud", message=CLOUD_SENTENCE)
            return self._info
        for flavour, path in (("v4", "/v2/manager/version"), ("legacy", "/manager/version")):
            reply = self.transport.request("GET", path, ok=(400, 403, 404, 405))
            if reply.status == 200 and reply.content_type != "text/html":
                version = " ".join(reply.text().split())[:40]
                self._info = ManagerInfo(flavour, version)  # type: ignore[arg-type]
                return self._info
        self._info = ManagerInfo("none", message=NONE_SENTENCE)
        return self._info

    def _require(self, action: str) -> ManagerInfo:
        info = self.info()
        if info.flavour == "cloud":
            raise ManagerRefused("cloud", CLOUD_SENTENCE)
        if info.flavour == "none":
            raise ManagerRefused("no_manager", NONE_SENTENCE)
        return info

    def _path(self, v4: str, legacy: str) -> str:
        return v4 if self.info().flavour == "v4" else legacy

    def _context(self) -> dict[str, Any]:
        """What ``explain_refusal`` needs: the ComfyUI version and ``--listen``. Best effort."""
        try:
            stats = self.client.system_stats()
        except E.ComfyPanelError:
            return {"manager_version": self.info().version, "flavour": self.info().flavour}
        return {"comfyui_version": stats.comfyui_version, "listen": listen_address(stats.raw),
                "manager_version": self.info().version, "flavour": self.info().flavour}

    def _post(self, path: str, action: str, json_body: Any = None) -> Reply:
        """One POST, never retried. JSON or no body: the Manager refuses form posts (400)."""
        reply = self.transport.request("POST", path, json_body=json_body, ok=(400, 403, 404, 405, 410))
        if reply.status >= 400:
            raise explain_refusal(reply, action=action, **self._context())
        return reply

    # -- reading ------------------------------------------------------------------------------------
    def installed(self) -> list[InstalledPack]:
        """Installed node packs (``/v2/customnode/installed`` or ``/customnode/installed``)."""
        self._require("list installed node packs")
        body = self.transport.json("GET", self._path("/v2/customnode/installed", "/customnode/installed"))
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        out = []
        for name, meta in body.items():
            meta = meta if isinstance(meta, Mapping) else {}
            out.append(InstalledPack(str(name), str(meta.get("ver") or meta.get("version") or ""),
                                     str(meta.get("cnr_id") or ""), str(meta.get("aux_id") or ""),
                                     bool(meta.get("enabled", True))))
        return sorted(out, key=lambda p: p.name.lower())

    def queue_status(self) -> QueueStatus:
        self._require("read the install queue")
        body = self.transport.json("GET", self._path("/v2/manager/queue/status", "/manager/queue/status"))
        if not isinstance(body, Mapping):
            raise E.BadResponse()

        def num(key: str) -> int:
            try:
                return int(body.get(key) or 0)
            except (TypeError, ValueError):
                return 0

        total, done, running = num("total_count"), num("done_count"), num("in_progress_count")
        pending = num("pending_count") if "pending_count" in body else max(0, total - done - running)
        # Observed on 4.3: after a batch, total_count drops back to 0 while done_count stays 1.
        total = max(total, done + running + pending)
        return QueueStatus(total, done, running, pending, bool(body.get("is_processing")))

    def task_result(self, ui_id: str) -> TaskResult | None:
        """The v4 queue history entry of one task, or ``None`` while it has none (legacy: ``None``)."""
        if self._require("read the install history").flavour != "v4":
            return None
        reply = self.transport.request("GET", "/v2/manager/queue/history", params={"ui_id": ui_id},
                                       ok=(400, 404))
        if reply.status != 200:
            return None
        body = reply.json()
        hist = body.get("history") if isinstance(body, Mapping) else None
        if isinstance(hist, Mapping) and "status" not in hist and "result" not in hist:
            hist = hist.get(ui_id)
        if not isinstance(hist, Mapping) or not hist:
            return None
        st = hist.get("status")
        status = st.get("status_str") if isinstance(st, Mapping) else st
        result = hist.get("result")
        message = ""
        if isinstance(st, Mapping):
            message = " ".join(str(m) for m in st.get("messages") or () if m)
        if isinstance(result, str) and result not in ("success",):
            message = message or result
        return TaskResult(ui_id, str(status or result or "unknown"), message)

    # -- acting -------------------------------------------------------------------------------------
    def wait_task(self, ui_id: str, *, timeout: float = 15.0, interval: float = 0.3,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> TaskResult | None:
        """Poll the (v4) history for a task's result; ``None`` when there is none within ``timeout``
        (legacy: at once — it has no per-task history)."""
        deadline = clock() + timeout
        while True:
            result = self.task_result(ui_id)
            if result is not None or self.info().flavour != "v4" or clock() >= deadline:
                return result
            sleep(interval)

    def start_queue(self) -> None:
        """Start processing the install queue (queueing alone starts nothing)."""
        self._require("start the install queue")
        self._post(self._path("/v2/manager/queue/start", "/manager/queue/start"), "start the install queue")

    def install(self, registry_id: str, version: str = "latest", *, start: bool = True) -> str:
        """Queue the install of a node pack from the Comfy Registry (and start the queue).

        Returns the task's ``ui_id``. Sent exactly once.

        Raises:
            ManagerRefused: the server refused; ``user_message`` says which gate and what to change.
            InvalidInput: the id is empty or not a registry id.
        """
        pack = (registry_id or "").strip()
        if not pack or any(c in pack for c in " /\\:@") or len(pack) > 200:
            raise E.InvalidInput(
                "Enter the node pack's registry id as listed on registry.comfy.org (e.g. comfyui-impact-pack), "
                "not a URL.")
        version = (version or "latest").strip() or "latest"
        info = self._require("install a node pack")
        ui_id = uuid.uuid4().hex
        action = f"install “{pack}”"
        if info.flavour == "v4":
            params = {"id": pack, "version": version, "selected_version": version, "mode": "remote",
                      "channel": "default"}
            self._post("/v2/manager/queue/task", action,
                       {"ui_id": ui_id, "client_id": self.client.client_id, "kind": "install", "params": params})
        else:
            self._post("/manager/queue/install", action,
                       {"id": pack, "version": version, "selected_version": version, "channel": "default",
                        "mode": "remote", "ui_id": ui_id, "skip_post_install": False})
        if start:
            self.start_queue()
        return ui_id

    def reboot(self) -> None:
        """Ask the Manager to restart ComfyUI (``wait_back`` waits for it)."""
        self._require("restart the server")
        try:
            self._post(self._path("/v2/manager/reboot", "/manager/reboot"), "restart the server")
        except (E.CannotConnect, E.BadResponse):
            pass  # the process went away while answering: that is the restart

    def wait_back(self, *, timeout: float = 120.0, down_timeout: float = 10.0, interval: float = 0.5,
                  sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> bool:
        """After ``reboot``: wait for the server to go away (up to ``down_timeout``) and to answer
        ``/system_stats`` again. Returns True when it came back; False when it never went away.

        Raises:
            RequestTimedOut: it went away and did not come back within ``timeout``.
        """
        start = clock()
        went_down = False

        def probe() -> None:  # one try each: the retrying GET would paper over a short restart
            self.transport.request("GET", "/system_stats", retry=False, timeout=(2.0, 5.0))

        while clock() - start < down_timeout:
            try:
                probe()
            except E.ComfyPanelError:
                went_down = True
                break
            sleep(interval)
        if not went_down:
            return False
        while clock() - start < timeout:
            try:
                probe()
                self._info = None  # a restart may have changed the Manager
                return True
            except E.ComfyPanelError:
                sleep(interval)
        raise E.RequestTimedOut(self.client.connection.display_url, timeout)
