"""Scenarios that must behave the same against the ComfyUI double and the real ComfyUI 0.3.75.

Each scenario takes a connected ``ComfyClient`` and a started listener and asserts only what both
servers must agree on. ``tests/unit/test_scenarios_double.py`` runs them against the double,
``tests/real/test_scenarios_real.py`` against the real server: a double that drifts from the
real server fails here.
"""

from __future__ import annotations

import io
import json
import time
import uuid

from PIL import Image

from comfypanel import errors as E
from comfypanel.jobs import follow, submit_and_wait
from tests.helpers import recording, workflow


def _salted(wf: dict) -> dict:
    wf = json.loads(json.dumps(wf))
    salt = uuid.uuid4().hex[:8]
    for node in wf.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] += f"_{salt}"
        if node["class_type"] == "EmptyImage" and isinstance(node["inputs"].get("color"), int):
            node["inputs"]["color"] = (node["inputs"]["color"] + int(salt[:4], 16)) % 0xFFFFFF
    return wf


def _png(color, size=(16, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def save_outputs(client, listener):
    wf = _salted(workflow("empty_save"))
    r = submit_and_wait(client, wf, listener=listener, timeout=60)
    assert r.ok and len(r.files) == 2
    assert all(f.type == "output" for f in r.files)
    assert sorted(f.filename.rsplit("_", 2)[-2] for f in r.files) == ["00001", "00002"]
    img = Image.open(io.BytesIO(client.view(r.files[0])))
    assert img.size == (256, 192)
    snap = listener.snapshot(r.prompt_id)
    assert snap.state == "succeeded" and snap.history_ready and set(snap.outputs) == {"2"}
    assert r.history.status == "succeeded" and r.history.duration_s is not None


def preview_is_temp(client, listener):
    r = submit_and_wait(client, _salted(workflow("chain_preview")), listener=listener, timeout=60)
    assert r.ok and {f.type for f in r.files} == {"temp"} and len(r.files) == 2


def cached_rerun(client, listener):
    wf = _salted(workflow("empty_save"))
    a = submit_and_wait(client, wf, listener=listener, timeout=60)
    b = submit_and_wait(client, wf, listener=listener, timeout=60)
    assert [f.filename for f in a.files] == [f.filename for f in b.files]
    assert set(b.history.cached_nodes) == set(wf)


def validation_errors(client, listener):
    for name in ("POST_prompt_value_out_of_range", "POST_prompt_bad_combo_value", "POST_prompt_unknown_class_type",
                 "POST_prompt_missing_required_input", "POST_prompt_bad_link_wrong_type"):
        rec = recording(name)
        try:
            client.queue_prompt(rec["request"]["json"]["prompt"])
        except E.PromptRejected as exc:
            want = rec["response"]["body"]
            assert exc.error_type == want["error"]["type"], name
            assert sorted(n.type for n in exc.node_errors) == sorted(
                e["type"] for v in want["node_errors"].values() for e in v["errors"]), name
        else:
            raise AssertionError(f"{name} was accepted")


def runtime_error(client, listener):
    broken = client.upload_image(b"not an image at all", f"broken_{uuid.uuid4().hex[:6]}.png")
    wf = _salted(workflow("invert_save"))
    wf["1"]["inputs"]["image"] = broken.filename
    r = submit_and_wait(client, wf, listener=listener, timeout=60)
    assert r.state == "failed" and r.error.node_id == "1" and r.error.node_type == "LoadImage"
    assert "UnidentifiedImageError" in r.error.exception_type


def uploads(client, listener):
    name = f"sc_{uuid.uuid4().hex[:6]}.png"
    a = client.upload_image(_png((1, 2, 3)), name)
    assert a.filename == name and client.upload_image(_png((1, 2, 3)), name).filename == name
    assert client.upload_image(_png((9, 9, 9)), name).filename == name.replace(".png", " (1).png")
    assert client.upload_image(_png((9, 9, 9)), name, overwrite=True).filename == name
    mask = Image.new("RGBA", (16, 8), (0, 0, 0, 255))
    mask.putpixel((0, 0), (0, 0, 0, 0))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    ref = client.upload_mask(buf.getvalue(), "m_" + name, a)
    out = Image.open(io.BytesIO(client.view(ref))).convert("RGBA")
    assert out.getpixel((0, 0))[3] == 0 and out.getpixel((5, 5))[3] == 255


def queue_delete_and_interrupt(client, listener):
    client.clear_queue()
    slow = workflow("slow_blur")
    ids = []
    for i in range(3):
        wf = json.loads(json.dumps(slow))
        wf["2"]["inputs"]["sigma"] = 9.0 - i / 100 - (time.time() % 1) / 10
        ids.append(client.queue_prompt(wf).prompt_id)
        listener.track(ids[-1])
    deadline = time.monotonic() + 60
    while client.queue().position(ids[0]) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [i.prompt_id for i in client.queue().pending] == ids[1:]
    client.delete_from_queue([ids[1]])
    assert follow(client, ids[1], timeout=20).state == "lost"
    client.interrupt(ids[0])
    assert follow(client, ids[0], listener=listener, timeout=60).state == "interrupted"
    assert follow(client, ids[2], listener=listener, timeout=120).state == "succeeded"


def history_paging(client, listener):
    ids = [submit_and_wait(client, _salted(workflow("empty_save")), listener=listener, timeout=60).prompt_id
           for _ in range(3)]
    hist = client.history()
    order = [pid for pid in hist if pid in ids]
    assert order == ids  # oldest first
    assert list(client.history(max_items=1)) == [list(hist)[-1]]
    client.delete_history([ids[0]])
    assert client.history_entry(ids[0]) is None and client.history_entry(ids[1]) is not None


def progress_and_previews(client, listener):
    r = submit_and_wait(client, _salted(workflow("ws_progress")), listener=listener, timeout=60)
    assert r.ok and r.files == ()
    snap = listener.snapshot(r.prompt_id)
    assert snap.preview_count == 6 and snap.latest_preview.mime == "image/png"
    r = submit_and_wait(client, _salted(workflow("upscale_progress_fixture")), listener=listener, timeout=120)
    assert r.ok and listener.snapshot(r.prompt_id).step == (9, 9)


SCENARIOS = [save_outputs, preview_is_temp, cached_rerun, validation_errors, runtime_error, uploads,
             queue_delete_and_interrupt, history_paging, progress_and_previews]
