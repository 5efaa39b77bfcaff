"""Typed, frozen results of the ComfyUI and Comfy Cloud APIs.

Parsers here are lenient about extra fields and strict about the fields they use: a wrong shape
raises ``BadResponse`` instead of a ``KeyError`` deep inside a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from .errors import BadResponse, NodeError, parse_node_errors

JobState = Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled", "lost"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "interrupted", "cancelled", "lost"})

# Keys in extra_data that may hold credentials: never kept, never logged.
_SECRET_EXTRA_KEYS = frozenset({"api_key_comfy_org", "auth_token_comfy_org"})


def _clean_extra(extra: Any) -> dict[str, Any]:
    if not isinstance(extra, Mapping):
        return {}
    return {k: v for k, v in extra.items() if k not in _SECRET_EXTRA_KEYS}


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file on the server: what ``/view`` needs, plus where it came from in the outputs."""

    filename: str
    subfolder: str = ""
    type: str = "output"  # input | output | temp
    node_id: str | None = None
    kind: str = "images"  # the output key it was listed under: images, video, audio, gifs, ...
    animated: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, node_id: str | None = None, kind: str = "images",
                  animated: bool = False) -> "FileRef":
        name = d.get("filename", d.get("name"))
        if not isinstance(name, str) or not name:
            raise BadResponse("The server listed an output file without a name.")
        return cls(name, str(d.get("subfolder") or ""), str(d.get("type") or "output"), node_id, kind, animated)

    @property
    def annotated(self) -> str:
        """``sub/name.png [input]``: the form LoadImage and ``original_ref`` accept."""
        path = f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename
        return f"{path} [{self.type}]"

    @property
    def image_value(self) -> str:
        """The value for a LoadImage-style input (``sub/name.png`` for input files)."""
        path = f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename
        return path if self.type == "input" else f"{path} [{self.type}]"


def output_files(outputs: Mapping[str, Any]) -> tuple[FileRef, ...]:
    """Every file under any output key of every node (``images``, ``video``, ``audio``, ``gifs``, …)."""
    files: list[FileRef] = []
    if not isinstance(outputs, Mapping):
        return ()
    for node_id, out in outputs.items():
        if not isinstance(out, Mapping):
            continue
        animated_flag = out.get("animated")
        animated = bool(animated_flag[0]) if isinstance(animated_flag, list) and animated_flag else False
        for key, items in out.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                    files.append(FileRef.from_dict(item, node_id=str(node_id), kind=key, animated=animated))
    return tuple(files)


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    type: str
    index: int | None
    vram_total: int
    vram_free: int
    torch_vram_total: int
    torch_vram_free: int


