"""The hold queue: ordering, editing, pause/resume, persistence, concurrent sessions, the feeder."""

from __future__ import annotations

import threading
import time

from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.holdqueue import Feeder, HoldQueue, default_path
from comfypanel.queuewatch import QueueMonitor

S = "local:http://x"
P = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
     "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


def names(h, sid=S):
    return [j.workflow_name for j in h.held(sid)]


def test_default_path_uses_env(tmp_path):
    assert default_path({"COMFYPANEL_DATA_DIR": str(tmp_path)}) == tmp_path / "holdqueue.sqlite3"


def test_order_priority_then_position(tmp_path):
    h = HoldQueue(tmp_path / "h.db")
    for n in "abc":
        h.add(S, P, workflow_name=n, submitter="s1")
    assert names(h) == ["a", "b", "c"]
    h.add(S, P, workflow_name="urgent", priority=5)
    assert names(h) == ["urgent", "a", "b", "c"]
    c = h.held(S)[3]
    assert h.set_priority(c.id, 9)
    assert names(h) == ["c", "urgent", "a", "b"]
    assert h.held("other") == []


def test_move_and_remove(tmp_path):
    h = HoldQueue(tmp_path / "h.db")
    ids = [h.add(S, P, workflow_name=n).id for n in "abcd"]
    assert h.move(ids[2], -1) and names(h) == ["a", "c", "b", "d"]
    assert h.move(ids[0], +1) and names(h) == ["c", "a", "b", "d"]
    assert not h.move(ids[2], -1)  # already first
    assert h.remove(ids[1]) and names(h) == ["c", "a", "d"]
    assert not h.remove(ids[1])
    # moving across a priority band adopts the neighbour's priority, so the list stays as shown
    top = h.add(S, P, workflow_name="top", priority=3)
    assert names(h)[0] == "top"
    assert h.move(ids[3], -3) and names(h) == ["d", "top", "c", "a"]
    assert h.get(ids[3]).priority == 3 and h.get(top.id).priority == 3


def test_secrets_never_stored(tmp_path):
    h = HoldQueue(tmp_path / "h.db")
    j = h.add(S, P, extra_data={"api_key_comfy_org": "sk-1", "extra_pnginfo": {"a": 1}})
    assert "api_key_comfy_org" not in j.extra_data and j.extra_data["extra_pnginfo"] == {"a": 1}
    assert b"sk-1" not in (tmp_path / "h.db").read_bytes()


def test_pause_resume_and_persistence(tmp_path):
    path = tmp_path / "h.db"
    h = HoldQueue(path)
    h.add(S, P, workflow_name="a")
    h.pause(S)
    h.set_concurrency(S, 3)
    assert h.claim_next(S, "pid-1") is None  # paused: nothing leaves
    again = HoldQueue(path)  # an app restart: a new object on the same file
    assert again.is_paused(S) and again.concurrency(S) == 3 and names(again) == ["a"]
    again.resume(S)
    job = again.claim_next(S, "pid-1")
    assert job is not None and job.state == "sending" and job.prompt_id == "pid-1"
    again.mark_sent(job.id)
    assert HoldQueue(path).by_prompt_ids(S, ["pid-1"])["pid-1"].state == "sent"
    assert names(HoldQueue(path)) == []


def test_concurrent_sessions_claim_each_job_once(tmp_path):
    path = tmp_path / "h.db"
    HoldQueue(path)
    for i in range(40):
        HoldQueue(path).add(S, P, workflow_name=str(i))
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n):
        h = HoldQueue(path)  # each session has its own object; they share the file
        while True:
            job = h.claim_next(S, f"p{n}-{len(claimed)}-{threading.get_ident()}")
            if job is None:
                return
            with lock:
                claimed.append(job.workflow_name)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed, key=int) == [str(i) for i in range(40)]


def test_lease_one_feeder_per_server(tmp_path):
    now = [1000.0]
    h = HoldQueue(tmp_path / "h.db", clock=lambda: now[0])
    assert h.take_lease(S, "a") and not h.take_lease(S, "b") and h.take_lease(S, "a")
    now[0] += 11
    assert h.take_lease(S, "b")
    h.drop_lease(S, "b")
    assert h.take_lease(S, "a")


def test_feeder_feeds_one_at_a_time(comfy_double, tmp_path):
    comfy_double.script(per_node_delay=0.3)
    client = ComfyClient(Connection.local(comfy_double.url))
    h = HoldQueue(tmp_path / "h.db")
    sid = client.connection.server_id()
    for n in "abc":
        h.add(sid, P, workflow_name=n)
    f = Feeder(h, client, owner=client.client_id)
    r = f.tick(len(client.queue()))
    assert r.action == "sent" and r.job.workflow_name == "a"
    assert f.tick(len(client.queue())).action == "busy"  # one on the server already
    h.pause(sid)
    comfy_double.wait_idle()
    assert f.tick(len(client.queue())).action == "paused"
    other = Feeder(h, ComfyClient(Connection.local(comfy_double.url)), owner="someone-else")
    assert other.tick(0).action == "not_feeder"
    h.resume(sid)
    h.move(h.held(sid)[1].id, -1)  # c before b
    assert f.tick(len(client.queue())).job.workflow_name == "c"
    comfy_double.wait_idle()
    assert f.tick(len(client.queue())).job.workflow_name == "b"
    comfy_double.wait_idle()
    assert f.tick(0).action == "idle"
    client.close()


