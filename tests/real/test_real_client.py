"""ComfyClient, the listener and submit_and_wait against a real ComfyUI 0.3.75 on CPU.

Only model-free workflows (shared/recordings/workflows) and a tiny random-weight upscale model that
the install step generates. Assertions are on states, counts and pixels, never on durations.
"""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from PIL import Image

from comfypanel import errors as E
from comfypanel.jobs import follow, submit_and_wait
from comfypanel.types import FileRef
from tests.helpers import recording, recordings_dir, workflow

pytestmark = pytest.mark.real


def _png(color, size=(32, 16), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _fresh(wf: dict, salt: str | None = None) -> dict:
    """A copy with a unique SaveImage prefix or blur sigma, so the server's cache cannot answer."""
    wf = json.loads(json.dumps(wf))
    salt = salt or uuid.uuid4().hex[:8]
    for node in wf.values():
        inputs = node["inputs"]
        if "filename_prefix" in inputs:
            inputs["filename_prefix"] = f"{inputs['filename_prefix']}_{salt}"
        if node["class_type"] == "EmptyImage" and isinstance(inputs.get("color"), int):
            inputs["color"] = (inputs["color"] + int(salt[:4], 16)) % 0xFFFFFF
    return wf


# -------------------------------------------------------------------------------------------------
# server information


def test_stats_features_object_info_models_embeddings(client):
    stats = client.system_stats()
    assert stats.comfyui_version == "0.3.75"
    assert stats.devices and stats.devices[0].type == "cpu"
    caps = client.capabilities()
    assert caps.version == (0, 3, 75) and not caps.jobs_api and caps.targeted_interrupt and not caps.is_cloud
    assert client.features()["max_upload_size"] > 0
    info = client.object_info()
    assert len(info) > 400 and "KSampler" in info and "SaveImageWebsocket" in info
    one = client.object_info("ImageInvert")
    assert list(one) == ["ImageInvert"]
    assert client.object_info("NoSuchNodeAnywhere") == {}
    folders = client.models()
    assert "checkpoints" in folders and "upscale_models" in folders and "text_encoders" in folders
    assert "tiny_compact_x1.safetensors" in client.models("upscale_models")
    assert client.models("checkpoints") == []
    with pytest.raises(E.NotFound, match="no model folder"):
        client.models("clip")  # the key is text_encoders; clip is only a path alias
    assert isinstance(client.embeddings(), list)
    meta = client.view_metadata("upscale_models", "tiny_compact_x1.safetensors")
    assert meta.get("modelspec.architecture") == "Compact"
    assert client.view_metadata("upscale_models", "missing.safetensors") == {}


# -------------------------------------------------------------------------------------------------
# uploads


def test_upload_dedupe_rename_overwrite(client):
    name = f"up_{uuid.uuid4().hex[:6]}.png"
    a, b = _png((10, 20, 30)), _png((200, 100, 50))
    first = client.upload_image(a, name)
    assert first == FileRef(name, "", "input")
    assert client.upload_image(a, name).filename == name  # identical bytes: same name, nothing written
    renamed = client.upload_image(b, name)
    assert renamed.filename == name.replace(".png", " (1).png")
    over = client.upload_image(b, name, overwrite=True)
    assert over.filename == name
    assert client.view(over) == b
    sub = client.upload_image(a, name, subfolder="panel/tests")
    assert (sub.subfolder, sub.filename) == ("panel/tests", name)
    with pytest.raises(E.InvalidInput):
        client.upload_image(a, name, subfolder="../../escape")


def test_upload_mask_alpha_really_is_the_mask(client):
    orig = client.upload_image(_png((200, 30, 30), (8, 4)), f"m_{uuid.uuid4().hex[:6]}.png")
    mask = Image.new("RGBA", (8, 4), (0, 0, 0, 255))
    for x in range(4):
        for y in range(4):
            mask.putpixel((x, y), (0, 0, 0, 0))  # left half painted: alpha 0
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    ref = client.upload_mask(buf.getvalue(), f"mask_{orig.filename}", orig)
    assert ref.subfolder == "clipspace" and ref.type == "input"
    out = Image.open(io.BytesIO(client.view(ref))).convert("RGBA")
    assert out.getpixel((0, 0)) == (200, 30, 30, 0)
    assert out.getpixel((7, 3)) == (200, 30, 30, 255)
    # the server answers 200 but writes nothing when the original is missing: we notice
    with pytest.raises(E.UploadFailed):
        client.upload_mask(buf.getvalue(), "orphan_mask.png", FileRef("does-not-exist.png", "", "input"))


# -------------------------------------------------------------------------------------------------
# running workflows


@pytest.mark.parametrize("name", sorted(p.stem for p in (recordings_dir() / "workflows").glob("*.json")))
def test_every_model_free_workflow_runs(client, listener, name):
    wf = _fresh(workflow(name))
    updates = []
    result = submit_and_wait(client, wf, listener=listener, timeout=180, on_update=updates.append)
    assert result.state == "succeeded", result.user_message
    if name == "ws_progress":
        assert result.files == ()  # SaveImageWebsocket writes no files
        snap = listener.snapshot(result.prompt_id)
        assert snap.preview_count == 6
    else:
        assert result.files
        for ref in result.files[:2]:
            data = client.view(ref)
            Image.open(io.BytesIO(data)).verify()
    assert updates and updates[-1].prompt_id == result.prompt_id


def test_invert_gives_correct_pixels(client, listener):
    src = client.upload_image(_png((10, 100, 250), (16, 8)), f"inv_{uuid.uuid4().hex[:6]}.png")
    wf = _fresh(workflow("invert_save"))
    wf["1"]["inputs"]["image"] = src.image_value
    result = submit_and_wait(client, wf, listener=listener, timeout=120)
    assert result.ok and len(result.files) == 1 and result.files[0].subfolder == "panel"
    img = Image.open(io.BytesIO(client.view(result.files[0]))).convert("RGB")
    assert img.size == (16, 8)
    # 255 - v, within 1 (ComfyUI converts through float32 and truncates)
    assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((3, 3)), (245, 155, 5)))
    # A saved PNG carries the API prompt as metadata
    assert "prompt" in Image.open(io.BytesIO(client.view(result.files[0]))).info


