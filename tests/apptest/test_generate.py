"""Generate and Inputs pages through AppTest, against the ComfyUI double.

Every state: no connection, no workflow, a bad file, each format, pre-flight errors, a server
refusal, running, succeeded, failed, cancelled; values surviving a page switch.
"""

from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers import workflow
from tests.unit.test_workflow_convert import pair

APP = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "streamlit_app.py")


def _png(color=(10, 20, 30), size=(32, 24), text=None) -> bytes:
    from PIL import PngImagePlugin

    buf = io.BytesIO()
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
    Image.new("RGB", size, color).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()




def _texts(at) -> str:
    parts = [e.value for e in at.error] + [e.value for e in at.warning] + [e.value for e in at.info]
    parts += [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts).replace("\\", "")  # server text is shown escaped


def _upload(at, name: str, data: bytes, mime="application/json"):
    at.file_uploader(key="cp_w_gen_upload").upload(name, data, mime).run()
    assert not at.exception
    return at


def _wait_results(at, timeout=15):
    """Re-run until no job of this session is running any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if not any(k.startswith("cp_w_gen_cancel_") for k in _keys(at)):
            return at
        time.sleep(0.2)
    return at


def _keys(at):
    return [getattr(e, "key", None) or "" for e in at.button]


def test_not_connected_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COMFYUI_URL", "http://127.0.0.1:9")
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert "Not connected. Use the connection box in the sidebar" in _texts(at)


def test_no_workflow_then_example_form(app):
    assert "No workflow yet" in _texts(app)
    app.selectbox(key="cp_w_gen_example").set_value("soft_focus")
    app.button(key="cp_w_gen_load_example").click().run()
    labels = [w.label for w in app.number_input]
    assert labels[:2] == ["Softness", "Spread"] and "Runs" in labels
    assert "Photo" in [s.label for s in app.selectbox]
    assert not app.button(key="cp_w_gen_go").disabled


@pytest.mark.parametrize("case", ["not json", "a list", "empty graph", "image without metadata"])
def test_bad_files_get_one_sentence_and_keep_the_form(app, case):
    app.selectbox(key="cp_w_gen_example").set_value("colour_swatch")
    app.button(key="cp_w_gen_load_example").click().run()
    data = {"not json": b"hello", "a list": b"[1,2]", "empty graph": json.dumps({"nodes": [], "links": []}).encode(),
            "image without metadata": _png()}[case]
    _upload(app, "colleague.json" if case != "image without metadata" else "x.png", data)
    assert len(app.error) == 1 and "Traceback" not in app.error[0].value
    assert "Width" in [w.label for w in app.number_input]  # the previous workflow is still there


@pytest.mark.parametrize("fmt", ["api", "ui", "png"])
def test_every_format_builds_a_form_and_generates(app, fmt, comfy_double):
    if fmt == "api":
        data, name = json.dumps(workflow("empty_save")).encode(), "empty.json"
    elif fmt == "ui":
        data, name = json.dumps(pair("a_simple_chain")["ui"]).encode(), "chain.json"
    else:
        data, name = _png(text={"prompt": json.dumps(workflow("empty_save"))}), "from_comfy.png"
    _upload(app, name, data)
    assert not app.error, _texts(app)
    app.button(key="cp_w_gen_go").click().run()
    assert not app.exception and not app.error, _texts(app)
    _wait_results(app)
    assert "Finished" in _texts(app)
    assert app.get("download_button"), "no download buttons for the outputs"


def test_values_survive_a_page_switch_and_are_sent(app, comfy_double):
    app.selectbox(key="cp_w_gen_example").set_value("colour_swatch")
    app.button(key="cp_w_gen_load_example").click().run()
    width = next(w for w in app.number_input if w.label == "Width")
    width.set_value(200).run()
    app.switch_page("pages/queue.py").run()
    app.switch_page("pages/generate.py").run()
    assert next(w for w in app.number_input if w.label == "Width").value == 200
    app.button(key="cp_w_gen_go").click().run()
    _wait_results(app)
    sent = [r for r in comfy_double.requests if r.method == "POST" and r.path.endswith("/prompt")]
    assert sent, "nothing was submitted"
    assert "Finished" in _texts(app)


def test_preflight_blocks_generate_and_names_the_parameter(app):
    wf = json.loads(json.dumps(workflow("empty_save")))
    wf["1"]["inputs"]["width"] = 0
    wf["1"]["_meta"] = {"title": "Canvas [simple]"}
    _upload(app, "bad.json", json.dumps(wf).encode())
    assert app.button(key="cp_w_gen_go").disabled
    assert "must be at least 1" in _texts(app)


def test_missing_custom_nodes_and_models_are_named(app):
    sd = json.loads((__import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "workflows" /
                     "sd15_txt2img.json").read_text())
    sd["99"] = {"class_type": "FancyUpscalerPro", "inputs": {}}
    _upload(app, "sd.json", json.dumps(sd).encode())
    text = _texts(app)
    assert "FancyUpscalerPro" in text and "checkpoints" in text
    assert app.button(key="cp_w_gen_go").disabled


def test_server_refusal_marks_the_field_and_keeps_values(app):
    wf = json.loads(json.dumps(workflow("invert_save")))
    wf["1"]["inputs"]["image"] = "nope.png"  # LoadImage values are not checked before sending
    _upload(app, "inv.json", json.dumps(wf).encode())
    app.button(key="cp_w_gen_go").click().run()
    assert "“nope.png” is not on the server" in _texts(app)
    assert any(s.value == "nope.png" for s in app.selectbox)  # the value is kept for the user to fix


def test_runtime_failure_shows_node_and_reason(app, comfy_double):
    comfy_double.script(fail_at_node="1", exception_type="RuntimeError", exception_message="out of paint")
    _upload(app, "e.json", json.dumps(workflow("empty_save")).encode())
    app.button(key="cp_w_gen_go").click().run()
    _wait_results(app)
    assert "EmptyImage (node 1) failed: out of paint" in _texts(app)
    assert "Width" in [w.label for w in app.number_input] or app.get("number_input")


def test_cancel_a_running_job(app, comfy_double):
    comfy_double.script(per_node_delay=2.0)
    _upload(app, "e.json", json.dumps(workflow("empty_save")).encode())
    app.button(key="cp_w_gen_go").click().run()
    deadline = time.monotonic() + 10
    cancel = None
    while time.monotonic() < deadline:
        app.run()
        cancel = next((b for b in app.button if (b.key or "").startswith("cp_w_gen_cancel_")), None)
        if cancel is not None:
            break
        time.sleep(0.1)
    assert cancel is not None
    cancel.click().run()
    _wait_results(app, 20)
    assert "stopped before it finished" in _texts(app) or "no longer knows" in _texts(app)


def test_batch_of_three_with_increment(app, comfy_double):
    sd = json.loads(json.dumps(workflow("empty_save")))
    _upload(app, "e.json", json.dumps(sd).encode())
    app.number_input(key="cp_w_gen_count").set_value(3).run()
    app.button(key="cp_w_gen_go").click().run()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _texts(app).count("Finished") < 3:
        time.sleep(0.3)
        app.run()
    assert _texts(app).count("Finished") == 3


# -- Inputs page ---------------------------------------------------------------------------------


def test_inputs_upload_rename_and_bad_files(app, comfy_double):
    app.switch_page("pages/inputs.py").run()
    assert any((b.key or "") == "cp_w_inputs_open_example.png" for b in app.button)
    up = app.file_uploader(key="cp_w_inputs_upload")
    up.set_value([("photo.png", _png((1, 2, 3)), "image/png")]).run()
    assert "photo.png: stored" in _texts(app)
    app.file_uploader(key="cp_w_inputs_upload").set_value(
        [("photo.png", _png((9, 9, 9)), "image/png"), ("fake.png", b"not an image", "image/png")]).run()
    text = _texts(app) + "\n".join(i.value for i in app.info).replace("\\", "")
    assert "stored as “photo (1).png”" in text and "fake.png: This file is not an image" in text


def test_inputs_mask_from_uploaded_image(app, comfy_double):
    app.switch_page("pages/inputs.py").run()
    app.button(key="cp_w_inputs_open_example.png").click().run()
    mask = Image.new("L", (8, 8), 0)
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    app.file_uploader(key="cp_w_inputs_mask_upload").upload("mask.png", buf.getvalue(), "image/png").run()
    app.button(key="cp_w_inputs_save_upload").click().run()
    assert not app.exception
    assert "Mask saved as" in _texts(app)


def test_mask_on_a_generate_image_input(app, comfy_double):
    _upload(app, "inv.json", json.dumps(workflow("invert_save")).encode())
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    uploader = next(u for u in app.get("file_uploader") if "maskup" in (u.proto.id or "") or "maskup" in str(u.key))
    uploader.upload("mask.png", buf.getvalue(), "image/png").run()
    use = next(b for b in app.button if "usemask" in (b.key or ""))
    use.click().run()
    assert not app.exception
    image = next(s for s in app.selectbox if s.label == "Load Image" or "image" in s.label.lower())
    assert image.value == "clipspace/example_mask.png"
    from pathlib import Path

    stored = Image.open(Path(comfy_double.input_dir) / "clipspace" / "example_mask.png").convert("RGBA")
    alpha = stored.getchannel("A")
    assert alpha.getpixel((1, 1)) == 0 and alpha.getpixel((stored.width - 2, 1)) == 255


def test_colour_values_use_a_colour_picker(app):
    app.selectbox(key="cp_w_gen_example").set_value("colour_swatch")
    app.button(key="cp_w_gen_load_example").click().run()
    picker = app.color_picker[0]
    assert picker.value == "#3366cc"
    picker.set_value("#ff0000").run()
    assert session_values(app)["1.color"] == 0xFF0000


def session_values(app):
    return app.session_state["cp_gen_values"]


def test_generate_on_comfy_cloud(cloud_double, monkeypatch):
    monkeypatch.setenv("COMFY_CLOUD_API_KEY", "test-key")
    monkeypatch.setenv("COMFY_CLOUD_URL", cloud_double.url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.exception
    _upload(at, "e.json", json.dumps(workflow("empty_save")).encode())
    at.button(key="cp_w_gen_go").click().run()
    _wait_results(at, 20)
    assert "Finished: 2 files" in _texts(at)
    assert "test-key" not in _texts(at)


def test_xy_grid_shows_a_labelled_table(app, comfy_double):
    app.selectbox(key="cp_w_gen_example").set_value("colour_swatch")
    app.button(key="cp_w_gen_load_example").click().run()
    app.selectbox(key="cp_w_gen_gx").set_value("1.width").run()
    app.text_input(key="cp_w_gen_vx").input("64, 96").run()
    app.selectbox(key="cp_w_gen_gy").set_value("1.height").run()
    app.text_input(key="cp_w_gen_vy").input("32, 48").run()
    assert "4 images, one per combination" in _texts(app)
    app.button(key="cp_w_gen_go").click().run()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "4 of 4 done" not in _texts(app):
        time.sleep(0.3)
        app.run()
    text = _texts(app)
    assert "XY grid, 4 of 4 done" in text and "Height ↓ / Width →" in text
    sent = [r for r in comfy_double.requests if r.method == "POST" and r.path.endswith("/prompt")]
    assert len(sent) == 4


def test_partner_key_from_the_form_is_sent_with_jobs_and_never_shown(monkeypatch, comfy_double):
    from components import session

    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.text_input(key=session.widget_key("partner_key")).set_value("partner-SECRET-1").run()
    at.button(key=session.W_CONNECT).click().run()
    assert at.session_state[session.K_CLIENT].connection.partner_key == "partner-SECRET-1"
    _upload(at, "e.json", json.dumps(workflow("empty_save")).encode())
    at.button(key="cp_w_gen_go").click().run()
    _wait_results(at)
    assert "Finished" in _texts(at)
    posted = [r for r in comfy_double.requests if r.method == "POST" and r.path.endswith("/prompt")]
    assert posted  # the double keeps the key out of /queue and /history, like the real server
    assert "partner-SECRET-1" not in _texts(at)


def test_hold_instead_of_send_goes_to_the_panel_queue(app, comfy_double):
    from components import queue_live

    server = app.session_state["cp_client"].connection.server_id()
    hq = queue_live.hold()
    hq.pause(server)  # keep them held while we look
    before = len(hq.held(server))
    _upload(app, "e.json", json.dumps(workflow("empty_save")).encode())
    app.checkbox(key="cp_w_gen_hold").check().run()
    app.number_input(key="cp_w_gen_count").set_value(2).run()
    app.button(key="cp_w_gen_go").click().run()
    assert not app.exception
    held = hq.held(server)
    assert len(held) == before + 2 and all(j.workflow_name.startswith("e · Run") for j in held[-2:])
    assert not [r for r in comfy_double.requests if r.method == "POST" and r.path.endswith("/prompt")]
    hq.resume(server)


def test_generate_records_the_recipe_in_the_ledger_and_reopens_it(app, comfy_double):
    from comfypanel import workflow as W
    from components import gallery_data, session

    _upload(app, "e.json", json.dumps(workflow("empty_save")).encode())
    next(w for w in app.number_input if w.label == "Width").set_value(120).run()
    app.button(key="cp_w_gen_go").click().run()
    _wait_results(app)
    run = app.session_state[session.K_GEN_RUNS][-1]
    record = gallery_data.ledger().get(run["prompt_id"])
    assert record is not None and record.status == "succeeded" and len(record.files) == 2
    recipe = W.Recipe.from_json(record.recipe_json)
    assert recipe.build()["1"]["inputs"]["width"] == 120  # exactly what was sent

    # "Open in Generate" with a recipe carrying a 64-bit seed (RandomNoise allows up to 2^64 - 1)
    big = W.Recipe(source={"1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 2**63 + 5}},
                           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
                   name="noise", seeds={"1.noise_seed": 2**63 + 5})
    app.session_state[session.K_GEN_PREFILL] = big
    app.run()
    assert not app.exception


def test_author_and_server_strings_stay_text(app):
    """Node titles and file names with Markdown/HTML payloads are shown escaped, never rendered."""
    wf = json.loads(json.dumps(workflow("empty_save")))
    wf["1"]["_meta"] = {"title": "**bold** <b>tag</b> [x](http://evil.example) :red[red] [simple]"}
    _upload(app, "[evil](http://evil.example).json", json.dumps(wf).encode())
    labels = [e.value for e in app.markdown] + [w.label for w in app.number_input]
    assert not any("<b>" in v and "\\<b\\>" not in v for v in labels)
    assert all("](http://evil.example)" not in v for v in labels if "\\]" not in v and "\\(" not in v)
    app.button(key="cp_w_gen_go").click().run()
    _wait_results(app)
    assert not app.exception
