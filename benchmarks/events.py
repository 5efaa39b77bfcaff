"""Throughput of comfypanel.events against the real ComfyUI 0.3.75 WebSocket recordings.

Replays every ws_text / ws_binary line of shared/recordings/ws-*.jsonl (frames rebuilt exactly as the
server sent them) N times through, in the same run:

  (a) the floor: bare ``json.loads`` of each text frame (binary frames: header unpack, plus
      ``json.loads`` of the metadata of type 4);
  (b) ``parse_text`` / ``parse_binary`` + ``SnapshotReducer.feed`` (one reducer per recorded socket,
      fresh each round, so every round really builds the snapshots);
  (c) (b) through the listener's dispatch path (lock, bounded deque, Condition.notify_all) — what
      the listener thread does per frame, minus the socket.

Usage:  python benchmarks/events.py [--repeat N] [--recordings DIR] [--json PATH]
Exit status 1 when (b) is below the 50k events/s target.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfypanel.events import EventListener, SnapshotReducer, parse_binary, parse_text  # noqa: E402

from benchmarks._report import record, write_json  # noqa: E402

TARGET = 50_000
_HDR = struct.Struct(">II")


def _default_recordings() -> Path:
    for cand in (ROOT.parent / "shared" / "recordings", Path("/work/shared/recordings")):
        if cand.is_dir():
            return cand
    raise SystemExit("recordings not found; pass --recordings DIR")


def _fake_image(info: dict) -> bytes:
    sig = b"\x89PNG\r\n\x1a\n" if info.get("format") == "PNG" else b"\xff\xd8\xff\xe0"
    return (sig + b"\x00" * info["bytes"])[: info["bytes"]]


def _binary(o: dict) -> bytes:
    if "raw_hex" in o:
        return bytes.fromhex(o["raw_hex"])
    t = o["u32be_0_event_type"]
    if t == 1:
        return _HDR.pack(1, o["u32be_1"]) + _fake_image(o["image"])
    if t == 3:
        nid = o["node_id"].encode()
        return _HDR.pack(3, len(nid)) + nid + o["text"].encode()
    meta = json.dumps(o["metadata"]).encode()
    return _HDR.pack(4, len(meta)) + meta + _fake_image(o["image"])


def load_frames(rec_dir: Path) -> list[tuple[str, bool, bytes]]:
    """(socket key, is_text, payload) in recorded order; text payloads as UTF-8 bytes, as on the wire."""
    out = []
    for path in sorted(rec_dir.glob("ws-*.jsonl")):
        for line in path.read_text().splitlines():
            o = json.loads(line)
            key = f"{path.name}:{o.get('client')}"
            if o["kind"] == "ws_text":
                out.append((key, True, json.dumps({"type": o["type"], "data": o["data"]}).encode()))
            elif o["kind"] == "ws_binary":
                out.append((key, False, _binary(o)))
    return out


def run_json(frames, repeat: int) -> float:
    loads, unpack = json.loads, _HDR.unpack_from
    t0 = time.perf_counter()
    for _ in range(repeat):
        for _key, is_text, payload in frames:
            if is_text:
                loads(payload)
            else:
                etype, x = unpack(payload, 0)
                if etype == 4:
                    loads(payload[8:8 + x])
    return time.perf_counter() - t0


def run_events(frames, repeat: int) -> float:
    keys = sorted({k for k, _, _ in frames})
    t0 = time.perf_counter()
    for _ in range(repeat):
        reducers = {k: SnapshotReducer() for k in keys}
        for key, is_text, payload in frames:
            e = parse_text(payload) if is_text else parse_binary(payload)
            if e is not None:
                reducers[key].feed(e)
    return time.perf_counter() - t0


def run_listener(frames, repeat: int) -> float:
    keys = sorted({k for k, _, _ in frames})
    mono, elapsed = time.monotonic, 0.0
    for _ in range(repeat):
        listeners = {k: EventListener("ws://127.0.0.1:9/ws") for k in keys}   # never started;
        t0 = time.perf_counter()                                              # built off the clock
        for key, is_text, payload in frames:
            e = parse_text(payload) if is_text else parse_binary(payload)
            if e is not None:
                listeners[key]._dispatch(e, mono())
        elapsed += time.perf_counter() - t0
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=0,
                    help="replays of the whole recording set (default: calibrated to ~3 s in total)")
    ap.add_argument("--recordings", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (for run_all.py)")
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)          # the recordings are clean; keep logging out of timing

    frames = load_frames(args.recordings or _default_recordings())
    n_text = sum(1 for _, t, _ in frames if t)
    repeat = args.repeat
    if repeat <= 0:   # calibrate: one warm-up round of the slowest variant, aim for ~3 s overall
        per_round = run_listener(frames, 1) + run_events(frames, 1) + run_json(frames, 1)
        repeat = max(1, int(3.0 / max(per_round, 1e-6)))

    t_json = run_json(frames, repeat)
    t_events = run_events(frames, repeat)
    t_listener = run_listener(frames, repeat)
    total = len(frames) * repeat
    r_json, r_events, r_listener = total / t_json, total / t_events, total / t_listener

    print(f"Python {platform.python_version()} on {platform.machine()}")
    print(f"frames: {len(frames)} per round ({n_text} text, {len(frames) - n_text} binary), "
          f"{repeat} rounds = {total:,} events per variant")
    print(f"(a) json.loads only                      {r_json:>12,.0f} events/s  ({t_json:.2f} s)")
    print(f"(b) parse + SnapshotReducer              {r_events:>12,.0f} events/s  ({t_events:.2f} s)")
    print(f"(c) (b) + listener lock/deque/notify     {r_listener:>12,.0f} events/s  ({t_listener:.2f} s)")
    print(f"ratio (b)/(a) = {r_events / r_json:.2f}  (typed parsing + snapshots cost "
          f"{t_events / t_json:.1f}x bare json.loads);  (c)/(a) = {r_listener / r_json:.2f}")
    ok = r_events >= TARGET
    print(f"target ≥ {TARGET // 1000}k events/s: {'PASS' if ok else 'FAIL'}")
    write_json(args.json, [
        record("(a) json.loads only", round(r_json), "events/s"),
        record("(b) parse + SnapshotReducer", round(r_events), "events/s", target=f"≥ {TARGET // 1000}k events/s",
               ok=ok, ratio=round(r_events / r_json, 3)),
        record("(c) (b) + listener lock/deque/notify", round(r_listener), "events/s",
               ratio=round(r_listener / r_json, 3)),
    ])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
