"""ComfyUI-Manager adapter: which Manager a server has, what it has installed, its install queue,
registry, git-URL and model-list installs, reboots, per-task progress from the Manager's ``cm-*``
WebSocket messages (``TaskTracker``), and every refusal as one plain sentence with the fix.

Flavours (comfyui-api.md §8.1):

* ``v4``: the pip ``comfyui-manager`` 4.x, routes under ``/v2/...`` (``GET /v2/manager/version`` →
  ``V4.3``). Its default ("new") UI module installs through ``/v2/manager/queue/task`` and has no
  model list and no git-URL install; with ``--enable-manager-legacy-ui`` (``legacy_ui``) the routes
  are ``/v2/manager/queue/batch``, ``/v2/manager/queue/install_model``, ``/v2/externalmodel/getlist``
  and ``/v2/customnode/install/git_url`` instead (observed on 4.3);
* ``legacy``: the v3.x custom node, routes ``/manager/...`` and ``/customnode/...``;
* ``none``: neither answers (404);
* ``cloud``: Comfy Cloud curates its custom nodes; there is nothing to install.

Refusals (§8.3–§8.5) are raised as ``ManagerRefused`` with a ``reason`` code. Nothing here ever
sends an install twice: POSTs are not retried by the transport, and a refused install is reported,
not repeated.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping
from urllib.parse import urlsplit

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
    "ModelEntry",
    "TaskState",
    "TaskTracker",
    "Manager",
    "explain_refusal",
    "listen_address",
]

Flavour = Literal["v4", "legacy", "none", "cloud"]

CLOUD_SENTENCE = (
    "Comfy Cloud curates its custom nodes: there is no ComfyUI-Manager to install from. Ask Comfy "
    "support (or check the Cloud documentation) for nodes you need."
)
NO_MODEL_LIST_SENTENCE = (
    "This ComfyUI-Manager runs its new UI, which has no model list. To install models from the "
    "Manager's list, start ComfyUI with --enable-manager-legacy-ui; otherwise copy model files into "
    "the server's models/<folder> and press Reload on the Models section."
)
NO_GIT_URL_SENTENCE = (
    "This ComfyUI-Manager runs its new UI, which installs node packs from the Comfy Registry only, not "
    "from a git URL. Install the pack by its registry id, or start ComfyUI with "
    "--enable-manager-legacy-ui (and allow_git_url_install = true in the Manager's config.ini)."
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
    legacy_ui: bool = False  # v4 only: started with --enable-manager-legacy-ui

    @property
    def present(self) -> bool:
        return self.flavour in ("v4", "legacy")

    @property
    def has_model_list(self) -> bool:
        """The legacy Manager and v4's legacy UI serve the model list; v4's new UI does not."""
        return self.flavour == "legacy" or (self.flavour == "v4" and self.legacy_ui)

    @property
    def has_git_url_install(self) -> bool:
        return self.has_model_list  # the same two: v4's new UI installs from the registry only

    @property
    def label(self) -> str:
        label = {"v4": "ComfyUI-Manager 4 (pip package)", "legacy": "ComfyUI-Manager 3 (legacy custom node)",
                 "none": "No ComfyUI-Manager", "cloud": "Comfy Cloud (curated nodes)"}[self.flavour]
        return label + (", legacy UI" if self.flavour == "v4" and self.legacy_ui else "")


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


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One entry of the Manager's model list (``model-list.json``, served by ``/externalmodel/getlist``)."""
    name: str
    type: str
    base: str
    save_path: str  # "default" (the folder of ``type``) or a folder under models/
    filename: str
    url: str
    description: str = ""
    size: str = ""
    installed: bool = False

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> "ModelEntry | None":
        """``None`` for an entry without a name, filename or http(s) URL (nothing to install)."""
        def text(key: str) -> str:
            value = raw.get(key)
            return " ".join(str(value).split()) if isinstance(value, (str, int, float)) else ""

        name, filename, url = text("name"), text("filename"), text("url")
        if not name or not filename or not url.lower().startswith(("https://", "http://")):
            return None
        installed = raw.get("installed")
        return cls(name, text("type"), text("base"), text("save_path") or "default", filename, url,
                   text("description")[:500], text("size"),
                   installed is True or str(installed).lower() == "true")

    def request(self) -> dict[str, str]:
        """The fields the Manager checks against its list (it refuses anything else)."""
        return {"name": self.name, "type": self.type, "base": self.base, "save_path": self.save_path,
                "url": self.url, "filename": self.filename}

    def matches(self, text: str) -> bool:
        """Case-insensitive search over name, type, base, filename and description."""
        needle = text.strip().lower()
        hay = " ".join((self.name, self.type, self.base, self.filename, self.description, self.save_path)).lower()
        return all(word in hay for word in needle.split())


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
    kind: str = "node",
) -> ManagerRefused:
    """One plain sentence (what happened, which gate, what to change) for a refused Manager call.

    ``kind``: ``node`` (a registry install or other action), ``model`` (a model-list install) or
    ``git_url`` — the same status means a different gate for each.
    """
    status = reply.status
    text = reply.text().strip()
    body: Any = None
    if reply.content_type == "application/json":
        try:
            body = reply.json()
        except E.BadResponse:
            body = None
    code = None
    if isinstance(body, Mapping):  # v3.41: {"error": flag}; 4.3 legacy UI: {"reason": flag} (observed)
        code = next((body[k] for k in ("error", "reason") if isinstance(body.get(k), str)), None)
    loopback = _is_loopback_listen(listen)
    old_comfy = bool(comfyui_version) and _version_tuple(comfyui_version) < (0, 3, 76)

    if status == 400 and "Content-Type" in text:
        return ManagerRefused("content_type", (
            f"The Manager refused the {action} request because of its format (a form-encoded POST). "
            "This is a panel bug; please report it."), status=400)
    if status == 400 and kind == "model":
        return ManagerRefused("bad_request", (
            f"The Manager refused to {action}: the model is not in its model list (it installs listed "
            "models only). Reload the model list and pick the model from it."), status=400)
    if status == 400 and kind == "git_url":
        return ManagerRefused("bad_request", (
            f"The Manager could not {action}: the clone or its install step failed (a wrong URL, a "
            "private repository, or no internet on the server). The ComfyUI log has the details."),
            status=400)
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
    if status == 403 and not text and kind == "git_url":
        return ManagerRefused("allow_git_url_install", (
            f"The Manager refused to {action}: installing from a git URL is switched off. Set "
            "allow_git_url_install = true in ComfyUI-Manager's config.ini and make ComfyUI listen on "
            "127.0.0.1 (both are needed), then restart ComfyUI."), status=403)
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


