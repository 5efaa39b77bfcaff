"""ComfyUI / Comfy Cloud WebSocket: typed events, a pure snapshot reducer, and a listener thread.

Three layers, each usable on its own:

1. **Parsing** — :func:`parse_text`, :func:`parse_binary` (and :func:`parse_message` for an already
   decoded ``{"type", "data"}`` pair, e.g. the ``status.messages`` of a history entry) turn one wire
   frame into one frozen event dataclass. They never raise: a malformed frame gives ``None`` and one
   log line on the ``comfypanel.events`` logger (WARNING for broken frames, DEBUG for unknown binary
   types). Unknown *text* types are kept as :class:`UnknownEvent` (custom nodes and the Manager send
   their own). ``execution_error`` deliberately drops ``traceback`` and ``current_inputs``: they carry
   server paths and tensor reprs that must never reach a user.
2. **Reduction** — :func:`apply` folds one event into one immutable :class:`PromptSnapshot`;
   :class:`SnapshotReducer` does it for a whole socket (prompt attribution, Cloud filtering, eviction).
   Both are pure Python without I/O, so they are tested by replaying the recordings.
3. **Listening** — :class:`EventListener` owns one daemon thread with one socket, reconnects with
   jittered backoff, pings, and exposes thread-safe snapshots, a bounded event log, ``wait()`` and
   ``subscribe()``.

Wire facts: ``shared/docs/comfyui-api.md`` §6 (local) and §9.4 (Cloud). The WebSocket only
*accelerates*; whether a job is done is decided by polling ``/history`` or the Cloud job status.

Attribution rules (what prompt an event belongs to):

* Messages carrying ``prompt_id`` belong to it.
* The prompt "currently executing on this socket" is the last ``prompt_id`` seen in
  ``execution_start``, ``executing`` (with a node) or ``progress_state``; a terminal message or
  ``executing {node: null}`` for that prompt clears it, and so does a new connection.
* Binary previews of type 1 (no metadata) and ``progress`` without ``prompt_id`` (older servers) go
  to the current prompt; type 4 previews carry their own ``prompt_id``.
* The reconnect replay ``executing {node}`` without ``prompt_id`` goes to the current prompt when one
  is known; otherwise the node is remembered until :meth:`EventListener.mark_running` names the
  prompt (the caller learns it from ``/queue`` in its ``on_resync`` callback) or the next message
  with a ``prompt_id`` arrives.
* TEXT frames (type 3) reach every socket, even observers (§6.5), so they are never attributed.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Union
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import websocket

__all__ = [
    "StatusEvent", "ExecutionStart", "ExecutionCached", "Executing", "Progress", "NodeProgress",
    "ProgressState", "Executed", "ExecutionSuccess", "ExecutionError", "ExecutionInterrupted",
    "Logs", "FeatureFlags", "Notification", "UnknownEvent", "PreviewImage", "ProgressText",
    "Event", "parse_text", "parse_binary", "parse_message",
    "PromptSnapshot", "apply", "SnapshotReducer", "EventListener",
    "redact_url", "backoff_delay", "FEATURE_FLAGS_MESSAGE", "PROMPT_STATES",
]

log = logging.getLogger("comfypanel.events")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


# --------------------------------------------------------------------------------------------
# Typed events. ``type`` is a class constant (the wire name), so an event can never disagree with
# its class; ``prompt_id`` is None when the wire message had none.
# --------------------------------------------------------------------------------------------

_EV = dict(frozen=True, slots=True, kw_only=True)


@dataclass(**_EV)
class StatusEvent:
    type: ClassVar[str] = "status"
    queue_remaining: int
    sid: str | None = None          # only in the greeting sent right after connecting
    prompt_id: str | None = None


@dataclass(**_EV)
class ExecutionStart:
    type: ClassVar[str] = "execution_start"
    prompt_id: str
    timestamp: float | None = None  # server clock, ms


@dataclass(**_EV)
class ExecutionCached:
    type: ClassVar[str] = "execution_cached"
    prompt_id: str
    nodes: tuple[str, ...] = ()
    timestamp: float | None = None


@dataclass(**_EV)
class Executing:
    type: ClassVar[str] = "executing"
    node: str | None                # None + prompt_id = prompt finished, history written
    display_node: str | None = None
    prompt_id: str | None = None    # None in the reconnect replay (§6.1)


@dataclass(**_EV)
class Progress:
    type: ClassVar[str] = "progress"
    value: float
    max: float
    node: str | None = None
    prompt_id: str | None = None


@dataclass(**_EV)
class NodeProgress:
    type: ClassVar[str] = "node_progress"
    node_id: str
    value: float
    max: float
    state: str                      # "running" | "finished" | "error" (any string is kept)
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None
    prompt_id: str | None = None


@dataclass(**_EV)
class ProgressState:
    type: ClassVar[str] = "progress_state"
    prompt_id: str
    nodes: Mapping[str, NodeProgress] = field(default_factory=_empty)


@dataclass(**_EV)
class Executed:
    type: ClassVar[str] = "executed"
    node: str
    output: Mapping[str, Any] = field(default_factory=_empty)   # read-only view, e.g. {"images": [...]}
    display_node: str | None = None
    prompt_id: str | None = None


@dataclass(**_EV)
class ExecutionSuccess:
    type: ClassVar[str] = "execution_success"
    prompt_id: str
    timestamp: float | None = None


@dataclass(**_EV)
class ExecutionError:
    """A runtime failure. ``traceback`` and ``current_inputs`` of the wire message are dropped on
    purpose; ``traceback_tail`` (last ≤3 lines, server paths included) is for logs only and is kept
    out of ``repr``."""
    type: ClassVar[str] = "execution_error"
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    exception_type: str = ""
    exception_message: str = ""
    executed: tuple[str, ...] = ()
    timestamp: float | None = None
    traceback_tail: tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(**_EV)
class ExecutionInterrupted:
    type: ClassVar[str] = "execution_interrupted"
    prompt_id: str
    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()
    timestamp: float | None = None


@dataclass(**_EV)
class Logs:
    type: ClassVar[str] = "logs"
    entries: tuple[tuple[str, str], ...] = ()   # (time, message)
    prompt_id: str | None = None


@dataclass(**_EV)
class FeatureFlags:
    type: ClassVar[str] = "feature_flags"
    flags: Mapping[str, Any] = field(default_factory=_empty)
    prompt_id: str | None = None


@dataclass(**_EV)
class Notification:
    type: ClassVar[str] = "notification"     # Comfy Cloud only (§9.4)
    value: str
    prompt_id: str | None = None


@dataclass(**_EV)
class UnknownEvent:
    type: ClassVar[str] = "unknown"
    raw_type: str
    data: Any = None
    prompt_id: str | None = None


@dataclass(**_EV)
class PreviewImage:
    """Binary type 1 (no metadata: attributed by the reducer) or 4 (with metadata)."""
    type: ClassVar[str] = "preview_image"
    image: bytes = field(repr=False)
    mime: str
    size: int = 0                   # len(image) at parse time; survives stripping in recent_events()
    binary_type: int = 1
    node_id: str | None = None
    display_node_id: str | None = None
    parent_node_id: str | None = None
    real_node_id: str | None = None
    prompt_id: str | None = None


@dataclass(**_EV)
class ProgressText:
    type: ClassVar[str] = "progress_text"    # binary type 3; reaches every socket, never attributed
    node_id: str
    text: str
    prompt_id: str | None = None


Event = Union[
    StatusEvent, ExecutionStart, ExecutionCached, Executing, Progress, ProgressState, Executed,
    ExecutionSuccess, ExecutionError, ExecutionInterrupted, Logs, FeatureFlags, Notification,
    UnknownEvent, PreviewImage, ProgressText,
]

# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A field of a known message has the wrong type (internal; never escapes this module)."""


