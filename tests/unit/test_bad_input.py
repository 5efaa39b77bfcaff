"""The bad-input suite (hardening issue 8): every kind of bad input a person (or a broken server)
can hand the panel, in one place.

Each case checks the three promises of the issue:

* the answer is the panel's own error (``comfypanel.errors``) carrying one plain sentence
  (``assert_plain_sentence``), never a traceback or a Python repr;
* the person's other inputs are kept (the core functions are pure: the form's values and the
  workflow given to them are unchanged; the pages are checked in ``tests/apptest/test_bad_input_ui.py``);
* nothing the server would reject is sent: the cases run the same steps as the pages
  (``page_submit``, ``page_upload``, ``page_mask``) against the ComfyUI double and look at the
  requests it recorded.

Some inputs are legitimately accepted (CMYK, 16-bit, animated PNG/WebP, a mask of another size,
unicode file names): those cases check that what comes out is what a person would expect.
All images are made with Pillow at test time.
"""

from __future__ import annotations

import copy
import io
import json
import re
import struct
import time
import zlib
from typing import Any, Sequence

import pytest
from PIL import Image, PngImagePlugin

from comfypanel import errors as E
from comfypanel import schema as S
from comfypanel import workflow as W
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.events import EventListener, PreviewImage, SnapshotReducer, parse_binary, parse_text
from comfypanel.generation import build_form, check_axis, fetch_models, submissions
from comfypanel.images import ImageRefused, open_image, thumbnail
from comfypanel.types import FileRef
from comfypanel.uploads import check_upload, composite, mask_from_image, mask_from_strokes, upload_name
from tests.helpers import workflow as recorded_workflow

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

_EXCEPTION_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")


def assert_plain_sentence(message: Any) -> None:
    """One plain sentence for a person: no traceback, no Python repr, short, properly ended."""
    assert isinstance(message, str), f"not text: {message!r}"
    assert message == message.strip() and message, f"empty or padded: {message!r}"
    assert "\n" not in message and "\r" not in message, f"several lines: {message!r}"
    assert "Traceback" not in message and 'File "' not in message, f"a traceback: {message!r}"
    assert "<class" not in message and " object at 0x" not in message and "<_io." not in message, message
    assert not _EXCEPTION_NAME.search(message), f"an exception name: {message!r}"
    assert message[0].isupper() or message[0] in "“\"", f"does not start a sentence: {message!r}"
    assert message.endswith("."), f"does not end a sentence: {message!r}"
    assert len(message) <= 320, f"too long for one sentence ({len(message)}): {message!r}"
    # "what is wrong" and at most one more sentence for "what to do"
    assert len(re.findall(r"[.!?] [A-Z]", message)) <= 1, f"more than two sentences: {message!r}"


def panel_error(exc_info: pytest.ExceptionInfo, kind: type = E.InvalidInput) -> str:
    """The raised error is the panel's own, of ``kind``; returns its checked sentence."""
    err = exc_info.value
    assert isinstance(err, kind), f"{type(err).__name__} is not a {kind.__name__}"
    assert isinstance(err, E.ComfyPanelError)
    assert str(err) == err.user_message
    assert_plain_sentence(err.user_message)
    return err.user_message


