"""Job turnaround: the panel's ``submit_and_wait`` versus a bare floor script, side by side.

Both run the same tiny model-free job on the same real ComfyUI 0.3.75 (started here unless
``--server`` is given), alternating one floor run and one panel run so machine noise hits both
alike. The floor is the least a correct client can do: an open socket, ``POST /prompt``, wait for
``executing`` with ``node: null`` for that prompt, ``GET /history/{id}``.

Prints per-side medians and the median of the per-pair ratios. Target: ratio ≤ 1.10.

    python benchmarks/turnaround.py [--jobs 50] [--server http://127.0.0.1:8188] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import requests
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfypanel.client import ComfyClient  # noqa: E402
from comfypanel.connection import Connection  # noqa: E402
from comfypanel.jobs import submit_and_wait  # noqa: E402

from benchmarks._report import record, write_json  # noqa: E402

TARGET = 1.10


def job(color: int) -> dict:
    # EmptyImage → PreviewImage: ~0.05 s of work, so the client's own overhead is what shows.
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


class Floor:
    """Minimal requests + websocket-client loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cid = str(uuid.uuid4())
        self.http = requests.Session()
        self.ws = websocket.create_connection(url.replace("http", "ws", 1) + f"/ws?clientId={self.cid}", timeout=60)

    def run(self, prompt: dict) -> float:
        t0 = time.perf_counter()
        pid = str(uuid.uuid4())
        r = self.http.post(f"{self.url}/api/prompt", json={"prompt": prompt, "client_id": self.cid, "prompt_id": pid})
        r.raise_for_status()
        while True:
            msg = self.ws.recv()
            if isinstance(msg, str):
                m = json.loads(msg)
                if m.get("type") == "executing" and m["data"].get("node") is None and m["data"].get("prompt_id") == pid:
                    break
        h = self.http.get(f"{self.url}/api/history/{pid}").json()
        assert h[pid]["status"]["status_str"] == "success"
        return time.perf_counter() - t0

    def close(self) -> None:
        self.ws.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--server", default=None, help="use this ComfyUI instead of starting one")
    ap.add_argument("--verbose", action="store_true", help="print every pair")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (for run_all.py)")
    args = ap.parse_args(argv)

    server = None
    url = args.server
    if not url:
        import tempfile

        from comfypanel import devserver

        devserver.ensure_installed()
        server = devserver.start(data_dir=tempfile.mkdtemp(prefix="bench-turnaround-"))
        url = server.url
    try:
        client = ComfyClient(Connection.local(url))
        listener = client.listener()
        listener.start()
        listener.wait_connected(10)
        floor = Floor(url)
        # warm-up: first runs load node code paths
        floor.run(job(1))
        submit_and_wait(client, job(2), listener=listener, timeout=60)
        floors, panels, ratios = [], [], []
        base = int(time.time()) % 100000
        for i in range(args.jobs):
            c1, c2 = (base * 7 + 2 * i) % 0xFFFFFF, (base * 7 + 2 * i + 1) % 0xFFFFFF
            if i % 2:  # alternate who goes first
                f = floor.run(job(c1))
                t0 = time.perf_counter()
                r = submit_and_wait(client, job(c2), listener=listener, timeout=60)
                p = time.perf_counter() - t0
            else:
                t0 = time.perf_counter()
                r = submit_and_wait(client, job(c2), listener=listener, timeout=60)
                p = time.perf_counter() - t0
                f = floor.run(job(c1))
            assert r.ok, r.user_message
            floors.append(f)
            panels.append(p)
            ratios.append(p / f)
            if args.verbose:
                print(f"pair {i}: floor {f * 1000:.1f} ms, panel {p * 1000:.1f} ms")
        floor.close()
        listener.stop()
    finally:
        if server:
            server.stop()
    ratio = statistics.median(ratios)
    print(f"jobs: {args.jobs} (EmptyImage 64² → PreviewImage), real ComfyUI at {url}")
    print(f"floor (requests + websocket-client) median: {statistics.median(floors) * 1000:.1f} ms")
    print(f"panel submit_and_wait median:              {statistics.median(panels) * 1000:.1f} ms")
    print(f"median per-pair ratio panel/floor: {ratio:.3f}  (target ≤ {TARGET:.2f}: {'PASS' if ratio <= TARGET else 'FAIL'})")
    write_json(args.json, [
        record("floor (requests + websocket-client) median", round(statistics.median(floors) * 1000, 1), "ms"),
        record("panel submit_and_wait median", round(statistics.median(panels) * 1000, 1), "ms"),
        record(f"median per-pair ratio panel/floor ({args.jobs} jobs, real ComfyUI)", round(ratio, 3), "×",
               target=f"≤ {TARGET:.2f}", ok=ratio <= TARGET, ratio=round(ratio, 3)),
    ])
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
