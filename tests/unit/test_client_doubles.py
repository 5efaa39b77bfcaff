"""ComfyClient + listener + follow() against the doubles: what a real 0.3.75 server cannot show here
(Comfy Cloud, newer server versions, faults)."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest
from PIL import Image

from comfypanel import errors as E
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.jobs import follow, submit_and_wait
from comfypanel.types import FileRef
from tests.helpers import workflow

KEY = "test-key"


@pytest.fixture
def local(comfy_double):
    c = ComfyClient(Connection.local(comfy_double.url))
    lst = c.listener()
    lst.start()
    assert lst.wait_connected(5)
    yield comfy_double, c, lst
    lst.stop()
    c.close()


@pytest.fixture
def cloud(cloud_double):
    c = ComfyClient(Connection.cloud(KEY, cloud_double.url))
    lst = c.listener()
    lst.start()
    assert lst.wait_connected(5)
    yield cloud_double, c, lst
    lst.stop()
    c.close()


# ----------------------------------------------------------------------------------------------
# Comfy Cloud


def test_cloud_job_runs_outputs_come_through_signed_urls_without_key(cloud, caplog):
    double, client, lst = cloud
    caplog.set_level(logging.DEBUG)
    caps = client.capabilities()
    assert caps.is_cloud and caps.jobs_api and not caps.targeted_interrupt
    states = []
    r = submit_and_wait(client, workflow("empty_save"), listener=lst, timeout=30, on_update=lambda p: states.append(p.state))
    assert r.ok and len(r.files) == 2
    data = client.view(r.files[0])  # 302 → storage; the double fails the test if the key is sent there
    assert Image.open(io.BytesIO(data)).size == (256, 192)
    assert lst.snapshot(r.prompt_id).state == "succeeded"
    raw = double.job_states(r.prompt_id)
    assert raw[0] == "submitted" and raw[-1] == "success"
    assert KEY not in caplog.text  # neither the WS URL's token= nor the header was logged


def test_cloud_ws_ignores_client_id_and_listener_filters_by_prompt(cloud_double):
    # two clients of the same account: both sockets get every message; each tracks only its own job
    a = ComfyClient(Connection.cloud(KEY, cloud_double.url))
    b = ComfyClient(Connection.cloud(KEY, cloud_double.url))
    la, lb = a.listener(), b.listener()
    la.start(), lb.start()
    try:
        assert la.wait_connected(5) and lb.wait_connected(5)
        ra = submit_and_wait(a, workflow("empty_save"), listener=la, timeout=30)
        rb = submit_and_wait(b, workflow("chain_preview"), listener=lb, timeout=30)
        assert ra.ok and rb.ok
        assert la.snapshot(rb.prompt_id) is None and lb.snapshot(ra.prompt_id) is None
    finally:
        la.stop(), lb.stop()


def test_cloud_queue_layout_interrupt_all_and_delete(cloud):
    double, client, lst = cloud
    double.script(per_node_delay=0.4)
    ids = [client.queue_prompt(workflow("empty_save")).prompt_id for _ in range(3)]
    deadline = time.monotonic() + 10
    while not client.queue().running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    q = client.queue()
    assert q.running[0].prompt_id == ids[0] and [i.prompt_id for i in q.pending] == ids[1:]
    assert q.running[0].outputs_to_execute == ("2",)
    client.delete_from_queue([ids[2]])
    client.interrupt(ids[0])  # Cloud: stops every running job of the account, whatever the id
    r0 = follow(client, ids[0], listener=lst, timeout=20)
    assert r0.state in ("cancelled", "failed", "interrupted")
    assert follow(client, ids[1], listener=lst, timeout=20).ok
    assert follow(client, ids[2], timeout=10, poll_interval=0.1).state in ("cancelled", "lost")


@pytest.mark.parametrize(
    "state, error, phrase",
    [("no_credits", E.InsufficientCredits, "out of credits"), ("inactive", E.SubscriptionInactive, "not active")],
)
def test_cloud_billing_errors(cloud_double, state, error, phrase):
    client = ComfyClient(Connection.cloud(KEY, cloud_double.url))
    cloud_double.set_billing_state(state)
    with pytest.raises(error) as exc:
        client.queue_prompt(workflow("empty_save"))
    assert phrase in exc.value.user_message and KEY not in exc.value.user_message


def test_cloud_wrong_key_and_503(cloud_double):
    with pytest.raises(E.AuthFailed):
        ComfyClient(Connection.cloud("wrong-key", cloud_double.url)).queue()
    client = ComfyClient(Connection.cloud(KEY, cloud_double.url))
    cloud_double.fail_next("/api/prompt", status=503)
    with pytest.raises(E.ServerError, match="temporarily unavailable"):
        client.queue_prompt(workflow("empty_save"))


def test_cloud_failure_and_unsupported_routes(cloud):
    double, client, lst = cloud
    double.script(fail_at_node="1", exception_type="OOMError", exception_message="out of memory")
    r = submit_and_wait(client, workflow("empty_save"), listener=lst, timeout=30)
    assert r.state == "failed" and "out of memory" in r.user_message
    for call in (client.embeddings, client.free, client.logs):
        with pytest.raises(E.NotSupported):
            call()


def test_cloud_uploads_are_content_addressed(cloud):
    double, client, _ = cloud
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(buf, "PNG")
    ref = client.upload_image(buf.getvalue(), "mine.png", subfolder="ignored", overwrite=True)
    assert ref.type == "input" and ref.filename != ""
    mask = client.upload_mask(buf.getvalue(), "mask.png", ref, verify=False)
    assert mask.filename


# ----------------------------------------------------------------------------------------------
# newer local servers


def test_newer_server_jobs_api_and_cancel(comfy_double_new):
    client = ComfyClient(Connection.local(comfy_double_new.url))
    caps = client.capabilities()
    assert caps.version == (0, 26, 0) and caps.jobs_api and caps.jobs_cancel
    comfy_double_new.script(per_node_delay=0.5)
    pid = client.queue_prompt(workflow("empty_save")).prompt_id
    assert pid == pid.lower() and len(pid) == 36  # a canonical UUID: newer servers refuse others
    client.cancel(pid)
    assert follow(client, pid, timeout=10, poll_interval=0.1).state in ("interrupted", "lost", "cancelled")
    done = submit_and_wait(ComfyClient(Connection.local(comfy_double_new.url)), workflow("empty_save"), timeout=20,
                           poll_interval=0.1)
    assert done.ok
    assert any(j.prompt_id == done.prompt_id and j.state == "succeeded" for j in client.jobs())


def test_old_server_has_no_jobs_list(local):
    _, client, _ = local
    with pytest.raises(E.NotSupported):
        client.jobs()


# ----------------------------------------------------------------------------------------------
# faults


def test_ws_dropped_mid_run_job_still_completes(local):
    double, client, lst = local
    double.script(per_node_delay=0.3)
    pid = client.queue_prompt(workflow("empty_save")).prompt_id
    double.drop_websockets_at(pid, after_messages=3)
    r = follow(client, pid, listener=lst, timeout=30)
    assert r.ok
    deadline = time.monotonic() + 5
    while lst.reconnects < 1:
        assert time.monotonic() < deadline, "the listener did not reconnect"
        time.sleep(0.05)


def test_server_restart_mid_run_reports_lost_not_forever(local):
    double, client, lst = local
    double.script(per_node_delay=1.0)
    pid = client.queue_prompt(workflow("empty_save")).prompt_id
    updates = []
    timer = threading.Timer(0.3, lambda: double.restart(downtime=0.5))
    timer.start()
    r = follow(client, pid, listener=lst, timeout=30, poll_interval=0.1, on_update=updates.append)
    timer.join()
    assert r.state == "lost" and "restarted" in r.user_message


def test_slow_server_times_out_with_plain_sentence(comfy_double):
    client = ComfyClient(Connection.local(comfy_double.url))
    client.transport.timeout = (2.0, 0.3)
    comfy_double.set_slow(1.0, paths=["/api/queue"])
    before = len([r for r in comfy_double.requests if r.path == "/api/queue"])
    with pytest.raises(E.RequestTimedOut) as exc:
        client.queue()
    assert "did not answer" in exc.value.user_message
    tries = len([r for r in comfy_double.requests if r.path == "/api/queue"]) - before
    assert tries == 2  # a read timeout is retried once, not forever (no clock in this test)


def test_500_text_and_html_bodies(comfy_double):
    client = ComfyClient(Connection.local(comfy_double.url))
    comfy_double.fail_next("/api/prompt", status=500)
    with pytest.raises(E.ServerError) as exc:
        client.queue_prompt(workflow("empty_save"))
    assert "trouble" not in str(exc.value)
    comfy_double.serve_html_instead(True)
    with pytest.raises(E.BadResponse):
        client.system_stats()


def test_malformed_ws_frames_are_skipped(local):
    double, client, lst = local
    for raw in ("{not json", '{"type": 5}', '{"type": "status", "data": []}', b"\x00\x00", b"\x00\x00\x00\x04\x00\x00\xff\xff",
                '{"type": "brand_new_kind", "data": {"x": 1}}', b"\x00\x00\x00\x09" + b"z" * 20):
        double.send_raw_ws(raw)
    r = submit_and_wait(client, workflow("empty_save"), listener=lst, timeout=20)
    assert r.ok and lst.connected
    assert any(e.type == "unknown" for e in lst.recent_events())


def test_unreachable_wrong_port_and_huge_response(comfy_double):
    with pytest.raises(E.CannotConnect):
        ComfyClient(Connection.local("http://127.0.0.1:9")).system_stats()
    client = ComfyClient(Connection.local(comfy_double.url))
    client.transport.max_bytes = 10_000
    with pytest.raises(E.ResponseTooLarge):
        client.object_info()


def test_bearer_token_proxy(make_comfy_double):
    double = make_comfy_double(token="s3cret")
    with pytest.raises(E.AuthFailed):
        ComfyClient(Connection.local(double.url, token="wrong")).queue()
    ok = ComfyClient(Connection.local(double.url, token="s3cret"))
    lst = ok.listener()
    lst.start()
    try:
        assert lst.wait_connected(5)
        assert submit_and_wait(ok, workflow("empty_save"), listener=lst, timeout=20).ok
    finally:
        lst.stop()


def test_view_errors_and_userdata_workflows(local):
    double, client, _ = local
    with pytest.raises(E.NotFound, match="not on the server"):
        client.view(FileRef("missing.png"))
    with pytest.raises(E.InvalidInput):
        client.view("../../etc/passwd")
    assert client.list_workflows() == []
    path = client.save_workflow("team/portrait", {"1": {"class_type": "EmptyImage", "inputs": {}}})
    assert path == "workflows/team/portrait.json"
    assert client.list_workflows() == ["team/portrait.json"]
    assert client.get_workflow("team/portrait.json")["1"]["class_type"] == "EmptyImage"
    with pytest.raises(E.InvalidInput, match="already exists"):
        client.save_workflow("team/portrait", {}, overwrite=False)
    client.delete_workflow("team/portrait.json")
    assert client.list_workflows() == []


def test_logs_and_partner_key_never_echoed(make_comfy_double):
    double = make_comfy_double()
    client = ComfyClient(Connection.local(double.url, partner_key="partner-SECRET"))
    lst = client.listener()
    lst.start()
    try:
        assert lst.wait_connected(5)
        double.script(per_node_delay=0.3)
        pid = client.queue_prompt(workflow("empty_save")).prompt_id
        item = client.queue().running + client.queue().pending
        assert item and all("api_key_comfy_org" not in i.extra_data for i in item)
        assert follow(client, pid, listener=lst, timeout=20).ok
        assert "partner-SECRET" not in repr(client.history_entry(pid))
        assert isinstance(client.logs(), str) and client.logs_raw()
        client.subscribe_logs(True)
    finally:
        lst.stop()