def posts(double, suffix: str) -> list:
    return [r for r in double.requests if r.method == "POST" and r.path.rstrip("/").endswith(suffix)]


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(w: int, h: int) -> bytes:
    """A few hundred bytes whose header claims w×h pixels (the pixel data is not really there)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def bilevel_png(w: int, h: int) -> bytes:
    """A real, complete 1-bit PNG of w×h pixels, compressed row by row (never held in memory)."""
    row = b"\0" * (1 + (w + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = bytearray()
    for _ in range(h):
        idat += comp.compress(row)
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bytes(idat)) + _chunk(b"IEND", b"")


def photo(size=(64, 48), color=(200, 60, 20)) -> bytes:
    return encode(Image.new("RGB", size, color))


def png_with_text(text: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    return encode(Image.new("RGB", (8, 8), (1, 2, 3)), pnginfo=info)


@pytest.fixture
def client(comfy_double):
    c = ComfyClient(Connection.local(comfy_double.url))
    yield c
    c.close()


def page_submit(client: ComfyClient, data: bytes, filename: str, values: dict | None = None, *,
                count: int = 1, grid_x: tuple[str, Sequence[Any]] | None = None,
                seed_modes: dict | None = None):
    """What the Generate page does with a file and typed-in values, up to ``POST /prompt``.

    Returns the form; Generate is disabled (nothing sent) while the form has blocking problems.
    """
    loaded = W.load(data, filename)
    object_info = client.object_info()
    schema = S.Schema.from_object_info(object_info)
    base = W.to_api(loaded, object_info)
    models = fetch_models(client, base, schema, {})
    form = build_form(loaded, object_info, schema, values or {}, models)
    if form.blocking:
        return form
    for sub in submissions(loaded, form, seed_modes=seed_modes or {}, count=count, grid_x=grid_x):
        client.queue_prompt(sub.graph, workflow=loaded.ui)
    return form


def page_upload(client: ComfyClient, data: bytes, filename: str) -> FileRef:
    """What the Inputs page (and an image field of Generate) does with an uploaded file."""
    info = check_upload(data, max_bytes=client.capabilities().max_upload_size)
    return client.upload_image(data, upload_name(filename, info), mime=info.mime)


def page_mask(client: ComfyClient, image_name: str, mask: bytes) -> FileRef:
    """What the Inputs page does with an uploaded mask for one of the server's input images."""
    image = client.view(FileRef(image_name, "", "input"))
    info = check_upload(image, max_pixels=10**9)
    png = mask_from_image(mask, (info.width, info.height))
    return client.upload_mask(png, f"{image_name.rsplit('.', 1)[0]}_mask.png", FileRef(image_name, "", "input"),
                              overwrite=True)


API = recorded_workflow("empty_save")  # EmptyImage (256×192, batch 2) → SaveImage
UI_CHAIN = {
    "last_node_id": 3, "last_link_id": 2,
    "nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [64, 32, 1, 0]},
        {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}]},
        {"id": 3, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
         "outputs": []},
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {}, "version": 0.4,
}


def test_the_page_steps_do_send_a_good_workflow(client, comfy_double):
    """The control for every "nothing was sent" below: the same steps send a good workflow."""
    form = page_submit(client, json.dumps(API).encode(), "good.json")
    assert not form.blocking
    assert len(posts(comfy_double, "/prompt")) == 1
    ref = page_upload(client, photo(), "good.png")
    assert ref.filename == "good.png" and len(posts(comfy_double, "/upload/image")) == 1


# ------------------------------------------------------------------------------------------------
# workflow files
# ------------------------------------------------------------------------------------------------

def _deep_json() -> bytes:
    return b'{"a":' * 100_000 + b"1" + b"}" * 100_000


