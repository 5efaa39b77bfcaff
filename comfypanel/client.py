"""``ComfyClient``: one typed method per ComfyUI / Comfy Cloud endpoint.

Local servers and Comfy Cloud share most routes (all under ``/api``); where they differ (queue
layout, interrupt scope, job status, ``/view`` redirects, missing routes) the method says so and
adapts, or raises ``NotSupported`` with a plain sentence. Capabilities are detected from the server
(version, kind, a probe of ``/api/jobs``) rather than assumed.

Every method raises subclasses of ``comfypanel.errors.ComfyPanelError`` only.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from . import errors as E
from .connection import Connection
from .transport import Reply, Transport, install_log_redaction
from .types import (
    ExecutionFailure,
    FileRef,
    HistoryEntry,
    JobStatus,
    QueuedPrompt,
    QueueItem,
    QueueState,
    SystemStats,
    normalise_cloud_state,
    normalise_jobs_api_status,
    output_files,
    parse_queued,
    sort_pending,
)

__all__ = ["ComfyClient", "Capabilities", "new_prompt_id", "parse_version"]

log = logging.getLogger("comfypanel.client")


def new_prompt_id() -> str:
    """A canonical lowercase UUID4: accepted by every server version (≥0.25 requires it)."""
    return str(uuid.uuid4())


def parse_version(text: str | None) -> tuple[int, ...]:
    """``"0.3.75"`` → ``(0, 3, 75)``; anything unparsable → ``()``."""
    parts = []
    for piece in (text or "").lstrip("v").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What this server can do, detected once per client."""

    is_cloud: bool
    version: tuple[int, ...]
    version_text: str
    jobs_api: bool  # GET /api/jobs (local ≥0.6.0 and Cloud)
    jobs_cancel: bool  # POST /api/jobs/{id}/cancel (local ≥0.26.0)
    targeted_interrupt: bool  # POST /interrupt {"prompt_id"} (local ≥0.3.57; Cloud interrupts all)
    max_upload_size: int | None
    supports_preview_metadata: bool


