"""The bad-input suite, UI side (hardening issue 8): bad workflows, images, masks, values and
WebSocket frames on the Generate and Inputs pages, against the ComfyUI double.

Every case: exactly one plain error sentence where the problem is, no exception element, the
person's other inputs (a prompt already typed, other values, the chosen image) still there, and
nothing sent to the server that it would reject. The core-level cases are in
``tests/unit/test_bad_input.py``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import workflow
from tests.unit.test_bad_input import assert_plain_sentence, bilevel_png, bomb_png, encode, photo

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")

# A runnable workflow with a text prompt and numbers: what a person fills in before the bad input.
TEXT_AND_NUMBERS = {
    "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a lighthouse"},
          "_meta": {"title": "Prompt [simple] [label=Prompt]"}},
    "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}, "_meta": {"title": "Show"}},
    "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
          "_meta": {"title": "Canvas [simple]"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "bad_input"}},
}
TYPED = "a red fox at dawn, 35mm"




def posts(double, suffix: str) -> list:
    return [r for r in double.requests if r.method == "POST" and r.path.rstrip("/").endswith(suffix)]


def unescaped(value: str) -> str:
    return str(value).replace("\\", "")  # pages escape server and user text for Markdown


def one_error(at) -> str:
    """Exactly one error element, a plain sentence, and no exception element."""
    assert not at.exception, [e.message for e in at.exception]
    errors = [unescaped(e.value) for e in at.error]
    assert len(errors) == 1, errors
    assert_plain_sentence(errors[0])
    return errors[0]


def upload_workflow(at, name: str, data: bytes, mime: str = "application/json"):
    at.file_uploader(key="cp_w_gen_upload").upload(name, data, mime).run()
    return at


def fill_in_the_form(at) -> None:
    """Load the text-and-numbers workflow and type a prompt and a width, as a person would."""
    upload_workflow(at, "mine.json", json.dumps(TEXT_AND_NUMBERS).encode())
    assert not at.error and not at.exception
    at.text_area[0].input(TYPED).run()
    next(w for w in at.number_input if w.label == "Width").set_value(96).run()


def assert_form_kept(at) -> None:
    assert at.text_area[0].label == "Prompt" and at.text_area[0].value == TYPED
    assert next(w for w in at.number_input if w.label == "Width").value == 96


def wait_until(at, predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


# ------------------------------------------------------------------------------------------------
# Generate: bad workflow files
# ------------------------------------------------------------------------------------------------

def _damaged_ui() -> bytes:
    ui = {"nodes": [{"id": 1, "type": "EmptyImage", "mode": 0, "outputs": [{"links": [1]}], "widgets_values": [8, 8, 1, 0]},
                    {"id": 2, "type": "ImageInvert", "mode": 4, "inputs": [{"name": "image", "link": 1}], "outputs": 5},
                    {"id": 3, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "link": 2}]}],
          "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}
    return json.dumps(ui).encode()


BAD_WORKFLOWS = {
    "truncated-json": ("cut.json", json.dumps(TEXT_AND_NUMBERS).encode()[:120], "not valid JSON"),
    "another-apps-json": ("package.json", b'{"name": "app", "version": "1.0.0", "scripts": {}}', "not a ComfyUI workflow"),
    "over-50-mb": ("huge.json", b" " * (50 * 1024 * 1024 + 1), "larger than 50 MB"),
    "save-format-with-damaged-nodes": ("damaged.json", _damaged_ui(), "damaged"),
    "decompression-bomb-png": ("bomb.png", bomb_png(30000, 30000), "far too large"),
}


@pytest.mark.parametrize("case", list(BAD_WORKFLOWS), ids=list(BAD_WORKFLOWS))
def test_bad_workflow_file_keeps_the_typed_prompt_and_sends_nothing(app, comfy_double, case):
    fill_in_the_form(app)
    name, data, words = BAD_WORKFLOWS[case]
    upload_workflow(app, name, data, "image/png" if name.endswith(".png") else "application/json")
    assert words in one_error(app)
    assert_form_kept(app)
    assert posts(comfy_double, "/prompt") == []
    # the kept form still generates, with what was typed
    app.button(key="cp_w_gen_go").click().run()
    assert not app.exception
    assert len(posts(comfy_double, "/prompt")) == 1
    comfy_double.wait_idle()
    assert TYPED in json.dumps(comfy_double.history())


# ------------------------------------------------------------------------------------------------
# Generate: a bad image in an image field
# ------------------------------------------------------------------------------------------------

BAD_FIELD_IMAGES = {
    "text-named-png": ("holiday.png", b"This is my holiday photo, honest.", "not an image"),
    "real-30000x30000-png": ("huge.png", bilevel_png(30000, 30000), "far more pixels"),
}


@pytest.mark.parametrize("case", list(BAD_FIELD_IMAGES), ids=list(BAD_FIELD_IMAGES))
def test_bad_image_in_an_image_field_keeps_the_chosen_image(app, comfy_double, case):
    upload_workflow(app, "inv.json", json.dumps(workflow("invert_save")).encode())
    image = next(s for s in app.selectbox if s.value == "example.png")
    uploader = next(u for u in app.get("file_uploader") if "_upload_" in str(u.key))
    name, data, words = BAD_FIELD_IMAGES[case]
    uploader.upload(name, data, "image/png").run()
    assert words in one_error(app)
    assert next(s for s in app.selectbox if s.key == image.key).value == "example.png"
    assert posts(comfy_double, "/upload/image") == [] and posts(comfy_double, "/prompt") == []


# ------------------------------------------------------------------------------------------------
# Generate: XY-grid values the server would refuse
# ------------------------------------------------------------------------------------------------

BAD_GRID_VALUES = {
    "below-the-minimum": ("0, 64", "must be at least 1"),
    "infinity": ("64, inf", "is not a whole number"),
    "not-a-whole-number": ("64, 1.5", "is not a whole number"),
}


@pytest.mark.parametrize("case", list(BAD_GRID_VALUES), ids=list(BAD_GRID_VALUES))
def test_grid_values_the_server_would_refuse_block_generate(app, comfy_double, case):
    fill_in_the_form(app)
    text, words = BAD_GRID_VALUES[case]
    width_key = next(w for w in app.number_input if w.label == "Width").key
    app.selectbox(key="cp_w_gen_gx").set_value(width_key.rsplit("_p_", 1)[1]).run()
    app.text_input(key="cp_w_gen_vx").input(text).run()
    assert words in one_error(app)
    assert app.button(key="cp_w_gen_go").disabled  # not a silent single run without the grid
    assert_form_kept(app)
    app.session_state["cp_gen_request"] = True  # what a click would set: even a forced request sends nothing
    app.run()
    assert not app.exception
    assert posts(comfy_double, "/prompt") == []
    assert_form_kept(app)


# ------------------------------------------------------------------------------------------------
# Inputs page
# ------------------------------------------------------------------------------------------------

def test_inputs_page_refuses_bad_images_one_sentence_each(app, comfy_double):
    app.switch_page("pages/inputs.py").run()
    app.text_input(key="cp_w_inputs_search").input("example").run()
    app.file_uploader(key="cp_w_inputs_upload").set_value([
        ("notes.png", b"shopping list: eggs, milk", "image/png"),
        ("bomb.png", bomb_png(30000, 30000), "image/png"),
    ]).run()
    assert not app.exception
    errors = [unescaped(e.value) for e in app.error]
    assert len(errors) == 2 and errors[0].startswith("notes.png: ") and errors[1].startswith("bomb.png: ")
    for e in errors:
        assert_plain_sentence(e.split(": ", 1)[1])
    assert posts(comfy_double, "/upload/image") == []
    assert app.text_input(key="cp_w_inputs_search").value == "example"  # the search typed before is kept


def test_inputs_page_stores_traversal_and_unicode_names_inside_the_input_folder(app, comfy_double):
    app.switch_page("pages/inputs.py").run()
    app.file_uploader(key="cp_w_inputs_upload").set_value([
        ("../../../etc/passwd.png", photo(color=(1, 1, 1)), "image/png"),
        ("Überraschung 猫.png", photo(color=(2, 2, 2)), "image/png"),
    ]).run()
    assert not app.exception and not app.error
    text = " ".join(unescaped(s.value) for s in app.success)
    assert "stored as “passwd.png”" in text and "Überraschung 猫.png: stored." in text
    stored = sorted(p.name for p in Path(comfy_double.input_dir).iterdir())
    assert "passwd.png" in stored and "Überraschung 猫.png" in stored
    assert not (Path(comfy_double.input_dir).parent / "etc").exists()


def test_inputs_page_scales_a_mask_of_the_wrong_size(app, comfy_double):
    app.switch_page("pages/inputs.py").run()
    app.button(key="cp_w_inputs_open_example.png").click().run()
    mask = Image.new("L", (10, 40), 0)  # another size and aspect ratio than the 768×768 image
    mask.paste(255, (0, 0, 5, 40))
    app.file_uploader(key="cp_w_inputs_mask_upload").upload("mask.png", encode(mask), "image/png").run()
    app.button(key="cp_w_inputs_save_upload").click().run()
    assert not app.exception and not app.error
    assert "Mask saved as" in " ".join(unescaped(s.value) for s in app.success)
    stored = Image.open(Path(comfy_double.input_dir) / "clipspace" / "example_mask.png").convert("RGBA")
    assert stored.size == (768, 768)
    alpha = stored.getchannel("A")
    assert alpha.getpixel((10, 384)) == 0 and alpha.getpixel((758, 384)) == 255


def test_inputs_page_refuses_a_mask_that_is_not_an_image(app, comfy_double):
    app.switch_page("pages/inputs.py").run()
    app.button(key="cp_w_inputs_open_example.png").click().run()
    app.file_uploader(key="cp_w_inputs_mask_upload").upload("mask.png", b"left half please", "image/png").run()
    app.button(key="cp_w_inputs_save_upload").click().run()
    assert "not an image" in one_error(app)
    assert posts(comfy_double, "/upload/mask") == []


# ------------------------------------------------------------------------------------------------
# Malformed WebSocket frames while a job runs
# ------------------------------------------------------------------------------------------------

def test_malformed_frames_during_a_job_do_not_break_the_page(app, comfy_double):
    comfy_double.script(per_node_delay=1.5)
    fill_in_the_form(app)
    app.button(key="cp_w_gen_go").click().run()
    assert wait_until(app, lambda: any("running" in m.value for m in app.markdown))
    for raw in ('{"type": "progress", "data": {"value": -3, "max": 0}}',
                '{"type": "progress", "data": {"value": 1' + "0" * 400 + ', "max": 20}}',
                "<html>502</html>", struct.pack(">II", 4, 9999) + b"{}",
                struct.pack(">II", 1, 1) + b"\xff\xd8\xff not a jpeg at all"):
        comfy_double.send_raw_ws(raw)
    assert wait_until(app, lambda: any("not a readable image" in c.value for c in app.caption) or bool(app.exception),
                      timeout=10)
    assert not app.exception, [e.message for e in app.exception]
    assert wait_until(app, lambda: "Finished" in " ".join(m.value for m in app.markdown), timeout=30)
    assert not app.exception and not app.error
    assert_form_kept(app)