WORKFLOW_FILES = {
    "not-json": (b"Hello! Here is the workflow you asked for.", "workflow.json", "not JSON"),
    "truncated-json": (json.dumps(API).encode()[:70], "cut.json", "not valid JSON"),
    "another-apps-json": (json.dumps({"name": "my-app", "version": "1.0.0", "dependencies": {"left-pad": "^1"}}).encode(),
                          "package.json", "not a ComfyUI workflow"),
    "another-graph-app": (json.dumps({"nodes": [{"id": "a", "data": {}}], "edges": []}).encode(), "flow.json",
                          "another app"),
    "json-list": (b"[1, 2, 3]", "list.json", "holds a list"),
    "json-scalar": (b'"just a string"', "s.json", "single value"),
    "empty-file": (b"", "empty.json", "empty"),
    "empty-object": (b"{}", "obj.json", "empty"),
    "empty-graph": (json.dumps({"nodes": [], "links": [], "version": 0.4}).encode(), "g.json", "no nodes"),
    "binary-garbage": (bytes(range(128, 256)) * 4, "w.json", "neither a workflow"),
    "nested-too-deep": (_deep_json(), "deep.json", "nested too deeply"),
    "over-50-mb": (b" " * (W.MAX_WORKFLOW_BYTES + 1), "huge.json", "larger than 50 MB"),
    "api-node-without-class-type": (json.dumps({"1": {"inputs": {"width": 1}}}).encode(), "api.json", "class_type"),
    "api-inputs-not-a-table": (json.dumps({"1": {"class_type": "EmptyImage", "inputs": [1, 2]}}).encode(), "api.json",
                               "not a table"),
    "png-without-metadata": (photo(), "x.png", "no ComfyUI workflow"),
    "png-from-automatic1111": (png_with_text({"parameters": "a cat, Steps: 20, Sampler: Euler a"}), "a1111.png",
                               "another app"),
    "gif-as-workflow": (encode(Image.new("P", (8, 8)), "GIF"), "w.gif", "cannot carry a ComfyUI workflow"),
    "bomb-png-as-workflow": (bomb_png(30000, 30000), "bomb.png", "far too large"),
    "truncated-png-as-workflow": (png_with_text({"prompt": json.dumps(API)})[:40], "cut.png", "damaged"),
    "ui-nodes-damaged": (json.dumps({"nodes": [{"id": [1], "type": "EmptyImage"}, {"id": 2, "type": ["x"]}],
                                     "links": []}).encode(), "damaged.json", "damaged"),
    "ui-reroute-loop": (json.dumps({
        "nodes": [{"id": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 2}], "outputs": [{"links": [1]}]},
                  {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"links": [2, 3]}]},
                  {"id": 3, "type": "PreviewImage", "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]}],
        "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "*"]]}).encode(), "loop.json", "loop"),
    "ui-bypassed-node-of-the-wrong-shape": (json.dumps({**UI_CHAIN, "nodes": [
        UI_CHAIN["nodes"][0], {**UI_CHAIN["nodes"][1], "mode": 4, "outputs": 5}, UI_CHAIN["nodes"][2]]}).encode(),
        "odd.json", "damaged"),
    "ui-reroute-inputs-a-number": (json.dumps({**UI_CHAIN, "nodes": [
        UI_CHAIN["nodes"][0], {"id": 2, "type": "Reroute", "mode": 0, "inputs": 1.5, "outputs": [{"links": [2]}]},
        UI_CHAIN["nodes"][2]]}).encode(), "odd.json", "damaged"),
}


@pytest.mark.parametrize("case", list(WORKFLOW_FILES), ids=list(WORKFLOW_FILES))
def test_bad_workflow_file_gets_one_sentence_and_sends_nothing(client, comfy_double, case):
    data, name, words = WORKFLOW_FILES[case]
    with pytest.raises(E.InvalidInput) as info:
        page_submit(client, data, name)
    message = panel_error(info, W.WorkflowError)
    assert words.lower() in message.lower()
    assert posts(comfy_double, "/prompt") == []


def test_ui_workflow_with_unknown_nodes_is_named_and_blocked(client, comfy_double):
    ui = copy.deepcopy(UI_CHAIN)
    ui["nodes"][1]["type"] = "FancyInvert (SomePack)"
    ui["nodes"].append({"id": 4, "type": "MysteryNode", "mode": 0, "inputs": [], "outputs": [], "widgets_values": [3]})
    report = W.ConversionReport()
    api = W.to_api(W.load_json(ui), client.object_info(), report=report)
    assert report.unknown_classes == ["FancyInvert (SomePack)", "MysteryNode"]
    assert api["2"]["class_type"] == "FancyInvert (SomePack)"  # converted as far as possible, not dropped
    form = page_submit(client, json.dumps(ui).encode(), "custom.json")
    assert [p.kind for p in form.blocking] == ["missing_node"]
    assert_plain_sentence(form.blocking[0].message)
    assert "FancyInvert (SomePack), MysteryNode" in form.blocking[0].message
    assert posts(comfy_double, "/prompt") == []


def test_ui_workflow_whose_nodes_feed_each_other_is_blocked(client, comfy_double):
    ui = copy.deepcopy(UI_CHAIN)
    ui["nodes"][0] = {"id": 1, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 3}],
                      "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]}
    ui["nodes"][1]["outputs"][0]["links"] = [2, 3]
    ui["links"].append([3, 2, 0, 1, 0, "IMAGE"])
    form = page_submit(client, json.dumps(ui).encode(), "cycle.json")
    (problem,) = form.blocking
    assert problem.kind == "cycle" and "(node 1) and" in problem.message and "(node 2)" in problem.message
    assert_plain_sentence(problem.message)
    assert posts(comfy_double, "/prompt") == []  # the server would accept it and fail at run time