class ComfyClient:
    """A client for one ``Connection``. Thread-safe; create one per browser session.

    Args:
        connection: where to talk to, with which credentials.
        transport: inject a prepared transport (tests); by default one is made.
        client_id: the WebSocket ``clientId`` also sent as ``client_id`` with every prompt.
    """

    def __init__(self, connection: Connection, *, transport: Transport | None = None,
                 client_id: str | None = None) -> None:
        install_log_redaction()
        self.connection = connection
        self.transport = transport or Transport(connection)
        self.client_id = client_id or str(uuid.uuid4())
        self._caps: Capabilities | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ComfyClient({self.connection.server_id()!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        self.transport.close()

    @property
    def is_cloud(self) -> bool:
        return self.connection.is_cloud

    def _local_only(self, what: str) -> None:
        if self.is_cloud:
            raise E.NotSupported(f"Comfy Cloud does not offer {what}.")

    # ------------------------------------------------------------------------------------------
    # server information
    def system_stats(self) -> SystemStats:
        """``GET /api/system_stats``: versions, RAM, devices."""
        return SystemStats.parse(self.transport.json("GET", "/system_stats"))

    def features(self) -> dict[str, Any]:
        """``GET /api/features``: server feature flags (``max_upload_size`` in bytes, …)."""
        body = self.transport.json("GET", "/features")
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        return dict(body)

    def capabilities(self, *, refresh: bool = False) -> Capabilities:
        """Detect version, kind and optional APIs once (probing ``/api/jobs`` on local servers)."""
        with self._lock:
            if self._caps is not None and not refresh:
                return self._caps
        stats = self.system_stats()
        try:
            feats = self.features()
        except E.NotFound:
            feats = {}
        version = parse_version(stats.comfyui_version)
        if self.is_cloud:
            jobs_api, jobs_cancel, targeted = True, False, False
        else:
            jobs_api = self._probe_jobs_api() if version >= (0, 6) or not version else False
            jobs_cancel = jobs_api and version >= (0, 26)
            targeted = not version or version >= (0, 3, 57)
        caps = Capabilities(
            is_cloud=self.is_cloud,
            version=version,
            version_text=stats.comfyui_version,
            jobs_api=jobs_api,
            jobs_cancel=jobs_cancel,
            targeted_interrupt=targeted,
            max_upload_size=feats.get("max_upload_size") if isinstance(feats.get("max_upload_size"), int) else None,
            supports_preview_metadata=bool(feats.get("supports_preview_metadata")),
        )
        with self._lock:
            self._caps = caps
        return caps

    def _probe_jobs_api(self) -> bool:
        reply = self.transport.request("GET", "/jobs", params={"limit": 1}, ok=(400, 404, 405))
        return reply.status == 200 and reply.content_type == "application/json"

    def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """``GET /api/object_info[/{class}]``. An unknown class gives ``{}`` (the server's answer).

        Cloud has no per-class route: the full listing is fetched and filtered.
        """
        if class_type and not self.is_cloud:
            body = self.transport.json("GET", f"/object_info/{quote(class_type, safe='')}")
        else:
            body = self.transport.json("GET", "/object_info", timeout=(5.0, 120.0))
            if class_type and isinstance(body, Mapping):
                body = {class_type: body[class_type]} if class_type in body else {}
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        return dict(body)

    def models(self, folder: str | None = None) -> list[str]:
        """``GET /api/models`` (folder keys) or ``/api/models/{folder}`` (file names).

        On Cloud the experimental ``/api/experiment/models`` routes are used. An unknown folder
        raises ``NotFound`` (note: ``clip`` is not a key; the key is ``text_encoders``).
        """
        if self.is_cloud:
            if folder is None:
                body = self.transport.json("GET", "/experiment/models")
                return [str(x.get("name")) for x in body or () if isinstance(x, Mapping)]
            body = self.transport.json("GET", f"/experiment/models/{quote(folder, safe='')}")
            return [str(x.get("name")) for x in body or () if isinstance(x, Mapping)]
        path = "/models" if folder is None else f"/models/{quote(folder, safe='')}"
        try:
            body = self.transport.json("GET", path)
        except E.NotFound:
            raise E.NotFound(f"The server has no model folder called “{folder}”.", status=404) from None
        if not isinstance(body, list):
            raise E.BadResponse()
        return [str(x) for x in body]

    def embeddings(self) -> list[str]:
        """``GET /api/embeddings``: names without extension (local only)."""
        self._local_only("an embeddings list")
        body = self.transport.json("GET", "/embeddings")
        return [str(x) for x in body or ()]

    # ------------------------------------------------------------------------------------------
    # queue
    def queue(self) -> QueueState:
        """``GET /api/queue``: running and pending jobs (pending sorted by priority)."""
        body = self.transport.json("GET", "/queue")
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        parse = QueueItem.parse_cloud if self.is_cloud else QueueItem.parse_local
        running = tuple(parse(i) for i in body.get("queue_running") or ())
        pending = sort_pending(parse(i) for i in body.get("queue_pending") or ())
        return QueueState(running, pending)

    def queue_remaining(self) -> int:
        """``GET /api/prompt``: running + pending count."""
        body = self.transport.json("GET", "/prompt")
        try:
            return int(body["exec_info"]["queue_remaining"])
        except (TypeError, KeyError, ValueError):
            raise E.BadResponse() from None

    def delete_from_queue(self, prompt_ids: Sequence[str]) -> None:
        """Remove pending jobs. Running or unknown ids are ignored by the server (no error)."""
        self.transport.request("POST", "/queue", json_body={"delete": list(prompt_ids)})

    def clear_queue(self) -> None:
        """Remove every pending job (the running one is not touched)."""
        self.transport.request("POST", "/queue", json_body={"clear": True})

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running job.

        Local: with ``prompt_id`` only that job is interrupted, and only if it is the one running
        (a harmless no-op otherwise). Cloud: **every** running job of the account is interrupted;
        ``prompt_id`` cannot narrow it.
        """
        if prompt_id and not self.is_cloud:
            self.transport.request("POST", "/interrupt", json_body={"prompt_id": prompt_id})
        else:
            self.transport.request("POST", "/interrupt", json_body={})

    def cancel(self, prompt_id: str) -> None:
        """Cancel one job wherever it is: dequeue it when pending, interrupt it when running."""
        caps = self.capabilities()
        if caps.jobs_cancel:
            self.transport.request("POST", f"/jobs/{quote(prompt_id, safe='')}/cancel", json_body={})
            return
        state = self.queue()
        if any(i.prompt_id == prompt_id for i in state.running):
            self.interrupt(prompt_id)
        else:
            self.delete_from_queue([prompt_id])

    def free(self, *, unload_models: bool = True, free_memory: bool = False) -> None:
        """``POST /api/free``. ``free_memory`` also empties the node-output cache (local only)."""
        self._local_only("freeing server memory")
        self.transport.request("POST", "/free", json_body={"unload_models": unload_models, "free_memory": free_memory})

    # ------------------------------------------------------------------------------------------
    # prompts
    def queue_prompt(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
        workflow: Mapping[str, Any] | None = None,
        front: bool = False,
        partial_targets: Sequence[str] | None = None,
        partner_key: bool = True,
    ) -> QueuedPrompt:
        """``POST /api/prompt`` with this client's ``client_id`` and a fresh lowercase UUID4 id.

        ``workflow`` (the UI-format graph, when known) goes to ``extra_pnginfo`` so saved PNGs carry
        it. The partner-node key of the connection is sent as ``extra_data.api_key_comfy_org``
        (servers move it to a hidden slot; it is never logged here).

        Raises:
            PromptRejected: the server refused the workflow (per-node plain sentences inside).
            InvalidInput: the graph is not in API format (a UI "Save" file was passed).
        """
        if not isinstance(prompt, Mapping) or not prompt:
            raise E.InvalidInput("The workflow is empty; load a workflow with at least one node.")
        if "nodes" in prompt and "links" in prompt:
            raise E.InvalidInput(
                "This is a workflow in ComfyUI's “Save” format; convert it to the API format before sending."
            )
        body: dict[str, Any] = {
            "prompt": dict(prompt),
            "client_id": self.client_id,
            "prompt_id": prompt_id or new_prompt_id(),
        }
        extra = dict(extra_data or {})
        if workflow is not None:
            extra.setdefault("extra_pnginfo", {})["workflow"] = workflow
        if self.connection.partner_key and partner_key:  # partner_key=False: someone else's job
            extra["api_key_comfy_org"] = self.connection.partner_key
        if extra:
            body["extra_data"] = extra
        if front and not self.is_cloud:
            body["front"] = True
        if partial_targets:
            body["partial_execution_targets"] = list(partial_targets)
        reply = self.transport.request("POST", "/prompt", json_body=body, ok=(400, 409, 422),
                                       timeout=(5.0, 120.0))
        if reply.status in (400, 422):
            data = _json_or_none(reply)
            if isinstance(data, Mapping):
                raise E.PromptRejected.from_response(data, status=reply.status, prompt=prompt)
            raise E.PromptRejected("invalid_prompt", reply.text()[:200], status=reply.status)
        if reply.status == 409:
            raise E.PromptRejected("invalid_prompt_id", "duplicate prompt id", status=409)
        return parse_queued(reply.json(), prompt)

    # ------------------------------------------------------------------------------------------
    # history
    def history(self, *, max_items: int | None = None, offset: int | None = None) -> dict[str, HistoryEntry]:
        """``GET /api/history``: finished jobs, oldest first. ``max_items`` keeps the most recent N."""
        params: dict[str, int] = {}
        if max_items is not None:
            params["max_items"] = int(max_items)
        if offset is not None:
            params["offset"] = int(offset)
        if self.is_cloud:
            body = self.transport.json("GET", "/history_v2", params=params or None)
            items = body.get("history") if isinstance(body, Mapping) else body
            out = {}
            for item in items or ():
                if isinstance(item, Mapping) and isinstance(item.get("prompt_id"), str):
                    out[item["prompt_id"]] = HistoryEntry.parse(item["prompt_id"], item)
            return out
        body = self.transport.json("GET", "/history", params=params or None)
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        return {pid: HistoryEntry.parse(pid, entry) for pid, entry in body.items()}

    def history_entry(self, prompt_id: str) -> HistoryEntry | None:
        """``GET /api/history/{id}``; ``None`` when not finished yet **or** unknown (see ``job_status``)."""
        if self.is_cloud:
            reply = self.transport.request("GET", f"/history_v2/{quote(prompt_id, safe='')}", ok=(404,))
            if reply.status == 404:
                return None
            body = reply.json()
            if isinstance(body, Mapping) and prompt_id in body:
                body = body[prompt_id]
            return HistoryEntry.parse(prompt_id, body) if isinstance(body, Mapping) and body else None
        body = self.transport.json("GET", f"/history/{quote(prompt_id, safe='')}")
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        entry = body.get(prompt_id)
        return HistoryEntry.parse(prompt_id, entry) if entry else None

    def delete_history(self, prompt_ids: Sequence[str]) -> None:
        self.transport.request("POST", "/history", json_body={"delete": list(prompt_ids)})

    def clear_history(self) -> None:
        self.transport.request("POST", "/history", json_body={"clear": True})

    # ------------------------------------------------------------------------------------------
    # job status
    def job_status(self, prompt_id: str) -> JobStatus:
        """Where a job is now, normalised: queued, running, succeeded, failed, interrupted,
        cancelled or lost.

        Local: ``/history/{id}`` decides (it is written when a run ends); otherwise ``/queue``; a job
        in neither is **lost** (deleted while pending, or the server restarted). History is read
        again after the queue so a job finishing in between is not misreported.
        Cloud: ``/api/job/{id}/status`` (raw states) and ``/api/jobs/{id}`` for outputs.
        """
        if self.is_cloud:
            return self._cloud_job_status(prompt_id)
        entry = self.history_entry(prompt_id)
        if entry is None:
            q = self.queue()
            pos = q.position(prompt_id)
            if pos is not None:
                return JobStatus(prompt_id, "running" if pos == 0 else "queued", position=pos)
            entry = self.history_entry(prompt_id)
            if entry is None:
                return JobStatus(prompt_id, "lost")
        return JobStatus(prompt_id, entry.status, raw_state=entry.status, files=entry.files,
                         outputs=entry.outputs, error=entry.error, history=entry)

    def _cloud_job_status(self, prompt_id: str) -> JobStatus:
        reply = self.transport.request("GET", f"/job/{quote(prompt_id, safe='')}/status", ok=(404,))
        if reply.status == 404:
            return JobStatus(prompt_id, "lost", raw_state="not_found")
        body = reply.json()
        raw = body.get("status") if isinstance(body, Mapping) else None
        state = normalise_cloud_state(raw)
        if state in ("succeeded", "failed", "cancelled"):
            detail = self.job(prompt_id)
            return JobStatus(prompt_id, state, raw_state=raw, files=detail.files, outputs=detail.outputs,
                             error=detail.error)
        return JobStatus(prompt_id, state, raw_state=raw)

    def job(self, prompt_id: str) -> JobStatus:
        """``GET /api/jobs/{id}`` (Cloud, local ≥0.6.0): normalised status with outputs."""
        body = self.transport.json("GET", f"/jobs/{quote(prompt_id, safe='')}")
        if not isinstance(body, Mapping):
            raise E.BadResponse()
        job = body.get("job") if isinstance(body.get("job"), Mapping) else body
        state = normalise_jobs_api_status(job.get("status"))
        outputs = job.get("outputs") if isinstance(job.get("outputs"), Mapping) else {}
        error = None
        err = job.get("execution_error")
        if state == "failed":
            if isinstance(err, Mapping):
                error = ExecutionFailure(err.get("node_id"), err.get("node_type"), err.get("exception_type"),
                                         str(err.get("exception_message") or err.get("message") or "failed"))
            else:
                error = ExecutionFailure(None, None, None, "the job failed")
        return JobStatus(prompt_id, state, raw_state=job.get("status"), files=output_files(outputs),
                         outputs=outputs, error=error)

    def jobs(self, *, status: Sequence[str] | None = None, limit: int = 100, offset: int = 0) -> list[JobStatus]:
        """``GET /api/jobs`` where the server has it (Cloud, local ≥0.6.0)."""
        if not self.capabilities().jobs_api:
            raise E.NotSupported("This ComfyUI version has no jobs list; the panel uses the queue and history instead.")
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = ",".join(status)
        body = self.transport.json("GET", "/jobs", params=params)
        items = body.get("jobs") if isinstance(body, Mapping) else None
        out = []
        for job in items or ():
            if isinstance(job, Mapping) and isinstance(job.get("id", job.get("prompt_id")), str):
                pid = job.get("id", job.get("prompt_id"))
                outputs = job.get("outputs") if isinstance(job.get("outputs"), Mapping) else {}
                out.append(JobStatus(pid, normalise_jobs_api_status(job.get("status")), raw_state=job.get("status"),
                                     files=output_files(outputs), outputs=outputs))
        return out

    # ------------------------------------------------------------------------------------------
    # files
    def view(
        self,
        ref: FileRef | str,
        *,
        subfolder: str = "",
        type: str = "output",
        preview: str | None = None,
        channel: str | None = None,
        max_bytes: int | None = None,
    ) -> bytes:
        """The bytes of a server file (``GET /api/view``).

        ``preview="webp;80"`` asks for a re-encoded thumbnail-quality copy; ``channel`` is ``rgba``,
        ``rgb`` or ``a``. On Cloud the 302 to signed storage is followed **without** the API key.
        """
        if isinstance(ref, FileRef):
            filename, subfolder, type = ref.filename, ref.subfolder, ref.type
        else:
            filename = ref
        params = {"filename": filename, "type": type}
        if subfolder:
            params["subfolder"] = subfolder
        if preview:
            params["preview"] = preview
        if channel:
            params["channel"] = channel
        try:
            return self.transport.request("GET", "/view", params=params, max_bytes=max_bytes).body
        except E.NotFound:
            raise E.NotFound(f"The file “{filename}” is not on the server any more.", status=404) from None
        except E.ComfyPanelError as exc:
            if exc.status == 400:
                raise E.InvalidInput(f"The server refused to read “{filename}” (a bad file name or folder).",
                                     status=400) from None
            raise

    def view_metadata(self, folder: str, filename: str) -> dict[str, str]:
        """``GET /api/view_metadata/{folder}?filename=x.safetensors``; ``{}`` when there is none."""
        self._local_only("model metadata")
        reply = self.transport.request("GET", f"/view_metadata/{quote(folder, safe='')}",
                                       params={"filename": filename}, ok=(404,))
        if reply.status == 404:
            return {}
        body = reply.json()
        return {str(k): str(v) for k, v in (body or {}).items()} if isinstance(body, Mapping) else {}

    def upload_image(
        self,
        data: bytes,
        filename: str,
        *,
        type: str = "input",
        subfolder: str = "",
        overwrite: bool = False,
        mime: str = "image/png",
    ) -> FileRef:
        """``POST /api/upload/image``. Use the returned name: the server may rename (``x (1).png``)
        or, for identical bytes, reuse the existing file. Cloud ignores subfolder and overwrite."""
        if type not in ("input", "temp", "output"):
            raise E.InvalidInput("Uploads can go to input, temp or output only.")
        form = {"type": type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        reply = self.transport.request("POST", "/upload/image", data=form,
                                       files={"image": (filename, io.BytesIO(data), mime)}, ok=(400,),
                                       timeout=(5.0, 300.0))
        if reply.status == 400:
            raise E.InvalidInput(_upload_refusal(reply), status=400)
        return _file_ref(reply.json(), default_type=type)

    def upload_mask(
        self,
        data: bytes,
        filename: str,
        original: FileRef,
        *,
        type: str = "input",
        subfolder: str = "clipspace",
        overwrite: bool = False,
        verify: bool = True,
    ) -> FileRef:
        """``POST /api/upload/mask``: the server copies ``original`` and replaces its alpha channel
        with the uploaded image's alpha (alpha 0 = masked, as LoadImage reads mask = 1 − alpha).

        The server answers 200 even when it wrote nothing (original not found, a bad path), so with
        ``verify`` the result is read back through ``/view``.

        Raises:
            UploadFailed: the server did not write the masked image.
        """
        ref = {"filename": original.filename, "subfolder": original.subfolder, "type": original.type}
        form = {"type": type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false",
                "original_ref": json.dumps(ref)}
        reply = self.transport.request("POST", "/upload/mask", data=form,
                                       files={"image": (filename, io.BytesIO(data), "image/png")},
                                       ok=(400,), timeout=(5.0, 300.0))
        if reply.status == 400:
            raise E.InvalidInput(_upload_refusal(reply), status=400)
        result = _file_ref(reply.json(), default_type=type)
        if verify:
            try:
                self.view(result, max_bytes=256 * 1024 * 1024)
            except E.NotFound:
                raise E.UploadFailed(
                    f"The server did not save the mask: it could not find the original image "
                    f"“{original.filename}” in {original.type}. Upload the image again, then paint the mask."
                ) from None
        return result

    # ------------------------------------------------------------------------------------------
    # userdata workflows
    def list_workflows(self) -> list[str]:
        """Saved workflows of the server's user (``GET /api/userdata?dir=workflows``); [] when none yet."""
        directory = "workflows/" if self.is_cloud else "workflows"
        reply = self.transport.request("GET", "/userdata", params={"dir": directory, "recurse": "true"}, ok=(404,))
        if reply.status == 404:
            return []
        body = reply.json()
        return sorted(str(x) for x in body or () if isinstance(x, str) and x.endswith(".json"))

    def get_workflow(self, path: str) -> Any:
        """A saved workflow's JSON (``path`` relative to ``workflows/``)."""
        file = quote(f"workflows/{path}", safe="")  # one URL segment, or the route does not match
        reply = self.transport.request("GET", f"/userdata/{file}")
        return reply.json()

    def save_workflow(self, path: str, workflow: Any, *, overwrite: bool = True) -> str:
        """Store a workflow under ``workflows/``; returns the stored relative path.

        Raises:
            InvalidInput: the name exists and ``overwrite`` is false, or the path escapes the folder.
        """
        if not path.endswith(".json"):
            path += ".json"
        file = quote(f"workflows/{path}", safe="")
        reply = self.transport.request(
            "POST", f"/userdata/{file}", params={"overwrite": "true" if overwrite else "false"},
            data=json.dumps(workflow).encode(), headers={"Content-Type": "application/json"}, ok=(403, 409),
        )
        if reply.status == 409:
            raise E.InvalidInput(f"A workflow called “{path}” already exists on the server; choose another name.",
                                 status=409)
        if reply.status == 403:
            raise E.InvalidInput("That workflow name is not allowed; use letters, digits and dashes.", status=403)
        body = reply.json()
        return body if isinstance(body, str) else f"workflows/{path}"

    def delete_workflow(self, path: str) -> None:
        file = quote(f"workflows/{path}", safe="")
        self.transport.request("DELETE", f"/userdata/{file}")

    # ------------------------------------------------------------------------------------------
    # logs (local only; internal routes are not mirrored under /api)
    def logs(self) -> str:
        """The whole server log as text (``GET /internal/logs``, a JSON string)."""
        self._local_only("the server log")
        body = self.transport.json("GET", "/internal/logs")
        return body if isinstance(body, str) else ""

    def logs_raw(self) -> list[tuple[str, str]]:
        """Log entries ``(iso time, message)`` from ``GET /internal/logs/raw``."""
        self._local_only("the server log")
        body = self.transport.json("GET", "/internal/logs/raw")
        entries = body.get("entries") if isinstance(body, Mapping) else None
        return [(str(e.get("t", "")), str(e.get("m", ""))) for e in entries or () if isinstance(e, Mapping)]

    def subscribe_logs(self, enabled: bool = True) -> None:
        """Ask the server to send ``logs`` WS messages to this client's socket."""
        self._local_only("the server log")
        self.transport.request("PATCH", "/internal/logs/subscribe",
                               json_body={"clientId": self.client_id, "enabled": enabled})

    # ------------------------------------------------------------------------------------------
    # events
    def listener(self, **kwargs: Any):
        """An ``EventListener`` for this client's socket (not started). See ``comfypanel.events``."""
        from .events import EventListener

        return EventListener(
            self.connection.ws_url(self.client_id),
            headers=self.connection.ws_headers(),
            cloud=self.is_cloud,
            **kwargs,
        )


def _json_or_none(reply: Reply) -> Any:
    try:
        return reply.json()
    except E.BadResponse:
        return None


def _file_ref(body: Any, *, default_type: str) -> FileRef:
    if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
        raise E.BadResponse()
    return FileRef(body["name"], str(body.get("subfolder") or ""), str(body.get("type") or default_type))


def _upload_refusal(reply: Reply) -> str:
    text = reply.text().strip()
    if "subfolder" in text.lower() or "path" in text.lower():
        return "The server refused the upload because of its folder name; use a plain name without “..”."
    return "The server refused the upload (400). Check that the file is an image of a supported type."