def _req_str(d: dict, key: str) -> str:
    v = d.get(key)
    if type(v) is str:
        return v
    raise _Invalid(key)


def _opt_str(d: dict, key: str) -> str | None:
    v = d.get(key)
    if v is None or type(v) is str:
        return v
    raise _Invalid(key)


def _opt_id(d: dict, key: str) -> str | None:
    """Node ids are strings in ComfyUI; integers (seen in some custom servers) are accepted."""
    v = d.get(key)
    if v is None or type(v) is str:
        return v
    if type(v) is int:
        return str(v)
    raise _Invalid(key)


def _num(d: dict, key: str, default: float | None = None) -> float:
    v = d.get(key, default)
    t = type(v)
    if t is int or t is float:
        return v
    raise _Invalid(key)


def _opt_num(d: dict, key: str) -> float | None:
    v = d.get(key)
    t = type(v)
    if v is None or t is int or t is float:
        return v
    raise _Invalid(key)


def _ids(d: dict, key: str) -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if type(v) is not list:
        raise _Invalid(key)
    out = []
    for item in v:
        if type(item) is str:
            out.append(item)
        elif type(item) is int:
            out.append(str(item))
        else:
            raise _Invalid(key)
    return tuple(out)


def _p_status(d: dict) -> StatusEvent:
    st = d.get("status")
    if type(st) is not dict:
        raise _Invalid("status")
    info = st.get("exec_info")
    if type(info) is not dict:
        raise _Invalid("status.exec_info")
    qr = info.get("queue_remaining")
    if type(qr) is not int:
        raise _Invalid("status.exec_info.queue_remaining")
    return StatusEvent(queue_remaining=qr, sid=_opt_str(d, "sid"))


def _p_execution_start(d: dict) -> ExecutionStart:
    return ExecutionStart(prompt_id=_req_str(d, "prompt_id"), timestamp=_opt_num(d, "timestamp"))


def _p_execution_cached(d: dict) -> ExecutionCached:
    return ExecutionCached(prompt_id=_req_str(d, "prompt_id"), nodes=_ids(d, "nodes"),
                           timestamp=_opt_num(d, "timestamp"))


def _p_executing(d: dict) -> Executing:
    return Executing(node=_opt_id(d, "node"), display_node=_opt_id(d, "display_node"),
                     prompt_id=_opt_str(d, "prompt_id"))


# Step counts are small non-negative numbers; anything else (negative, NaN, infinity, a 400-digit
# integer) would break the arithmetic and the progress bars of the pages that show it.
_MAX_STEP = 2 ** 53


def _p_progress(d: dict) -> Progress:
    value, mx = _num(d, "value"), _num(d, "max")
    if not (0 <= value <= _MAX_STEP and 0 <= mx <= _MAX_STEP):   # NaN fails every comparison
        raise _Invalid("value" if not 0 <= value <= _MAX_STEP else "max")
    return Progress(value=value, max=mx, node=_opt_id(d, "node"), prompt_id=_opt_str(d, "prompt_id"))


def _p_progress_state(d: dict) -> ProgressState:
    # The most frequent message (re-sent at each node start, finish and tick): keep it tight.
    pid = d.get("prompt_id")
    if type(pid) is not str:
        raise _Invalid("prompt_id")
    raw = d.get("nodes")
    if type(raw) is not dict:
        raise _Invalid("nodes")
    nodes = {}
    for key, n in raw.items():
        if type(n) is not dict:
            raise _Invalid("nodes")
        value = n.get("value", 0)
        mx = n.get("max", 1)
        state = n.get("state")
        node_id = n.get("node_id", key)
        if ((type(value) is not int and type(value) is not float)
                or (type(mx) is not int and type(mx) is not float)
                or type(state) is not str or type(node_id) is not str
                or not (0 <= value <= _MAX_STEP and 0 <= mx <= _MAX_STEP)):
            raise _Invalid("nodes")
        npid = n.get("prompt_id")
        dn, pn, rn = n.get("display_node_id"), n.get("parent_node_id"), n.get("real_node_id")
        if dn is not None and type(dn) is not str:
            dn = _opt_id(n, "display_node_id")
        if pn is not None and type(pn) is not str:
            pn = _opt_id(n, "parent_node_id")
        if rn is not None and type(rn) is not str:
            rn = _opt_id(n, "real_node_id")
        nodes[key] = NodeProgress(
            node_id=node_id, value=value, max=mx, state=state,
            display_node_id=dn, parent_node_id=pn, real_node_id=rn,
            prompt_id=npid if type(npid) is str else pid,
        )
    return ProgressState(prompt_id=pid, nodes=MappingProxyType(nodes))