def test_feeder_rejected_job_is_failed_not_retried(comfy_double, tmp_path):
    client = ComfyClient(Connection.local(comfy_double.url))
    h = HoldQueue(tmp_path / "h.db")
    sid = client.connection.server_id()
    bad = h.add(sid, {"1": {"class_type": "NoSuchNode", "inputs": {}}}, workflow_name="bad")
    r = Feeder(h, client, owner="o").tick(0)
    assert r.action == "failed" and r.message
    assert h.get(bad.id).state == "failed" and h.held(sid) == []
    client.close()


def test_stale_sending_is_settled(comfy_double, tmp_path):
    client = ComfyClient(Connection.local(comfy_double.url))
    h = HoldQueue(tmp_path / "h.db")
    sid = client.connection.server_id()
    h.add(sid, P, workflow_name="a")
    h.claim_next(sid, "11111111-1111-4111-8111-111111111111")  # the app died before sending
    h.pause(sid)
    f = Feeder(h, client, owner="o")
    assert f.tick(0, frozenset(), frozenset()).action == "paused"
    assert [j.state for j in h.held(sid)] == ["held"]  # back in line, not lost, not sent twice
    client.close()


def test_monitor_marks_vanished_jobs(comfy_double, tmp_path):
    comfy_double.script(per_node_delay=0.5)
    client = ComfyClient(Connection.local(comfy_double.url))
    mon = QueueMonitor(client, hold=HoldQueue(tmp_path / "h.db"))
    a = client.queue_prompt(P).prompt_id
    b = client.queue_prompt({**P, "1": {**P["1"], "inputs": {**P["1"]["inputs"], "color": 5}}}).prompt_id
    v = mon.poll()
    assert [i.prompt_id for i in v.running] == [a] and [i.prompt_id for i in v.pending] == [b]
    client.delete_from_queue([b])
    v = mon.poll()
    fin = {f.prompt_id: f for f in v.finished}
    assert fin[b].status == "cancelled"
    comfy_double.restart()
    v = mon.poll()
    fin = {f.prompt_id: f for f in v.finished}
    assert fin[a].status == "lost" and not v.running
    client.close()


def test_feeder_keeps_n_jobs_on_cloud(cloud_double, tmp_path):
    cloud_double.script(per_node_delay=1.0)
    client = ComfyClient(Connection.cloud(cloud_double.api_key, cloud_double.url))
    h = HoldQueue(tmp_path / "h.db")
    sid = client.connection.server_id()
    h.set_concurrency(sid, 3)  # a Creator tier: three jobs at once
    for n in range(5):
        h.add(sid, {**P, "1": {**P["1"], "inputs": {**P["1"]["inputs"], "color": n}}}, workflow_name=str(n))
    f = Feeder(h, client, owner="o")
    actions = [f.tick(len(client.queue())).action for _ in range(4)]
    assert actions == ["sent", "sent", "sent", "busy"]
    assert [j.workflow_name for j in h.held(sid)] == ["3", "4"]
    client.interrupt()
    client.clear_queue()
    client.close()


def test_monitor_thread_starts_and_stops(comfy_double, tmp_path):
    client = ComfyClient(Connection.local(comfy_double.url))
    before = threading.active_count()
    mon = QueueMonitor(client, hold=HoldQueue(tmp_path / "h.db"), interval=0.05).start()
    assert mon.alive
    deadline = time.monotonic() + 5
    while mon.view().polled_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mon.view().polled_at is not None and mon.view().error is None
    assert mon.stop(timeout=5) and not mon.alive
    assert threading.active_count() == before
    client.close()


def _sent_extra(client) -> list[dict]:
    """What /prompt bodies this client sends carry in extra_data (the server hides the key from its
    own history, so it is read on the way out; the request still really goes to the double)."""
    seen: list[dict] = []
    real = client.transport.request

    def spy(method, path, **kw):
        if method == "POST" and path == "/prompt":
            seen.append(dict((kw.get("json_body") or {}).get("extra_data") or {}))
        return real(method, path, **kw)

    client.transport.request = spy
    return seen


def test_a_sessions_own_partner_key_goes_only_with_its_own_held_jobs(comfy_double, tmp_path):
    h = HoldQueue(tmp_path / "h.db")
    mine = ComfyClient(Connection.local(comfy_double.url, partner_key="users-own-comfy-org-key"))
    sent = _sent_extra(mine)
    sid = mine.connection.server_id()
    h.add(sid, P, workflow_name="theirs", submitter="session-B")
    h.add(sid, P, workflow_name="ours", submitter="session-A")
    f = Feeder(h, mine, owner=mine.client_id, submitter="session-A")
    names = []
    for _ in range(2):
        comfy_double.wait_idle()
        r = f.tick(0)
        assert r.action == "sent"
        names.append(r.job.workflow_name)
    assert names == ["theirs", "ours"]
    assert "api_key_comfy_org" not in sent[0]  # B's job does not spend A's own key
    assert sent[1].get("api_key_comfy_org") == "users-own-comfy-org-key"
    # an operator's key (from the secrets) is meant for everyone on its server
    operator = ComfyClient(Connection.local(comfy_double.url, partner_key="operator-key", source="secrets"))
    sent_op = _sent_extra(operator)
    h.add(sid, P, workflow_name="theirs-2", submitter="session-B")
    h.drop_lease(sid, mine.client_id)
    comfy_double.wait_idle()
    assert Feeder(h, operator, owner="x", submitter="session-A").tick(0).action == "sent"
    assert [e.get("api_key_comfy_org") for e in sent_op] == ["operator-key"]
    mine.close()
    operator.close()
