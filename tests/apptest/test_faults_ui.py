"""The fault suite (hardening issue 8), UI level: the pages through AppTest against the doubles.

What a user sees when something breaks: a clear state and one plain sentence (never a
traceback), what they typed kept, and the page working again on the next run once the fault is
gone, without any other step.
"""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from components import session
from tests.doubles.comfy import ComfyDouble
from tests.helpers import page_texts as texts, unescape, workflow
from tests.fault_kit import FlakyDisk, assert_plain

from .conftest import ROOT, free_port

APP = str(ROOT / "streamlit_app.py")

pytestmark = pytest.mark.timeout(180)

PROMPT_WF = {
    "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a red fox in the snow"},
          "_meta": {"title": "Prompt"}},
    "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 255}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "fault"}},
}
PROXY_500 = ("<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head><body>"
             "<h1>Internal Server Error</h1><p>upstream crashed</p><hr><address>nginx</address></body></html>")




def sentences(at: AppTest, kind: str, where=None) -> list[str]:
    root = where if where is not None else at
    return [unescape(str(e.value)) for e in root.get(kind)]


def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert "Traceback" not in texts(at)


def upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="cp_w_gen_upload").upload(name, data, "application/json").run()
    assert_no_traceback(at)
    return at


def wait_results(at: AppTest, timeout: float = 20.0) -> AppTest:
    """Re-run (as the page's own timer does) until no job of this session is running any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()
        if not any((b.key or "").startswith("cp_w_gen_cancel_") for b in at.button):
            return at
        time.sleep(0.2)
    raise AssertionError("the job did not end in time")


def prompt_box(at: AppTest):
    [box] = [t for t in at.text_area if t.label == "Prompt"]
    return box


# ------------------------------------------------------------------------------------------------
# ComfyUI down when the app starts, then up


def test_app_starts_with_comfyui_down_then_comes_up(monkeypatch):
    from components import connection_box

    # the automatic retry's pause: this test does not wait for a clock
    monkeypatch.setattr(connection_box, "RETRY_EVERY_S", 0.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("COMFYUI_URL", url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert_no_traceback(at)
    [message] = sentences(at, "error", at.sidebar)
    assert_plain(message, problem=r"cannot reach the server", fix=r"check that comfyui is running")
    assert url in message
    assert "Not connected" in texts(at, at.main)  # a clear state on the page
    assert not any(b.key == "cp_w_gen_go" for b in at.button)  # nothing to press that cannot work

    double = ComfyDouble()
    double.port = port  # ComfyUI comes up where the panel looks for it
    double.start()
    try:
        at.run()  # the user only reloads / interacts: no Connect press
        assert_no_traceback(at)
        assert "Connected to Local ComfyUI" in texts(at, at.main), texts(at)
        assert not sentences(at, "error", at.sidebar)
        upload(at, "e.json", json.dumps(workflow("empty_save")).encode())
        at.button(key="cp_w_gen_go").click().run()
        wait_results(at)
        assert "Finished: 2 files" in texts(at)
    finally:
        double.stop()


# ------------------------------------------------------------------------------------------------
# Comfy Cloud refuses to run: 402 (credits), 429 (subscription)


@pytest.mark.parametrize("billing, problem, fix", [
    ("no_credits", r"run out of credits \(402\)", r"add credits"),
    ("inactive", r"subscription is not active \(429\)", r"renew the subscription"),
])
def test_cloud_refusal_on_generate_is_one_sentence_and_keeps_the_prompt(cloud_double, monkeypatch, billing,
                                                                        problem, fix):
    monkeypatch.setenv("COMFY_CLOUD_API_KEY", "test-key")
    monkeypatch.setenv("COMFY_CLOUD_URL", cloud_double.url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert_no_traceback(at)
    upload(at, "prompted.json", json.dumps(PROMPT_WF).encode())
    prompt_box(at).set_value("a blue fox on a red sofa").run()

    cloud_double.set_billing_state(billing)
    at.button(key="cp_w_gen_go").click().run()
    assert_no_traceback(at)
    [message] = sentences(at, "error", at.main)
    assert_plain(message, problem=problem, fix=fix)
    assert prompt_box(at).value == "a blue fox on a red sofa"  # what the user typed is still there
    posts = [r for r in cloud_double.requests if r.method == "POST" and r.path == "/api/prompt"]
    assert len(posts) == 1  # sent once, not retried
    from components import gallery_data
    [rejected] = gallery_data.ledger().search()[0]
    assert rejected.status == "rejected" and rejected.error == message  # the record is kept, with why

    cloud_double.set_billing_state("ok")  # credits added / subscription renewed
    at.button(key="cp_w_gen_go").click().run()  # the same session, the same text
    assert_no_traceback(at)
    wait_results(at)
    assert "Finished: 1 file" in texts(at)
    assert not sentences(at, "error", at.main)
    sent = [r for r in cloud_double.requests if r.method == "POST" and r.path == "/api/prompt"]
    assert len(sent) == 2
    assert {r.status for r in gallery_data.ledger().search()[0]} == {"rejected", "succeeded"}


# ------------------------------------------------------------------------------------------------
# a proxy's HTML 500 page instead of the queue


def test_queue_page_with_a_500_html_page_then_recovers(comfy_double, monkeypatch):
    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/queue.py").run()
    assert_no_traceback(at)
    assert "Nothing is running." in texts(at)

    comfy_double.fail_next("/queue", status=500, body=PROXY_500, content_type="text/html", times=10_000)
    at.run()
    assert_no_traceback(at)
    warnings = sentences(at, "warning", at.main)
    assert len(warnings) == 1, warnings
    assert "Reconnecting…" in warnings[0] and "last good look" in warnings[0]  # a clear state
    inner = warnings[0].split("Reconnecting… ", 1)[1].split(" The list below", 1)[0]
    assert_plain(inner, problem=r"internal error \(500\)", fix=r"check the server log")
    assert "nginx" not in texts(at) and "upstream crashed" not in texts(at)  # the page body is not shown

    comfy_double.clear_faults()
    at.run()  # the next run, nothing else
    assert_no_traceback(at)
    assert not sentences(at, "warning", at.main)
    assert "Nothing is running." in texts(at)
    # and the queue works: a job submitted now is listed when it has finished
    assert "No finished jobs" in texts(at)
    client = at.session_state[session.K_CLIENT]
    pid = client.queue_prompt(workflow("empty_save")).prompt_id
    deadline = time.monotonic() + 15
    while pid not in comfy_double.history():
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    at.run()
    assert_no_traceback(at)
    assert "Succeeded]" in texts(at) and "No finished jobs" not in texts(at)


# ------------------------------------------------------------------------------------------------
# the ledger's disk is full while generating


def test_ledger_disk_full_shows_a_sentence_images_still_show_and_records_are_saved_later(comfy_double, monkeypatch):
    from components import gallery_data

    monkeypatch.setattr(gallery_data, "Ledger", FlakyDisk)  # a real SQLite file on a disk that can fill up
    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert_no_traceback(at)
    ledger = gallery_data.ledger()
    assert isinstance(ledger, FlakyDisk)
    upload(at, "prompted.json", json.dumps(PROMPT_WF).encode())
    prompt_box(at).set_value("x" * 20000).run()  # a long prompt: its record needs new pages on disk

    ledger.full = True
    at.button(key="cp_w_gen_go").click().run()
    assert_no_traceback(at)
    wait_results(at)
    assert_no_traceback(at)
    assert "Finished: 1 file" in texts(at)
    assert at.get("imgs") or at.get("image"), "the image is not shown"
    assert any(b.label == "Download" for b in at.get("download_button"))
    [warning] = [w for w in sentences(at, "warning", at.sidebar) if "job records" in w]
    assert_plain(warning, problem=r"disk is full", fix=r"free some space")
    run = at.session_state[session.K_GEN_RUNS][-1]
    assert ledger.get(run["prompt_id"]) is None and ledger.waiting >= 2  # waiting in memory, not lost

    ledger.full = False  # space was freed
    at.run()  # the next run, nothing else
    assert_no_traceback(at)
    assert not [w for w in sentences(at, "warning", at.sidebar) if "job records" in w]
    rec = ledger.get(run["prompt_id"])
    assert rec is not None and rec.status == "succeeded" and len(rec.outputs) == 1
    assert rec.params.get("Prompt") == "x" * 20000 or "x" * 20000 in json.dumps(rec.api)
    at.switch_page("pages/gallery.py").run()
    assert_no_traceback(at)
    assert not sentences(at, "warning", at.main)
