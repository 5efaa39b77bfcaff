"""follow(): the decision logic, with a scripted status source (the wire is tested with the doubles)."""

from __future__ import annotations

import threading

import pytest

from comfypanel import errors as E
from comfypanel.jobs import JobProgress, follow
from comfypanel.types import ExecutionFailure, JobStatus


class ScriptedClient:
    """Answers job_status from a list; the last answer repeats."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = 0

    def job_status(self, prompt_id):
        self.calls += 1
        a = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return JobStatus(prompt_id, a) if isinstance(a, str) else a


def test_success_after_queue_and_running():
    c = ScriptedClient(["queued", "running", JobStatus("p", "succeeded")])
    updates: list[JobProgress] = []
    r = follow(c, "p", poll_interval=0.01, on_update=updates.append)
    assert r.ok and r.state == "succeeded"
    assert [u.state for u in updates][:2] == ["queued", "running"]


def test_lost_needs_two_confirmations():
    c = ScriptedClient(["lost", "running", "lost", "lost"])
    r = follow(c, "p", poll_interval=0.01)
    assert r.state == "lost" and c.calls == 4
    assert "no longer knows this job" in r.user_message


def test_server_down_then_back_reports_reconnecting_then_lost():
    down = E.CannotConnect("http://127.0.0.1:1")
    c = ScriptedClient(["running", down, down, "lost", "lost"])
    updates = []
    r = follow(c, "p", poll_interval=0.01, on_update=updates.append)
    assert r.state == "lost"
    assert any(u.connection == "reconnecting" for u in updates)


def test_auth_failure_is_not_swallowed():
    c = ScriptedClient([E.AuthFailed()])
    with pytest.raises(E.AuthFailed):
        follow(c, "p", poll_interval=0.01)


def test_timeout_and_stop():
    c = ScriptedClient(["running"])
    with pytest.raises(E.JobTimedOut):
        follow(c, "p", poll_interval=0.01, timeout=0.2)
    stop = threading.Event()
    stop.set()
    with pytest.raises(E.JobTimedOut):
        follow(c, "p", poll_interval=0.01, stop=stop)


def test_failure_message_is_plain():
    failure = ExecutionFailure("3", "ImageBlend", "RuntimeError", "The size of tensor a (2) must match\nTraceback...")
    c = ScriptedClient([JobStatus("p", "failed", error=failure)])
    r = follow(c, "p", poll_interval=0.01)
    assert r.user_message == "ImageBlend (node 3) failed: The size of tensor a (2) must match"


class FakeListener:
    """Connected listener whose snapshot says the job ended: follow must poll at once, not wait."""

    connected = True

    def __init__(self):
        self.tracked = []

    def track(self, pid):
        self.tracked.append(pid)

    def snapshot(self, pid):
        class S:
            state = "succeeded"
            finished = True
            history_ready = True
            current_node = None
            nodes = {}
            cached_nodes = ()
            step = None
            latest_preview = None
        return S()

    def wait(self, pid, timeout):
        raise AssertionError("should not need to wait: the socket said history is ready")


def test_socket_hint_triggers_immediate_poll():
    c = ScriptedClient([JobStatus("p", "succeeded")])
    lst = FakeListener()
    r = follow(c, "p", listener=lst, live_poll_interval=30)
    assert r.ok and lst.tracked == ["p"] and c.calls == 1
