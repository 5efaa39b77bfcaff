"""The Queue page through AppTest with the doubles: every state, every action, Cloud wording."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from streamlit.testing.v1 import AppTest

from comfypanel.holdqueue import HoldQueue, default_path
from components import session
from tests.helpers import page_texts, unescape

from .conftest import ROOT

APP = ROOT / "streamlit_app.py"
QUEUE = "pages/queue.py"
W = session.queue_widget

pytestmark = pytest.mark.timeout(120)


def wf(color: int = 0, *, blur: bool = True) -> dict:
    g = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}}}
    if blur:
        g["2"] = {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}}
        g["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    else:
        g["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    return g


texts = page_texts


def open_queue(url: str | None = None, *, secrets: dict | None = None, monkeypatch=None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    if secrets:
        at.secrets = secrets
    at.run()
    at.switch_page(QUEUE).run()
    assert not at.exception, at.exception
    return at


def client_of(at: AppTest):
    return at.session_state[session.K_CLIENT]


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def local(monkeypatch, comfy_double):
    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    return comfy_double


def test_not_connected_shows_how_to_connect(closed_url, monkeypatch):
    at = open_queue()
    assert "Not connected" in texts(at)
    assert not at.main.button  # no controls without a server


def test_idle_server(local):
    at = open_queue()
    t = texts(at)
    assert "Nothing is running." in t and "Nothing is waiting." in t
    assert "No finished jobs" in t
    badge = [unescape(m.value) for m in at.sidebar.get("markdown") if "Queue:" in m.value]
    assert badge and "0 running · 0 waiting" in badge[0]
    assert at.button(key=W("interrupt")).disabled and at.button(key=W("clear")).disabled


def test_running_pending_submitters_cancel_and_interrupt(local):
    local.script(class_delays={"ImageBlur": 3.0})
    at = open_queue()
    mine = client_of(at).queue_prompt(wf(1)).prompt_id
    # a prompt from outside the panel (no client_id), and one from another client
    outside = requests.post(local.url + "/prompt", json={"prompt": wf(2)}).json()["prompt_id"]
    other = requests.post(local.url + "/prompt", json={"prompt": wf(3), "client_id": "feedbeef-0000"}).json()["prompt_id"]
    at.run()
    t = texts(at)
    assert "From this session" in t
    assert "outside the panel" in t and "another client (feedbeef…)" in t
    assert "**1.** 3 nodes" in t and "**2.** 3 nodes" in t  # pending in order, with positions
    at.run()  # the badge shows what the monitor saw before this run (at most a second old)
    badge = [unescape(m.value) for m in at.sidebar.get("markdown") if "Queue:" in m.value]
    assert "1 running · 2 waiting" in badge[0]
    # cancel a pending job
    at.button(key=W(f"cancel_{outside}")).click().run()
    assert "removed from the queue" in texts(at)
    assert f"cancel_{outside}" not in str([b.key for b in at.button])
    assert "Cancelled]" in texts(at)  # the badge of the finished entry
    # interrupt the running one, through the confirmation dialog
    at.button(key=W("interrupt")).click().run()
    assert "next node boundary" in texts(at)
    at.button(key=W("interrupt_yes")).click().run()
    assert "Interrupt sent" in texts(at)
    wait_for(lambda: mine in local.history())
    at.run()
    assert "Interrupted]" in texts(at)
    assert other in str([c.key for c in at.get("flex_container")]) or "another client" in texts(at)


def test_interrupt_race_job_finished_meanwhile(local):
    local.script(class_delays={"ImageBlur": 0.8})
    at = open_queue()
    pid = client_of(at).queue_prompt(wf(4)).prompt_id
    at.run()
    at.button(key=W("interrupt")).click().run()  # the dialog opens for the running job...
    wait_for(lambda: pid in local.history())  # ...and the job finishes before the user confirms
    at.button(key=W("interrupt_yes")).click().run()
    t = texts(at)
    assert "already finished (succeeded) before the interrupt was sent; nothing was stopped" in t


def test_clear_pending_with_confirmation(local):
    local.script(class_delays={"ImageBlur": 2.0})
    at = open_queue()
    c = client_of(at)
    ids = [c.queue_prompt(wf(10 + n)).prompt_id for n in range(3)]
    at.run()
    at.button(key=W("clear")).click().run()
    assert "2 pending job(s) will be removed" in texts(at)
    at.button(key=W("clear_yes")).click().run()
    assert "Removed 2 pending job(s)" in texts(at)
    state = c.queue()
    assert [i.prompt_id for i in state.running] == [ids[0]] and not state.pending
    c.interrupt()


def test_failure_toast_for_this_sessions_job(local):
    local.script(fail_at_node="ImageBlur", exception_message="Blur exploded")
    at = open_queue()
    pid = client_of(at).queue_prompt(wf(20)).prompt_id
    wait_for(lambda: pid in local.history())
    at.run()
    toasts = [unescape(t.value) for t in at.toast]
    assert any("failed" in t and "Blur exploded" in t for t in toasts), toasts
    assert "Blur exploded" in texts(at)  # the reason in the finished list
    at.run()
    assert not any("Blur exploded" in unescape(t.value) for t in at.toast)  # toasted once


def test_other_clients_jobs_do_not_toast(local):
    at = open_queue()
    pid = requests.post(local.url + "/prompt", json={"prompt": wf(21)}).json()["prompt_id"]
    wait_for(lambda: pid in local.history())
    at.run()
    assert not at.toast


def test_restart_marks_running_job_lost(local):
    local.script(class_delays={"ImageBlur": 5.0})
    at = open_queue()
    pid = client_of(at).queue_prompt(wf(30)).prompt_id
    at.run()
    assert "From this session" in texts(at)
    local.restart()
    at.run()
    t = texts(at)
    assert "Nothing is running." in t
    assert "Lost]" in t
    assert "server restarted" in t or "left the queue" in t
    assert pid not in local.history()


def test_unreachable_server_says_reconnecting(local):
    local.script(class_delays={"ImageBlur": 5.0})
    at = open_queue()
    client_of(at).queue_prompt(wf(31))
    at.run()
    local.stop()
    at.run()
    assert "Reconnecting…" in texts(at)


def test_hold_queue_pause_reorder_priority_remove_resume(local):
    local.script(class_delays={"ImageBlur": 0.3})
    at = open_queue()
    sid = client_of(at).connection.server_id()
    h = HoldQueue(default_path())
    h.pause(sid)
    label = at.session_state[session.K_SESSION_LABEL] if session.K_SESSION_LABEL in at.session_state else None
    jobs = [h.add(sid, wf(40 + n), workflow_name=f"job-{n}", submitter=label or "someone") for n in range(3)]
    at.run()
    assert at.button(key=W("pause")).label == "Resume hold queue"
    t = texts(at)
    assert "Held in the panel — paused" in t
    order = lambda: [j.workflow_name for j in h.held(sid)]
    assert order() == ["job-0", "job-1", "job-2"]
    assert "**1.** job-0" in t and "**3.** job-2" in t
    at.run()
    at.run()  # the badge shows what the monitor saw before this run (at most a second old)
    badge = [unescape(m.value) for m in at.sidebar.get("markdown") if "Queue:" in m.value]
    assert "3 held" in badge[0]
    at.button(key=W(f"down_{jobs[0].id}")).click().run()
    assert order() == ["job-1", "job-0", "job-2"]
    at.button(key=W(f"up_{jobs[2].id}")).click().run()
    assert order() == ["job-1", "job-2", "job-0"]
    at.number_input(key=W(f"prio_{jobs[1].id}")).set_value(2).run()
    assert order() == ["job-1", "job-2", "job-0"]
    at.button(key=W(f"up_{jobs[2].id}")).click().run()  # crossing into priority 2 adopts it
    assert order() == ["job-2", "job-1", "job-0"]
    assert at.number_input(key=W(f"prio_{jobs[2].id}")).value == 2
    at.number_input(key=W(f"prio_{jobs[2].id}")).set_value(0).run()
    at.number_input(key=W(f"prio_{jobs[1].id}")).set_value(0).run()
    assert order() == ["job-2", "job-1", "job-0"]
    at.number_input(key=W(f"prio_{jobs[0].id}")).set_value(5).run()
    assert order() == ["job-0", "job-2", "job-1"]
    at.button(key=W(f"remove_{jobs[1].id}")).click().run()
    assert order() == ["job-0", "job-2"]
    at.button(key=W("pause")).click().run()  # resume: the feeder sends job-0 at once
    assert not h.is_paused(sid)
    sent = h.get(jobs[0].id)
    assert sent.state == "sent" and sent.prompt_id
    wait_for(lambda: h.get(jobs[2].id).state == "sent", timeout=15)  # the thread feeds the next one
    wait_for(lambda: h.get(jobs[2].id).prompt_id in local.history(), timeout=15)
    at.run()
    assert "job-0" in texts(at) and "job-2" in texts(at)


def test_hold_a_workflow_from_the_page(local):
    at = open_queue()
    h = HoldQueue(default_path())
    sid = client_of(at).connection.server_id()
    h.pause(sid)
    at.run()
    at.file_uploader(key=W("upload")).set_value(("blur.json", json.dumps(wf(50)).encode(), "application/json")).run()
    at.text_input(key=W("upload_name")).set_value("My blur").run()
    at.button(key=W("hold")).click().run()
    assert [j.workflow_name for j in h.held(sid)] == ["My blur"]
    assert "My blur" in texts(at)
    at.file_uploader(key=W("upload")).set_value(("x.json", b"not json", "application/json")).run()
    at.button(key=W("hold")).click().run()
    assert "not JSON" in texts(at)


def test_cloud_wording(cloud_double):
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.secrets = {"comfyui": {"cloud_url": cloud_double.url}}
    at.run()
    at.segmented_control(key=session.widget_key("mode")).set_value("cloud").run()
    at.text_input(key=session.widget_key("api_key")).set_value(cloud_double.api_key)
    at.button(key=session.W_CONNECT).click().run()
    cloud_double.script(per_node_delay=2.0)
    c = client_of(at)
    c.queue_prompt(wf(60))
    c.queue_prompt(wf(61))
    at.switch_page(QUEUE).run()
    assert not at.exception, at.exception
    t = texts(at)
    assert "stops **all** running jobs of this account" in t
    assert "only touches pending ones" in t
    at.button(key=W("interrupt")).click().run()
    assert "stops **all** running jobs of this account" in "\n".join(unescape(w.value) for w in at.warning)
    at.button(key=W("interrupt_yes")).click().run()
    assert "every running job of this account" in texts(at)


def test_sessions_release_their_threads(local):
    from streamlit.runtime.caching.cache_resource_api import clear_session_cache

    baseline = threading.active_count()
    for _ in range(8):
        at = open_queue()
        assert any(t.name.startswith("comfy-queue-") for t in threading.enumerate())
        clear_session_cache("test session id")  # what the runtime does when a browser session ends
    wait_for(lambda: threading.active_count() <= baseline, timeout=10)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("comfy-queue-", "comfy-ws-"))]


def test_dropped_socket_is_noticed_and_reconciled(local):
    local.script(class_delays={"ImageBlur": 1.0})
    at = open_queue()
    client_of(at).queue_prompt(wf(70))
    at.run()
    local.drop_websockets()
    time.sleep(1.5)  # the listener reconnects (backoff 0.5 s) and the monitor notices it
    at.run()
    assert "Reconnected at" in texts(at) and "re-read from the server" in texts(at)


def test_refused_held_job_is_shown_and_dismissed(local):
    at = open_queue()
    sid = client_of(at).connection.server_id()
    h = HoldQueue(default_path())
    job = h.add(sid, {"1": {"class_type": "NoSuchNode", "inputs": {}}}, workflow_name="broken")
    wait_for(lambda: h.get(job.id).state == "failed")
    at.run()
    assert "refused]" in texts(at) and "broken" in texts(at)
    at.button(key=W(f"dismiss_{job.id}")).click().run()
    assert "broken" not in texts(at)


def test_other_peoples_jobs_need_admin_rights_when_the_operator_set_them(local, tmp_path):
    from comfypanel import admin as gate

    secrets = {"comfyui": {"admin": {"password_hash": gate.hash_password("pw", n=2**10)}}}
    local.script(class_delays={"ImageBlur": 3.0})
    at = open_queue(secrets=secrets)
    other = requests.post(local.url + "/prompt", json={"prompt": wf(30), "client_id": "feedbeef-0000"}).json()["prompt_id"]
    requests.post(local.url + "/prompt", json={"prompt": wf(31), "client_id": "feedbeef-0000"})
    wait_for(lambda: other in {i.prompt_id for i in client_of(at).queue().running})
    at.run()
    at.run()
    # someone else's running and pending jobs: not for a non-admin session
    assert at.button(key=W("interrupt")).disabled and at.button(key=W("clear")).disabled
    assert "needs admin rights" in (at.button(key=W("interrupt")).help or "")
    mine = client_of(at).queue_prompt(wf(32)).prompt_id
    at.run()
    assert at.button(key=W(f"cancel_{mine}")).disabled is False  # one's own job can always be cancelled
    client_of(at).interrupt()  # (clean up: the double's running job)
    wait_for(lambda: not client_of(at).queue().running or client_of(at).queue().running[0].prompt_id != other)


def test_without_admin_rights_configured_anyone_may_clear_and_it_is_audited(local, tmp_path):
    from comfypanel.audit import AuditLog

    local.script(class_delays={"ImageBlur": 3.0})
    at = open_queue()  # no [comfyui.admin]: one person's panel
    ids = [requests.post(local.url + "/prompt", json={"prompt": wf(40 + n), "client_id": "feedbeef-0000"}).json()["prompt_id"]
           for n in range(2)]
    wait_for(lambda: [i.prompt_id for i in client_of(at).queue().pending] == [ids[1]])
    at.run()
    at.run()
    assert not at.button(key=W("clear")).disabled and not at.button(key=W("interrupt")).disabled
    at.button(key=W("clear")).click().run()
    at.button(key=W("clear_yes")).click().run()
    assert "Removed 1 pending job(s)" in texts(at)
    rows = AuditLog(tmp_path / "panel-data" / "audit.sqlite3").query()
    assert [(r.action, r.result, r.params) for r in rows] == [("queue_clear_pending", "ok", {"jobs": 1})]
    client_of(at).interrupt()


def test_a_long_queue_lists_twenty_cards_plus_ones_own(local, monkeypatch):
    from components import queue_view

    monkeypatch.setattr(queue_view, "SHOWN_WAITING", 3)  # the same rule as 20, with fewer jobs
    local.script(class_delays={"ImageBlur": 3.0})
    at = open_queue()
    others = [requests.post(local.url + "/prompt", json={"prompt": wf(50 + n), "client_id": "feedbeef-0000"}).json()["prompt_id"]
              for n in range(6)]
    mine = client_of(at).queue_prompt(wf(60)).prompt_id
    wait_for(lambda: len(client_of(at).queue().pending) == 6)
    at.run()
    keys = str([c.key for c in at.get("flex_container")])
    shown = [pid for pid in others[1:] if f"pending_{pid}" in keys]  # others[0] runs
    assert shown == others[1:4]  # the first three waiting cards
    assert f"pending_{mine}" in keys  # and one's own, further down, to cancel it
    assert "… and 2 more waiting job(s) of other people, not listed here." in texts(at)
    client_of(at).interrupt()
    client_of(at).clear_queue()