@dataclass(frozen=True, slots=True)
class SystemStats:
    os: str
    ram_total: int
    ram_free: int
    comfyui_version: str
    python_version: str
    pytorch_version: str
    frontend_version: str
    devices: tuple[Device, ...]
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def parse(cls, body: Any) -> "SystemStats":
        if not isinstance(body, Mapping) or not isinstance(body.get("system"), Mapping):
            raise BadResponse()
        s = body["system"]
        devices = []
        for d in body.get("devices") or ():
            if isinstance(d, Mapping):
                devices.append(Device(
                    str(d.get("name", "")), str(d.get("type", "")), d.get("index"),
                    int(d.get("vram_total") or 0), int(d.get("vram_free") or 0),
                    int(d.get("torch_vram_total") or 0), int(d.get("torch_vram_free") or 0),
                ))
        return cls(
            os=str(s.get("os", "")),
            ram_total=int(s.get("ram_total") or 0),
            ram_free=int(s.get("ram_free") or 0),
            comfyui_version=str(s.get("comfyui_version") or "unknown"),
            python_version=str(s.get("python_version") or "").split(" ")[0],
            pytorch_version=str(s.get("pytorch_version") or ""),
            frontend_version=str(s.get("required_frontend_version") or ""),
            devices=tuple(devices),
            raw=dict(body),
        )


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One running or pending job. Local items are 5-tuples, Cloud items are laid out differently."""

    prompt_id: str
    number: float  # local: priority counter (negative = front); cloud: position
    prompt: Mapping[str, Any] = field(repr=False)
    outputs_to_execute: tuple[str, ...] = ()
    client_id: str | None = None
    create_time: int | None = None  # ms since epoch
    extra_data: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse_local(cls, item: Any) -> "QueueItem":
        if not isinstance(item, (list, tuple)) or len(item) < 3:
            raise BadResponse()
        extra = _clean_extra(item[3] if len(item) > 3 else {})
        outs = item[4] if len(item) > 4 and isinstance(item[4], list) else []
        return cls(
            prompt_id=str(item[1]),
            number=item[0] if isinstance(item[0], (int, float)) else 0,
            prompt=item[2] if isinstance(item[2], Mapping) else {},
            outputs_to_execute=tuple(str(x) for x in outs),
            client_id=extra.get("client_id"),
            create_time=extra.get("create_time") if isinstance(extra.get("create_time"), int) else None,
            extra_data=extra,
        )

    @classmethod
    def parse_cloud(cls, item: Any) -> "QueueItem":
        # [position, prompt_id, workflow, output_node_ids, {create_time}]
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            raise BadResponse()
        meta = item[4] if len(item) > 4 and isinstance(item[4], Mapping) else {}
        outs = item[3] if len(item) > 3 and isinstance(item[3], list) else []
        return cls(
            prompt_id=str(item[1]),
            number=item[0] if isinstance(item[0], (int, float)) else 0,
            prompt=item[2] if len(item) > 2 and isinstance(item[2], Mapping) else {},
            outputs_to_execute=tuple(str(x) for x in outs),
            create_time=meta.get("create_time") if isinstance(meta.get("create_time"), int) else None,
            extra_data=_clean_extra(meta),
        )


@dataclass(frozen=True, slots=True)
class QueueState:
    running: tuple[QueueItem, ...]
    pending: tuple[QueueItem, ...]  # sorted by number (the server does not guarantee order)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(i.prompt_id for i in self.running + self.pending)

    def position(self, prompt_id: str) -> int | None:
        """0 = running, 1.. = place in the pending list, None = not queued."""
        if any(i.prompt_id == prompt_id for i in self.running):
            return 0
        for n, item in enumerate(self.pending, 1):
            if item.prompt_id == prompt_id:
                return n
        return None

    def __len__(self) -> int:
        return len(self.running) + len(self.pending)


@dataclass(frozen=True, slots=True)
class ExecutionFailure:
    """Why a run ended badly, safe to show: no traceback, no tensor dumps, no server paths."""

    node_id: str | None
    node_type: str | None
    exception_type: str | None
    message: str

    @property
    def user_message(self) -> str:
        where = f"{self.node_type} (node {self.node_id})" if self.node_id else "The workflow"
        msg = self.message.strip().splitlines()[0] if self.message.strip() else "an error"
        if len(msg) > 300:
            msg = msg[:297] + "…"
        return f"{where} failed: {msg}"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    prompt_id: str
    status: JobState  # succeeded | failed | interrupted
    completed: bool
    outputs: Mapping[str, Any] = field(repr=False)
    files: tuple[FileRef, ...]
    prompt: Mapping[str, Any] = field(repr=False, default_factory=dict)
    number: float | None = None
    extra_data: Mapping[str, Any] = field(repr=False, default_factory=dict)
    error: ExecutionFailure | None = None
    started_at: int | None = None  # ms
    ended_at: int | None = None  # ms
    cached_nodes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at) / 1000.0)

    @classmethod
    def parse(cls, prompt_id: str, entry: Any) -> "HistoryEntry":
        if not isinstance(entry, Mapping):
            raise BadResponse()
        st = entry.get("status") if isinstance(entry.get("status"), Mapping) else {}
        messages = [m for m in st.get("messages") or () if isinstance(m, (list, tuple)) and len(m) == 2]
        names = [m[0] for m in messages]
        by_name = {m[0]: m[1] if isinstance(m[1], Mapping) else {} for m in messages}
        status_str = st.get("status_str")
        error = None
        if "execution_interrupted" in names and status_str != "success":
            status: JobState = "interrupted"
            d = by_name["execution_interrupted"]
            error = ExecutionFailure(d.get("node_id"), d.get("node_type"), None, "interrupted")
        elif status_str == "success" or (st.get("completed") and status_str is None):
            status = "succeeded"
        elif status_str == "error" or "execution_error" in names:
            status = "failed"
            d = by_name.get("execution_error", {})
            error = ExecutionFailure(
                d.get("node_id"), d.get("node_type"), d.get("exception_type"),
                str(d.get("exception_message") or "the server reported an error without details"),
            )
        else:
            status = "failed"
            error = ExecutionFailure(None, None, None, f"the server reported status {status_str!r}")
        prompt_tuple = entry.get("prompt") if isinstance(entry.get("prompt"), (list, tuple)) else []
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), Mapping) else {}
        start = by_name.get("execution_start", {}).get("timestamp")
        end = None
        for name in ("execution_success", "execution_error", "execution_interrupted"):
            if name in by_name:
                end = by_name[name].get("timestamp")
        cached = by_name.get("execution_cached", {}).get("nodes") or ()
        return cls(
            prompt_id=prompt_id,
            status=status,
            completed=bool(st.get("completed")),
            outputs=outputs,
            files=output_files(outputs),
            prompt=prompt_tuple[2] if len(prompt_tuple) > 2 and isinstance(prompt_tuple[2], Mapping) else {},
            number=prompt_tuple[0] if prompt_tuple and isinstance(prompt_tuple[0], (int, float)) else None,
            extra_data=_clean_extra(prompt_tuple[3] if len(prompt_tuple) > 3 else {}),
            error=error,
            started_at=start if isinstance(start, int) else None,
            ended_at=end if isinstance(end, int) else None,
            cached_nodes=tuple(str(n) for n in cached),
        )


@dataclass(frozen=True, slots=True)
class QueuedPrompt:
    """The answer to ``POST /prompt``. ``node_errors`` on a 200 means branches were dropped."""

    prompt_id: str
    number: float | None
    node_errors: tuple[NodeError, ...] = ()


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Normalised job state, from history + queue (local) or the jobs endpoints (Cloud)."""

    prompt_id: str
    state: JobState
    raw_state: str | None = None  # the server's own word (Cloud's raw states, e.g. queued_waiting)
    position: int | None = None  # 0 running, 1.. pending place
    files: tuple[FileRef, ...] = ()
    outputs: Mapping[str, Any] = field(default_factory=dict, repr=False)
    error: ExecutionFailure | None = None
    history: HistoryEntry | None = field(default=None, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


# Comfy Cloud /api/job/{id}/status answers raw internal states (docs PR #1406).
_CLOUD_RAW_TERMINAL: Mapping[str, JobState] = {
    "success": "succeeded",
    "completed": "succeeded",
    "error": "failed",
    "non_retryable_error": "failed",
    "failed": "failed",
    "lost": "lost",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}
_CLOUD_RAW_QUEUED = frozenset({"submitted", "queued_limited", "queued_waiting", "pending", "queued"})


def normalise_cloud_state(raw: str | None) -> JobState:
    """Map a Cloud raw state (or a normalised jobs-API status) to the panel's ``JobState``."""
    value = (raw or "").strip().lower()
    if value in _CLOUD_RAW_TERMINAL:
        return _CLOUD_RAW_TERMINAL[value]
    if value in _CLOUD_RAW_QUEUED:
        return "queued"
    # allocated, preparing, pending_execution, executing, executed, cancel_*, erroring, in_progress,
    # and any state added later: in flight. Only the listed words end a job.
    return "running"


def normalise_jobs_api_status(status: str | None) -> JobState:
    """``/api/jobs`` statuses (local ≥0.6 and Cloud): pending, in_progress, completed, failed, cancelled."""
    return {
        "pending": "queued",
        "in_progress": "running",
        "completed": "succeeded",
        "failed": "failed",
        "cancelled": "cancelled",
        "canceled": "cancelled",
    }.get((status or "").lower(), "running")


def parse_queued(body: Any, prompt: Mapping[str, Any] | None = None) -> QueuedPrompt:
    if not isinstance(body, Mapping) or not isinstance(body.get("prompt_id"), str):
        raise BadResponse()
    return QueuedPrompt(body["prompt_id"], body.get("number"), parse_node_errors(body.get("node_errors"), prompt))


def sort_pending(items: Iterable[QueueItem]) -> tuple[QueueItem, ...]:
    return tuple(sorted(items, key=lambda i: (i.number, i.create_time or 0)))
