"""Parsers and plain-sentence errors, checked against the real 0.3.75 recordings."""

from __future__ import annotations

import pytest

from comfypanel import errors as E
from comfypanel.types import (
    HistoryEntry,
    QueueItem,
    SystemStats,
    normalise_cloud_state,
    normalise_jobs_api_status,
    output_files,
)
from tests.helpers import recording, ws_log

VALIDATION_SAMPLES = {
    # recording -> (error.type, per-node error types in order, a phrase of the first sentence)
    "POST_prompt_missing_required_input": ("prompt_outputs_failed_validation", ["required_input_missing"], "needs a value"),
    "POST_prompt_bad_link_missing_node": ("prompt_outputs_failed_validation", ["exception_during_validation"], "could not be checked"),
    "POST_prompt_bad_link_output_index": ("prompt_outputs_failed_validation", ["exception_during_validation"], "could not be checked"),
    "POST_prompt_bad_link_wrong_type": ("prompt_outputs_failed_validation", ["return_type_mismatch"], "MASK output but needs IMAGE"),
    "POST_prompt_value_out_of_range": ("prompt_outputs_failed_validation", ["value_smaller_than_min", "value_bigger_than_max"], "must be at least 1"),
    "POST_prompt_bad_type_value": ("prompt_outputs_failed_validation", ["invalid_input_type"], "must be a INT value"),
    "POST_prompt_bad_combo_value": ("prompt_outputs_failed_validation", ["value_not_in_list"], "“magic” is not available"),
    "POST_prompt_unknown_model_file": ("prompt_outputs_failed_validation", ["value_not_in_list"], "is the model installed"),
    "POST_prompt_loadimage_missing_file": ("prompt_outputs_failed_validation", ["custom_validation_failed"], "“nope.png” is not on the server"),
    "POST_prompt_unknown_class_type": ("invalid_prompt", [], "“NoSuchNode”"),
    "POST_prompt_missing_class_type": ("invalid_prompt", [], "API format"),
    "POST_prompt_no_outputs": ("prompt_no_outputs", [], "no output node"),
    "POST_prompt_no_prompt_key": ("no_prompt", [], "no workflow"),
}


@pytest.mark.parametrize("name", sorted(VALIDATION_SAMPLES))
def test_every_recorded_rejection_becomes_plain_sentences(name):
    rec = recording(name)
    body = rec["response"]["body"]
    prompt = (rec["request"].get("json") or {}).get("prompt")
    err = E.PromptRejected.from_response(body, status=rec["response"]["status"], prompt=prompt)
    etype, node_types, phrase = VALIDATION_SAMPLES[name]
    assert err.error_type == etype
    assert [n.type for n in err.node_errors] == node_types
    assert phrase in err.user_message
    for n in err.node_errors:
        assert n.node_id in body["node_errors"]
        assert n.class_type == body["node_errors"][n.node_id]["class_type"]
        assert "Traceback" not in n.message and "\n" not in n.message
        assert n.message.endswith((".", ")", "?)."))
    assert "Traceback" not in err.user_message


def test_node_errors_carry_input_names_and_titles():
    rec = recording("POST_prompt_value_out_of_range")
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {}, "_meta": {"title": "Canvas"}}}
    err = E.PromptRejected.from_response(rec["response"]["body"], prompt=prompt)
    assert [(n.node_id, n.input_name, n.received_value) for n in err.node_errors] == [("1", "width", 0), ("1", "height", 99999)]
    assert err.node_errors[0].message.startswith("Canvas (node 1): “width” is 0")
    assert "at most 16384" in err.node_errors[1].message
    assert "1 more problem" in err.user_message


def test_error_messages_never_contain_credentials():
    e = E.CannotConnect("http://user:pw@host:8188/api/x?token=SECRET")
    assert "SECRET" not in str(e) and "pw" not in str(e) and "http://host:8188/api/x" in str(e)


def test_system_stats_parse():
    s = SystemStats.parse(recording("GET_system_stats")["response"]["body"])
    assert s.comfyui_version == "0.3.75" and s.frontend_version == "1.32.9"
    assert s.devices[0].type == "cpu" and s.ram_total > s.ram_free > 0
    with pytest.raises(E.BadResponse):
        SystemStats.parse({"nope": 1})


def test_queue_items_local_layout_and_secret_stripping():
    body = recording("GET_queue_busy")["response"]["body"]
    running = [QueueItem.parse_local(i) for i in body["queue_running"]]
    pending = [QueueItem.parse_local(i) for i in body["queue_pending"]]
    assert running and pending
    assert all(isinstance(i.outputs_to_execute, tuple) for i in running + pending)
    item = QueueItem.parse_local([3, "p", {}, {"client_id": "c", "api_key_comfy_org": "K", "create_time": 5}, ["9"]])
    assert item.client_id == "c" and item.create_time == 5 and "api_key_comfy_org" not in item.extra_data
    cloud = QueueItem.parse_cloud([1, "p2", {"1": {}}, ["1"], {"create_time": 7}])
    assert (cloud.prompt_id, cloud.number, cloud.outputs_to_execute, cloud.create_time) == ("p2", 1, ("1",), 7)


def test_history_success_failure_interrupt_told_apart():
    body = recording("GET_history_by_id")["response"]["body"]
    (pid, entry), = body.items()
    h = HistoryEntry.parse(pid, entry)
    assert h.status == "succeeded" and h.files and h.files[0].type == "temp" and h.duration_s is not None
    seen = set()
    for name in ("ws-03", "ws-04"):
        for line in ws_log(name):
            if line["kind"] == "http" and line["path"].startswith("/history/") and isinstance(line.get("response"), dict):
                for pid, entry in line["response"].items():
                    h = HistoryEntry.parse(pid, entry)
                    seen.add(h.status)
                    assert entry["status"]["status_str"] in ("error", "success")
                    if h.status == "failed":
                        assert h.error and h.error.exception_type and "failed:" in h.error.user_message
                        assert "Traceback" not in h.error.user_message
                    if h.status == "interrupted":
                        assert entry["status"]["status_str"] == "error"  # same as a failure on the wire
    assert {"failed", "interrupted"} <= seen


def test_output_files_any_key():
    outputs = {
        "3": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
        "4": {"gifs": [{"filename": "b.mp4", "subfolder": "vid", "type": "output"}], "animated": [True]},
        "5": {"audio": [{"filename": "c.flac", "subfolder": "", "type": "output"}], "text": ["hello"]},
    }
    files = output_files(outputs)
    assert [(f.node_id, f.kind, f.filename) for f in files] == [("3", "images", "a.png"), ("4", "gifs", "b.mp4"), ("5", "audio", "c.flac")]
    assert files[1].animated and files[1].annotated == "vid/b.mp4 [output]"


@pytest.mark.parametrize(
    "raw, state",
    [("success", "succeeded"), ("error", "failed"), ("non_retryable_error", "failed"), ("lost", "lost"),
     ("cancelled", "cancelled"), ("submitted", "queued"), ("queued_limited", "queued"), ("queued_waiting", "queued"),
     ("allocated", "running"), ("preparing", "running"), ("pending_execution", "running"), ("executing", "running"),
     ("executed", "running"), ("cancel_requested", "running"), ("erroring", "running"), ("brand_new_state", "running")],
)
def test_cloud_raw_states(raw, state):
    assert normalise_cloud_state(raw) == state


def test_jobs_api_statuses():
    assert [normalise_jobs_api_status(s) for s in ("pending", "in_progress", "completed", "failed", "cancelled")] == [
        "queued", "running", "succeeded", "failed", "cancelled"]
