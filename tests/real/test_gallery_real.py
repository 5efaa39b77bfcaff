"""The ledger and thumbnails against a real ComfyUI: runs land in the ledger, survive a restart of
the server (its history is gone), and re-run exactly to identical pixels."""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image

from comfypanel import devserver
from comfypanel.client import ComfyClient, new_prompt_id
from comfypanel.connection import Connection
from comfypanel.images import ThumbnailCache
from comfypanel.jobs import submit_and_wait
from comfypanel.ledger import Ledger, reconcile
from comfypanel.workflow import Recipe

pytestmark = [pytest.mark.real, pytest.mark.timeout(240)]


def graph(color: int, prefix: str) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def submit(led: Ledger, client, server_id: str, api: dict, params: dict) -> str:
    """What the Generate page does: ledger row first, then the prompt, then the ending."""
    pid = new_prompt_id()
    led.record_submission(prompt_id=pid, recipe_json=Recipe(source=api, api=api, name="real").to_json(), api=api,
                          server_id=server_id, user_label="real-test", workflow_name="real", params=params)
    result = submit_and_wait(client, api, prompt_id=pid, timeout=60)
    led.complete(pid, state=result.state, files=result.files, duration_s=result.duration_s)
    return pid


@pytest.fixture
def own_server(real_server, tmp_path):
    """A second real ComfyUI of our own (installed by ``real_server``): restarting it must not
    disturb the tests sharing the session's server."""
    server = devserver.start(data_dir=tmp_path / "comfyui-data")
    client = ComfyClient(Connection.local(server.url))
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


def test_runs_land_in_the_ledger_survive_a_restart_and_rerun_identically(own_server, tmp_path):
    server, client = own_server
    led = Ledger(tmp_path / "ledger.sqlite3")
    sid = client.connection.server_id()
    salt = uuid.uuid4().hex[:6]
    colors = [0xFF0000 + i * 0x40 for i in range(3)]
    pids = [submit(led, client, sid, graph(c, f"gallery_{salt}_{i}"), {"1.color": c, "1.width": 96})
            for i, c in enumerate(colors)]
    cache = ThumbnailCache(tmp_path / "thumbs")
    originals = {}
    for pid in pids:
        rec = led.get(pid)
        assert rec.status == "succeeded" and len(rec.files) == 1
        thumb, size = cache.fetch(client, sid, rec.files[0])
        assert size and len(thumb) < size * 2 and Image.open(io.BytesIO(thumb)).format == "WEBP"
        originals[pid] = client.view(rec.files[0])
    # ComfyUI restarts: its history is gone, the ledger keeps all three with parameters and files
    server.restart()
    assert not set(client.history()) & set(pids)
    report = reconcile(led, client, sid)
    assert not set(report.imported) & set(pids)
    found, total = led.search(text=str(colors[1]))
    assert [r.prompt_id for r in found] == [pids[1]]
    for pid, c in zip(pids, colors):
        rec = led.get(pid)
        assert rec.params["1.color"] == c and rec.status == "succeeded" and not rec.outputs[0].missing
        assert cache.get(sid, rec.files[0]) is not None
    # re-run one exactly: identical pixels
    rec = led.get(pids[0])
    api = Recipe.from_json(rec.recipe_json).build()
    again = submit(led, client, sid, api, dict(rec.params))
    a = Image.open(io.BytesIO(originals[pids[0]])).convert("RGB")
    b = Image.open(io.BytesIO(client.view(led.get(again).files[0]))).convert("RGB")
    assert a.size == b.size and a.tobytes() == b.tobytes()