def _p_executed(d: dict) -> Executed:
    node = _opt_id(d, "node")
    if node is None:
        raise _Invalid("node")
    output = d.get("output")
    if output is None:
        output = {}
    elif type(output) is not dict:
        raise _Invalid("output")
    return Executed(node=node, display_node=_opt_id(d, "display_node"),
                    output=MappingProxyType(output), prompt_id=_req_str(d, "prompt_id"))


def _p_execution_success(d: dict) -> ExecutionSuccess:
    return ExecutionSuccess(prompt_id=_req_str(d, "prompt_id"), timestamp=_opt_num(d, "timestamp"))


def _traceback_tail(d: dict) -> tuple[str, ...]:
    tb = d.get("traceback")
    if type(tb) is not list:
        return ()
    lines: list[str] = []
    for chunk in tb:
        if type(chunk) is str:
            lines.extend(s for s in chunk.splitlines() if s.strip())
    # Drop the "^^^^" marker lines of Python 3.11 tracebacks; keep the last three real lines.
    lines = [s.strip()[:300] for s in lines if s.strip(" ^~\t")]
    return tuple(lines[-3:])


def _p_execution_error(d: dict) -> ExecutionError:
    # Deliberately not read: "traceback" (only a short tail for logs), "current_inputs",
    # "current_outputs" — server paths and tensor reprs.
    return ExecutionError(
        prompt_id=_req_str(d, "prompt_id"),
        node_id=_opt_id(d, "node_id"),
        node_type=_opt_str(d, "node_type"),
        exception_type=_opt_str(d, "exception_type") or "",
        exception_message=_opt_str(d, "exception_message") or "",
        executed=_ids(d, "executed"),
        timestamp=_opt_num(d, "timestamp"),            # absent in the ExecutionBlocked variant
        traceback_tail=_traceback_tail(d),
    )


def _p_execution_interrupted(d: dict) -> ExecutionInterrupted:
    return ExecutionInterrupted(prompt_id=_req_str(d, "prompt_id"), node_id=_opt_id(d, "node_id"),
                                node_type=_opt_str(d, "node_type"), executed=_ids(d, "executed"),
                                timestamp=_opt_num(d, "timestamp"))


def _p_logs(d: dict) -> Logs:
    raw = d.get("entries")
    if raw is None:
        raw = []
    if type(raw) is not list:
        raise _Invalid("entries")
    entries = []
    for e in raw:
        if type(e) is not dict:
            raise _Invalid("entries")
        t, m = e.get("t", ""), e.get("m", "")
        if type(t) is not str or type(m) is not str:
            raise _Invalid("entries")
        entries.append((t, m))
    return Logs(entries=tuple(entries))


def _p_feature_flags(d: dict) -> FeatureFlags:
    return FeatureFlags(flags=MappingProxyType(d))


def _p_notification(d: dict) -> Notification:
    return Notification(value=_req_str(d, "value"), prompt_id=_opt_str(d, "prompt_id"))


_TEXT_PARSERS: dict[str, Callable[[dict], Any]] = {
    "status": _p_status,
    "execution_start": _p_execution_start,
    "execution_cached": _p_execution_cached,
    "executing": _p_executing,
    "progress": _p_progress,
    "progress_state": _p_progress_state,
    "executed": _p_executed,
    "execution_success": _p_execution_success,
    "execution_error": _p_execution_error,
    "execution_interrupted": _p_execution_interrupted,
    "logs": _p_logs,
    "feature_flags": _p_feature_flags,
    "notification": _p_notification,
}


_decode = json.JSONDecoder().decode       # json.loads minus its per-call argument checks


def _short(t: object) -> str:
    return repr(t)[:64]


def parse_message(type_: object, data: object) -> Event | None:
    """Parse a decoded message (``type`` and ``data``); None (and one log line) if invalid.

    Unknown types become :class:`UnknownEvent` with the raw ``data``. Never raises.
    """
    if type(type_) is not str:
        log.warning("Ignored a WebSocket message without a string 'type'.")
        return None
    parser = _TEXT_PARSERS.get(type_)
    if parser is None:
        pid = data.get("prompt_id") if type(data) is dict else None
        return UnknownEvent(raw_type=type_, data=data, prompt_id=pid if type(pid) is str else None)
    if type(data) is not dict:
        log.warning("Ignored a %s message whose 'data' is not an object.", _short(type_))
        return None
    try:
        return parser(data)
    except _Invalid as exc:
        log.warning("Ignored a %s message with a missing or invalid field %r.", _short(type_), str(exc))
    except Exception as exc:  # a bug here must not kill the listener thread
        log.warning("Ignored a %s message that could not be read (%s).", _short(type_), type(exc).__name__)
    return None


def parse_text(raw: str | bytes | bytearray) -> Event | None:
    """Parse one WebSocket text frame. Returns None for malformed input (logged), never raises."""
    try:
        if type(raw) is not str:
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise TypeError("not text")
            raw = bytes(raw).decode("utf-8")           # websocket-client hands us bytes
        obj = _decode(raw)
    except (ValueError, TypeError, RecursionError):     # UnicodeDecodeError is a ValueError
        try:
            n = len(raw)
        except TypeError:
            n = -1
        log.warning("Ignored a WebSocket text frame that is not valid JSON (%d characters).", n)
        return None
    if type(obj) is not dict:
        log.warning("Ignored a WebSocket text frame that is not a JSON object (%s).", type(obj).__name__)
        return None
    return parse_message(obj.get("type"), obj.get("data"))


_HEADER = struct.Struct(">II")
_IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}