def explain_task_failure(message: str, *, network_mode_offline: bool | None = None, kind: str = "node") -> str:
    """A sentence for an install task that the Manager accepted and then failed in its worker.

    ``kind="model"``: a model download (the worker answers "Model installation error: <url>").
    """
    low = (message or "").lower()
    if kind == "model" or "model installation error" in low:
        host = ""
        for word in (message or "").split():
            if word.lower().startswith(("https://", "http://")):
                host = word.split("/")[2][:80]
                break
        where = f" from {host}" if host else ""
        return (f"The Manager could not download the model{where}: the server has no internet access "
                "(or runs with network_mode = offline), or the download site refused it. Check the server's "
                "network, or copy the file into its models folder by hand.")
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


def _json_or_none(reply: Reply) -> Any:
    try:
        return reply.json()
    except E.BadResponse:
        return None


def check_git_url(url: str) -> str:
    """An https (or http) URL of a git repository, trimmed; anything else raises ``InvalidInput``."""
    clean = (url or "").strip()
    try:
        parts = urlsplit(clean)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if (parts is None or parts.scheme not in ("https", "http") or not host or parts.username or parts.password
            or len(clean) > 500 or any(c.isspace() or ord(c) < 32 for c in clean)
            or len([p for p in parts.path.split("/") if p]) < 2):
        raise E.InvalidInput(
            "Enter the node pack's git repository as an https URL, e.g. https://github.com/owner/repo "
            "(no spaces, no user name or password in it).")
    return clean