def test_api_workflow_with_a_node_feeding_itself_is_blocked(client, comfy_double):
    api = copy.deepcopy(API)
    api["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}}
    api["2"]["inputs"]["images"] = ["3", 0]
    form = page_submit(client, json.dumps(api).encode(), "self.json")
    assert [p.kind for p in form.blocking] == ["cycle"]
    assert "takes its own output" in form.blocking[0].message
    assert_plain_sentence(form.blocking[0].message)
    assert posts(comfy_double, "/prompt") == []


def test_ui_definitions_of_the_wrong_shape_do_not_stop_a_good_graph(client, comfy_double):
    """Accepted: a broken ``definitions`` block (no subgraph is used) is ignored, the graph runs."""
    ui = {**copy.deepcopy(UI_CHAIN), "definitions": "subgraphs go here"}
    form = page_submit(client, json.dumps(ui).encode(), "defs.json")
    assert not form.problems
    (sent,) = posts(comfy_double, "/prompt")
    assert sent.method == "POST"


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------

BAD_IMAGES = {
    "text-named-png": (b"This is my holiday photo, honest.\n", "holiday.png", "not an image"),
    "html-named-jpg": (b"<!doctype html><html><body>404</body></html>", "photo.jpg", "not an image"),
    "svg-named-png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "icon.png", "not an image"),
    "truncated-png": (photo((64, 64))[:90], "cut.png", "damaged"),
    "truncated-jpeg": (encode(Image.new("RGB", (64, 64), (9, 90, 200)), "JPEG")[:300], "cut.jpg", "damaged"),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", "sig.png", "not an image"),
    "zero-by-zero-png": (bomb_png(0, 0), "zero.png", "not an image"),
    "decompression-bomb": (bomb_png(30000, 30000), "bomb.png", "far more pixels"),
    "real-30000x30000-bilevel": (bilevel_png(30000, 30000), "huge.png", "far more pixels"),
    "9000x9000-over-the-panel-cap": (bilevel_png(9000, 9000), "big.png", "9000×9000 pixels"),
    "animated-gif": (encode(Image.new("P", (16, 16)), "GIF", save_all=True,
                            append_images=[Image.new("P", (16, 16), 3)]), "anim.gif", "GIF images are not accepted"),
    "bmp": (encode(Image.new("RGB", (16, 16)), "BMP"), "old.bmp", "BMP images are not accepted"),
    "tiff": (encode(Image.new("RGB", (16, 16)), "TIFF"), "scan.tif", "TIFF images are not accepted"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES), ids=list(BAD_IMAGES))
def test_bad_image_upload_gets_one_sentence_and_is_not_sent(client, comfy_double, case):
    data, name, words = BAD_IMAGES[case]
    with pytest.raises(E.InvalidInput) as info:
        page_upload(client, data, name)
    assert words in panel_error(info)
    assert posts(comfy_double, "/upload/image") == []


@pytest.mark.parametrize("case", ["text-named-png", "truncated-png", "decompression-bomb", "real-30000x30000-bilevel",
                                  "zero-by-zero-png"])
def test_bad_image_thumbnail_gets_one_sentence(case):
    data = BAD_IMAGES[case][0]
    with pytest.raises(ImageRefused) as info:
        thumbnail(data)
    panel_error(info, ImageRefused)


def test_upload_larger_than_the_server_accepts_is_not_sent(client, comfy_double, monkeypatch):
    data = photo((256, 256))
    with pytest.raises(E.InvalidInput) as info:
        check_upload(data, max_bytes=len(data) // 2)
    assert "this server accepts" in panel_error(info)
    assert posts(comfy_double, "/upload/image") == []


def _rgb(data: bytes, xy=(0, 0)) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").getpixel(xy)


def test_cmyk_jpeg_is_accepted_and_keeps_its_colour(client, comfy_double):
    data = encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in print colours
    ref = page_upload(client, data, "print.jpg")
    assert (ref.filename, ref.type) == ("print.jpg", "input")
    assert client.view(ref) == data  # stored as it is; ComfyUI's LoadImage converts to RGB itself
    r, g, b = _rgb(thumbnail(data))
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_sixteen_bit_png_is_accepted_and_shown_with_its_contrast(client, comfy_double):
    img = Image.new("I;16", (32, 8), 0)
    img.paste(65535, (16, 0, 32, 8))
    data = encode(img)
    assert check_upload(data).mode == "I;16"
    assert page_upload(client, data, "depth.png").filename == "depth.png"
    thumb = thumbnail(data)
    with Image.open(io.BytesIO(thumb)) as t:
        left, right = t.convert("L").getpixel((1, t.height // 2)), t.convert("L").getpixel((t.width - 2, t.height // 2))
    assert left < 30 and right > 225, (left, right)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"], ids=["apng", "animated-webp"])
def test_animated_png_and_webp_are_accepted_with_the_first_frame_shown(client, comfy_double, fmt):
    frames = [Image.new("RGB", (24, 16), (250, 0, 0)), Image.new("RGB", (24, 16), (0, 0, 250))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True) if fmt == "WEBP" else \
        encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    info = check_upload(data)
    assert (info.format, info.width, info.height) == (fmt, 24, 16)
    assert page_upload(client, data, f"anim.{fmt.lower()}").filename == f"anim.{fmt.lower()}"
    r, g, b = _rgb(thumbnail(data))
    assert r > 200 and b < 60  # the first frame, not the last


def test_open_image_refuses_a_bomb_before_decoding_anything():
    with pytest.raises(ImageRefused) as info:
        open_image(bomb_png(100_000, 100_000), name="The upload")
    assert panel_error(info, ImageRefused).startswith("The upload is 10000 megapixels")


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------

def _alpha(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as img:
        return img.convert("RGBA").getchannel("A")


def test_smaller_mask_is_scaled_to_the_image(client, comfy_double):
    page_upload(client, photo((120, 80)), "base.png")
    mask = Image.new("L", (12, 8), 0)
    mask.paste(255, (0, 0, 6, 8))  # left half marked
    ref = page_mask(client, "base.png", encode(mask))
    stored = _alpha(client.view(ref))
    assert stored.size == (120, 80)
    assert stored.getpixel((5, 40)) == 0 and stored.getpixel((115, 40)) == 255  # alpha 0 = masked


def test_mask_of_another_aspect_ratio_is_scaled_not_refused():
    mask = Image.new("L", (300, 20), 0)
    mask.paste(255, (0, 0, 300, 10))  # top half marked
    out = _alpha(mask_from_image(encode(mask), (64, 64)))
    assert out.size == (64, 64) and out.getpixel((32, 5)) == 0 and out.getpixel((32, 60)) == 255


def test_painted_layer_of_another_size_is_scaled():
    layer = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 200), (5, 0, 10, 10))  # right half painted
    out = _alpha(mask_from_strokes(layer, (40, 20)))
    assert out.size == (40, 20) and out.getpixel((35, 10)) == 0 and out.getpixel((5, 10)) == 255


def test_sixteen_bit_mask_keeps_dark_pixels_unmasked():
    img = Image.new("I;16", (20, 10), 300)  # almost black: not marked
    img.paste(65000, (10, 0, 20, 10))  # white: marked
    out = _alpha(mask_from_image(encode(img), (20, 10)))
    assert out.getpixel((2, 5)) == 255 and out.getpixel((18, 5)) == 0


def test_mask_that_is_not_an_image_is_refused_and_not_sent(client, comfy_double):
    page_upload(client, photo(), "base.png")
    with pytest.raises(E.InvalidInput) as info:
        page_mask(client, "base.png", b"mask: the left half, please")
    assert "not an image" in panel_error(info)
    assert posts(comfy_double, "/upload/mask") == []


def test_mask_preview_of_a_damaged_image_is_one_sentence():
    with pytest.raises(E.InvalidInput) as info:
        composite(photo()[:60], mask_from_strokes(Image.new("RGBA", (4, 4)), (64, 48)))
    panel_error(info)


# ------------------------------------------------------------------------------------------------
# values: out of range, wrong type
# ------------------------------------------------------------------------------------------------

BAD_VALUES = {
    "int-below-min": ({"1.width": -5}, "out_of_range", "at least 1"),
    "int-above-max": ({"1.height": 10**9}, "out_of_range", "at most 16384"),
    "int-as-text": ({"1.width": "wide"}, "wrong_type", "whole number"),
    "int-as-fraction": ({"1.width": 64.5}, "wrong_type", "whole number"),
    "int-as-bool": ({"1.batch_size": True}, "wrong_type", "whole number"),
    "int-as-nan": ({"1.width": float("nan")}, "wrong_type", "whole number"),
    "int-as-infinity": ({"1.height": float("inf")}, "wrong_type", "whole number"),
    "int-as-list": ({"1.width": [1, 2, 3]}, "wrong_type", "whole number"),
    "value-missing": ({"1.color": None}, "missing_input", "has no value"),
    "text-as-object": ({"2.filename_prefix": {"a": 1}}, "wrong_type", "needs text"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_bad_value_blocks_generate_names_the_field_and_sends_nothing(client, comfy_double, case):
    values, kind, words = BAD_VALUES[case]
    form = page_submit(client, json.dumps(API).encode(), "e.json", values)
    (problem,) = form.blocking
    assert problem.kind == kind and problem.param_id == next(iter(values))
    assert words in problem.message
    assert_plain_sentence(problem.message)
    # the other values are kept as the file had them
    assert form.graph["1"]["inputs"]["batch_size"] == (values.get("1.batch_size", 2))
    assert form.graph["2"]["inputs"]["filename_prefix"] == values.get("2.filename_prefix", "panel_empty")
    assert posts(comfy_double, "/prompt") == []


def test_combo_value_the_server_does_not_offer_is_blocked(client, comfy_double):
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
           "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "magic-kernel",
                                                          "width": 32, "height": 32, "crop": "disabled"}},
           "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    form = page_submit(client, json.dumps(api).encode(), "scale.json")
    (problem,) = form.blocking
    assert problem.kind == "not_in_list" and "magic-kernel" in problem.message
    assert_plain_sentence(problem.message)
    assert posts(comfy_double, "/prompt") == []


GRID_AXES = {
    "grid-value-below-min": ("1.width", [64, 0, 128], "at least 1"),
    "grid-value-above-max": ("1.height", [64, 99_999], "at most 16384"),
    "grid-value-wrong-type": ("1.width", [64, "wide"], "whole number"),
    "grid-parameter-not-in-workflow": ("9.steps", [1, 2], "not in this workflow"),
}


@pytest.mark.parametrize("case", list(GRID_AXES), ids=list(GRID_AXES))
def test_bad_xy_grid_axis_is_refused_before_anything_is_sent(client, comfy_double, case):
    param, values, words = GRID_AXES[case]
    with pytest.raises(E.InvalidInput) as info:
        page_submit(client, json.dumps(API).encode(), "e.json", grid_x=(param, values))
    assert words in panel_error(info)
    assert posts(comfy_double, "/prompt") == []


def test_grid_with_too_many_cells_is_refused(client, comfy_double):
    with pytest.raises(E.InvalidInput) as info:
        page_submit(client, json.dumps(API).encode(), "e.json", grid_x=("1.width", list(range(1, 402))))
    assert "at most 400 cells" in panel_error(info)
    assert posts(comfy_double, "/prompt") == []


@pytest.mark.parametrize("count", [0, 5000], ids=["zero-runs", "five-thousand-runs"])
def test_run_count_out_of_range_is_refused(client, comfy_double, count):
    with pytest.raises(E.InvalidInput) as info:
        page_submit(client, json.dumps(API).encode(), "e.json", count=count)
    assert "between 1 and 1000 runs" in panel_error(info)
    assert posts(comfy_double, "/prompt") == []


def test_unknown_seed_mode_is_refused():
    api = {"1": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}}
    with pytest.raises(E.InvalidInput) as info:
        W.apply_seed_modes(api, {"1.noise_seed": "sideways"})
    assert "Unknown seed mode" in panel_error(info)


@pytest.mark.parametrize("edit", ["no-dot", "9.width", "1.", ".width"])
def test_edit_naming_no_parameter_is_refused_and_the_graph_is_untouched(edit):
    before = copy.deepcopy(API)
    with pytest.raises(E.InvalidInput) as info:
        W.apply_edits(API, {edit: 1})
    panel_error(info)
    assert API == before


def test_damaged_recipe_is_refused():
    with pytest.raises(E.InvalidInput) as info:
        W.Recipe.from_json('{"source": {}, "unknown_field": 1}')
    assert "recipe is damaged" in panel_error(info)


def test_check_axis_accepts_good_values_so_the_refusals_above_mean_something(client):
    object_info = client.object_info()
    schema = S.Schema.from_object_info(object_info)
    form = build_form(W.load_json(API), object_info, schema, {})
    check_axis(form, "1.width", [1, 64, 16384])  # no error


# ------------------------------------------------------------------------------------------------
# file names: unicode and path traversal
# ------------------------------------------------------------------------------------------------

NAMES = {
    "parent-folders": ("../../etc/passwd.png", "passwd.png"),
    "windows-parent-folders": ("..\\..\\Windows\\win.ini.png", "win.ini.png"),
    "absolute-path": ("/home/someone/Pictures/cat.png", "cat.png"),
    "control-characters": ("cat\x00\n\x1b.png", "cat_.png"),
    "windows-reserved": ('what? <a|b> "c": d*.png', "what_ _a_b_ _c_ d_.png"),
    "hidden-dot-file": (".hidden.png", "hidden.png"),
    "only-dots": ("....", "image.png"),
    "no-extension": ("scan", "scan.png"),
    "unicode-letters": ("Überraschung ñandú 猫 🐱.png", "Überraschung ñandú 猫 🐱.png"),
    "decomposed-unicode": ("cafe\u0301.png", "caf\u00e9.png"),
}


@pytest.mark.parametrize("case", list(NAMES), ids=list(NAMES))
def test_file_name_is_made_safe_and_stored_inside_the_input_folder(client, comfy_double, case):
    given, expected = NAMES[case]
    assert upload_name(given) == expected
    ref = page_upload(client, photo(color=(len(case), 1, 2)), given)
    assert (ref.filename, ref.subfolder, ref.type) == (expected, "", "input")
    assert client.view(ref)[:8] == b"\x89PNG\r\n\x1a\n"  # really stored there, readable by LoadImage


def test_very_long_file_name_is_shortened_keeping_its_extension():
    name = upload_name("a" * 400 + ".jpeg")
    assert len(name) == 120 and name.endswith(".jpeg")


@pytest.mark.parametrize("given,shown", [("../../secret/dir\\team workflow.json", "team workflow"),
                                         ("Arbeitsablauf – 夜の港.json", "Arbeitsablauf – 夜の港")],
                         ids=["folders-in-workflow-name", "unicode-workflow-name"])
def test_workflow_file_name_is_only_a_name(given, shown):
    assert W.load(json.dumps(API).encode(), given).name == shown


# ------------------------------------------------------------------------------------------------
# malformed WebSocket frames
# ------------------------------------------------------------------------------------------------

BAD_TEXT_FRAMES = {
    "not-json": "<html>502 Bad Gateway</html>",
    "truncated-json": '{"type": "progress", "data": {"value": 3, "ma',
    "json-without-type": '{"data": {"prompt_id": "p1"}}',
    "type-not-text": '{"type": ["executing"], "data": {}}',
    "data-not-object": '{"type": "executing", "data": "node 3"}',
    "progress-value-as-text": '{"type": "progress", "data": {"value": "3", "max": 20, "prompt_id": "p1"}}',
    "progress-negative": '{"type": "progress", "data": {"value": -5, "max": 20, "prompt_id": "p1"}}',
    "progress-nan": '{"type": "progress", "data": {"value": NaN, "max": 20, "prompt_id": "p1"}}',
    "progress-infinite-max": '{"type": "progress", "data": {"value": 1, "max": Infinity, "prompt_id": "p1"}}',
    "progress-400-digit-number": '{"type": "progress", "data": {"value": 1%s, "max": 20, "prompt_id": "p1"}}' % ("0" * 400),
    "progress-state-negative": '{"type": "progress_state", "data": {"prompt_id": "p1", "nodes": {"1": '
                               '{"value": -1, "max": 1, "state": "running", "node_id": "1"}}}}',
    "status-queue-as-text": '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "many"}}}}',
    "executed-output-list": '{"type": "executed", "data": {"node": "1", "output": [1], "prompt_id": "p1"}}',
    "error-prompt-id-number": '{"type": "execution_error", "data": {"prompt_id": 12}}',
}


@pytest.mark.parametrize("case", list(BAD_TEXT_FRAMES), ids=list(BAD_TEXT_FRAMES))
def test_malformed_text_frame_is_ignored_and_the_reducer_keeps_working(case):
    assert parse_text(BAD_TEXT_FRAMES[case]) is None
    reducer = SnapshotReducer()
    reducer.track("p1")
    good = parse_text('{"type": "progress", "data": {"value": 3, "max": 20, "prompt_id": "p1"}}')
    _event, changed = reducer.feed(good)
    assert changed == "p1" and reducer.snapshots["p1"].step == (3, 20)


def _frame(kind: int, x: int, rest: bytes) -> bytes:
    return struct.pack(">II", kind, x) + rest


BAD_BINARY_FRAMES = {
    "empty": b"",
    "three-bytes": b"\x00\x00\x00",
    "header-cut-in-half": b"\x00\x00\x00\x04\x00\x00",
    "preview-without-image": _frame(1, 2, b""),
    "metadata-longer-than-frame": _frame(4, 10_000, b'{"prompt_id": "p1"}'),
    "metadata-not-json": _frame(4, 9, b"not json!" + photo()),
    "metadata-a-list": _frame(4, 2, b"[]" + photo()),
    "metadata-node-id-object": _frame(4, 16, b'{"node_id": {}} ' + photo()),
    "text-frame-node-id-cut": _frame(3, 50, b"12"),
    "text-frame-node-id-not-utf8": _frame(3, 2, b"\xc3\x28hello"),
    "unknown-type": _frame(0xDEAD, 0, b"payload"),
}


@pytest.mark.parametrize("case", list(BAD_BINARY_FRAMES), ids=list(BAD_BINARY_FRAMES))
def test_malformed_binary_frame_is_ignored(case):
    assert parse_binary(BAD_BINARY_FRAMES[case]) is None


def test_preview_with_garbage_image_bytes_is_refused_when_shown():
    """The frame is well-formed (kept, as the wire format allows any bytes), but its image is not
    one: opening it for display gives the panel's sentence, not Pillow's error."""
    event = parse_binary(_frame(1, 2, b"\x89PNG\r\n\x1a\nthis is not a png"))
    assert isinstance(event, PreviewImage)
    with pytest.raises(ImageRefused) as info:
        open_image(event.image, name="The preview")
    panel_error(info, ImageRefused)


def test_listener_survives_garbage_frames_and_still_follows_a_job(client, comfy_double):
    listener: EventListener = client.listener()
    with listener:
        assert listener.wait_connected(10)
        for raw in list(BAD_TEXT_FRAMES.values())[:6] + [BAD_BINARY_FRAMES["header-cut-in-half"],
                                                         BAD_BINARY_FRAMES["metadata-not-json"],
                                                         _frame(1, 2, b"garbage, not an image")]:
            comfy_double.send_raw_ws(raw)
        queued = client.queue_prompt(API)
        listener.track(queued.prompt_id)
        deadline = time.monotonic() + 20
        snap = listener.snapshot(queued.prompt_id)
        while not (snap is not None and snap.history_ready) and time.monotonic() < deadline:
            snap = listener.wait(queued.prompt_id, timeout=1.0)
        assert snap is not None and snap.state == "succeeded" and snap.history_ready
        assert listener.connected and listener.reconnects == 0
