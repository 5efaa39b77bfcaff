"""Behaviour of the doubles beyond single requests: interrupts, queue operations, reconnects and live
logs replayed against ws-04/05/09/10 (message for message), the script and fault-injection API, the
newer-server switches (UUID prompt ids, jobs API) and the Comfy Cloud double."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid

import pytest
import requests
import websocket
from PIL import Image

from tests.doubles._recordings import recorded_types, workflow, ws_log
from tests.doubles.cloud import CloudDouble, normalise_status
from tests.doubles.comfy import ComfyDouble
from tests.doubles.wsclient import WsClient


def submit(d, prompt, **extra):
    r = requests.post(d.url + "/prompt", json={"prompt": prompt, **extra}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["prompt_id"]


def types_of(client: WsClient, count: int) -> list[str]:
    return [kind for kind, _ in client.settle(count)]


def collapse_ticks(kinds: list[str]) -> list[str]:
    """Replace runs of (progress_state, progress) pairs by one "tick": how many ticks pass before an
    interrupt lands depends on timing, the order around them does not."""
    out: list[str] = []
    i = 0
    while i < len(kinds):
        if kinds[i:i + 2] == ["progress_state", "progress"]:
            if not out or out[-1] != "tick":
                out.append("tick")
            i += 2
        else:
            out.append(kinds[i])
            i += 1
    return out


# =============================================================================== recorded scenarios


def test_ws04_interrupts_land_at_next_tick_and_next_node():
    log = ws_log("ws-04")
    with ComfyDouble() as d:
        d.script(None, class_delays={"EmptyImage": 0.3, "ImageUpscaleWithModel": 2.5, "ImageBlur": 0.4})
        with WsClient(d.ws_url, "A") as a, WsClient(d.ws_url, "B") as b:
            a.wait_for(lambda m: m)
            b.wait_for(lambda m: m)
            p1 = submit(d, workflow("upscale_progress_long_fixture"), client_id="A")
            a.wait_message("executing", node="1", prompt_id=p1)
            p2 = submit(d, workflow("slow_blur"), client_id="A")
            a.wait_message("progress", value=3, prompt_id=p1)
            requests.post(d.url + "/interrupt", json={"prompt_id": p2}, timeout=5)  # pending: no-op
            a.wait_message("progress", value=8, prompt_id=p1)
            requests.post(d.url + "/interrupt", json={"prompt_id": p1}, timeout=5)
            a.wait_message("executing", node="3", prompt_id=p2)
            requests.post(d.url + "/interrupt", timeout=5)  # global, during P2's node 3
            a.wait_message("executing", node=None, prompt_id=p2)
            want_a = recorded_types(log, "A")
            got_a = types_of(a, len(want_a) - 4)
            assert collapse_ticks(got_a) == collapse_ticks(want_a)
            ticks = [data["value"] for kind, data in a.messages if kind == "progress"]
            assert ticks[:8] == list(range(1, 9)) and len(ticks) <= 12  # landed at one of the next ticks
            assert types_of(b, len(recorded_types(log, "B"))) == recorded_types(log, "B")
            interrupted = [data for kind, data in a.messages if kind == "execution_interrupted"]
            assert [(i["node_id"], i["node_type"], sorted(i["executed"])) for i in interrupted] == [
                ("3", "ImageUpscaleWithModel", ["1", "2"]), ("4", "ImageBlur", ["1", "2", "3"])]
        for pid in (p1, p2):
            entry = d.history(pid)
            assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
            assert entry["status"]["messages"][-1][0] == "execution_interrupted"
            assert entry["outputs"] == {}


def test_ws05_queue_operations():
    log = ws_log("ws-05")
    with ComfyDouble() as d:
        d.script(None, class_delays={"EmptyImage": 0.3, "ImageBlur": 0.5})
        blur = workflow("slow_blur")
        with WsClient(d.ws_url, "A") as a:
            a.wait_for(lambda m: m)
            p1 = submit(d, blur, client_id="A")
            a.wait_message("executing", node="1", prompt_id=p1)
            blur2 = json.loads(json.dumps(blur))
            blur2["2"]["inputs"]["sigma"] = 9.5
            p2 = submit(d, blur2, client_id="A")
            blur3 = json.loads(json.dumps(blur))
            blur3["2"]["inputs"]["sigma"] = 9.0
            p3 = submit(d, blur3, client_id="A")
            a.wait_message("executing", node="2", prompt_id=p1)
            queue = requests.get(d.url + "/queue", timeout=5).json()
            assert [i[1] for i in queue["queue_running"]] == [p1]
            assert sorted(i[1] for i in queue["queue_pending"]) == sorted([p2, p3])
            requests.post(d.url + "/queue", json={"delete": [p3]}, timeout=5)
            requests.post(d.url + "/queue", json={"delete": [p1]}, timeout=5)  # running: no effect
            assert [i[1] for i in requests.get(d.url + "/queue", timeout=5).json()["queue_pending"]] == [p2]
            requests.post(d.url + "/queue", json={"clear": True}, timeout=5)
            requests.post(d.url + "/interrupt", timeout=5)
            a.wait_message("executing", node=None, prompt_id=p1)
            assert types_of(a, len(recorded_types(log, "A"))) == recorded_types(log, "A")
        assert requests.get(d.url + f"/history/{p2}", timeout=5).json() == {}
        assert requests.get(d.url + f"/history/{p3}", timeout=5).json() == {}
        assert d.history(p1)["status"]["messages"][-1][0] == "execution_interrupted"


def test_ws09_reconnect_replays_the_running_node_and_anonymous_sid():
    log = ws_log("ws-09")
    with ComfyDouble() as d:
        d.script(None, class_delays={"ImageBlur": 0.05}, node_delays={"3": 0.6})
        a = WsClient(d.ws_url, "A")
        a.wait_for(lambda m: m)
        pid = submit(d, workflow("slow_blur"), client_id="A")
        a.wait_message("executing", node="3", prompt_id=pid)
        a.close()
        time.sleep(0.05)
        with WsClient(d.ws_url, "A") as a2:
            a2.wait_message("executing", node=None, prompt_id=pid)
            assert types_of(a2, len(recorded_types(log, "A2"))) == recorded_types(log, "A2")
            assert a2.messages[1] == ("executing", {"node": "3"})
            assert a2.messages[0][1]["status"]["exec_info"]["queue_remaining"] == 1
        assert [k for k, _ in a.messages] == recorded_types(log, "A")
        with WsClient(d.ws_url) as anonymous:
            greeting = anonymous.wait_message("status")
            assert re.fullmatch(r"[0-9a-f]{32}", greeting["sid"])


def test_ws10_logs_reach_only_the_subscribed_socket():
    log = ws_log("ws-10")
    with ComfyDouble() as d:
        with WsClient(d.ws_url, "A") as a, WsClient(d.ws_url, "B") as b:
            a.wait_for(lambda m: m)
            b.wait_for(lambda m: m)
            r = requests.patch(d.url + "/internal/logs/subscribe", json={"clientId": "A", "enabled": True}, timeout=5)
            assert r.status_code == 200 and r.content == b""
            pid = submit(d, {"1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 192, "batch_size": 2,
                                                                          "color": 1234}},
                             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "panel_empty"}}},
                         client_id="A")
            a.wait_message("executing", node=None, prompt_id=pid)
            assert types_of(a, len(recorded_types(log, "A"))) == recorded_types(log, "A")
            assert types_of(b, len(recorded_types(log, "B"))) == recorded_types(log, "B")
            logs = [data for kind, data in a.messages if kind == "logs"]
            assert logs[0]["entries"][0]["m"] == "got prompt\n" and logs[0]["size"] == {"cols": 80, "rows": 24}
            assert logs[1]["entries"][0]["m"].startswith("Prompt executed in") and logs[1]["size"] is None
            requests.patch(d.url + "/internal/logs/subscribe", json={"clientId": "A", "enabled": False}, timeout=5)
            d.log("after unsubscribe")
            time.sleep(0.05)
            assert [k for k, _ in a.messages].count("logs") == 2
        assert "after unsubscribe" in requests.get(d.url + "/internal/logs", timeout=5).json()


# =============================================================================== scripts


def test_script_fail_at_node_gives_the_recorded_execution_error_shape():
    recorded = next(e for e in ws_log("ws-03") if e.get("type") == "execution_error")["data"]
    with ComfyDouble() as d:
        d.script(None, fail_at_node="ImageInvert", exception_type="torch.OutOfMemoryError",
                 exception_message="CUDA out of memory")
        with WsClient(d.ws_url, "A") as a:
            a.wait_for(lambda m: m)
            pid = submit(d, workflow("invert_save"), client_id="A")
            error = a.wait_message("execution_error", prompt_id=pid)
            a.wait_message("executing", node=None, prompt_id=pid)
            assert "execution_success" not in a.types()
        assert set(error) == set(recorded)
        assert error["node_id"] == "2" and error["node_type"] == "ImageInvert" and error["executed"] == ["1"]
        assert error["exception_type"] == "torch.OutOfMemoryError"
        assert error["exception_message"] == "CUDA out of memory\n"
        assert all(isinstance(line, str) for line in error["traceback"])
        entry = d.history(pid)
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_error"]


def test_script_delays_progress_previews_and_matching():
    with ComfyDouble() as d:
        slow = d.script(lambda prompt: any(n["class_type"] == "ImageBlur" for n in prompt.values()),
                        class_delays={"ImageBlur": 0.1}, progress_steps={"ImageBlur": 3}, preview_every_step=True)
        with WsClient(d.ws_url, "A", first_message={"type": "feature_flags",
                                                     "data": {"supports_preview_metadata": True}}) as a:
            a.wait_message("feature_flags")
            started = time.monotonic()
            pid = submit(d, workflow("slow_blur"), client_id="A")
            a.wait_message("executing", node=None, prompt_id=pid)
            assert time.monotonic() - started >= 0.4  # four blurs of 0.1 s
            progress = [data["value"] for kind, data in a.messages if kind == "progress"]
            assert progress == [1, 2, 3] * 4
            assert a.types().count("bin4") == 12 and "bin1" not in a.types()
            # a prompt the matcher does not select runs without delay or progress
            d.unscript(slow)
            pid2 = submit(d, workflow("invert_save"), client_id="A")
            a.wait_message("executing", node=None, prompt_id=pid2)


def test_identical_rerun_is_cached_and_free_memory_empties_the_cache():
    with ComfyDouble() as d:
        first = submit(d, workflow("invert_save"))
        d.wait_idle()
        second = submit(d, workflow("invert_save"))
        d.wait_idle()
        h1, h2 = d.history(first), d.history(second)
        assert h2["status"]["messages"][1][1]["nodes"] == ["1", "2", "3"]
        assert h2["outputs"] == h1["outputs"]
        requests.post(d.url + "/free", json={"free_memory": True}, timeout=5)
        third = submit(d, workflow("invert_save"))
        d.wait_idle()
        h3 = d.history(third)
        assert h3["status"]["messages"][1][1]["nodes"] == []
        assert h3["outputs"]["3"]["images"][0]["filename"] == "invert_00002_.png"


def test_no_client_id_gets_progress_but_no_lifecycle():
    with ComfyDouble() as d:
        with WsClient(d.ws_url, "A") as a:
            a.wait_for(lambda m: m)
            submit(d, workflow("ws_progress"))
            d.wait_idle()
            kinds = set(types_of(a, 1))
            assert kinds == {"status", "progress_state", "progress", "bin1"}


# =============================================================================== faults


def test_fail_next_set_slow_and_html_instead():
    with ComfyDouble() as d:
        d.fail_next("/prompt", times=2)
        for path in ("/prompt", "/api/prompt"):
            r = requests.post(d.url + path, json={"prompt": {}}, timeout=5)
            assert (r.status_code, r.headers["Content-Type"].split(";")[0]) == (500, "text/plain")
            assert r.text == "500 Internal Server Error\n\nServer got itself in trouble"
        assert requests.post(d.url + "/prompt", json={"prompt": {}}, timeout=5).status_code == 400
        d.fail_next("/history/*", status=502, body=b"", content_type=None)
        r = requests.get(d.url + "/history/x", timeout=5)
        assert r.status_code == 502 and "Content-Type" not in r.headers
        d.set_slow(0.5, paths=["/system_stats"])
        started = time.monotonic()
        requests.get(d.url + "/api/system_stats", timeout=5)
        assert time.monotonic() - started >= 0.5
        started = time.monotonic()
        requests.get(d.url + "/features", timeout=5)
        assert time.monotonic() - started < 0.5
        d.set_slow(0)
        d.serve_html_instead()
        r = requests.get(d.url + "/system_stats", timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        d.serve_html_instead(False)
        assert requests.get(d.url + "/system_stats", timeout=5).json()["system"]["comfyui_version"] == "0.3.75"
        assert [(r.method, r.path) for r in d.requests][:2] == [("POST", "/prompt"), ("POST", "/api/prompt")]


def test_drop_websockets_now_and_after_n_messages_and_raw_frames():
    with ComfyDouble() as d:
        with WsClient(d.ws_url, "A") as a:
            a.wait_for(lambda m: m)
            d.send_raw_ws("{not json")
            d.send_raw_ws(b"\x00\x00\x00\x01\x00")  # truncated binary frame
            d.send_raw_ws(json.dumps({"type": "crystools.monitor", "data": {}}))
            a.wait_for(lambda m: len(m) >= 4)
            assert a.types()[1:] == ["raw", "bin1", "crystools.monitor"]
            d.drop_websockets()
            a.wait_closed()
        d.script(None, per_node_delay=0.02)
        with WsClient(d.ws_url, "B") as b:
            b.wait_for(lambda m: m)
            pid = str(uuid.uuid4())
            d.drop_websockets_at(pid, after_messages=3)
            submit(d, workflow("invert_save"), client_id="B", prompt_id=pid)
            b.wait_closed()
            tagged = [k for k, data in b.messages if isinstance(data, dict) and data.get("prompt_id") == pid]
            assert tagged == ["execution_start", "execution_cached", "progress_state"]
        d.wait_idle()
        assert d.history(pid)["status"]["status_str"] == "success"  # the run itself goes on


def test_restart_forgets_queue_history_and_numbers_but_keeps_files():
    with ComfyDouble() as d:
        submit(d, workflow("invert_save"))
        d.wait_idle()
        d.script(None, per_node_delay=5)
        with WsClient(d.ws_url, "A") as a:
            a.wait_for(lambda m: m)
            running = submit(d, workflow("empty_save"), client_id="A")
            a.wait_message("executing", node="1", prompt_id=running)
            d.restart()
            a.wait_closed()
        d.unscript()
        assert requests.get(d.url + "/history", timeout=5).json() == {}
        assert requests.get(d.url + "/queue", timeout=5).json() == {"queue_running": [], "queue_pending": []}
        r = requests.post(d.url + "/prompt", json={"prompt": workflow("invert_save")}, timeout=5)
        assert r.json()["number"] == 0
        d.wait_idle()
        assert d.history(running) == {}
        files = requests.get(d.url + "/internal/files/output", timeout=5).json()
        assert "_output_images_will_be_put_here" in files
        # the cache is gone too: the same prompt ran again and wrote invert_00002_
        assert d.history(r.json()["prompt_id"])["outputs"]["3"]["images"][0]["filename"] == "invert_00002_.png"


def test_restart_with_downtime_refuses_connections():
    with ComfyDouble() as d:
        t = threading.Thread(target=d.restart, kwargs={"downtime": 0.5})
        t.start()
        deadline = time.monotonic() + 0.5
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                requests.get(d.url + "/system_stats", timeout=2)
                time.sleep(0.01)
            except requests.ConnectionError:
                refused = True
        t.join()
        assert refused
        assert requests.get(d.url + "/system_stats", timeout=2).status_code == 200


def test_token_protects_http_and_websocket():
    with ComfyDouble(token="s3cret") as d:
        assert requests.get(d.url + "/system_stats", timeout=5).status_code == 401
        ok = requests.get(d.url + "/system_stats", headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert ok.status_code == 200
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(d.ws_url, timeout=5)
        with WsClient(d.ws_url, "A", header=["Authorization: Bearer s3cret"]) as a:
            assert a.wait_message("status")["sid"] == "A"
        assert d.requests[0].headers.get("Authorization") is None


def test_stop_really_ends_the_thread():
    d = ComfyDouble().start()
    thread = d._thread
    d.stop()
    assert not thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{d.port}/system_stats", timeout=2)


# =============================================================================== newer servers


def test_newer_server_uuid_prompt_ids_and_jobs_api():
    with ComfyDouble(version="0.26.0", jobs_api=True) as d:
        assert requests.get(d.url + "/system_stats", timeout=5).json()["system"]["comfyui_version"] == "0.26.0"
        r = requests.post(d.url + "/prompt", json={"prompt": workflow("invert_save"), "prompt_id": "my-own-id"}, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_prompt_id"
        pid = str(uuid.uuid4())
        submit(d, workflow("invert_save"), prompt_id=pid)
        d.wait_idle()
        r = requests.post(d.url + "/prompt", json={"prompt": workflow("invert_save"), "prompt_id": pid}, timeout=5)
        assert r.status_code == 409
        jobs = requests.get(d.url + "/api/jobs", timeout=5).json()
        assert jobs["pagination"] == {"offset": 0, "limit": None, "total": 1, "has_more": False}
        job = jobs["jobs"][0]
        assert job["id"] == pid and job["status"] == "completed" and job["outputs_count"] == 1
        assert job["preview_output"]["filename"] == "invert_00001_.png"
        detail = requests.get(d.url + f"/api/jobs/{pid}", timeout=5).json()
        assert {"outputs", "execution_status", "workflow"} <= set(detail)
        assert requests.get(d.url + "/api/jobs/" + str(uuid.uuid4()), timeout=5).status_code == 404
        assert requests.get(d.url + "/api/jobs?status=bogus", timeout=5).status_code == 400
        assert requests.get(d.url + "/jobs", timeout=5).status_code == 404  # only under /api
        # cancel: running -> interrupted ("cancelled"), pending -> dequeued, finished -> no-op
        d.script(None, per_node_delay=0.2)
        running, pending = str(uuid.uuid4()), str(uuid.uuid4())
        submit(d, workflow("slow_blur"), prompt_id=running)
        submit(d, workflow("empty_save"), prompt_id=pending)
        assert requests.post(d.url + f"/api/jobs/{pending}/cancel", timeout=5).json() == {"cancelled": True}
        assert requests.post(d.url + f"/api/jobs/{running}/cancel", timeout=5).json() == {"cancelled": True}
        assert requests.post(d.url + f"/api/jobs/{pid}/cancel", timeout=5).json() == {"cancelled": False}
        d.wait_idle()
        statuses = {j["id"]: j["status"] for j in requests.get(d.url + "/api/jobs", timeout=5).json()["jobs"]}
        assert statuses == {pid: "completed", running: "cancelled"}


# =============================================================================== cloud


def test_cloud_auth_billing_and_failures():
    with CloudDouble(api_key="k1") as cloud:
        key = {"X-API-Key": "k1"}
        r = requests.get(cloud.url + "/api/prompt", timeout=5)
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        assert requests.get(cloud.url + "/api/system_stats", timeout=5).status_code == 200  # public
        assert requests.get(cloud.url + "/api/prompt", headers=key, timeout=5).json() == {"exec_info": {"queue_remaining": 0}}
        for path in ("/api/models", "/api/embeddings", "/api/free", "/api/object_info/LoadImage", "/internal/logs",
                     "/api/v2/manager/version", "/api/history"):
            assert requests.get(cloud.url + path, headers=key, timeout=5).status_code == 404, path
        assert requests.post(cloud.url + "/api/jobs/x/cancel", headers=key, timeout=5).status_code == 404
        cloud.set_billing_state("no_credits")
        assert requests.post(cloud.url + "/api/prompt", headers=key, json={"prompt": workflow("invert_save")},
                             timeout=5).status_code == 402
        cloud.set_billing_state("inactive")
        assert requests.get(cloud.url + "/api/queue", headers=key, timeout=5).status_code == 429
        cloud.set_billing_state("ok")
        cloud.fail_next("/api/prompt", status=503)
        r = requests.post(cloud.url + "/api/prompt", headers=key, json={"prompt": workflow("invert_save")}, timeout=5)
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"
        r = requests.post(cloud.url + "/api/prompt", headers=key, json={"prompt": {"1": {"inputs": {}}}}, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_prompt"
        with pytest.raises(websocket.WebSocketBadStatusException) as exc:
            websocket.create_connection(cloud.ws_url + "?clientId=a&token=wrong", timeout=5)
        assert exc.value.status_code == 401


def test_cloud_run_broadcasts_to_every_socket_and_reports_states():
    with CloudDouble() as cloud:
        key = {"X-API-Key": "test-key"}
        cloud.script(None, queue_delay=0.05, per_node_delay=0.01)
        with WsClient(cloud.ws_url + "?token=test-key", "mine") as a, \
                WsClient(cloud.ws_url + "?token=test-key", "someone-else") as b:
            a.wait_message("status")
            b.wait_message("status")
            up = requests.post(cloud.url + "/api/upload/image", headers=key,
                               files={"image": ("x.png", _png(), "image/png")}, timeout=5).json()
            assert re.fullmatch(r"[0-9a-f]{64}\.png", up["name"]) and up["type"] == "input"
            prompt = workflow("invert_save")
            prompt["1"]["inputs"]["image"] = up["name"]
            r = requests.post(cloud.url + "/api/prompt", headers=key,
                              json={"prompt": prompt, "client_id": "mine", "number": 99, "front": True}, timeout=5)
            assert r.status_code == 200
            pid = r.json()["prompt_id"]
            for client in (a, b):  # clientId is ignored: both sockets see the whole run
                client.wait_message("execution_success", prompt_id=pid)
                client.wait_message("executed", prompt_id=pid)
            anonymous = requests.post(cloud.url + "/api/prompt", headers=key, json={"prompt": prompt},
                                      timeout=5).json()["prompt_id"]
            b.wait_message("execution_success", prompt_id=anonymous)  # even without a client_id
            cloud.notify("maintenance soon")
            a.wait_message("notification", value="maintenance soon")
        cloud.wait_idle()
        assert cloud.job_states(pid) == ["submitted", "queued_waiting", "preparing", "executing", "success"]
        status = requests.get(cloud.url + f"/api/job/{pid}/status", headers=key, timeout=5).json()
        assert status == {"id": pid, "status": "success"}
        job = requests.get(cloud.url + f"/api/jobs/{pid}", headers=key, timeout=5).json()
        assert job["status"] == "completed" and job["outputs"]["3"]["images"][0]["filename"] == "invert_00001_.png"
        listing = requests.get(cloud.url + "/api/jobs?status=completed", headers=key, timeout=5).json()
        assert [j["id"] for j in listing["jobs"]] == [anonymous, pid]  # newest first
        assert listing["pagination"] == {"offset": 0, "limit": 100, "total": 2, "has_more": False}
        history = requests.get(cloud.url + "/api/history_v2", headers=key, timeout=5).json()
        assert isinstance(history["history"], list) and history["history"][0]["prompt_id"] == pid
        view = requests.get(cloud.url + "/api/view", headers=key, allow_redirects=False,
                            params={"filename": "invert_00001_.png", "subfolder": "ignored", "type": "output"}, timeout=5)
        assert view.status_code == 302 and "sig=" in view.headers["Location"] and "exp=" in view.headers["Location"]
        image = Image.open(io.BytesIO(requests.get(view.headers["Location"], timeout=5).content))
        assert image.size == (64, 48)
        direct = requests.get(cloud.url + "/api/view", headers=key, timeout=5,
                              params={"filename": "invert_00001_.png", "type": "output", "channel": "rgb"})
        assert direct.status_code == 200 and direct.headers["Content-Type"] == "image/png"
        assert requests.get(cloud.url + "/api/view", headers=key, params={"filename": "nope.png"},
                            timeout=5).status_code == 404
        mask = requests.post(cloud.url + "/api/upload/mask", headers=key, timeout=5,
                             files={"image": ("m.png", _png("RGBA"), "image/png")},
                             data={"original_ref": json.dumps({"filename": up["name"]})}).json()
        assert "metadata" in mask and mask["name"].endswith(".png")
        assert cloud.storage.violations == []


def test_cloud_queue_layout_and_interrupt_cancels_all_running():
    with CloudDouble(concurrency=2) as cloud:
        key = {"X-API-Key": "test-key"}
        cloud.script(None, per_node_delay=0.3)
        ids = [requests.post(cloud.url + "/api/prompt", headers=key, json={"prompt": workflow("empty_save")},
                             timeout=5).json()["prompt_id"] for _ in range(4)]
        deadline = time.monotonic() + 5
        while len(requests.get(cloud.url + "/api/queue", headers=key, timeout=5).json()["queue_running"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        queue = requests.get(cloud.url + "/api/queue", headers=key, timeout=5).json()
        position, prompt_id, graph, outputs, meta = queue["queue_pending"][0]
        assert isinstance(position, int) and prompt_id in ids and outputs == ["2"] and set(meta) == {"create_time"}
        assert requests.get(cloud.url + f"/api/job/{ids[3]}/status", headers=key, timeout=5).json()["status"] == "queued_limited"
        answer = requests.post(cloud.url + "/api/queue", headers=key, json={"delete": [ids[3], ids[0]]}, timeout=5).json()
        assert answer == {"deleted": [ids[3]], "cleared": 0}  # the running one is not touched
        assert requests.post(cloud.url + "/api/interrupt", headers=key, timeout=5).status_code == 200
        deadline = time.monotonic() + 5
        while any(normalise_status(cloud.job_states(i)[-1]) == "in_progress" for i in ids[:2]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        cloud.unscript()
        cloud.wait_idle()
        states = {i: requests.get(cloud.url + f"/api/jobs/{i}", headers=key, timeout=5).json()["status"] for i in ids}
        assert states == {ids[0]: "cancelled", ids[1]: "cancelled", ids[2]: "completed", ids[3]: "cancelled"}
        assert "cancel_requested" in cloud.job_states(ids[0])


def _png(mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (64, 48), (10, 20, 30) if mode == "RGB" else (10, 20, 30, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
