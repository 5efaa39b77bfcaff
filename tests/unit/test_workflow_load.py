"""Loading workflows: every supported format, and a corpus of malformed or foreign files, each
answered with one plain sentence (never a traceback)."""

from __future__ import annotations

import io
import json
import zlib
import struct

import pytest
from PIL import Image, PngImagePlugin

from comfypanel import workflow as W
from tests.helpers import workflow as recorded_workflow

API = recorded_workflow("invert_save")
UI = {
    "last_node_id": 2, "last_link_id": 1,
    "nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "widgets_values": [64, 32, 1, 0]},
        {"id": 2, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": []},
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]], "groups": [], "config": {}, "extra": {}, "version": 0.4,
}


def png_with(text: dict[str, str], *, fmt="PNG") -> bytes:
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    buf = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(k, v)
        img.save(buf, "PNG", pnginfo=info)
    elif fmt == "WEBP":
        exif = img.getexif()
        if "prompt" in text:
            exif[0x0110] = "prompt:" + text["prompt"]
        if "workflow" in text:
            exif[0x010F] = "workflow:" + text["workflow"]
        img.save(buf, "WEBP", exif=exif)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


# -- formats in -------------------------------------------------------------------------------


def test_api_json_plain_and_wrapped():
    w = W.load(json.dumps(API).encode(), "invert_save.json")
    assert (w.format, w.name, w.ui) == ("api", "invert_save", None)
    assert w.api["2"]["class_type"] == "ImageInvert" and w.api["1"]["_meta"]["title"]
    wrapped = W.load(json.dumps({"prompt": API, "client_id": "x"}).encode())
    assert wrapped.format == "api" and wrapped.api == w.api
    bom = W.load(b"\xef\xbb\xbf" + json.dumps(API).encode())
    assert bom.api == w.api


def test_ui_json():
    w = W.load(json.dumps(UI).encode(), "my flow.json")
    assert w.format == "ui" and w.ui["nodes"][0]["type"] == "EmptyImage" and w.name == "my flow"


def test_png_prefers_ui_and_keeps_api():
    data = png_with({"prompt": json.dumps(API), "workflow": json.dumps(UI)})
    w = W.load(data, "ComfyUI_00001_.png")
    assert w.format == "png-ui" and w.ui["nodes"] and w.api["3"]["class_type"] == "SaveImage"


def test_png_with_prompt_only():
    w = W.load(png_with({"prompt": json.dumps(API)}))
    assert w.format == "png-api" and w.api["2"]["class_type"] == "ImageInvert"


def test_webp_exif_metadata():
    w = W.load(png_with({"prompt": json.dumps(API), "workflow": json.dumps(UI)}, fmt="WEBP"), "anim.webp")
    assert w.format == "png-ui" and w.api is not None


# -- malformed and foreign files: one sentence each ----------------------------------------------

def _truncated_png() -> bytes:
    return png_with({"prompt": json.dumps(API)})[:60]


def _png_chunk_bomb() -> bytes:
    # a PNG whose header claims 100000x100000 pixels: the loader must not decode pixels
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return sig + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"prompt\x00" + json.dumps(API).encode()) + chunk(b"IEND", b"")


CORPUS = {
    "empty file": (b"", "empty"),
    "plain text": (b"hello, this is my workflow", "not JSON"),
    "truncated json": (json.dumps(API).encode()[:-20], "not valid JSON"),
    "json list": (b"[1, 2, 3]", "holds a list"),
    "json number": (b"42", "single value"),
    "json string": (b'"workflow"', "single value"),
    "empty object": (b"{}", "empty"),
    "package.json": (json.dumps({"name": "x", "version": "1.0.0", "dependencies": {}}).encode(), "not a ComfyUI workflow"),
    "a1111 settings": (json.dumps({"sd_model_checkpoint": "x", "CLIP_stop_at_last_layers": 2}).encode(), "not a ComfyUI workflow"),
    "other app graph": (json.dumps({"nodes": [{"id": "a"}], "edges": []}).encode(), "another app"),
    "empty ui graph": (json.dumps({**UI, "nodes": [], "links": []}).encode(), "no nodes"),
    "api node without class_type": (json.dumps({"1": {"inputs": {}}}).encode(), "class_type"),
    "api node inputs not a table": (json.dumps({"1": {"class_type": "X", "inputs": [1]}}).encode(), "not a table"),
    "deeply nested": (b"[" * 100000 + b"]" * 100000, "nested too deeply|holds a list"),
    "binary garbage": (bytes(range(256)) * 10, "neither a workflow"),
    "too large": (b" " * (W.MAX_WORKFLOW_BYTES + 1), "larger than"),
    "png without metadata": (png_with({}), "no ComfyUI workflow"),
    "png from automatic1111": (png_with({"parameters": "a cat, Steps: 20, Sampler: Euler"}), "another app"),
    "png with broken prompt json": (png_with({"prompt": "{broken"}), "no ComfyUI workflow"),
    "truncated png": (_truncated_png(), "damaged"),
    "text named .png": (b"\x89PNG but not really", "damaged"),
    "jpeg without metadata": (png_with({}, fmt="JPEG"), "no ComfyUI workflow"),
    "gif": (png_with({}, fmt="GIF"), "cannot carry"),
    "bmp": (png_with({}, fmt="BMP"), "cannot carry"),
    "utf-16 garbage": (b"\xff\xfe" + "not json".encode("utf-16-le"), "not JSON"),
    "ui file with only old keys": (json.dumps({"last_node_id": 0, "version": 0.4, "extra": {}}).encode(), "no nodes"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_malformed_file_gets_one_sentence(case):
    data, phrase = CORPUS[case]
    with pytest.raises(W.WorkflowError) as exc:
        W.load(data, f"{case}.bin")
    msg = exc.value.user_message
    assert any(p in msg for p in phrase.split("|")), msg
    assert "Traceback" not in msg and "\n" not in msg and msg.endswith(".")
    assert msg.count(". ") <= 2  # one or two short sentences, not an essay


def test_decompression_bomb_is_refused_with_a_sentence():
    with pytest.raises(W.WorkflowError, match="too large to open safely"):
        W.load(_png_chunk_bomb(), "bomb.png")


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 20
