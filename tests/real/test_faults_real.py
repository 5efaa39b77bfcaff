"""The fault suite (hardening issue 8) against a REAL ComfyUI 0.3.75 on CPU.

What a double can only imitate, checked for real: a ComfyUI that is not there yet when the panel
starts, and a ComfyUI process killed (SIGKILL) in the middle of a job and started again on the same
port, which forgets its queue and its history. Each test starts its own server (with its own data
folder) because it kills or delays it; the session-wide ``real_server`` is left alone.

Nothing here depends on durations: waits are bounded and fail with a message.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from comfypanel import devserver
from comfypanel import errors as E
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.ledger import Ledger, reconcile
from tests.helpers import workflow
from tests.fault_kit import assert_plain, free_port, recording_watcher, submit
from tests.fault_kit import wait_for as kit_wait_for

pytestmark = pytest.mark.timeout(300)


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """A real server is slower than the doubles: a longer default wait."""
    return kit_wait_for(pred, what, timeout=timeout, step=0.1)


def slow_blur(sigma: float) -> dict:
    """Four ImageBlur(r=31) at 1024² (seconds on 2 cores); a new sigma each time, so no cache hit."""
    wf = copy.deepcopy(workflow("slow_blur"))
    for n, node in enumerate(("2", "3", "4", "5")):
        wf[node]["inputs"]["sigma"] = sigma - n * 0.5
    return wf


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite3")
    yield led
    led.close()


def test_comfyui_down_when_the_panel_starts_then_started(tmp_path, ledger):
    devserver.ensure_installed()
    port = free_port()
    client = ComfyClient(Connection.local(f"http://127.0.0.1:{port}"))
    listener = client.listener(backoff=(0.2, 1.0))
    listener.start()  # nothing answers yet: it keeps trying by itself
    watcher = recording_watcher(client, listener, ledger)
    server = None
    try:
        with pytest.raises(E.CannotConnect) as down:
            client.system_stats()
        assert_plain(down.value.user_message, problem=r"cannot reach the server", fix=r"check that comfyui is running")
        with pytest.raises(E.CannotConnect):
            submit(ledger, client, workflow("empty_save"), watcher)
        [refused] = ledger.search()[0]
        assert refused.status == "rejected" and refused.error == down.value.user_message
        assert not listener.connected

        server = devserver.start(port, data_dir=tmp_path / "comfyui")  # ComfyUI comes up on that port
        stats = client.system_stats()  # the same client: no reconnect step
        assert stats.comfyui_version == "0.3.75"
        assert listener.wait_connected(30), "the listener did not connect by itself"
        pid = submit(ledger, client, workflow("empty_save"), watcher)
        done = wait_for(lambda: watcher.result(pid), "the job to end")
        assert done.state == "succeeded" and len(done.files) == 2 and all(f.data for f in done.files)
        assert wait_for(lambda: ledger.get(pid).status == "succeeded", "the ledger row to be completed", 10)
        assert ledger.get(refused.prompt_id).status == "rejected"  # the refused attempt is still on record
        assert listener.snapshot(pid) is not None and listener.snapshot(pid).state == "succeeded"
    finally:
        watcher.stop()
        listener.stop()
        client.close()
        if server is not None:
            server.stop()


def test_killed_mid_job_and_restarted_jobs_are_lost_not_waited_for_and_new_jobs_work(tmp_path, ledger):
    server = devserver.start(data_dir=tmp_path / "comfyui")
    client = ComfyClient(Connection.local(server.url))
    listener = client.listener(backoff=(0.2, 1.0))
    listener.start()
    assert listener.wait_connected(15)
    watcher = recording_watcher(client, listener, ledger)
    try:
        running = submit(ledger, client, slow_blur(10.0), watcher)
        waiting = submit(ledger, client, slow_blur(9.3), watcher)
        wait_for(lambda: (s := listener.snapshot(running)) is not None and s.current_node is not None,
                 "the first job to run")
        assert client.queue().position(waiting) == 1

        server.kill()  # SIGKILL: no goodbye, the queue and the history die with the process
        wait_for(lambda: (p := watcher.progress(running)) is not None and p.connection == "reconnecting",
                 "the watcher to notice the server is gone", 30)
        assert watcher.result(running) is None and watcher.result(waiting) is None  # not guessed while down
        assert {r.status for r in ledger.search()[0]} == {"queued"}  # nothing marked while nobody knows

        server.restart()  # the same port and data folder; history and prompt numbers start empty
        for pid in (running, waiting):
            done = wait_for(lambda pid=pid: watcher.result(pid), f"job {pid[:8]} to be declared lost")
            assert done.state == "lost"
            assert_plain(done.message, problem=r"no longer knows this job", fix=r"generate again")
            rec = wait_for(lambda pid=pid: (r := ledger.get(pid)).status == "lost" and r, "the ledger row", 10)
            assert rec.api and rec.error == done.message  # the recipe is kept, with what happened
        assert client.history() == {}  # really lost on the server side

        # the same client, listener and watcher go on
        assert listener.wait_connected(30) and listener.reconnects >= 1
        again = submit(ledger, client, workflow("empty_save"), watcher)
        done = wait_for(lambda: watcher.result(again), "the new job to end")
        assert done.state == "succeeded" and len(done.files) == 2 and all(f.data for f in done.files)
        assert reconcile(ledger, client, client.connection.server_id(), check_files=False).lost == []
        assert {r.prompt_id: r.status for r in ledger.search()[0]} == {
            running: "lost", waiting: "lost", again: "succeeded"}
    finally:
        watcher.stop()
        listener.stop()
        client.close()
        server.stop()