def _sniff_mime(image: bytes) -> str:
    if image[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if image[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def parse_binary(frame: bytes | bytearray | memoryview) -> Event | None:
    """Parse one WebSocket binary frame (§6.4: ``[u32 type][u32 x]...``, big-endian).

    Returns :class:`PreviewImage` for types 1 and 4, :class:`ProgressText` for type 3, and None
    (logged) for truncated frames, unknown types and bad metadata. Never raises.
    """
    try:
        if not isinstance(frame, bytes):
            frame = bytes(frame)
        n = len(frame)
        if n < 8:
            log.warning("Ignored a truncated WebSocket binary frame (%d bytes).", n)
            return None
        etype, x = _HEADER.unpack_from(frame, 0)
        if etype == 1:
            image = frame[8:]
            if not image:
                log.warning("Ignored a preview frame without image bytes.")
                return None
            return PreviewImage(image=image, mime=_IMAGE_FORMATS.get(x) or _sniff_mime(image),
                                size=len(image), binary_type=1)
        if etype == 4:
            end = 8 + x
            if end > n:
                log.warning("Ignored a truncated preview frame (metadata length %d, frame %d bytes).", x, n)
                return None
            meta = json.loads(frame[8:end])
            if type(meta) is not dict:
                log.warning("Ignored a preview frame whose metadata is not a JSON object.")
                return None
            image = frame[end:]
            if not image:
                log.warning("Ignored a preview frame without image bytes.")
                return None
            mime = meta.get("image_type")
            if type(mime) is not str or not mime.startswith("image/"):
                mime = _sniff_mime(image)
            pid = meta.get("prompt_id")
            return PreviewImage(
                image=image, mime=mime, size=len(image), binary_type=4,
                node_id=_opt_id(meta, "node_id"), display_node_id=_opt_id(meta, "display_node_id"),
                parent_node_id=_opt_id(meta, "parent_node_id"), real_node_id=_opt_id(meta, "real_node_id"),
                prompt_id=pid if type(pid) is str else None,
            )
        if etype == 3:
            end = 8 + x
            if end > n:
                log.warning("Ignored a truncated text frame (node id length %d, frame %d bytes).", x, n)
                return None
            return ProgressText(node_id=frame[8:end].decode("utf-8"),
                                text=frame[end:].decode("utf-8", "replace"))
        log.debug("Ignored a WebSocket binary frame of unknown type %d (%d bytes).", etype, n)
        return None
    except (ValueError, TypeError, RecursionError, _Invalid, struct.error) as exc:
        log.warning("Ignored a WebSocket binary frame that could not be read (%s).", type(exc).__name__)
        return None


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------

PROMPT_STATES = ("queued", "running", "succeeded", "failed", "interrupted")
_TERMINAL_STATES = frozenset({"succeeded", "failed", "interrupted"})


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSnapshot:
    """Everything the socket said about one prompt, as an immutable value.

    ``finished`` = a terminal message or ``executing {node: null}`` arrived; ``history_ready`` = the
    latter arrived (the history entry is written). ``state`` stays ``running`` with ``finished``
    True when the terminal message was missed (e.g. during a reconnect): ask ``/history``.
    Times are ``time.monotonic()`` seconds.
    """
    prompt_id: str
    state: str = "queued"
    current_node: str | None = None
    nodes: Mapping[str, NodeProgress] = field(default_factory=_empty)
    step: tuple[float, float] | None = None      # latest ``progress`` (value, max)
    step_node: str | None = None                 # the node that ``step`` belongs to
    latest_preview: PreviewImage | None = None
    preview_count: int = 0
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty)
    error: ExecutionError | None = None
    interrupted: ExecutionInterrupted | None = None
    cached_nodes: tuple[str, ...] = ()
    started_at: float | None = None
    updated_at: float = 0.0
    finished_at: float | None = None
    finished: bool = False
    history_ready: bool = False

    @property
    def terminal(self) -> bool:
        """True once the outcome is known (succeeded / failed / interrupted)."""
        return self.state in _TERMINAL_STATES


_SNAP_FIELDS = tuple(f.name for f in fields(PromptSnapshot))
_new = object.__new__
_set = object.__setattr__


def _evolve(s: PromptSnapshot, ch: dict) -> PromptSnapshot:
    # dataclasses.replace() costs ~2x more; this is on the per-event path.
    o = _new(PromptSnapshot)
    for name in _SNAP_FIELDS:
        _set(o, name, ch[name] if name in ch else getattr(s, name))
    return o


def apply(snapshot: PromptSnapshot | None, event: Event, *, prompt_id: str | None = None,
          now: float | None = None) -> PromptSnapshot | None:
    """Fold ``event`` into ``snapshot`` and return the new snapshot (pure function).

    ``prompt_id`` overrides the event's own (attribution of events that carry none). Returns the
    *same object* when the event changes nothing, and None when no prompt id is known and there is
    no snapshot. Terminal states are sticky: late progress messages do not revive a prompt.
    """
    pid = prompt_id or event.prompt_id or (snapshot.prompt_id if snapshot is not None else None)
    if pid is None:
        return snapshot
    if now is None:
        now = time.monotonic()
    s = snapshot if snapshot is not None else PromptSnapshot(prompt_id=pid, updated_at=now)
    t = event.type
    done = s.finished
    ch: dict[str, Any]
    if t == "progress_state":
        if done:
            return snapshot
        ch = {"nodes": event.nodes}
        if s.state == "queued":
            ch["state"] = "running"
            if s.started_at is None:
                ch["started_at"] = now
    elif t == "progress":
        if done:
            return snapshot
        ch = {"step": (event.value, event.max), "step_node": event.node}
        if s.state == "queued":
            ch["state"] = "running"
    elif t == "executing":
        if event.node is None:
            if s.history_ready:
                return snapshot
            ch = {"finished": True, "history_ready": True, "current_node": None}
            if s.finished_at is None:
                ch["finished_at"] = now
        else:
            if done:
                return snapshot
            ch = {"current_node": event.node}
            if s.state == "queued":
                ch["state"] = "running"
            if s.started_at is None:
                ch["started_at"] = now
    elif t == "preview_image":
        if done:
            return snapshot
        ch = {"latest_preview": event, "preview_count": s.preview_count + 1}
    elif t == "executed":
        outputs = dict(s.outputs)
        outputs[event.node] = event.output
        ch = {"outputs": MappingProxyType(outputs)}
    elif t == "execution_start":
        if done:
            return snapshot
        ch = {"started_at": now if s.started_at is None else s.started_at}
        if s.state == "queued":
            ch["state"] = "running"
    elif t == "execution_cached":
        ch = {"cached_nodes": event.nodes}
        if s.state == "queued" and not done:
            ch["state"] = "running"
    elif t in ("execution_success", "execution_error", "execution_interrupted"):
        if s.state in _TERMINAL_STATES:
            return snapshot
        ch = {"finished": True, "current_node": None,
              "finished_at": now if s.finished_at is None else s.finished_at}
        if t == "execution_success":
            ch["state"] = "succeeded"
        elif t == "execution_error":
            ch["state"] = "failed"
            ch["error"] = event
        else:
            ch["state"] = "interrupted"
            ch["interrupted"] = event
    else:
        # status, logs, feature_flags, notification, progress_text, unknown: not about one prompt
        return snapshot
    ch["updated_at"] = now
    return _evolve(s, ch)


_ATTRIBUTABLE = frozenset({"preview_image", "progress"})
_SETS_CURRENT = frozenset({"execution_start", "progress_state"})
_ENDS_CURRENT = frozenset({"execution_success", "execution_error", "execution_interrupted"})


class SnapshotReducer:
    """Per-socket state: snapshots of prompts, attribution, Cloud filtering, eviction.

    Not thread-safe by itself (:class:`EventListener` holds its lock around every call).

    * Local (``only_tracked=False``): every prompt id seen gets a snapshot; beyond ``max_prompts``
      the oldest finished snapshots are evicted first, then the oldest untracked ones, then the
      oldest of all (so memory stays bounded even with prompts that never finish on this socket).
    * Cloud (``only_tracked=True``): every socket of the account receives every job's messages, so
      only :meth:`track`-ed prompts are kept. Events of untracked prompts are folded into a small
      side table (the last ``pending_prompts`` prompts) so that a prompt tracked a moment after its
      first events arrived (the POST /prompt answer races the socket) loses nothing; they are not
      returned to the caller (no ``recent_events``/subscribers).
    """

    def __init__(self, *, max_prompts: int = 64, only_tracked: bool = False,
                 clock: Callable[[], float] = time.monotonic, pending_prompts: int = 8) -> None:
        if max_prompts < 1:
            raise ValueError("max_prompts must be at least 1")
        self.max_prompts = max_prompts
        self.only_tracked = only_tracked
        self.clock = clock
        self.snapshots: dict[str, PromptSnapshot] = {}
        self.tracked: set[str] = set()
        self.current_prompt_id: str | None = None
        self.orphan_node: str | None = None
        self.queue_remaining: int | None = None
        self.sid: str | None = None
        self.server_flags: Mapping[str, Any] | None = None
        self._pending: dict[str, PromptSnapshot] = {}
        self._pending_max = pending_prompts

    # -- caller-driven ------------------------------------------------------------------------

    def track(self, prompt_id: str) -> PromptSnapshot:
        """Register interest in ``prompt_id``; returns its snapshot (``queued`` if nothing seen)."""
        self.tracked.add(prompt_id)
        snap = self.snapshots.get(prompt_id)
        if snap is None:
            snap = self._pending.pop(prompt_id, None) or PromptSnapshot(
                prompt_id=prompt_id, updated_at=self.clock())
            self._store(prompt_id, snap)
        return snap

    def forget(self, prompt_id: str) -> None:
        self.tracked.discard(prompt_id)
        self.snapshots.pop(prompt_id, None)
        self._pending.pop(prompt_id, None)

    def mark_running(self, prompt_id: str) -> PromptSnapshot:
        """Declare ``prompt_id`` the one executing on this socket (after a reconnect replay)."""
        snap = self.track(prompt_id)
        self.current_prompt_id = prompt_id
        if snap.finished:
            self.orphan_node = None
            return snap
        now = self.clock()
        ch: dict[str, Any] = {"updated_at": now}
        if snap.state == "queued":
            ch["state"] = "running"
        if snap.started_at is None:
            ch["started_at"] = now
        if self.orphan_node is not None:
            ch["current_node"] = self.orphan_node
            self.orphan_node = None
        snap = _evolve(snap, ch)
        self.snapshots[prompt_id] = snap
        return snap

    def connection_reset(self) -> None:
        """A new socket: which prompt runs is unknown until a message (or mark_running) says so."""
        self.current_prompt_id = None
        self.orphan_node = None

    # -- event-driven -------------------------------------------------------------------------

    def feed(self, event: Event) -> tuple[Event | None, str | None]:
        """Apply one event.

        Returns ``(event, changed)``: the event with its attributed ``prompt_id`` filled in (None
        when it was dropped: Cloud, untracked prompt) and the prompt id whose snapshot changed.
        """
        t = event.type
        if t == "status":
            self.queue_remaining = event.queue_remaining
            if event.sid is not None:
                self.sid = event.sid
            return event, None
        pid = event.prompt_id
        if pid is None:
            if t in _ATTRIBUTABLE:
                pid = self.current_prompt_id
                if pid is None:
                    return event, None
                event = replace(event, prompt_id=pid)
            elif t == "executing" and event.node is not None:
                # Reconnect replay (§6.1): the node is known, the prompt maybe not.
                pid = self.current_prompt_id
                if pid is None:
                    self.orphan_node = event.node
                    return event, None
                event = replace(event, prompt_id=pid)
            else:
                if t == "feature_flags":
                    self.server_flags = event.flags
                return event, None
        elif t in _SETS_CURRENT:
            self.current_prompt_id = pid
            self.orphan_node = None
        elif t == "executing":
            if event.node is not None:
                self.current_prompt_id = pid
                self.orphan_node = None
            elif self.current_prompt_id == pid:
                self.current_prompt_id = None
        elif t in _ENDS_CURRENT and self.current_prompt_id == pid:
            self.current_prompt_id = None

        snap = self.snapshots.get(pid)
        if snap is None and self.only_tracked and pid not in self.tracked:
            self._fold_pending(pid, event)
            return None, None
        new = apply(snap, event, prompt_id=pid, now=self.clock())
        if new is snap:
            return event, None
        if snap is None:
            self._store(pid, new)
        else:
            self.snapshots[pid] = new
        return event, pid

    # -- internals ----------------------------------------------------------------------------

    def _fold_pending(self, pid: str, event: Event) -> None:
        old = self._pending.pop(pid, None)   # re-insert: most recently used last
        new = apply(old, event, prompt_id=pid, now=self.clock())
        if new is not None:
            self._pending[pid] = new
        while len(self._pending) > self._pending_max:
            del self._pending[next(iter(self._pending))]

    def _store(self, pid: str, snap: PromptSnapshot) -> None:
        self.snapshots[pid] = snap
        if len(self.snapshots) > self.max_prompts:
            self._evict()

    def _evict(self) -> None:
        snaps = self.snapshots
        while len(snaps) > self.max_prompts:
            finished = [s for s in snaps.values() if s.finished]
            if finished:
                victim = min(finished, key=lambda s: s.finished_at or s.updated_at).prompt_id
            else:
                victim = next((p for p in snaps if p not in self.tracked and p != self.current_prompt_id),
                              None)
                if victim is None:
                    victim = next(iter(snaps))
            del snaps[victim]
            self.tracked.discard(victim)


# --------------------------------------------------------------------------------------------
# URL redaction and errors in plain words
# --------------------------------------------------------------------------------------------

_PUBLIC_QUERY_KEYS = frozenset({"clientid"})


def redact_url(url: str) -> str:
    """The URL with every query value except ``clientId`` and any user:password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        if parts.username or parts.password:
            host = "***@" + host
        query = "&".join(
            f"{quote(k, safe='')}={v if k.lower() in _PUBLIC_QUERY_KEYS else '***'}"
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        )
        return urlunsplit((parts.scheme, host, parts.path, query, ""))
    except Exception:
        return "<WebSocket URL>"


def _secret_strings(url: str, headers: Mapping[str, str]) -> tuple[str, ...]:
    """Values that must never appear in a log line: non-public query values, userinfo, headers."""
    secrets: set[str] = set()
    try:
        parts = urlsplit(url)
        raw_pairs = [p.split("=", 1) for p in parts.query.split("&") if "=" in p]
        for k, v in raw_pairs:
            if k.lower() not in _PUBLIC_QUERY_KEYS:
                secrets.add(v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if k.lower() not in _PUBLIC_QUERY_KEYS:
                secrets.add(v)
                secrets.add(quote(v, safe=""))
        if parts.password:
            secrets.add(parts.password)
    except Exception:
        pass
    for v in headers.values():
        secrets.add(str(v))
        if " " in str(v):   # "Bearer <key>"
            secrets.add(str(v).split(" ", 1)[1])
    return tuple(sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True))


def _describe(exc: BaseException) -> str:
    """One plain sentence for ``last_error``; never contains the URL or a server reply."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        code = getattr(exc, "status_code", None)
        if code in (401, 403):
            return f"The server refused the WebSocket connection (HTTP {code}); check the API key or address."
        if code == 404:
            return "The server has no WebSocket endpoint at this address (HTTP 404)."
        return f"The server answered the WebSocket handshake with HTTP {code}."
    if isinstance(exc, ConnectionRefusedError):
        return "The server refused the connection; is it running?"
    if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError, socket.timeout)):
        return "Connecting to the server timed out."
    if isinstance(exc, (websocket.WebSocketAddressException, socket.gaierror)):
        return "The server's host name could not be resolved."
    if isinstance(exc, ssl.SSLError):
        return "The secure (TLS) connection to the server failed."
    if isinstance(exc, websocket.WebSocketProxyException):
        return "The proxy refused the WebSocket connection."
    if isinstance(exc, websocket.WebSocketConnectionClosedException):
        return "The server closed the connection."
    if isinstance(exc, ConnectionResetError):
        return "The connection was reset."
    if isinstance(exc, websocket.WebSocketException):
        return f"The WebSocket connection failed ({type(exc).__name__})."
    if isinstance(exc, OSError):
        return f"Network error ({type(exc).__name__})."
    if isinstance(exc, ValueError):
        return "The WebSocket address is not valid."
    return f"Unexpected WebSocket error ({type(exc).__name__})."


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 10.0,
                  rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): base·2^attempt, capped, ±25 % jitter."""
    r = (rng or random).uniform(0.75, 1.25)
    return min(cap, base * (2 ** min(attempt, 30))) * r


class _Secret:
    """Holds the real URL; its repr never shows it."""
    __slots__ = ("_v",)

    def __init__(self, v: str) -> None:
        self._v = v

    def reveal(self) -> str:
        return self._v

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------
# The listener
# --------------------------------------------------------------------------------------------

FEATURE_FLAGS_MESSAGE = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
_LISTENER_STATES = ("connecting", "connected", "reconnecting", "stopped")


class EventListener:
    """Follows one ComfyUI / Comfy Cloud WebSocket in one daemon thread.

    Call :meth:`start` (or use it as a context manager) and :meth:`stop`. All public methods are
    thread-safe; snapshots are immutable values.

    Thread model — a manual ``websocket.create_connection`` loop instead of ``WebSocketApp``:
    ``WebSocketApp.run_forever`` starts a *second* thread for pings, has its own non-jittered
    reconnect and calls back on errors in ways that make "close the old socket first, then resync"
    and a deterministic ``stop()`` hard. Here one thread connects, sends the ``feature_flags``
    handshake, calls ``on_resync`` after a reconnect, reads frames with a short socket timeout, sends
    client pings when the line is idle (the server sends none, §6.1) and declares the socket dead
    when a ping goes unanswered. ``stop()`` sends a close frame and shuts the socket down, which
    wakes the blocked ``recv`` at once.

    The URL may carry a secret (Cloud: ``token=``): it is kept in a wrapper, never logged, never put
    in ``repr`` or ``last_error``; logs show :func:`redact_url`. Header values are scrubbed too.

    ``on_resync`` runs in the listener thread after every *re*connect (after the ``feature_flags``
    handshake, before the new socket is read), so the caller can reconcile from ``/queue`` and
    ``/history`` and call :meth:`mark_running`; keep it short, frames wait meanwhile.
    ``last_error`` keeps the last problem after a successful reconnect (show it only when not
    ``connected``). ``connect_timeout`` bounds one connection attempt; a ``stop()`` issued during a
    hanging TCP connect returns after its own ``timeout`` and the daemon thread ends when the
    attempt does. ``backoff`` = (first delay, cap) in seconds.
    """

    def __init__(
        self,
        ws_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        cloud: bool = False,
        feature_flags: bool = True,
        ping_interval: float = 20,
        ping_timeout: float = 10,
        max_prompts: int = 64,
        max_events: int = 500,
        reconnect: bool = True,
        on_resync: Callable[[], None] | None = None,
        name: str = "comfy-ws",
        connect_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self._redacted = redact_url(ws_url)
        scheme = urlsplit(ws_url).scheme.lower() if isinstance(ws_url, str) else ""
        if scheme not in ("ws", "wss"):
            raise ValueError(f"The WebSocket address must start with ws:// or wss:// (got {self._redacted}).")
        self._url = _Secret(ws_url)
        self._headers = dict(headers or {})
        self._secrets = _secret_strings(ws_url, self._headers)
        self.cloud = cloud
        self.name = name
        self._send_flags = feature_flags
        self._ping_interval = float(ping_interval or 0)
        self._ping_timeout = float(ping_timeout or 0) or 10.0
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._on_resync = on_resync
        self._backoff = backoff
        self._rng = random.Random()

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reducer = SnapshotReducer(max_prompts=max_prompts, only_tracked=cloud)
        self._events: deque[Event] = deque(maxlen=max_events)
        self._subscribers: tuple[Callable[[Event], None], ...] = ()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._ws: websocket.WebSocket | None = None
        self._state = "stopped"
        self._last_error: str | None = None
        self._reconnects = 0
        self._version = 0            # bumped on every change (events, socket state)
        self._conn_version = 0       # bumped on every socket state change
        self._last_message_at: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "EventListener":
        """Start the listener thread (idempotent; a stopped listener cannot be restarted)."""
        with self._cond:
            if self._stop_evt.is_set():
                raise RuntimeError("This listener was stopped; create a new one.")
            if self._thread is not None:
                return self
            self._state = "connecting"
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread: set the flag, close the socket, join. Returns True if the thread ended."""
        self._stop_evt.set()
        with self._cond:
            ws = self._ws
            thread = self._thread
        if ws is not None:
            self._close_socket(ws, graceful=True)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        ended = thread is None or not thread.is_alive()
        if ended:
            with self._cond:
                self._set_state_locked("stopped")
        return ended

    def wait_connected(self, timeout: float) -> bool:
        """Block until the socket is connected (True) or ``timeout`` passes / the listener stops."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._state != "connected":
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop_evt.is_set():
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def drop_connection(self) -> None:
        """Abort the current socket as a broken network would; the listener reconnects by itself.

        For fault tests and for a "reconnect now" button.
        """
        with self._cond:
            ws = self._ws
        if ws is not None:
            self._close_socket(ws, graceful=False)

    def __enter__(self) -> "EventListener":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EventListener(name={self.name!r}, url={self._redacted!r}, state={self.state!r})"

    # -- properties ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The redacted URL (safe to show or log)."""
        return self._redacted

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._state == "connected"

    @property
    def state(self) -> str:
        """``connecting`` | ``connected`` | ``reconnecting`` | ``stopped``."""
        with self._lock:
            return self._state

    @property
    def sid(self) -> str | None:
        with self._lock:
            return self._reducer.sid

    @property
    def queue_remaining(self) -> int | None:
        with self._lock:
            return self._reducer.queue_remaining

    @property
    def server_feature_flags(self) -> Mapping[str, Any] | None:
        with self._lock:
            return self._reducer.server_flags

    @property
    def last_error(self) -> str | None:
        """The last connection problem as one plain sentence (no URL), or None."""
        with self._lock:
            return self._last_error

    @property
    def reconnects(self) -> int:
        """Successful connections after the first one."""
        with self._lock:
            return self._reconnects

    @property
    def last_message_at(self) -> float | None:
        """``time.monotonic()`` of the last frame received."""
        with self._lock:
            return self._last_message_at

    # -- prompts ------------------------------------------------------------------------------

    def track(self, prompt_id: str) -> PromptSnapshot:
        """Register interest in a prompt (required on Cloud, harmless locally)."""
        with self._cond:
            snap = self._reducer.track(prompt_id)
            self._version += 1
            self._cond.notify_all()
            return snap

    def forget(self, prompt_id: str) -> None:
        with self._cond:
            self._reducer.forget(prompt_id)
            self._version += 1
            self._cond.notify_all()

    def mark_running(self, prompt_id: str) -> PromptSnapshot:
        """Name the prompt executing now (after ``/queue`` says so, e.g. in ``on_resync``)."""
        with self._cond:
            snap = self._reducer.mark_running(prompt_id)
            self._version += 1
            self._cond.notify_all()
            return snap

    def snapshot(self, prompt_id: str) -> PromptSnapshot | None:
        with self._lock:
            return self._reducer.snapshots.get(prompt_id)

    def snapshots(self) -> dict[str, PromptSnapshot]:
        with self._lock:
            return dict(self._reducer.snapshots)

    def recent_events(self, n: int | None = None) -> list[Event]:
        """The last ``n`` events (all kept if None), oldest first. Preview bytes are not kept here
        (``image`` is ``b""``, ``size`` tells the original length); use the snapshot's
        ``latest_preview``."""
        with self._lock:
            if n is None or n >= len(self._events):
                return list(self._events)
            if n <= 0:
                return []
            return list(self._events)[-n:]

    def wait(self, prompt_id: str, timeout: float) -> PromptSnapshot | None:
        """Block until the prompt's snapshot changes, the socket state changes, or ``timeout``.

        Returns the (possibly unchanged) snapshot at once if it is already finished or the
        listener is stopped.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            before = self._reducer.snapshots.get(prompt_id)
            if (before is not None and before.finished) or self._state == "stopped":
                return before
            cv = self._conn_version
            while True:
                cur = self._reducer.snapshots.get(prompt_id)
                if cur is not before or self._conn_version != cv:
                    return cur
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return cur
                self._cond.wait(remaining)

    def wait_any(self, timeout: float) -> bool:
        """Block until anything changes (any event, socket state) or ``timeout``; True if it did."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            v = self._version
            while self._version == v:
                if self._state == "stopped" and self._thread is not None and not self._thread.is_alive():
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` in the listener thread for every event; returns unsubscribe.

        Callbacks must be quick and must not block; exceptions are caught and logged.
        """
        with self._lock:
            self._subscribers = self._subscribers + (callback,)

        def unsubscribe() -> None:
            with self._lock:
                subs = list(self._subscribers)
                if callback in subs:
                    subs.remove(callback)
                self._subscribers = tuple(subs)

        return unsubscribe

    # -- internals ----------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        text = text.replace(self._url.reveal(), self._redacted)
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _set_state_locked(self, state: str) -> None:
        if self._state != state:
            self._state = state
            self._conn_version += 1
            self._version += 1
            self._cond.notify_all()

    def _set_error(self, sentence: str) -> None:
        with self._cond:
            self._last_error = sentence

    def _dispatch(self, event: Event, now: float | None = None) -> None:
        with self._cond:
            if now is not None:
                self._last_message_at = now
            out, _changed = self._reducer.feed(event)
            if out is None:
                return
            if out.type == "preview_image":
                self._events.append(replace(out, image=b""))   # memory bound: bytes live in snapshots
            else:
                self._events.append(out)
            self._version += 1
            self._cond.notify_all()
            subs = self._subscribers
        for cb in subs:
            try:
                cb(out)
            except Exception as exc:
                log.warning("A WebSocket event subscriber failed (%s: %s).", type(exc).__name__,
                            self._scrub(str(exc))[:200])

    def _close_socket(self, ws: websocket.WebSocket, graceful: bool = False) -> None:
        try:
            if graceful and ws.connected:
                ws.send_close()            # best effort: tell the server we are leaving
        except Exception:
            pass
        try:
            ws.abort()                     # shutdown(SHUT_RDWR): wakes a recv blocked in our thread
        except Exception:
            pass

    def _run(self) -> None:
        attempt = 0
        ever_connected = False
        failures = 0
        try:
            while not self._stop_evt.is_set():
                try:
                    ws = websocket.create_connection(
                        self._url.reveal(),
                        timeout=self._connect_timeout,
                        header=self._headers or None,
                        suppress_origin=True,        # no Origin: never trips the origin check (§7)
                        enable_multithread=True,     # stop() may send the close frame concurrently
                        skip_utf8_validation=True,   # json.loads validates anyway
                    )
                except Exception as exc:
                    sentence = _describe(exc)
                    self._set_error(sentence)
                    level = logging.WARNING if failures == 0 else logging.DEBUG
                    failures += 1
                    log.log(level, "WebSocket %s: connection failed: %s", self._redacted, sentence)
                    log.debug("WebSocket %s: %s: %s", self._redacted, type(exc).__name__,
                              self._scrub(str(exc))[:300])
                    if not self._reconnect:
                        break
                    self._stop_evt.wait(backoff_delay(attempt, *self._backoff, rng=self._rng))
                    attempt += 1
                    continue

                resync = ever_connected
                ever_connected = True
                failures = 0
                with self._cond:
                    self._ws = ws
                    self._reducer.connection_reset()
                    if resync:
                        self._reconnects += 1
                    self._set_state_locked("connected")
                if self._stop_evt.is_set():      # stop() ran while we were connecting
                    self._close_socket(ws, graceful=True)
                    break
                log.info("WebSocket %s: connected%s.", self._redacted, " again" if resync else "")
                got_message = False
                try:
                    if self._send_flags:
                        ws.send(FEATURE_FLAGS_MESSAGE)   # must be the first client message (§6.2)
                    if resync and self._on_resync is not None:
                        try:
                            self._on_resync()
                        except Exception as exc:
                            log.warning("on_resync failed (%s: %s).", type(exc).__name__,
                                        self._scrub(str(exc))[:200])
                    got_message = self._receive(ws)
                except Exception as exc:
                    if not self._stop_evt.is_set():
                        self._set_error(_describe(exc))
                        log.debug("WebSocket %s: %s: %s", self._redacted, type(exc).__name__,
                                  self._scrub(str(exc))[:300])
                finally:
                    with self._cond:
                        self._ws = None
                    self._close_socket(ws)       # close the old socket before reconnecting (§6.1)
                    try:
                        ws.shutdown()
                    except Exception:
                        pass
                if self._stop_evt.is_set() or not self._reconnect:
                    break
                log.warning("WebSocket %s: disconnected (%s); reconnecting.", self._redacted,
                            self.last_error or "no reason given")
                with self._cond:
                    self._set_state_locked("reconnecting")
                if got_message:
                    attempt = 0
                self._stop_evt.wait(backoff_delay(attempt, *self._backoff, rng=self._rng))
                attempt += 1
        except BaseException as exc:  # never let the thread die silently
            log.error("WebSocket listener %s crashed (%s: %s).", self.name, type(exc).__name__,
                      self._scrub(str(exc))[:300])
        finally:
            with self._cond:
                self._ws = None
                self._set_state_locked("stopped")

    def _receive(self, ws: websocket.WebSocket) -> bool:
        """Read frames until the socket ends; returns whether any frame arrived."""
        got = False
        last_rx = time.monotonic()
        ping_sent: float | None = None
        interval, ptimeout = self._ping_interval, self._ping_timeout
        stop = self._stop_evt
        OP_TEXT, OP_BIN, OP_CLOSE = (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY,
                                     websocket.ABNF.OPCODE_CLOSE)
        while not stop.is_set():
            now = time.monotonic()
            if ping_sent is not None:
                wait = ping_sent + ptimeout - now
                if wait <= 0:
                    self._set_error(f"The server did not answer a ping within {ptimeout:g} s.")
                    return got
            elif interval > 0:
                wait = last_rx + interval - now
                if wait <= 0:
                    ws.ping()
                    ping_sent = now
                    continue
            else:
                wait = 1.0
            # Short timeouts keep the stop flag responsive even if abort() could not wake us.
            ws.settimeout(min(max(wait, 0.01), 1.0))
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                if not stop.is_set():
                    self._set_error(_describe(exc))
                    log.debug("WebSocket %s: %s: %s", self._redacted, type(exc).__name__,
                              self._scrub(str(exc))[:300])
                return got
            now = time.monotonic()
            last_rx = now
            ping_sent = None
            got = True
            if opcode == OP_TEXT:
                ev = parse_text(data)
            elif opcode == OP_BIN:
                ev = parse_binary(data)
            elif opcode == OP_CLOSE:
                if not stop.is_set():
                    self._set_error("The server closed the connection.")
                return got
            else:
                continue                     # ping (answered by websocket-client) or pong
            if ev is not None:
                self._dispatch(ev, now)
            else:
                with self._lock:
                    self._last_message_at = now
        return got