# -- per-task progress --------------------------------------------------------------------------------
@dataclass(slots=True)
class TaskState:
    """One Manager task this session queued, as the ``cm-*`` messages and the history report it."""
    ui_id: str
    kind: str  # "install" | "install-model"
    label: str  # the pack id or model name, for the table
    state: str = "queued"  # queued | running | success | failed | done (finished, result unknown)
    message: str = ""  # a plain sentence for "failed" and "done"

    @property
    def finished(self) -> bool:
        return self.state in ("success", "failed", "done")


class TaskTracker:
    """This session's Manager tasks, moved along by the Manager's WebSocket messages.

    v4 (new UI) sends ``cm-task-started`` / ``cm-task-completed`` ``{ui_id, kind, result,
    status: {status_str, messages}}`` to the requesting ``client_id`` only; the legacy Manager and v4's
    legacy UI broadcast ``cm-queue-status`` ``{status: in_progress, target}`` per task and
    ``{status: done | batch-done, nodepack_result, model_result}`` (ui_id → ``"success"`` or an error
    message) at the end, then ``all-done`` (observed on 4.3 legacy UI). ``feed`` takes the raw type and
    data; it is thread-safe (called from the listener thread). Polling ``Manager.task_result`` (v4
    history) is the fallback for a missed message.
    """

    def __init__(self, limit: int = 50) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskState] = {}
        self._limit = limit
        self.queue_done = 0
        self.queue_total = 0
        self.version = 0

    def new(self, kind: str, label: str) -> str:
        """Register a task before sending it (its messages can beat the POST's answer); returns its ui_id."""
        ui_id = uuid.uuid4().hex
        self.add(ui_id, kind, label)
        return ui_id

    def forget(self, ui_id: str) -> None:
        """Drop a task the Manager refused (it never ran)."""
        with self._lock:
            if self._tasks.pop(ui_id, None) is not None:
                self.version += 1

    def add(self, ui_id: str, kind: str, label: str) -> None:
        with self._lock:
            self._tasks[ui_id] = TaskState(ui_id, kind, label)
            while len(self._tasks) > self._limit:
                self._tasks.pop(next(iter(self._tasks)))
            self.version += 1

    def tasks(self) -> list[TaskState]:
        with self._lock:
            return [TaskState(t.ui_id, t.kind, t.label, t.state, t.message) for t in reversed(self._tasks.values())]

    def get(self, ui_id: str) -> TaskState | None:
        with self._lock:
            t = self._tasks.get(ui_id)
            return None if t is None else TaskState(t.ui_id, t.kind, t.label, t.state, t.message)

    @property
    def pending(self) -> bool:
        with self._lock:
            return any(not t.finished for t in self._tasks.values())

    def _finish(self, ui_id: str, result: Any, status_str: Any = None, messages: Any = ()) -> None:
        task = self._tasks.get(ui_id)
        if task is None or task.finished:
            return
        ok = status_str == "success" if status_str else result == "success"
        if ok:
            task.state, task.message = "success", ""
        else:
            text = " ".join(str(m) for m in (messages or ()) if m) or (result if isinstance(result, str) else "")
            task.state = "failed"
            task.message = explain_task_failure(text, kind="model" if task.kind == "install-model" else "node")

    def feed(self, raw_type: str, data: Any) -> bool:
        """Apply one WebSocket message; True when it changed anything of ours."""
        if not isinstance(raw_type, str) or not raw_type.startswith("cm-") or not isinstance(data, Mapping):
            return False
        with self._lock:
            before = [(t.state, t.message) for t in self._tasks.values()]
            ui_id = data.get("ui_id")
            if raw_type == "cm-task-started" and isinstance(ui_id, str) and ui_id in self._tasks:
                if not self._tasks[ui_id].finished:
                    self._tasks[ui_id].state = "running"
            elif raw_type in ("cm-task-completed", "cm-task-failed") and isinstance(ui_id, str):
                st = data.get("status")
                status_str = st.get("status_str") if isinstance(st, Mapping) else None
                messages = st.get("messages") if isinstance(st, Mapping) else ()
                result = data.get("result", data.get("error"))
                if raw_type == "cm-task-failed" and not status_str:
                    status_str = "failed"
                self._finish(ui_id, result, status_str, messages if isinstance(messages, list) else ())
            elif raw_type == "cm-queue-status":
                for key, attr in (("done_count", "queue_done"), ("total_count", "queue_total")):
                    if isinstance(data.get(key), int):
                        setattr(self, attr, data[key])
                status = data.get("status")
                target = data.get("target")
                if status == "in_progress" and isinstance(target, str) and target in self._tasks:
                    if not self._tasks[target].finished:
                        self._tasks[target].state = "running"
                for key in ("nodepack_result", "model_result"):
                    results = data.get(key)
                    if isinstance(results, Mapping):
                        for uid, result in results.items():
                            if isinstance(uid, str):
                                self._finish(uid, result)
                if status in ("all-done", "done"):  # the queue is empty: nothing of ours still runs
                    for task in self._tasks.values():
                        if not task.finished:  # its result was in a message this session missed
                            task.state = "done"
                            task.message = ("The Manager finished this task without reporting its result here; "
                                            "check the installed list or the ComfyUI log.")
            after = [(t.state, t.message) for t in self._tasks.values()]
            changed = before != after
            if changed:
                self.version += 1
            return changed

    def feed_event(self, event: Any) -> bool:
        """``feed`` for an ``events.UnknownEvent`` (the listener's type for ``cm-*`` messages)."""
        return self.feed(getattr(event, "raw_type", ""), getattr(event, "data", None))

    def apply_result(self, result: "TaskResult") -> bool:
        """Apply a v4 history entry (the polling fallback)."""
        with self._lock:
            task = self._tasks.get(result.ui_id)
            if task is None or task.state in ("success", "failed"):  # "done" (result unknown) may learn it
                return False
            if result.status == "success":
                task.state, task.message = "success", ""
            elif result.failed:
                task.state = "failed"
                task.message = explain_task_failure(result.message, kind="model" if task.kind == "install-model" else "node")
            else:
                return False
            self.version += 1
            return True

    def wait(self, ui_id: str, timeout: float, *, poll: Callable[[], "TaskResult | None"] | None = None,
             interval: float = 0.3, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> TaskState | None:
        """Wait until ``ui_id`` finished (from messages, or ``poll`` — the v4 history), up to ``timeout``."""
        deadline = clock() + timeout
        while True:
            if poll is not None:
                result = poll()
                if result is not None:
                    self.apply_result(result)
            task = self.get(ui_id)
            if task is None or task.finished or clock() >= deadline:
                return task
            sleep(interval)


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
                legacy_ui = False
                if flavour == "v4":  # {"is_legacy_manager_ui": bool} (observed on 4.3)
                    ui = self.transport.request("GET", "/v2/manager/is_legacy_manager_ui", ok=(400, 403, 404, 405))
                    try:
                        body = ui.json() if ui.status == 200 else None
                    except E.BadResponse:
                        body = None
                    legacy_ui = isinstance(body, Mapping) and body.get("is_legacy_manager_ui") is True
                self._info = ManagerInfo(flavour, version, legacy_ui=legacy_ui)  # type: ignore[arg-type]
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

    def _post(self, path: str, action: str, json_body: Any = None, *, kind: str = "node",
              data: bytes | None = None, headers: Mapping[str, str] | None = None,
              timeout: tuple[float, float] | None = None) -> Reply:
        """One POST, never retried. JSON or no body: the Manager refuses form posts (400)."""
        reply = self.transport.request("POST", path, json_body=json_body, data=data, headers=headers,
                                       ok=(400, 403, 404, 405, 410), timeout=timeout)
        if reply.status >= 400:
            raise explain_refusal(reply, action=action, kind=kind, **self._context())
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

    def install(self, registry_id: str, version: str = "latest", *, start: bool = True,
                ui_id: str | None = None) -> str:
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
        ui_id = ui_id or uuid.uuid4().hex
        action = f"install “{pack}”"
        if info.flavour == "v4" and info.legacy_ui:  # the legacy UI module: a batch that starts itself
            item = {"id": pack, "version": version, "selected_version": version, "mode": "remote",
                    "channel": "default", "ui_id": ui_id, "skip_post_install": False}
            reply = self._post("/v2/manager/queue/batch", action, {"install": [item]})
            failed = _json_or_none(reply)
            if isinstance(failed, Mapping) and pack in (failed.get("failed") or ()):
                raise ManagerRefused("security_level", (
                    f"The Manager refused to {action}: its security level or its list of known node packs "
                    "does not allow it. The exact reason is in the ComfyUI server log."))
            return ui_id
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

    def model_list(self) -> list[ModelEntry]:
        """The Manager's model list (``GET /externalmodel/getlist?mode=cache``; v4 legacy UI: ``/v2/...``).

        Raises:
            ManagerRefused: ``no_model_list`` when this Manager has none (v4's new UI answers 404).
        """
        info = self._require("read the model list")
        if not info.has_model_list:
            raise ManagerRefused("no_model_list", NO_MODEL_LIST_SENTENCE)
        path = "/v2/externalmodel/getlist" if info.flavour == "v4" else "/externalmodel/getlist"
        reply = self.transport.request("GET", path, params={"mode": "cache"}, ok=(404,), max_bytes=32 << 20)
        if reply.status == 404:
            raise ManagerRefused("no_model_list", NO_MODEL_LIST_SENTENCE, status=404)
        body = _json_or_none(reply)
        models = body.get("models") if isinstance(body, Mapping) else None
        if not isinstance(models, list):
            raise E.BadResponse()
        entries = [ModelEntry.from_raw(m) for m in models if isinstance(m, Mapping)]
        return [m for m in entries if m is not None]

    def install_model(self, entry: ModelEntry, *, start: bool = True, ui_id: str | None = None) -> str:
        """Queue the download of a model-list entry (and start the queue); returns its ``ui_id``.

        Pass ``ui_id`` (``TaskTracker.new``) to follow the task: its messages may arrive before this returns.

        v4 new UI: ``POST /v2/manager/queue/task`` kind ``install-model``; v4 legacy UI:
        ``/v2/manager/queue/install_model``; legacy: ``/manager/queue/install_model``. Sent once.
        """
        info = self._require("install a model")
        ui_id = ui_id or uuid.uuid4().hex
        action = f"install the model “{entry.name}”"
        if info.flavour == "v4" and not info.legacy_ui:
            self._post("/v2/manager/queue/task", action,
                       {"ui_id": ui_id, "client_id": self.client.client_id, "kind": "install-model",
                        "params": entry.request()}, kind="model")
        else:
            path = "/v2/manager/queue/install_model" if info.flavour == "v4" else "/manager/queue/install_model"
            self._post(path, action, {**entry.request(), "ui_id": ui_id, "client_id": self.client.client_id},
                       kind="model")
        if start:
            self.start_queue()
        return ui_id

    def install_git_url(self, url: str) -> None:
        """Clone and install a node pack from a git URL (synchronous on the server; no queue).

        Only the legacy Manager and v4's legacy UI offer it, behind ``allow_git_url_install`` and a
        loopback ``--listen``. v3.41 reads JSON ``{"url"}``; older v3 and v4's legacy UI read the raw
        URL as the body (sent as ``application/octet-stream``: ``text/plain`` is refused as a form post).

        Raises:
            InvalidInput: not an https git URL.
            ManagerRefused: ``no_git_url`` (this Manager has no such route) or the server's refusal.
        """
        clean = check_git_url(url)
        info = self._require("install from a git URL")
        if not info.has_git_url_install:
            raise ManagerRefused("no_git_url", NO_GIT_URL_SENTENCE)
        action = f"install the node pack from {clean}"
        slow = (5.0, 900.0)  # the server clones and runs the pack's install step before it answers
        if info.flavour == "legacy" and _version_tuple(info.version) >= (3, 41):
            self._post("/customnode/install/git_url", action, {"url": clean}, kind="git_url", timeout=slow)
        else:
            path = "/v2/customnode/install/git_url" if info.flavour == "v4" else "/customnode/install/git_url"
            self._post(path, action, data=clean.encode("utf-8"), timeout=slow,
                       headers={"Content-Type": "application/octet-stream"}, kind="git_url")

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