def test_cached_rerun_returns_old_files(client, listener):
    wf = _fresh(workflow("empty_save"))
    first = submit_and_wait(client, wf, listener=listener, timeout=120)
    again = submit_and_wait(client, wf, listener=listener, timeout=120)
    assert first.ok and again.ok
    assert [f.filename for f in again.files] == [f.filename for f in first.files]
    assert set(again.history.cached_nodes) == set(wf)


def test_runtime_errors_are_failed_with_node_and_reason(client, listener):
    broken = client.upload_image(b"this is not an image", f"broken_{uuid.uuid4().hex[:6]}.png")
    wf = _fresh(workflow("invert_save"))
    wf["1"]["inputs"]["image"] = broken.filename
    result = submit_and_wait(client, wf, listener=listener, timeout=120)
    assert result.state == "failed"
    assert result.error.node_id == "1" and result.error.node_type == "LoadImage"
    assert "UnidentifiedImageError" in (result.error.exception_type or "")
    assert "Traceback" not in result.user_message and result.user_message.startswith("LoadImage (node 1) failed")
    snap = listener.snapshot(result.prompt_id)
    assert snap.state == "failed" and snap.error.node_id == "1"

    blend = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 1}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 2}},
        "3": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["2", 0], "blend_factor": 0.5, "blend_mode": "normal"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    result = submit_and_wait(client, blend, listener=listener, timeout=120)
    assert result.state == "failed" and result.error.exception_type == "RuntimeError"
    assert result.error.node_type == "ImageBlend"


REJECTIONS = [
    "POST_prompt_missing_required_input", "POST_prompt_bad_link_missing_node", "POST_prompt_bad_link_output_index",
    "POST_prompt_bad_link_wrong_type", "POST_prompt_value_out_of_range", "POST_prompt_bad_type_value",
    "POST_prompt_bad_combo_value", "POST_prompt_unknown_model_file", "POST_prompt_loadimage_missing_file",
    "POST_prompt_unknown_class_type", "POST_prompt_missing_class_type", "POST_prompt_no_outputs",
]


@pytest.mark.parametrize("name", REJECTIONS)
def test_every_validation_error_type(client, name):
    rec = recording(name)
    prompt = rec["request"]["json"]["prompt"]
    with pytest.raises(E.PromptRejected) as exc:
        client.queue_prompt(prompt)
    want = rec["response"]["body"]
    assert exc.value.error_type == want["error"]["type"]
    assert sorted(n.type for n in exc.value.node_errors) == sorted(
        e["type"] for entry in want["node_errors"].values() for e in entry["errors"])
    assert "\n" not in exc.value.user_message


def test_partial_validation_still_queues_and_reports(client, listener):
    rec = recording("POST_prompt_partial_errors_still_queued")
    prompt = _fresh(rec["request"]["json"]["prompt"])
    result = submit_and_wait(client, prompt, listener=listener, timeout=120)
    assert result.ok
    assert [e.type for e in result.queued.node_errors] == ["custom_validation_failed"]


