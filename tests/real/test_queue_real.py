"""The Queue page's core against a real ComfyUI 0.3.75: cancel, interrupt, hold queue feeding."""

from __future__ import annotations

import copy
import time

import pytest

from comfypanel.holdqueue import HoldQueue
from comfypanel.queuewatch import QueueMonitor
from tests.helpers import workflow

pytestmark = pytest.mark.timeout(120)


def blur(sigma_base: float, size: int = 1024) -> dict:
    wf = copy.deepcopy(workflow("slow_blur"))
    wf["1"]["inputs"].update(width=size, height=size)
    for n, node in enumerate(("2", "3", "4", "5")):
        wf[node]["inputs"]["sigma"] = sigma_base - n * 0.5  # different sigmas: no cache hits
    return wf


def wait_for(pred, timeout=60.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def test_cancel_pending_interrupt_running_others_finish(idle, listener, tmp_path):
    client = idle
    mon = QueueMonitor(client, hold=HoldQueue(tmp_path / "h.db"), listener=listener, interval=0.2)
    a, b, c = (client.queue_prompt(blur(s)).prompt_id for s in (10.0, 9.3, 8.6))
    view = mon.poll()
    assert [i.prompt_id for i in view.running] == [a]
    assert [i.prompt_id for i in view.pending] == [b, c]
    assert all(i.client_id == client.client_id for i in view.running + view.pending)
    # live progress for the running job comes from the listener
    wait_for(lambda: (s := listener.snapshot(a)) is not None and s.current_node is not None)
    # cancel a pending one
    mon.note_cancelled(b)
    client.delete_from_queue([b])
    # interrupt the running one (targeted)
    client.interrupt(a)
    mon.start()
    try:
        wait_for(lambda: {f.prompt_id: f.status for f in mon.view().finished}.get(c) == "succeeded", timeout=90)
        done = {f.prompt_id: f for f in mon.view().finished}
        assert done[a].status == "interrupted"
        assert done[b].status == "cancelled" and done[b].entry is None
        assert done[c].entry is not None and done[c].entry.files
        assert not mon.view().running and not mon.view().pending
    finally:
        mon.stop()


def test_interrupt_after_the_job_finished_is_harmless(idle, listener):
    client = idle
    pid = client.queue_prompt(blur(7.7, size=64)).prompt_id
    wait_for(lambda: client.history_entry(pid))
    client.interrupt(pid)  # the race the page warns about: a no-op
    nxt = client.queue_prompt(blur(7.1, size=64)).prompt_id
    wait_for(lambda: client.history_entry(nxt))
    assert client.history_entry(nxt).status == "succeeded"
    assert client.history_entry(pid).status == "succeeded"


def test_hold_queue_pause_reorder_resume_and_restart(idle, listener, tmp_path):
    client = idle
    path = tmp_path / "h.db"
    hold = HoldQueue(path)
    sid = client.connection.server_id()
    hold.pause(sid)
    jobs = {name: hold.add(sid, blur(s, size=256), workflow_name=name, submitter="t")
            for name, s in (("a", 6.0), ("b", 5.5), ("c", 5.0))}
    mon = QueueMonitor(client, hold=hold, listener=listener, interval=0.2).start()
    time.sleep(0.6)
    assert len(client.queue()) == 0  # paused: nothing went to the server
    hold.move(jobs["c"].id, -2)  # c first
    assert [j.workflow_name for j in hold.held(sid)] == ["c", "a", "b"]
    hold.resume(sid)
    c_id = wait_for(lambda: hold.get(jobs["c"].id).prompt_id if hold.get(jobs["c"].id).state == "sent" else None)
    # at most one job on the server at a time
    assert len(client.queue()) <= 1
    hold.pause(sid)
    wait_for(lambda: client.history_entry(c_id))
    mon.stop()  # the app goes down with a and b still held
    assert [j.workflow_name for j in HoldQueue(path).held(sid)] == ["a", "b"]
    # ...and comes back: a new object on the same file, a new monitor
    hold2 = HoldQueue(path)
    hold2.resume(sid)
    mon2 = QueueMonitor(client, hold=hold2, listener=listener, interval=0.2).start()
    try:
        wait_for(lambda: all(hold2.get(jobs[n].id).state == "sent" for n in "ab"), timeout=60)
        ids = [hold2.get(jobs[n].id).prompt_id for n in "ab"]
        for pid in ids:
            wait_for(lambda pid=pid: client.history_entry(pid), timeout=60)
        entries = [client.history_entry(p) for p in [c_id, *ids]]
        assert all(e.status == "succeeded" for e in entries)
        starts = [e.started_at for e in entries]
        assert starts == sorted(starts)  # c, then a, then b: the held order
    finally:
        mon2.stop()
