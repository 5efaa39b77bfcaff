"""Contract tests: the test doubles must agree with the real ComfyUI 0.3.75 recordings.

Every ``shared/recordings/http/*.json`` sample is either replayed against a fresh ``ComfyDouble``
(after the setup it needs, e.g. uploads before ``/view``) and compared on status code, Content-Type
family and body shape (exact values where the real answer is deterministic), or listed in ``SKIPPED``
with a reason. A new recording that is neither makes ``test_every_recording_is_covered_or_skipped``
fail. The WebSocket scenarios ws-01/02/03/06/07/08 are replayed message by message (per client, the
full type sequence including every ``progress_state``). Finally the Cloud double's storage must flag
a leaked API key.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from PIL import Image, PngImagePlugin

from tests.doubles._recordings import recorded_types, ws_log
from tests.doubles.cloud import CloudDouble
from tests.doubles.comfy import ComfyDouble
from tests.doubles.wsclient import WsClient

RECORDINGS = Path(
    os.environ.get("COMFYPANEL_RECORDINGS")
    or Path(__file__).resolve().parents[2].parent / "shared" / "recordings"
)
HTTP_DIR = RECORDINGS / "http"

SKIPPED: dict[str, str] = {
    "GET_docs_example": "static file of the comfyui-embedded-docs package, not an API the panel uses",
    "GET_templates_index": "static file of the workflow-templates package, not an API the panel uses",
}

TRUNC_PREFIX = "<truncated: "
TRUNC_KEY = "<truncated>"


# =============================================================================== sample files


def _png(color, size=(64, 48), mode="RGB", text: dict[str, str] | None = None) -> bytes:
    image = Image.new(mode, size, color)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _mask_png() -> bytes:
    image = Image.new("RGBA", (64, 48), (0, 0, 0, 255))
    for x in range(32):
        for y in range(48):
            image.putpixel((x, y), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


PNG_A = _png((200, 30, 30), text={"source": "comfypanel test"})  # recorded as 165 bytes
PNG_B = _png((30, 30, 200))  # recorded as 139 bytes
MASK = _mask_png()  # recorded as 179 bytes
NOTES = b"hello, not an image"
PAGE = b"<html><script>alert(1)</script></html>"
WORKFLOW_61 = b'{"last_node_id": 3, "nodes": [], "links": [], "version": 0.4}'
CONTENT_BY_SIZE = {165: PNG_A, 139: PNG_B, 179: MASK, 19: NOTES, 38: PAGE, 61: WORKFLOW_61}


def load(name: str) -> dict:
    return json.loads((HTTP_DIR / f"{name}.json").read_text())


def all_recordings() -> list[str]:
    return sorted(p.stem for p in HTTP_DIR.glob("*.json"))


# =============================================================================== HTTP helpers


def upload(d: ComfyDouble, name: str, content: bytes, route: str = "/upload/image", **form: str) -> dict:
    r = requests.post(d.url + route, files={"image": (name, content, "image/png")}, data=form, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def post_userdata(d: ComfyDouble, rel: str, content: bytes = WORKFLOW_61) -> None:
    r = requests.post(d.url + "/userdata/" + rel.replace("/", "%2F"), data=content, timeout=10)
    assert r.status_code == 200, r.text


def submit(d: ComfyDouble, prompt: dict, **extra: Any) -> dict:
    r = requests.post(d.url + "/prompt", json={"prompt": prompt, **extra}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def replay_history(d: ComfyDouble, body: dict) -> None:
    """Re-run the prompts of a recorded /history body with their recorded ids (0.3.75 accepts any id)."""
    for prompt_id, entry in body.items():
        if not isinstance(entry, dict) or "prompt" not in entry:
            continue
        _, _, prompt, extra_data, outputs = entry["prompt"]
        extra: dict[str, Any] = {"prompt_id": prompt_id, "partial_execution_targets": outputs}
        if "client_id" in extra_data:
            extra["client_id"] = extra_data["client_id"]
        if "extra_pnginfo" in extra_data:
            extra["extra_data"] = {"extra_pnginfo": extra_data["extra_pnginfo"]}
        submit(d, prompt, **extra)
        d.wait_idle()


def tiny_prompt(prefix: str = "setup") -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def replay_request(d: ComfyDouble, rec: dict) -> requests.Response:
    req = rec["request"]
    headers = dict(req.get("headers", {}))
    if "Origin" in headers and "127.0.0.1:8188" in headers["Origin"]:
        headers["Origin"] = headers["Origin"].replace("8188", str(d.port))
    kwargs: dict[str, Any] = {}
    if "json" in req:
        kwargs["json"] = req["json"]
    if "files" in req:
        kwargs["files"] = {
            field_: (f["filename"], CONTENT_BY_SIZE[f["bytes"]], f["content_type"]) for field_, f in req["files"].items()
        }
        kwargs["data"] = req.get("form", {})
    elif "form" in req:
        kwargs["files"] = {k: (None, v) for k, v in req["form"].items()}  # multipart without a file part
    if "raw_body" in req:
        raw = req["raw_body"]
        if raw.startswith("<") and raw.endswith(" bytes>"):
            kwargs["data"] = CONTENT_BY_SIZE[int(raw[1:-7])]
        else:
            kwargs["data"] = raw.encode()
    return requests.request(
        req["method"], d.url + req["path"], params=req.get("query"), headers=headers,
        allow_redirects=False, timeout=15, **kwargs,
    )


# =============================================================================== comparison


def _family(content_type: str | None) -> str | None:
    return content_type.split(";")[0].strip().lower() if content_type else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def compare(expected: Any, actual: Any, *, exact: bool, loose: frozenset[str] = frozenset(),
            ignore: frozenset[str] = frozenset(), path: str = "$") -> list[str]:
    """Differences between a recorded JSON value (with its shortening markers) and an actual one.

    ``exact``: scalars must be equal, except under keys in ``ignore`` (types only). Lists must have
    the recorded length unless shortened (marker) or their key is in ``loose``.
    """
    problems: list[str] = []
    if isinstance(expected, str) and (expected.startswith(TRUNC_PREFIX) or "...<truncated" in expected):
        return problems if isinstance(actual, str) or expected.startswith(TRUNC_PREFIX) else [f"{path}: want str"]
    if _kind(expected) != _kind(actual):
        return [f"{path}: want {_kind(expected)} {str(expected)[:80]!r}, got {_kind(actual)} {str(actual)[:80]!r}"]
    key = path.rsplit(".", 1)[-1].split("[")[0]
    if isinstance(expected, dict):
        truncated = TRUNC_KEY in expected
        want_keys = set(expected) - {TRUNC_KEY}
        if truncated:
            missing = want_keys - set(actual)
            if missing:
                problems.append(f"{path}: missing keys {sorted(missing)}")
        elif want_keys != set(actual):
            problems.append(f"{path}: keys {sorted(want_keys)} != {sorted(actual)}")
        for k in want_keys & set(actual):
            problems += compare(expected[k], actual[k], exact=exact and k not in ignore, loose=loose,
                                ignore=ignore, path=f"{path}.{k}")
        return problems
    if isinstance(expected, list):
        marker = bool(expected) and isinstance(expected[-1], str) and expected[-1].startswith(TRUNC_PREFIX)
        items = expected[:-1] if marker else expected
        if not marker and key not in loose and len(items) != len(actual):
            problems.append(f"{path}: length {len(items)} != {len(actual)}")
        if marker and len(actual) < len(items):
            problems.append(f"{path}: at least {len(items)} items expected, got {len(actual)}")
        if key in loose and items and actual:
            for i, item in enumerate(actual):
                problems += compare(items[0], item, exact=False, loose=loose, ignore=ignore, path=f"{path}[{i}]")
        else:
            for i, (e, a) in enumerate(zip(items, actual)):
                problems += compare(e, a, exact=exact, loose=loose, ignore=ignore, path=f"{path}[{i}]")
        return problems
    if exact and key not in ignore and expected != actual:
        problems.append(f"{path}: {expected!r} != {actual!r}")
    return problems


def check_binary(summary: dict, body: bytes) -> list[str]:
    problems = []
    if "image" in summary:
        want = summary["image"]
        try:
            image = Image.open(io.BytesIO(body))
        except Exception as exc:  # noqa: BLE001
            return [f"not an image: {exc}"]
        if image.format != want["format"]:
            problems.append(f"format {image.format} != {want['format']}")
        if image.mode != want["mode"]:
            problems.append(f"mode {image.mode} != {want['mode']}")
        if list(image.size) != want["size"]:
            problems.append(f"size {image.size} != {want['size']}")
        if "png_text_keys" in want and sorted(getattr(image, "text", {})) != sorted(want["png_text_keys"]):
            problems.append(f"png text keys {sorted(getattr(image, 'text', {}))} != {want['png_text_keys']}")
        if body[:4].hex() != summary["first_bytes_hex"][:8]:
            problems.append(f"magic {body[:4].hex()} != {summary['first_bytes_hex'][:8]}")
    else:
        if len(body) != summary["length"] or body[:16].hex() != summary["first_bytes_hex"]:
            problems.append(f"bytes differ: {len(body)} {body[:16].hex()} vs {summary['length']} {summary['first_bytes_hex']}")
    return problems


# =============================================================================== cases

IDS = frozenset({"prompt_id", "number", "create_time", "timestamp", "traceback", "modified", "created",
                 "ram_free", "vram_free", "torch_vram_free", "argv"})


@dataclass
class Case:
    setup: Callable[[ComfyDouble], None] | None = None
    exact: bool = False  # compare JSON values, not only shapes
    ignore: frozenset[str] = IDS  # keys whose values may differ even when exact
    loose: frozenset[str] = frozenset()  # list keys whose length may differ
    unordered: bool = False  # top-level list compared as a multiset
    check: Callable[[ComfyDouble, requests.Response], None] | None = None
    double_kwargs: dict = field(default_factory=dict)


def _upload_rec_test(d):
    upload(d, "rec_test.png", PNG_B)


def _uploads_for_loadimage(d):
    upload(d, "rec_test.png", PNG_A)
    upload(d, "rec_test.png", PNG_B)  # -> rec_test (1).png
    upload(d, "rec_test.png", PNG_B, overwrite="true")
    upload(d, "rec_test.png", PNG_A, overwrite="false")  # -> rec_test (2).png
    upload(d, "notes.txt", NOTES)
    upload(d, "page.html", PAGE)
    upload(d, "sub_test.png", PNG_A, subfolder="panel/tests")
    upload(d, "mask_annot.png", MASK, route="/upload/mask", type="input",
           original_ref=json.dumps({"filename": "rec_test.png [input]"}))
    upload(d, "mask_default_type.png", MASK, route="/upload/mask", original_ref=json.dumps({"filename": "rec_test.png"}))


def _mask_in_clipspace(d):
    upload(d, "rec_test.png", PNG_B)
    upload(d, "rec_test_mask.png", MASK, route="/upload/mask", type="input", subfolder="clipspace",
           original_ref=json.dumps({"filename": "rec_test.png", "subfolder": "", "type": "input"}))


def _two_workflows(d):
    post_userdata(d, "workflows/panel_test.json")
    post_userdata(d, "workflows/panel_test2.json")


def _history_from(name: str, before: int = 0, after: int = 0):
    def setup(d):
        for i in range(before):
            submit(d, tiny_prompt(f"before{i}"))
            d.wait_idle()
        replay_history(d, load(name)["response"]["body"])
        for i in range(after):
            submit(d, tiny_prompt(f"after{i}"))
            d.wait_idle()
    return setup


def _restart_then(name: str):
    def setup(d):
        submit(d, tiny_prompt("old"))
        d.wait_idle()
        d.restart()
        replay_history(d, load(name)["response"]["body"])
    return setup


def _busy_queue(clear: bool):
    def setup(d):
        body = load("GET_queue_busy")["response"]["body"]
        d.script(None, per_node_delay=2.0)
        items = body["queue_running"] + [i for i in body["queue_pending"] if isinstance(i, list)]
        for number, prompt_id, prompt, extra_data, outputs in items:
            submit(d, prompt, prompt_id=prompt_id, client_id=extra_data["client_id"], partial_execution_targets=outputs)
        deadline = time.monotonic() + 5
        while not requests.get(d.url + "/queue", timeout=5).json()["queue_running"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        if clear:
            requests.post(d.url + "/queue", json={"clear": True}, timeout=5)
    return setup


def _front_setup(d):
    for _ in range(9):  # rejected prompts still consume a number
        requests.post(d.url + "/prompt", json={"client_id": "x"}, timeout=5)


def _no_new_file(name: str, folder: str = "input"):
    def check(d, response):
        assert not os.path.exists(os.path.join(getattr(d, f"{folder}_dir"), name)), f"{name} must not be written"
    return check


def _mask_written(d, response):
    with Image.open(os.path.join(d.input_dir, "clipspace", "rec_test_mask.png")) as img:
        assert img.mode == "RGBA"
        assert img.getpixel((0, 0))[3] == 0 and img.getpixel((63, 0))[3] == 255


CASES: dict[str, Case] = {
    # --- userdata
    "DELETE_userdata_file": Case(setup=lambda d: post_userdata(d, "workflows/renamed.json")),
    "DELETE_userdata_file_missing": Case(),
    "GET_userdata_file": Case(setup=_two_workflows, exact=True),
    "GET_userdata_file_missing": Case(),
    "GET_userdata_list": Case(setup=_two_workflows, exact=True, unordered=True),
    "GET_userdata_list_full_info": Case(setup=_two_workflows, unordered=True),
    "GET_userdata_list_split": Case(setup=_two_workflows, exact=True, unordered=True),
    "GET_userdata_no_dir": Case(),
    "GET_userdata_workflows_missing_dir": Case(),
    "GET_api_prefix_userdata": Case(),
    "GET_v2_userdata_missing": Case(setup=lambda d: post_userdata(d, "workflows/panel_test.json")),
    "GET_v2_userdata_path": Case(setup=lambda d: post_userdata(d, "workflows/panel_test.json"), exact=True),
    "GET_v2_userdata_root": Case(setup=lambda d: post_userdata(d, "workflows/panel_test.json"), exact=True),
    "POST_userdata_move": Case(setup=lambda d: post_userdata(d, "workflows/panel_test2.json"), exact=True),
    "POST_userdata_no_overwrite_conflict": Case(setup=lambda d: post_userdata(d, "workflows/panel_test.json")),
    "POST_userdata_traversal": Case(),
    "POST_userdata_unencoded_slash": Case(),
    "POST_userdata_workflow": Case(exact=True),
    "POST_userdata_workflow_full_info": Case(exact=True),
    "GET_users": Case(exact=True),
    "POST_users_single_user": Case(),
    "GET_settings": Case(exact=True),
    "GET_settings_after": Case(exact=True, setup=lambda d: (
        requests.post(d.url + "/settings/Comfy.Panel.Test", json=42, timeout=5),
        requests.post(d.url + "/settings", json={"Comfy.Panel.A": "x", "Comfy.Panel.B": [1, 2]}, timeout=5))),
    "GET_settings_missing": Case(exact=True),
    "GET_settings_one": Case(exact=True, setup=lambda d: requests.post(d.url + "/settings/Comfy.Panel.Test", json=42, timeout=5)),
    "POST_settings_bulk": Case(),
    "POST_settings_one": Case(),
    # --- simple GETs and the /api mirror
    "GET_api_internal_not_prefixed": Case(),
    "GET_api_prefix_embeddings": Case(exact=True),
    "GET_api_prefix_features": Case(exact=True),
    "GET_api_prefix_history": Case(setup=_history_from("GET_api_prefix_history", before=1)),
    "GET_api_prefix_models": Case(exact=True),
    "GET_api_prefix_object_info_node": Case(exact=True),
    "GET_api_prefix_prompt": Case(exact=True),
    "GET_api_prefix_queue": Case(exact=True),
    "GET_api_prefix_system_stats": Case(),
    "GET_api_prefix_view": Case(),
    "GET_embeddings": Case(exact=True),
    "GET_experiment_models": Case(),
    "GET_experiment_models_unknown": Case(),
    "GET_experiment_models_upscale": Case(exact=True, ignore=IDS | {"size"}),
    "GET_extensions": Case(loose=frozenset({"$"})),
    "GET_favicon_static": Case(),
    "GET_features": Case(exact=True),
    "GET_global_subgraphs": Case(exact=True),
    "GET_i18n": Case(exact=True),
    "GET_workflow_templates": Case(exact=True),
    "GET_root_index_html": Case(),
    "GET_unknown_path": Case(),
    "GET_ws_without_upgrade": Case(),
    "OPTIONS_prompt": Case(),
    "GET_system_stats": Case(exact=True, ignore=IDS | {"python_version"}),
    "GET_prompt": Case(exact=True),
    "GET_prompt_idle": Case(exact=True),
    "GET_queue_idle": Case(exact=True),
    "GET_notexist_api_job": Case(),
    "GET_notexist_api_jobs": Case(),
    "GET_notexist_api_jobs_123": Case(),
    "GET_notexist_api_queue_status": Case(),
    "GET_notexist_jobs": Case(),
    "GET_notexist_prompt_status": Case(),
    "GET_notexist_queue_status": Case(),
    # --- internal
    "GET_internal_files_bad": Case(exact=True),
    "GET_internal_files_output": Case(loose=frozenset({"$"})),
    "GET_internal_folder_paths": Case(),
    "GET_internal_logs": Case(),
    "GET_internal_logs_raw": Case(loose=frozenset({"entries"})),
    # --- models and nodes
    "GET_models": Case(exact=True),
    "GET_models_checkpoints": Case(exact=True),
    "GET_models_clip": Case(),
    "GET_models_controlnet": Case(exact=True),
    "GET_models_custom_nodes": Case(exact=True),
    "GET_models_embeddings": Case(exact=True),
    "GET_models_loras": Case(exact=True),
    "GET_models_no_such_folder": Case(),
    "GET_models_text_encoders": Case(exact=True),
    "GET_models_upscale_models": Case(exact=True, double_kwargs={"models": {}}),  # before the fixture model
    "GET_models_upscale_models_after_fixture": Case(exact=True),
    "GET_models_vae": Case(exact=True),
    "GET_object_info.sample": Case(exact=True),
    "GET_object_info_ImageStitch_v3node": Case(exact=True),
    "GET_object_info_LoadImage": Case(exact=True),
    "GET_object_info_LoadImage_after_uploads": Case(exact=True, setup=_uploads_for_loadimage),
    "GET_object_info_unknown": Case(exact=True),
    "GET_view_metadata_bad_folder": Case(),
    "GET_view_metadata_missing": Case(),
    "GET_view_metadata_no_filename": Case(),
    "GET_view_metadata_not_safetensors": Case(),
    "GET_view_metadata_safetensors": Case(exact=True),
    # --- history
    "GET_history_after_clear": Case(exact=True, setup=lambda d: (
        submit(d, tiny_prompt()), d.wait_idle(), requests.post(d.url + "/history", json={"clear": True}, timeout=5))),
    "GET_history_after_delete": Case(exact=True, setup=lambda d: (
        submit(d, tiny_prompt(), prompt_id="016cd0ab-4a81-49d5-aa7d-d763d597959e"), d.wait_idle(),
        requests.post(d.url + "/history", json={"delete": ["016cd0ab-4a81-49d5-aa7d-d763d597959e"]}, timeout=5))),
    "GET_history_after_restart": Case(setup=_restart_then("GET_history_after_restart"), exact=True,
                                      ignore=IDS - {"number"} | {"filename"}),
    "GET_history_all": Case(setup=_history_from("GET_history_all")),
    # recorded right after the run of POST_prompt_with_extra_pnginfo: its LoadImage node was cached
    "GET_history_by_id": Case(setup=_history_from("GET_history_max_items_2")),
    "GET_history_by_id_unknown": Case(exact=True),
    "GET_history_empty": Case(exact=True),
    "GET_history_max_items_2": Case(setup=_history_from("GET_history_max_items_2", before=2)),
    "GET_history_max_items_bad": Case(),
    "GET_history_offset": Case(setup=_history_from("GET_history_offset", before=1, after=1)),
    "POST_history_clear": Case(setup=lambda d: (submit(d, tiny_prompt()), d.wait_idle()),
                               check=lambda d, r: d.history() == {} or pytest.fail("history not cleared")),
    "POST_history_delete": Case(setup=lambda d: (
        submit(d, tiny_prompt(), prompt_id="016cd0ab-4a81-49d5-aa7d-d763d597959e"), d.wait_idle()),
        check=lambda d, r: d.history() == {} or pytest.fail("entry not deleted")),
    # --- queue control
    "GET_queue_busy": Case(setup=_busy_queue(clear=False)),
    "GET_queue_after_clear": Case(setup=_busy_queue(clear=True)),
    "POST_queue_clear": Case(),
    "POST_queue_delete_pending": Case(),
    "POST_queue_delete_running_noop": Case(),
    "POST_queue_delete_unknown": Case(),
    "POST_queue_no_body": Case(),
    "POST_interrupt_global": Case(),
    "POST_interrupt_idle_no_body": Case(),
    "POST_interrupt_prompt_id_not_running": Case(),
    "POST_free_free_memory": Case(),
    "POST_free_no_body": Case(),
    "POST_free_unload_models": Case(),
    # --- POST /prompt
    "POST_api_prefix_prompt_bad": Case(exact=True),
    "POST_prompt_bad_combo_value": Case(exact=True),
    "POST_prompt_bad_link_missing_node": Case(exact=True),
    "POST_prompt_bad_link_output_index": Case(exact=True),
    "POST_prompt_bad_link_wrong_type": Case(exact=True),
    "POST_prompt_bad_type_value": Case(exact=True),
    "POST_prompt_duplicate_prompt_id": Case(exact=True, setup=lambda d: submit(d, tiny_prompt(), prompt_id="my-own-id-0001")),
    "POST_prompt_empty_body": Case(),
    "POST_prompt_front_and_number": Case(exact=True, ignore=IDS - {"number"}, setup=_front_setup),
    "POST_prompt_invalid_json": Case(),
    "POST_prompt_loadimage_missing_file": Case(exact=True),
    "POST_prompt_missing_class_type": Case(exact=True),
    "POST_prompt_missing_required_input": Case(exact=True),
    "POST_prompt_no_outputs": Case(exact=True),
    "POST_prompt_no_prompt_key": Case(exact=True),
    "POST_prompt_origin_matching": Case(exact=True),
    "POST_prompt_origin_mismatch": Case(),
    "POST_prompt_partial_errors_still_queued": Case(exact=True),
    "POST_prompt_partial_execution_targets": Case(exact=True),
    "POST_prompt_prompt_is_list": Case(),
    "POST_prompt_unknown_class_type": Case(exact=True),
    "POST_prompt_unknown_model_file": Case(exact=True),
    "POST_prompt_valid": Case(exact=True),
    "POST_prompt_valid_custom_prompt_id": Case(exact=True),
    "POST_prompt_value_out_of_range": Case(exact=True),
    "POST_prompt_with_extra_pnginfo": Case(exact=True),
    # --- uploads
    "POST_upload_image_bad_type": Case(),
    "POST_upload_image_html_file": Case(exact=True),
    "POST_upload_image_input": Case(exact=True),
    "POST_upload_image_no_file": Case(),
    "POST_upload_image_non_image_bytes": Case(exact=True),
    "POST_upload_image_output": Case(exact=True),
    "POST_upload_image_overwrite_false_string": Case(exact=True, setup=lambda d: (
        upload(d, "rec_test.png", PNG_A), upload(d, "rec_test.png", PNG_B),
        upload(d, "rec_test.png", PNG_B, overwrite="true"))),
    "POST_upload_image_overwrite_true": Case(exact=True, setup=lambda d: upload(d, "rec_test.png", PNG_A)),
    "POST_upload_image_same_content_again": Case(exact=True, setup=lambda d: upload(d, "rec_test.png", PNG_A)),
    "POST_upload_image_same_name_different_content": Case(exact=True, setup=lambda d: upload(d, "rec_test.png", PNG_A)),
    "POST_upload_image_subfolder": Case(exact=True),
    "POST_upload_image_temp": Case(exact=True),
    "POST_upload_image_traversal_subfolder": Case(),
    "POST_upload_mask_annotated_original": Case(exact=True, setup=_upload_rec_test),
    "POST_upload_mask_original_default_type": Case(exact=True, setup=_upload_rec_test,
                                                   check=_no_new_file("mask_default_type.png")),
    "POST_upload_mask_traversal_original_ref": Case(exact=True, check=_no_new_file("mask_trav.png")),
    "POST_upload_mask_with_original_ref": Case(exact=True, setup=_upload_rec_test, check=_mask_written),
    "POST_upload_mask_without_original_ref": Case(),
    # --- /view
    "GET_view_annotated_filename": Case(setup=_upload_rec_test),
    "GET_view_bad_type": Case(setup=_upload_rec_test),
    "GET_view_channel_a": Case(setup=_mask_in_clipspace),
    "GET_view_channel_rgb": Case(setup=_mask_in_clipspace),
    "GET_view_default_type_is_output": Case(setup=lambda d: upload(d, "out_test.png", PNG_A, type="output")),
    "GET_view_empty_filename": Case(),
    "GET_view_filename_with_slash": Case(setup=lambda d: upload(d, "sub_test.png", PNG_A, subfolder="panel/tests")),
    "GET_view_html_forced_download": Case(setup=lambda d: upload(d, "page.html", PAGE)),
    "GET_view_input": Case(setup=_upload_rec_test),
    "GET_view_missing_file": Case(),
    "GET_view_no_filename": Case(),
    "GET_view_output_missing_from_output": Case(setup=_upload_rec_test),
    "GET_view_preview_bogus_format": Case(setup=_upload_rec_test),
    "GET_view_preview_jpeg50": Case(setup=_upload_rec_test),
    "GET_view_preview_on_non_image": Case(setup=lambda d: upload(d, "notes.txt", NOTES)),
    "GET_view_preview_webp90": Case(setup=_upload_rec_test),
    "GET_view_saved_output_with_workflow_chunk": Case(setup=lambda d: (
        submit(d, load("POST_prompt_with_extra_pnginfo")["request"]["json"]["prompt"],
               extra_data=load("POST_prompt_with_extra_pnginfo")["request"]["json"]["extra_data"]),
        d.wait_idle())),
    "GET_view_subfolder": Case(setup=lambda d: upload(d, "sub_test.png", PNG_A, subfolder="panel/tests")),
    "GET_view_temp": Case(setup=lambda d: upload(d, "temp_test.png", PNG_A, type="temp")),
    "GET_view_traversal_absolute": Case(),
    "GET_view_traversal_dotdot": Case(),
    "GET_view_traversal_subfolder": Case(),
    "GET_view_traversal_subfolder_abs": Case(),
    "GET_view_txt_file": Case(setup=lambda d: upload(d, "notes.txt", NOTES)),
}


# =============================================================================== HTTP tests


def test_every_recording_is_covered_or_skipped():
    names = set(all_recordings())
    assert names, f"no recordings under {HTTP_DIR}"
    neither = names - set(CASES) - set(SKIPPED)
    assert not neither, f"recordings neither covered nor skipped: {sorted(neither)}"
    stale = (set(CASES) | set(SKIPPED)) - names
    assert not stale, f"cases for recordings that do not exist: {sorted(stale)}"
    assert not set(CASES) & set(SKIPPED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_http_recording(name: str):
    rec = load(name)
    case = CASES[name]
    with ComfyDouble(**case.double_kwargs) as d:
        if case.setup:
            case.setup(d)
        response = replay_request(d, rec)
        want = rec["response"]
        problems: list[str] = []
        if response.status_code != want["status"]:
            problems.append(f"status {response.status_code} != {want['status']}: {response.text[:300]}")
        want_type = _family(want["headers"].get("Content-Type"))
        got_type = _family(response.headers.get("Content-Type"))
        if want_type != got_type:
            problems.append(f"content type {got_type} != {want_type}")
        kind = want["body_kind"]
        if kind == "empty":
            if response.content:
                problems.append(f"body should be empty, got {response.content[:80]!r}")
        elif kind.startswith("json"):
            actual = response.json()
            expected = want["body"]
            if case.unordered:  # directory listings come in file-system order
                def key(value):
                    return json.dumps(value, sort_keys=True)
                expected, actual = sorted(expected, key=key), sorted(actual, key=key)
            if kind.startswith("json (SAMPLE"):
                actual = {k: actual.get(k) for k in expected}
                assert len(response.json()) == want["node_count"]
            problems += compare(expected, actual, exact=case.exact, loose=case.loose, ignore=case.ignore)
        elif kind == "text":
            if not name.startswith("GET_internal_logs") and response.text != want["body"]:
                problems.append(f"text {response.text[:200]!r} != {want['body'][:200]!r}")
        elif kind == "binary-summary":
            problems += check_binary(want["body"], response.content)
        elif kind.startswith("html"):
            if not response.text.lower().startswith("<!doctype html"):
                problems.append("not an HTML page")
        else:  # pragma: no cover - a new body kind needs a rule here
            problems.append(f"unknown body kind {kind}")
        assert not problems, f"{name}:\n  " + "\n  ".join(problems)
        if case.check:
            case.check(d, response)


# =============================================================================== WebSocket scenarios


def check_binary_frames(log: list[dict], client: str, got: list[tuple[str, Any]]) -> None:
    want = [e for e in log if e.get("client") == client and e["kind"] == "ws_binary"]
    frames = [data for kind, data in got if kind.startswith("bin")]
    assert len(frames) == len(want)
    for rec, frame in zip(want, frames):
        event, second = struct.unpack(">II", frame[:8])
        assert event == rec["u32be_0_event_type"]
        if event == 1:
            assert second == rec["u32be_1"] == 2
            image = Image.open(io.BytesIO(frame[8:]))
            assert [image.format, image.mode, list(image.size)] == [
                rec["image"]["format"], rec["image"]["mode"], rec["image"]["size"]]
        elif event == 3:
            node = frame[8:8 + second].decode()
            assert (node, frame[8 + second:].decode()) == (rec["node_id"], rec["text"])
        elif event == 4:
            metadata = json.loads(frame[8:8 + second])
            assert set(metadata) == set(rec["metadata"])
            assert metadata["image_type"] == "image/png" and metadata["node_id"] == rec["metadata"]["node_id"]
            image = Image.open(io.BytesIO(frame[8 + second:]))
            assert list(image.size) == rec["image"]["size"]


SCENARIOS = ["ws-01", "ws-02", "ws-03", "ws-06", "ws-07", "ws-08"]


def _scenario_setup(name: str, d: ComfyDouble) -> None:
    if name == "ws-02":  # recorded right after ws-01: the cache holds that run
        prompt = next(e for e in ws_log("ws-01") if e["kind"] == "http")["request_json"]["prompt"]
        submit(d, prompt, client_id="warm-up")
        d.wait_idle()
    if name == "ws-03":
        upload(d, "broken.png", b"this is not a PNG at all")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ws_scenario(scenario: str):
    log = ws_log(scenario)
    with ComfyDouble() as d:
        _scenario_setup(scenario, d)
        clients: dict[str, WsClient] = {}
        prompt_ids: dict[str, str] = {}
        try:
            pending_flags: dict[str, dict] = {}
            for entry in log:
                if entry["kind"] == "ws_send":
                    pending_flags[entry["client"]] = entry["data"]
            for entry in log:
                kind = entry["kind"]
                if kind == "ws_connect":
                    label = entry["client"]
                    clients[label] = WsClient(d.ws_url, entry.get("client_id"), first_message=pending_flags.get(label))
                    # the greeting (and the feature_flags answer) arrive before anything else happens
                    greeting = 2 if label in pending_flags else 1
                    clients[label].wait_for(lambda m, n=greeting: len(m) >= n)
                elif kind == "http" and entry["method"] == "POST" and entry["path"] == "/prompt":
                    r = requests.post(d.url + "/prompt", json=entry["request_json"], timeout=10)
                    assert r.status_code == entry["status"]
                    d.wait_idle()
                    prompt_ids[entry["response"]["prompt_id"]] = r.json()["prompt_id"]
                elif kind == "http" and entry["method"] == "GET" and entry["path"].startswith("/history/"):
                    actual_id = prompt_ids[entry["path"].rsplit("/", 1)[1]]
                    r = requests.get(d.url + "/history/" + actual_id, timeout=10)
                    recorded = next(iter(entry["response"].values()))
                    problems = compare(recorded, r.json()[actual_id], exact=False, loose=frozenset({"traceback"}))
                    assert not problems, problems
            for label, client in clients.items():
                want = recorded_types(log, label)
                got = client.settle(len(want))
                assert [k for k, _ in got] == want, f"{scenario} client {label}"
                check_binary_frames(log, label, got)
                # lifecycle messages carry the same keys as recorded
                recorded = [e for e in log if e.get("client") == label and e["kind"] == "ws_text"]
                texts = [(k, v) for k, v in got if not k.startswith("bin")]
                for rec, (k, data) in zip(recorded, texts):
                    assert set(data) == set(rec["data"]), (k, sorted(data), sorted(rec["data"]))
        finally:
            for client in clients.values():
                client.close()
        if scenario == "ws-02":
            # the fully cached run re-sent the warm-up's filename and wrote nothing new
            executed = [data for kind, data in clients["A"].messages if kind == "executed"]
            assert executed[0]["output"]["images"][0]["filename"] == "invert_00001_.png"
            assert executed[1]["output"]["images"][0]["filename"] == "invert_again_00001_.png"
            assert sorted(os.listdir(os.path.join(d.output_dir, "panel"))) == ["invert_00001_.png", "invert_again_00001_.png"]


# =============================================================================== cloud storage


def test_cloud_storage_flags_a_leaked_api_key():
    cloud = CloudDouble(api_key="secret-key-123")
    with pytest.raises(AssertionError, match="storage"):
        with cloud:
            r = requests.post(cloud.url + "/api/upload/image", headers={"X-API-Key": "secret-key-123"},
                              files={"image": ("a.png", PNG_A, "image/png")}, timeout=10)
            assert r.status_code == 200, r.text
            name = r.json()["name"]
            view = requests.get(cloud.url + "/api/view", params={"filename": name, "type": "input"},
                                headers={"X-API-Key": "secret-key-123"}, allow_redirects=False, timeout=10)
            assert view.status_code == 302
            target = view.headers["Location"]
            # a careful client fetches the signed URL without the key: no violation
            assert requests.get(target, timeout=10).content == PNG_A
            assert cloud.storage.violations == []
            # a naive client forwards the key: the storage records it
            requests.get(target, headers={"X-API-Key": "secret-key-123"}, timeout=10)
            assert len(cloud.storage.violations) == 1
    assert cloud.storage.violations[0]["where"] == "header X-API-Key"