def test_ui_format_is_refused_before_sending(client):
    with pytest.raises(E.InvalidInput, match="Save"):
        client.queue_prompt({"nodes": [], "links": [], "version": 0.4})


# -------------------------------------------------------------------------------------------------
# queue control


def _slow(salt):
    wf = workflow("slow_blur")
    for node in wf.values():
        if node["class_type"] == "ImageBlur":
            node["inputs"]["sigma"] = float(node["inputs"]["sigma"]) - salt / 1000  # max is 10
    return wf


def test_delete_pending_clear_and_targeted_interrupt(idle, listener):
    client = idle
    salt = int(time.time() * 1000) % 997
    ids = [client.queue_prompt(_slow(salt + i)).prompt_id for i in range(4)]
    for pid in ids:
        listener.track(pid)
    # wait until the first one runs
    deadline = time.monotonic() + 60
    while client.queue().position(ids[0]) != 0:
        assert time.monotonic() < deadline, "the first slow job never started"
        time.sleep(0.1)
    q = client.queue()
    assert [i.prompt_id for i in q.pending] == ids[1:]
    assert all(i.client_id == client.client_id for i in q.pending)
    client.delete_from_queue([ids[1]])
    client.delete_from_queue([ids[0]])  # the running one: a documented no-op
    q = client.queue()
    assert q.position(ids[0]) == 0 and q.position(ids[1]) is None
    assert follow(client, ids[1], timeout=30).state == "lost"  # removed while pending leaves no trace
    client.interrupt(ids[3])  # targeted at a pending job: no effect on the running one
    assert client.queue().position(ids[0]) == 0
    client.interrupt(ids[0])
    first = follow(client, ids[0], listener=listener, timeout=120)
    assert first.state == "interrupted"
    assert listener.snapshot(ids[0]).state == "interrupted"
    # the next one starts normally; clearing drops the rest
    deadline = time.monotonic() + 60
    while client.queue().position(ids[2]) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client.clear_queue()
    assert client.queue().position(ids[3]) is None
    client.cancel(ids[2])  # running: cancel interrupts it
    assert follow(client, ids[2], listener=listener, timeout=120).state == "interrupted"
    assert follow(client, ids[3], timeout=30).state == "lost"


def test_free_and_history_delete_clear(client, listener):
    r1 = submit_and_wait(client, _fresh(workflow("empty_save")), listener=listener, timeout=120)
    r2 = submit_and_wait(client, _fresh(workflow("empty_save")), listener=listener, timeout=120)
    hist = client.history()
    assert {r1.prompt_id, r2.prompt_id} <= set(hist)
    assert list(client.history(max_items=1)) == [list(hist)[-1]]
    client.delete_history([r1.prompt_id])
    assert client.history_entry(r1.prompt_id) is None and client.history_entry(r2.prompt_id) is not None
    client.free(unload_models=True, free_memory=True)
    client.clear_history()
    assert client.history() == {}


# -------------------------------------------------------------------------------------------------
# events


def test_progress_events_from_upscale(client, listener):
    wf = _fresh(workflow("upscale_progress_fixture"))
    result = submit_and_wait(client, wf, listener=listener, timeout=180)
    assert result.ok
    snap = listener.snapshot(result.prompt_id)
    assert snap.step == (9, 9)
    steps = [e for e in listener.recent_events(500) if e.type == "progress" and e.prompt_id == result.prompt_id]
    assert [int(e.value) for e in steps] == list(range(1, 10))


def test_binary_previews_type_4_with_flags_and_type_1_without(client):
    for flags, expect_node in ((True, "2"), (False, None)):
        lst = client.listener(feature_flags=flags)
        lst.start()
        try:
            assert lst.wait_connected(10)
            result = submit_and_wait(client, _fresh(workflow("ws_progress")), listener=lst, timeout=120)
            assert result.ok
            snap = lst.snapshot(result.prompt_id)
            assert snap.preview_count == 6
            preview = snap.latest_preview
            assert preview.mime == "image/png" and Image.open(io.BytesIO(preview.image)).size == (64, 64)
            assert preview.node_id == expect_node  # only type 4 carries metadata
        finally:
            lst.stop()


def test_socket_killed_mid_run_job_still_completes(client, listener):
    pid = client.queue_prompt(_slow(int(time.time()) % 991)).prompt_id
    listener.track(pid)
    deadline = time.monotonic() + 60
    while client.queue().position(pid) != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    listener.drop_connection()  # as if the network broke
    result = follow(client, pid, listener=listener, timeout=180)
    assert result.state == "succeeded"
    assert listener.reconnects >= 1
