"""comfypanel.events: parsing against the real recordings, the snapshot reducer, and a live listener
against a tiny scripted aiohttp WebSocket server running in a background thread."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from comfypanel import events as ev
from comfypanel.events import (
    EventListener, ExecutionError, PreviewImage, ProgressText, SnapshotReducer,
    StatusEvent, UnknownEvent, apply, backoff_delay, parse_binary, parse_text, redact_url,
)

pytestmark = pytest.mark.timeout(60)

RECORDINGS = Path(__file__).resolve().parents[3] / "shared" / "recordings"
if not RECORDINGS.is_dir():  # the repo may live elsewhere; the shared folder is fixed
    RECORDINGS = Path("/work/shared/recordings")
WS_FILES = sorted(RECORDINGS.glob("ws-*.jsonl"))

EXPECTED_CLASS = {
    "status": "StatusEvent", "execution_start": "ExecutionStart", "execution_cached": "ExecutionCached",
    "executing": "Executing", "progress": "Progress", "progress_state": "ProgressState",
    "executed": "Executed", "execution_success": "ExecutionSuccess", "execution_error": "ExecutionError",
    "execution_interrupted": "ExecutionInterrupted", "logs": "Logs", "feature_flags": "FeatureFlags",
    "notification": "Notification",
}


# ------------------------------------------------------------------------------------------------
# Recording helpers
# ------------------------------------------------------------------------------------------------

def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rec(name: str) -> list[dict]:
    return load(next(p for p in WS_FILES if p.name.startswith(name)))


def raw_text(o: dict) -> str:
    return json.dumps({"type": o["type"], "data": o["data"]})


def fake_image(info: dict) -> bytes:
    sig = b"\x89PNG\r\n\x1a\n" if info.get("format") == "PNG" else b"\xff\xd8\xff\xe0"
    n = info["bytes"]
    return (sig + b"\x00" * n)[:n]


def build_binary(o: dict) -> bytes:
    """Rebuild a binary frame from its recorded description (§6.4 layouts)."""
    if "raw_hex" in o:
        return bytes.fromhex(o["raw_hex"])
    t = o["u32be_0_event_type"]
    if t == 1:
        return struct.pack(">II", 1, o["u32be_1"]) + fake_image(o["image"])
    if t == 3:
        nid = o["node_id"].encode()
        return struct.pack(">II", 3, len(nid)) + nid + o["text"].encode()
    if t == 4:
        meta = json.dumps(o["metadata"]).encode()
        return struct.pack(">II", 4, len(meta)) + meta + fake_image(o["image"])
    raise AssertionError(f"unexpected binary type {t}")


def frames(lines: list[dict], clients: tuple[str, ...]) -> list[tuple[str, object]]:
    out = []
    for o in lines:
        if o.get("client") not in clients:
            continue
        if o["kind"] == "ws_text":
            out.append(("text", raw_text(o)))
        elif o["kind"] == "ws_binary":
            out.append(("bytes", build_binary(o)))
    return out


def parse_frame(kind: str, data):
    return parse_text(data) if kind == "text" else parse_binary(data)


def submitted(lines: list[dict]) -> list[str]:
    return [o["response"]["prompt_id"] for o in lines
            if o["kind"] == "http" and o["path"] == "/prompt" and o.get("status") == 200]


def reduce(lines: list[dict], clients: tuple[str, ...], reducer: SnapshotReducer | None = None):
    r = reducer or SnapshotReducer(clock=_counter())
    for kind, data in frames(lines, clients):
        e = parse_frame(kind, data)
        assert e is not None
        r.feed(e)
    return r


def _counter():
    c = iter(range(1, 10**9))
    return lambda: float(next(c))


# ------------------------------------------------------------------------------------------------
# Parsing every recorded message
# ------------------------------------------------------------------------------------------------

def test_recordings_present():
    assert len(WS_FILES) >= 10


@pytest.mark.parametrize("path", WS_FILES, ids=lambda p: p.name)
def test_every_recorded_text_line_parses(path):
    n = 0
    for o in load(path):
        if o["kind"] != "ws_text":
            continue
        e = parse_text(raw_text(o))
        assert e is not None, (path.name, o["seq"])
        assert type(e).__name__ == EXPECTED_CLASS[o["type"]], (path.name, o["seq"])
        assert e.type == o["type"]
        assert e.prompt_id == o["data"].get("prompt_id"), (path.name, o["seq"])
        d = o["data"]
        if o["type"] == "status":
            assert e.queue_remaining == d["status"]["exec_info"]["queue_remaining"]
            assert e.sid == d.get("sid")
        elif o["type"] == "executing":
            assert e.node == d["node"] and e.display_node == d.get("display_node")
        elif o["type"] == "progress":
            assert (e.value, e.max, e.node) == (d["value"], d["max"], d["node"])
        elif o["type"] == "progress_state":
            assert set(e.nodes) == set(d["nodes"])
            for k, np in e.nodes.items():
                raw = d["nodes"][k]
                assert (np.node_id, np.value, np.max, np.state) == (
                    raw["node_id"], raw["value"], raw["max"], raw["state"])
                assert np.display_node_id == raw["display_node_id"]
                assert np.parent_node_id == raw["parent_node_id"]
                assert np.real_node_id == raw["real_node_id"]
        elif o["type"] == "executed":
            assert e.node == d["node"] and dict(e.output) == d["output"]
        elif o["type"] == "execution_cached":
            assert e.nodes == tuple(d["nodes"])
        elif o["type"] in ("execution_error", "execution_interrupted"):
            assert e.node_id == d["node_id"] and e.node_type == d["node_type"]
            assert e.executed == tuple(d["executed"])
        elif o["type"] == "logs":
            assert e.entries == tuple((x["t"], x["m"]) for x in d["entries"])
        elif o["type"] == "feature_flags":
            assert dict(e.flags) == d
        n += 1
    assert n == sum(1 for o in load(path) if o["kind"] == "ws_text")


def test_all_recorded_text_lines_counted():
    total = sum(1 for p in WS_FILES for o in load(p) if o["kind"] == "ws_text")
    parsed = sum(1 for p in WS_FILES for o in load(p)
                 if o["kind"] == "ws_text" and parse_text(raw_text(o)) is not None)
    assert total == parsed >= 426          # 426 in the 0.3.75 set; more recordings may be added


def test_execution_error_drops_traceback_and_inputs():
    o = next(o for o in rec("ws-03") if o.get("type") == "execution_error")
    assert o["data"]["traceback"] and "current_inputs" in o["data"]
    e = parse_text(raw_text(o))
    assert isinstance(e, ExecutionError)
    names = {f.name for f in dataclasses.fields(e)}
    assert "traceback" not in names and "current_inputs" not in names and "current_outputs" not in names
    assert e.exception_type == "PIL.UnidentifiedImageError" and e.node_id == "1"
    assert 0 < len(e.traceback_tail) <= 3
    assert "File \"" not in repr(e)                     # the tail is kept out of repr
    second = [o for o in rec("ws-03") if o.get("type") == "execution_error"][1]
    assert "tensor([[" not in repr(parse_text(raw_text(second)))        # current_inputs dropped


def test_parse_text_accepts_bytes():
    o = rec("ws-01")[2]
    assert parse_text(raw_text(o).encode()) == parse_text(raw_text(o))


@pytest.mark.parametrize("path", [p for p in WS_FILES if any(o["kind"] == "ws_binary" for o in load(p))],
                         ids=lambda p: p.name)
def test_every_recorded_binary_frame_parses(path):
    for o in load(path):
        if o["kind"] != "ws_binary":
            continue
        frame = build_binary(o)
        assert len(frame) == o["length"], "rebuilt frame must match the recorded length"
        e = parse_binary(frame)
        t = o["u32be_0_event_type"]
        if t in (1, 4):
            assert isinstance(e, PreviewImage) and e.binary_type == t
            assert e.mime == "image/png" and e.size == o["image"]["bytes"] == len(e.image)
            assert e.image.startswith(b"\x89PNG")
            if t == 4:
                m = o["metadata"]
                assert (e.prompt_id, e.node_id, e.display_node_id, e.real_node_id) == (
                    m["prompt_id"], m["node_id"], m["display_node_id"], m["real_node_id"])
            else:
                assert e.prompt_id is None and e.node_id is None
        else:
            assert isinstance(e, ProgressText)
            assert (e.node_id, e.text) == (o["node_id"], o["text"])
            assert e.prompt_id is None


def test_preview_repr_hides_bytes():
    e = parse_binary(struct.pack(">II", 1, 1) + b"\xff\xd8\xff" + b"x" * 5000)
    assert e.mime == "image/jpeg" and "xxxx" not in repr(e)


# ------------------------------------------------------------------------------------------------
# Malformed input: None or UnknownEvent, never an exception
# ------------------------------------------------------------------------------------------------

BAD_TEXT = [
    "", "{", "not json", "[]", "null", "42", '"a string"', "[" * 100_000,
    b"\xff\xfe\x00garbage",
    '{"data": {}}',                                               # no type
    '{"type": 5, "data": {}}',                                    # type not a string
    '{"type": "status"}',                                         # missing data
    '{"type": "status", "data": []}',                             # data not an object
    '{"type": "status", "data": "x"}',
    '{"type": "status", "data": {"status": {}}}',
    '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "1"}}}}',
    '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": true}}}}',
    '{"type": "execution_start", "data": {"prompt_id": 7}}',
    '{"type": "execution_start", "data": {"prompt_id": "p", "timestamp": "soon"}}',
    '{"type": "execution_cached", "data": {"prompt_id": "p", "nodes": "1"}}',
    '{"type": "execution_cached", "data": {"prompt_id": "p", "nodes": [{"x": 1}]}}',
    '{"type": "executing", "data": {"node": 1.5, "prompt_id": "p"}}',
    '{"type": "executing", "data": {"node": "1", "prompt_id": ["p"]}}',
    '{"type": "progress", "data": {"value": "x", "max": 1}}',
    '{"type": "progress", "data": {"value": 1}}',
    '{"type": "progress_state", "data": {"prompt_id": "p", "nodes": []}}',
    '{"type": "progress_state", "data": {"prompt_id": "p", "nodes": {"1": 5}}}',
    '{"type": "progress_state", "data": {"prompt_id": "p", "nodes": {"1": {"value": 1, "max": 2}}}}',
    '{"type": "executed", "data": {"node": "1", "output": [], "prompt_id": "p"}}',
    '{"type": "executed", "data": {"output": {}, "prompt_id": "p"}}',
    '{"type": "execution_success", "data": {}}',
    '{"type": "execution_error", "data": {"prompt_id": "p", "exception_type": 3}}',
    '{"type": "execution_interrupted", "data": {"prompt_id": "p", "executed": "1"}}',
    '{"type": "logs", "data": {"entries": [{"t": 1, "m": "x"}]}}',
    '{"type": "logs", "data": {"entries": "x"}}',
    '{"type": "notification", "data": {"value": 5}}',
]


@pytest.mark.parametrize("raw", BAD_TEXT, ids=lambda r: repr(r)[:50])
def test_malformed_text_returns_none_and_logs(raw, caplog):
    caplog.set_level(logging.DEBUG, logger="comfypanel.events")
    assert parse_text(raw) is None
    recs = [r for r in caplog.records if r.name == "comfypanel.events"]
    assert len(recs) == 1 and recs[0].levelno in (logging.DEBUG, logging.WARNING)


def test_parse_text_wrong_argument_type_returns_none():
    assert parse_text(None) is None  # type: ignore[arg-type]
    assert parse_text(12) is None  # type: ignore[arg-type]


def test_unknown_text_type_is_kept_raw():
    e = parse_text('{"type": "cm-queue-status", "data": {"status": "in_progress", "prompt_id": "p1"}}')
    assert isinstance(e, UnknownEvent) and e.type == "unknown"
    assert e.raw_type == "cm-queue-status" and e.data["status"] == "in_progress" and e.prompt_id == "p1"
    e2 = parse_text('{"type": "crystools.monitor"}')
    assert isinstance(e2, UnknownEvent) and e2.data is None and e2.prompt_id is None


def test_cloud_notification_and_minimal_error():
    n = parse_text('{"type": "notification", "data": {"value": "Your job is queued"}}')
    assert n.type == "notification" and n.value == "Your job is queued"
    err = parse_text('{"type": "execution_error", "data": {"prompt_id": "p", '
                     '"exception_type": "InsufficientFundsError", "exception_message": "no credits"}}')
    assert err.node_id is None and err.exception_type == "InsufficientFundsError" and err.timestamp is None


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
BAD_BINARY = [
    b"",
    b"\x00\x00\x00\x01",                                          # < 8 bytes
    b"\x00\x00\x00\x01\x00\x00\x00",                              # 7 bytes
    struct.pack(">II", 1, 2),                                     # type 1 without image
    struct.pack(">II", 4, 1000) + b'{"node_id": "1"}' + PNG,      # json_len beyond the end
    struct.pack(">II", 4, 2) + b"[]" + PNG,                       # metadata not an object
    struct.pack(">II", 4, 5) + b"{bad}" + PNG,                    # metadata not JSON
    struct.pack(">II", 4, 2) + b"{}",                             # no image bytes
    struct.pack(">II", 4, 14) + b'{"node_id": 1.5}'[:14] + PNG,   # truncated JSON
    struct.pack(">II", 3, 10) + b"ab",                            # node id beyond the end
    struct.pack(">II", 3, 2) + b"\xff\xfe" + b"text",             # node id not UTF-8
    struct.pack(">II", 2, 0) + PNG,                               # UNENCODED: never on the wire
    struct.pack(">II", 99, 0) + b"whatever",                      # unknown type
]


@pytest.mark.parametrize("frame", BAD_BINARY, ids=lambda f: f[:12].hex() or "empty")
def test_malformed_binary_returns_none_and_logs(frame, caplog):
    caplog.set_level(logging.DEBUG, logger="comfypanel.events")
    assert parse_binary(frame) is None
    recs = [r for r in caplog.records if r.name == "comfypanel.events"]
    assert len(recs) == 1 and recs[0].levelno in (logging.DEBUG, logging.WARNING)


def test_binary_accepts_bytearray_and_memoryview_and_sniffs_unknown_format():
    f = struct.pack(">II", 1, 7) + PNG
    assert parse_binary(bytearray(f)).mime == "image/png"       # unknown format code: sniffed
    assert parse_binary(memoryview(f)).size == len(PNG)
    meta = json.dumps({"node_id": "9", "prompt_id": "p", "image_type": "image/jpeg"}).encode()
    e = parse_binary(struct.pack(">II", 4, len(meta)) + meta + b"\xff\xd8\xff\xe0rest")
    assert (e.mime, e.node_id, e.prompt_id, e.binary_type) == ("image/jpeg", "9", "p", 4)


def test_fuzz_random_frames_never_raise():
    rnd = random.Random(1234)
    good = [raw_text(o) for o in rec("ws-06") if o["kind"] == "ws_text"][:40]
    for _ in range(3000):
        s = rnd.choice(good)
        cut = rnd.randrange(len(s) + 1)
        parse_text(s[:cut])
        b = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        parse_binary(b)
        parse_binary(struct.pack(">I", rnd.choice([1, 3, 4])) + b)


# ------------------------------------------------------------------------------------------------
# The reducer, fed with the recordings
# ------------------------------------------------------------------------------------------------

def test_reduce_ws01_normal_run():
    lines = rec("ws-01")
    (pid,) = submitted(lines)
    r = reduce(lines, ("A",))
    s = r.snapshots[pid]
    assert s.state == "succeeded" and s.finished and s.history_ready
    recorded = next(o["data"]["output"] for o in lines if o.get("type") == "executed")
    assert dict(s.outputs) == {"3": recorded} and recorded["images"][0]["type"] == "output"
    assert s.current_node is None and s.error is None and s.cached_nodes == ()
    assert all(n.state == "finished" for n in s.nodes.values()) and set(s.nodes) == {"1", "2", "3"}
    assert s.started_at is not None and s.finished_at >= s.started_at
    assert r.queue_remaining == 0 and r.current_prompt_id is None
    # B (observer) sees only status: no snapshots at all
    assert reduce(lines, ("B",)).snapshots == {}


def test_reduce_ws02_cached_rerun():
    lines = rec("ws-02")
    p1, p2 = submitted(lines)
    r = reduce(lines, ("A",))
    assert r.snapshots[p1].state == r.snapshots[p2].state == "succeeded"
    assert r.snapshots[p1].cached_nodes == ("1", "2", "3")
    assert "3" in r.snapshots[p1].outputs and r.snapshots[p1].history_ready


def test_reduce_ws03_errors():
    lines = rec("ws-03")
    p1, p2 = submitted(lines)
    r = reduce(lines, ("A",))
    a, b = r.snapshots[p1], r.snapshots[p2]
    assert a.state == b.state == "failed" and a.finished and a.history_ready
    assert (a.error.node_id, a.error.node_type, a.error.exception_type) == (
        "1", "LoadImage", "PIL.UnidentifiedImageError")
    assert (b.error.node_id, b.error.exception_type, b.error.executed) == ("3", "RuntimeError", ("2", "1"))
    assert dict(a.outputs) == {} and a.interrupted is None


def test_reduce_ws04_interrupts():
    lines = rec("ws-04")
    p1, p2 = submitted(lines)
    r = reduce(lines, ("A",))
    a, b = r.snapshots[p1], r.snapshots[p2]
    assert a.state == b.state == "interrupted" and a.history_ready and b.history_ready
    assert (a.interrupted.node_id, a.interrupted.node_type) == ("3", "ImageUpscaleWithModel")
    assert a.step == (8, 25) and a.step_node == "3"
    assert b.interrupted.node_id == "4" and b.interrupted.executed == ("2", "1", "3")
    assert a.error is None


def test_reduce_ws05_queue_ops():
    lines = rec("ws-05")
    r = reduce(lines, ("A",))
    states = sorted(s.state for s in r.snapshots.values())
    assert states == ["interrupted"]            # the deleted/cleared prompts never appear on the socket
    assert r.queue_remaining == 0


def test_reduce_ws06_progress_and_previews():
    lines = rec("ws-06")
    p_ws, p_up, p_text = submitted(lines)
    r = reduce(lines, ("A",))
    ws, up, txt = r.snapshots[p_ws], r.snapshots[p_up], r.snapshots[p_text]
    assert ws.state == up.state == txt.state == "succeeded"
    assert ws.preview_count == 6 and ws.latest_preview.mime == "image/png"
    assert ws.latest_preview.prompt_id == p_ws           # type 1 attributed to the running prompt
    assert ws.latest_preview.binary_type == 1
    assert ws.step == (5, 6)
    assert up.step == (9, 9) and up.preview_count == 0
    assert up.nodes["3"].state == "finished" and up.nodes["3"].value == up.nodes["3"].max
    assert txt.preview_count == 0


def test_reduce_ws07_feature_flag_previews():
    lines = rec("ws-07")
    (pid,) = submitted(lines)
    r = reduce(lines, ("C",))
    s = r.snapshots[pid]
    assert s.state == "succeeded" and s.preview_count == 6 and s.latest_preview.binary_type == 4
    assert s.latest_preview.node_id == "2"
    assert dict(r.server_flags) == {"supports_preview_metadata": True, "max_upload_size": 104857600}


def test_reduce_ws08_prompts_without_client_id():
    lines = rec("ws-08")
    r = reduce(lines, ("A",))
    assert r.snapshots, "progress_state reaches every socket"
    # No lifecycle events: nothing ever finishes on this socket, but previews are attributed.
    assert all(not s.finished and s.state == "running" for s in r.snapshots.values())
    assert sum(s.preview_count for s in r.snapshots.values()) == 6


def test_reduce_ws09_reconnect_replay_and_mark_running():
    lines = rec("ws-09")
    (pid,) = submitted(lines)
    r = reduce(lines, ("A",))
    assert r.snapshots[pid].current_node == "3"
    r.connection_reset()
    a2 = frames(lines, ("A2",))
    # greeting + replay executing{node: "3"} without prompt_id
    for kind, data in a2[:2]:
        e, changed = r.feed(parse_frame(kind, data))
        assert changed is None
    assert r.orphan_node == "3" and r.sid is not None
    snap = r.mark_running(pid)                     # the caller learnt it from /queue
    assert snap.state == "running" and snap.current_node == "3" and r.current_prompt_id == pid
    for kind, data in a2[2:]:
        r.feed(parse_frame(kind, data))
    s = r.snapshots[pid]
    assert s.state == "succeeded" and s.history_ready and "6" in s.outputs


def test_replay_executing_attributed_when_current_known():
    r = SnapshotReducer(clock=_counter())
    r.mark_running("p")
    out, changed = r.feed(parse_text('{"type": "executing", "data": {"node": "7"}}'))
    assert out.prompt_id == "p" and changed == "p" and r.snapshots["p"].current_node == "7"


def test_reduce_ws10_logs():
    lines = rec("ws-10")
    (pid,) = submitted(lines)
    r = reduce(lines, ("A",))
    assert r.snapshots[pid].state == "succeeded"


def test_apply_is_pure_and_terminal_is_sticky():
    s0 = apply(None, parse_text('{"type": "execution_start", "data": {"prompt_id": "p", "timestamp": 1}}'),
               now=1.0)
    assert s0.state == "running" and s0.started_at == 1.0
    s1 = apply(s0, parse_text('{"type": "execution_success", "data": {"prompt_id": "p"}}'), now=2.0)
    assert s0.state == "running" and s1.state == "succeeded" and s1.finished and not s1.history_ready
    late = parse_text('{"type": "progress", "data": {"value": 1, "max": 2, "prompt_id": "p", "node": "1"}}')
    assert apply(s1, late, now=3.0) is s1
    s2 = apply(s1, parse_text('{"type": "executing", "data": {"node": null, "prompt_id": "p"}}'), now=4.0)
    assert s2.history_ready and s2.finished_at == 2.0 and s2.updated_at == 4.0
    assert apply(s2, parse_text('{"type": "execution_error", "data": {"prompt_id": "p"}}')) is s2
    assert apply(None, StatusEvent(queue_remaining=1)) is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s2.state = "queued"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s2.outputs["x"] = {}  # type: ignore[index]


def test_history_ready_without_terminal_message_keeps_state():
    s = apply(None, parse_text('{"type": "executing", "data": {"node": "2", "prompt_id": "p"}}'), now=1)
    s = apply(s, parse_text('{"type": "executing", "data": {"node": null, "prompt_id": "p"}}'), now=2)
    assert s.finished and s.history_ready and s.state == "running"   # terminal missed: ask /history


def test_track_creates_queued_snapshot():
    r = SnapshotReducer(clock=_counter())
    s = r.track("p")
    assert s.state == "queued" and not s.finished and r.snapshots["p"] is s


def test_cloud_reducer_keeps_only_tracked_and_late_track_loses_nothing():
    lines = rec("ws-06")
    p_ws, p_up, p_text = submitted(lines)
    r = SnapshotReducer(only_tracked=True, clock=_counter())
    r.track(p_up)
    dropped = 0
    for kind, data in frames(lines, ("A",)):
        out, _ = r.feed(parse_frame(kind, data))
        dropped += out is None
    assert set(r.snapshots) == {p_up} and r.snapshots[p_up].step == (9, 9)
    assert dropped > 0
    # A prompt tracked after its events arrived (POST answer raced the socket) is complete.
    late = r.track(p_ws)
    assert late.state == "succeeded" and late.preview_count == 6
    assert set(r.snapshots) == {p_up, p_ws}


def test_eviction_is_bounded_and_prefers_finished():
    r = SnapshotReducer(max_prompts=3, clock=_counter())
    for i in range(5):
        r.feed(parse_text(json.dumps({"type": "execution_start", "data": {"prompt_id": f"d{i}"}})))
        r.feed(parse_text(json.dumps({"type": "execution_success", "data": {"prompt_id": f"d{i}"}})))
    assert list(r.snapshots) == ["d2", "d3", "d4"]
    r.track("t")
    r.feed(parse_text(json.dumps({"type": "execution_start", "data": {"prompt_id": "run"}})))
    assert set(r.snapshots) == {"d4", "t", "run"}
    for i in range(10):   # prompts that never finish here (no client_id) still cannot grow memory
        msg = {"type": "progress_state", "data": {"prompt_id": f"x{i}", "nodes": {}}}
        r.feed(parse_text(json.dumps(msg)))
    assert len(r.snapshots) == 3 and "t" in r.snapshots and "x9" in r.snapshots


def test_backoff_schedule():
    rng = random.Random(7)
    for attempt, nominal in enumerate([0.5, 1, 2, 4, 8, 10, 10, 10]):
        for _ in range(50):
            d = backoff_delay(attempt, 0.5, 10.0, rng)
            assert nominal * 0.75 <= d <= nominal * 1.25
    assert backoff_delay(10_000) <= 12.5


def test_redact_url():
    assert redact_url("wss://cloud.comfy.org/ws?clientId=abc&token=SECRET123") == \
        "wss://cloud.comfy.org/ws?clientId=abc&token=***"
    assert "pw" not in redact_url("ws://user:pw@h:81/ws?x=1")
    assert redact_url("ws://127.0.0.1:8188/ws") == "ws://127.0.0.1:8188/ws"


def test_module_does_not_import_streamlit():
    src = Path(ev.__file__).read_text()
    assert "import streamlit" not in src and "from streamlit" not in src


# ------------------------------------------------------------------------------------------------
# A tiny scripted WebSocket server (aiohttp in a background thread)
# ------------------------------------------------------------------------------------------------

class WSServer:
    """Scripted ComfyUI-like /ws endpoint. ``scripts[i]`` drives connection i (the last one repeats).

    Actions: ("text", str) | ("bytes", bytes) | ("sleep", s) | ("drop",) abort TCP |
    ("close",) close frame. After the script the handler idles until the client leaves.
    """

    def __init__(self, scripts=None, *, autoping: bool = True, reject_status: int | None = None):
        self.scripts = scripts or [[("text", _status(0, "sid-1"))]]
        self.autoping = autoping
        self.reject_status = reject_status
        self.received: list[list] = []
        self.queries: list[dict] = []
        self.headers: list[dict] = []
        self.connections = 0
        self.port = 0

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(ready,), name="test-ws-server", daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self._closing.set)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?clientId=test-client"

    def _main(self, ready):
        asyncio.set_event_loop(self.loop)
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_get("/ws", self._handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    async def _handler(self, request):
        idx = self.connections
        self.connections += 1
        self.queries.append(dict(request.query))
        self.headers.append(dict(request.headers))
        if self.reject_status:
            return web.Response(status=self.reject_status, text="unauthorized")
        ws = web.WebSocketResponse(autoping=self.autoping)
        await ws.prepare(request)
        msgs: list = []
        self.received.append(msgs)

        async def reader():
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    msgs.append(msg.data)
                else:
                    msgs.append(msg.type.name)

        rt = asyncio.ensure_future(reader())
        for action in self.scripts[min(idx, len(self.scripts) - 1)]:
            kind = action[0]
            if kind == "text":
                await ws.send_str(action[1])
            elif kind == "bytes":
                await ws.send_bytes(action[1])
            elif kind == "sleep":
                await asyncio.sleep(action[1])
            elif kind == "drop":
                request.transport.abort()
                rt.cancel()
                return ws
            elif kind == "close":
                await ws.close()
                break
        closing = asyncio.ensure_future(self._closing.wait())
        await asyncio.wait([rt, closing], return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        rt.cancel()
        return ws


def _status(q: int, sid: str | None = None) -> str:
    data = {"status": {"exec_info": {"queue_remaining": q}}}
    if sid:
        data["sid"] = sid
    return json.dumps({"type": "status", "data": data})


def until(pred, timeout: float = 10.0, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAST = dict(backoff=(0.05, 0.2), connect_timeout=2.0)


# ------------------------------------------------------------------------------------------------
# Live listener tests
# ------------------------------------------------------------------------------------------------

def test_live_replay_feature_flags_first_wait_and_subscribe():
    lines = rec("ws-07")
    (pid,) = submitted(lines)
    script = [("sleep", 0.05)] + frames(lines, ("C",))
    got: list = []
    calls = {"bad": 0}

    def bad(e):
        calls["bad"] += 1
        raise RuntimeError("subscriber bug")

    with WSServer([script]) as srv:
        lst = EventListener(srv.url, name="t-replay", **FAST)
        lst.subscribe(bad)
        unsub = lst.subscribe(got.append)
        lst.track(pid)
        with lst:
            snap = lst.snapshot(pid)
            end = time.monotonic() + 10
            while not snap.history_ready and time.monotonic() < end:
                snap = lst.wait(pid, timeout=1.0)
            assert snap.state == "succeeded" and snap.history_ready and snap.preview_count == 6
            assert snap.latest_preview.image.startswith(b"\x89PNG")
            assert lst.wait(pid, timeout=5) is snap             # finished: returns at once
            assert lst.connected and lst.state == "connected" and lst.reconnects == 0
            assert lst.sid == "5b446eb8-8458-4901-8341-c7fd1f7e7131" and lst.queue_remaining == 0
            assert lst.server_feature_flags["supports_preview_metadata"] is True
            assert json.loads(srv.received[0][0]) == {
                "type": "feature_flags", "data": {"supports_preview_metadata": True}}
            assert srv.queries[0] == {"clientId": "test-client"}
            assert "Origin" not in srv.headers[0]
            n_frames = len(frames(lines, ("C",)))
            assert until(lambda: len(got) == n_frames)
            assert calls["bad"] == n_frames                    # a failing subscriber does not stop others
            evs = lst.recent_events()
            assert len(evs) == n_frames and lst.recent_events(3) == evs[-3:]
            previews = [e for e in evs if e.type == "preview_image"]
            assert len(previews) == 6 and all(p.image == b"" and p.size == 230 for p in previews)
            unsub()
            assert lst.wait(pid + "-unknown", timeout=0.05) is None
        assert lst.state == "stopped"


def test_live_drop_reconnect_resync():
    lines = rec("ws-09")
    (pid,) = submitted(lines)
    first = frames(lines, ("A",)) + [("sleep", 0.05), ("drop",)]
    second = frames(lines, ("A2",))
    resyncs: list[float] = []
    holder: dict = {}

    def on_resync():
        resyncs.append(time.monotonic())
        holder["l"].mark_running(pid)           # what jobs.py does after reading /queue

    with WSServer([first, second]) as srv:
        lst = EventListener(srv.url, on_resync=on_resync, name="t-reconnect", **FAST)
        holder["l"] = lst
        with lst:
            assert until(lambda: (s := lst.snapshot(pid)) is not None and s.history_ready)
            s = lst.snapshot(pid)
            assert s.state == "succeeded" and "6" in s.outputs
            assert lst.reconnects == 1 and len(resyncs) == 1 and srv.connections == 2
            assert lst.connected and lst.last_error      # why the first socket ended
            for conn in srv.received:                    # feature_flags first on every connection
                assert json.loads(conn[0])["type"] == "feature_flags"
            replay = [e for e in lst.recent_events() if e.type == "executing" and e.node == "3"]
            assert replay[-1].prompt_id == pid           # the replay without prompt_id is attributed


def test_live_on_resync_exception_is_contained(caplog):
    caplog.set_level(logging.DEBUG)
    scripts = [[("text", _status(1, "s")), ("drop",)], [("text", _status(0, "s"))]]

    def boom():
        raise RuntimeError("resync failed")

    with WSServer(scripts) as srv:
        with EventListener(srv.url, on_resync=boom, name="t-resync-boom", **FAST) as lst:
            assert until(lambda: lst.reconnects == 1 and lst.queue_remaining == 0)
            assert lst.connected
    assert "on_resync failed" in caplog.text


def test_live_garbage_frames_are_survived():
    script = [
        ("text", _status(1, "sid-g")),
        ("text", "not json at all"),
        ("text", "[1, 2, 3]"),
        ("text", '{"type": "status", "data": "x"}'),
        ("bytes", b"\x00\x01"),
        ("bytes", struct.pack(">II", 4, 999) + b"{}"),
        ("bytes", struct.pack(">II", 77, 0) + b"zz"),
        ("text", '{"type": "cm-queue-status", "data": {"status": "x"}}'),
        ("text", _status(3)),
    ]
    with WSServer([script]) as srv:
        with EventListener(srv.url, name="t-garbage", **FAST) as lst:
            assert until(lambda: lst.queue_remaining == 3)
            assert lst.connected and lst.reconnects == 0 and srv.connections == 1
            assert [e.type for e in lst.recent_events()] == ["status", "unknown", "status"]


def test_live_ping_timeout_reconnects():
    with WSServer([[("text", _status(0, "s"))]], autoping=False) as srv:
        lst = EventListener(srv.url, ping_interval=0.15, ping_timeout=0.2, name="t-ping", **FAST)
        with lst:
            assert until(lambda: lst.reconnects >= 1, timeout=10)
            assert "ping" in lst.last_error
            assert "PING" in srv.received[0]


def test_live_pings_keep_a_quiet_connection():
    with WSServer([[("text", _status(0, "s"))]]) as srv:
        with EventListener(srv.url, ping_interval=0.05, ping_timeout=0.5, name="t-keep", **FAST) as lst:
            assert until(lambda: lst.connected)
            time.sleep(0.5)
            assert lst.connected and lst.reconnects == 0 and srv.connections == 1


def test_live_server_close_frame_without_reconnect():
    with WSServer([[("text", _status(0, "s")), ("close",)]]) as srv:
        lst = EventListener(srv.url, reconnect=False, name="t-close", **FAST).start()
        assert until(lambda: lst.state == "stopped")
        assert lst.last_error == "The server closed the connection."
        assert not any(t.name == "t-close" for t in threading.enumerate())
        lst.stop()


def test_stop_ends_thread_and_wait_returns():
    with WSServer() as srv:
        lst = EventListener(srv.url, name="t-stop", **FAST).start()
        assert until(lambda: lst.connected)
        waiter: dict = {}
        t = threading.Thread(target=lambda: waiter.setdefault("r", lst.wait_any(timeout=10)))
        t.start()
        t0 = time.monotonic()
        assert lst.stop(timeout=5) is True
        assert time.monotonic() - t0 < 2
        t.join(5)
        assert waiter["r"] is True                      # the state change woke the waiter
        assert lst.state == "stopped" and not lst.connected
        assert not any(th.name == "t-stop" for th in threading.enumerate())
        with pytest.raises(RuntimeError):
            lst.start()


def test_twenty_start_stop_cycles_leave_no_threads():
    with WSServer() as srv:
        warm = EventListener(srv.url, name="t-warm", **FAST).start()
        assert until(lambda: warm.connected)
        assert warm.stop()
        baseline = threading.active_count()
        for i in range(20):
            lst = EventListener(srv.url, name=f"t-cycle-{i}", **FAST).start()
            assert until(lambda: lst.connected)
            assert lst.stop(timeout=5)
            assert not any(th.name == f"t-cycle-{i}" for th in threading.enumerate())
        assert until(lambda: threading.active_count() == baseline, timeout=2)
        assert srv.connections == 21


def test_stop_while_reconnecting_to_a_dead_port():
    lst = EventListener(f"ws://127.0.0.1:{free_port()}/ws", name="t-dead", **FAST).start()
    assert until(lambda: lst.last_error is not None)
    assert lst.state == "connecting" and not lst.connected
    assert lst.stop(timeout=5)
    assert not any(th.name == "t-dead" for th in threading.enumerate())


def test_live_cloud_mode_keeps_only_tracked():
    lines = rec("ws-06")
    p_ws, p_up, p_text = submitted(lines)
    with WSServer([[("sleep", 0.05)] + frames(lines, ("A",))]) as srv:
        lst = EventListener(srv.url, cloud=True, name="t-cloud", **FAST)
        lst.track(p_up)
        with lst:
            assert until(lambda: lst.snapshot(p_up).history_ready)
            assert until(lambda: lst.queue_remaining == 0)
            assert set(lst.snapshots()) == {p_up}
            assert lst.snapshot(p_up).step == (9, 9)
            seen = {e.prompt_id for e in lst.recent_events()}
            assert p_ws not in seen and p_text not in seen
            assert lst.track(p_text).state == "succeeded"      # late track: side table, nothing lost


# ------------------------------------------------------------------------------------------------
# The token never leaks
# ------------------------------------------------------------------------------------------------

SECRET = "SECRET123"
KEY = "HEADERKEY456"


def _assert_no_secret(caplog, *texts):
    blob = caplog.text + "\n".join(r.getMessage() for r in caplog.records) + "\n".join(map(str, texts))
    assert SECRET not in blob and KEY not in blob


def test_token_never_logged_when_connection_refused(caplog):
    caplog.set_level(logging.DEBUG)
    url = f"ws://127.0.0.1:{free_port()}/ws?clientId=c1&token={SECRET}"
    lst = EventListener(url, headers={"X-API-Key": KEY}, name="t-secret-refused", **FAST).start()
    assert until(lambda: lst.last_error is not None)
    time.sleep(0.3)                                           # a few retries
    texts = [lst.last_error, repr(lst), str(lst), lst.url]
    assert lst.stop()
    assert "refused" in lst.last_error
    assert "token=***" in lst.url and "clientId=c1" in lst.url
    assert caplog.records, "the failure must be logged (redacted)"
    _assert_no_secret(caplog, *texts)


def test_token_never_logged_when_handshake_rejected(caplog):
    caplog.set_level(logging.DEBUG)
    with WSServer(reject_status=401) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws?clientId=c1&token={SECRET}"
        lst = EventListener(url, headers={"X-API-Key": KEY}, name="t-secret-401", **FAST).start()
        assert until(lambda: lst.last_error is not None and srv.connections >= 2)
        texts = [lst.last_error, repr(lst)]
        assert lst.stop()
        assert "401" in lst.last_error
        assert srv.queries[0]["token"] == SECRET and srv.headers[0]["X-API-Key"] == KEY  # it was sent
    _assert_no_secret(caplog, *texts)


def test_token_never_logged_on_a_normal_session(caplog):
    caplog.set_level(logging.DEBUG)
    scripts = [[("text", _status(0, "s")), ("text", "garbage"), ("drop",)], [("text", _status(0, "s"))]]

    def resync():
        raise RuntimeError(f"failed to reach /queue?token={SECRET}")   # a careless caller

    with WSServer(scripts) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws?clientId=c1&token={SECRET}"
        with EventListener(url, on_resync=resync, name="t-secret-ok", **FAST) as lst:
            assert until(lambda: lst.reconnects == 1 and lst.connected)
            texts = [repr(lst), lst.last_error, lst.recent_events()]
    _assert_no_secret(caplog, *texts)


def test_bad_scheme_error_does_not_echo_token():
    with pytest.raises(ValueError) as info:
        EventListener(f"http://cloud.example/ws?token={SECRET}")
    assert SECRET not in str(info.value) and "token=***" in str(info.value)
