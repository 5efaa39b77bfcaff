"""The fault suite (hardening issue 8), core level, against the doubles and real SQLite files.

Every scenario checks the same three promises:

1. the user gets one plain sentence (what is wrong, what to do): no traceback, no server body, no
   markup, no credential;
2. no job record is lost: the ledger row written before the prompt was sent is still there and ends
   in a state that says what happened;
3. the same client / watcher / listener / ledger works again once the fault is lifted, without
   being recreated (the panel recovers by itself).

Nothing here asserts a duration: waits are bounded by ``wait_for`` and fail with a message.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, Iterator

import pytest

from comfypanel import errors as E
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.ledger import Ledger, reconcile
from comfypanel.manager import Manager, ManagerRefused
from comfypanel.transport import Transport
from comfypanel.watcher import JobWatcher
from tests.doubles.cloud import CloudDouble
from tests.doubles.comfy import ComfyDouble
from tests.doubles.manager import ManagerDouble
from tests.fault_kit import (CODE_WORDS, KEY, FlakyDisk, assert_plain, free_port, is_png, record,
                             recording_watcher, result, submit, wait_for)
from tests.helpers import workflow

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ledger(tmp_path) -> Iterator[FlakyDisk]:
    led = FlakyDisk(tmp_path / "ledger.sqlite3")
    yield led
    led.close()


@pytest.fixture
def local(comfy_double) -> Iterator[tuple[ComfyDouble, ComfyClient, Any]]:
    c = ComfyClient(Connection.local(comfy_double.url))
    lst = c.listener(backoff=(0.1, 0.5))
    lst.start()
    assert lst.wait_connected(10)
    yield comfy_double, c, lst
    lst.stop()
    c.close()


@pytest.fixture
def cloud(cloud_double) -> Iterator[tuple[CloudDouble, ComfyClient, Any]]:
    c = ComfyClient(Connection.cloud(KEY, cloud_double.url))
    lst = c.listener(backoff=(0.1, 0.5))
    lst.start()
    assert lst.wait_connected(10)
    yield cloud_double, c, lst
    lst.stop()
    c.close()


@pytest.fixture
def watchers() -> Iterator[list[JobWatcher]]:
    made: list[JobWatcher] = []
    yield made
    for w in made:
        w.stop(wait=True)


# ------------------------------------------------------------------------------------------------
# 1. ComfyUI down when the panel starts


def test_comfyui_down_at_start_then_up_same_client_watcher_and_listener_recover(ledger, watchers):
    port = free_port()
    client = ComfyClient(Connection.local(f"http://127.0.0.1:{port}"))
    lst = client.listener(backoff=(0.1, 0.5))
    lst.start()  # started while nothing listens: it keeps trying by itself
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double = ComfyDouble()
    try:
        with pytest.raises(E.CannotConnect) as down:
            client.system_stats()
        assert_plain(down.value.user_message, problem=r"cannot reach the server", fix=r"check that comfyui is running")
        assert f"127.0.0.1:{port}" in down.value.user_message
        with pytest.raises(E.CannotConnect):
            submit(ledger, client, workflow("empty_save"), watcher)
        [refused] = ledger.search()[0]
        assert refused.status == "rejected" and refused.error == down.value.user_message  # kept, with why
        assert not lst.connected and lst.last_error

        double.port = port  # ComfyUI comes up on the address the panel was given
        double.start()
        assert client.system_stats().comfyui_version == "0.3.75"  # the same client, no reconnect step
        assert lst.wait_connected(15), "the listener did not connect by itself"
        pid = submit(ledger, client, workflow("empty_save"), watcher)
        done = result(watcher, pid)
        assert done.state == "succeeded" and len(done.files) == 2 and all(is_png(f.data) for f in done.files)
        assert wait_for(lambda: (r := ledger.get(pid)) is not None and r.status == "succeeded", "ledger row done")
        assert ledger.get(refused.prompt_id).status == "rejected"  # the earlier record is still there
    finally:
        lst.stop()
        client.close()
        double.stop()


# ------------------------------------------------------------------------------------------------
# 2. ComfyUI killed mid-job and restarted: history is gone


def test_killed_mid_job_and_restarted_job_is_lost_with_sentence_then_new_jobs_work(local, ledger, watchers):
    double, client, lst = local
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.script(per_node_delay=1.0, times=1)
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    wait_for(lambda: (p := watcher.progress(pid)) is not None and p.state == "running", "the job to run")
    double.restart(downtime=0.5)  # the process dies with the job; it comes back empty

    done = result(watcher, pid)
    assert done.state == "lost"
    assert_plain(done.message, problem=r"no longer knows this job", fix=r"generate again")
    assert "restarted" in done.message
    rec = wait_for(lambda: (r := ledger.get(pid)) is not None and r.status == "lost" and r, "ledger row lost")
    assert rec.api == workflow("empty_save") and rec.workflow_name == "fault suite"  # the recipe is kept
    assert_plain(rec.error, problem=r"no longer knows this job", fix=r"generate again")

    # the same client, listener and watcher go on
    assert lst.wait_connected(15)
    again = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, again).state == "succeeded"
    assert lst.reconnects >= 1
    assert reconcile(ledger, client, client.connection.server_id(), check_files=False).lost == []
    assert {r.prompt_id: r.status for r in ledger.search()[0]} == {pid: "lost", again: "succeeded"}


def test_restart_while_nobody_watches_reconcile_marks_the_row_lost(local, ledger):
    double, client, _ = local
    double.script(per_node_delay=1.0, times=1)
    pid = submit(ledger, client, workflow("empty_save"))  # the panel itself was restarted: no watcher
    double.restart()
    report = reconcile(ledger, client, client.connection.server_id(), check_files=False)
    assert report.lost == [pid]
    rec = ledger.get(pid)
    assert rec.status == "lost" and rec.api == workflow("empty_save")
    assert_plain(rec.error, problem=r"no longer knows this job", fix=r"restarted|removed")


# ------------------------------------------------------------------------------------------------
# 3. WebSocket dropped mid-job


def test_websocket_dropped_mid_job_job_completes_and_listener_is_live_again(local, ledger, watchers):
    double, client, lst = local
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.script(per_node_delay=0.3, times=1)
    pid = record(ledger, client, workflow("empty_save"))
    double.drop_websockets_at(pid, after_messages=3)
    queued = client.queue_prompt(workflow("empty_save"), prompt_id=pid)
    ledger.mark_queued(pid, queued.number)
    watcher.watch(pid, nodes_total=3, queued=queued)
    done = result(watcher, pid)
    assert done.state == "succeeded" and len(done.files) == 2 and all(f.data for f in done.files)
    wait_for(lambda: lst.reconnects >= 1 and lst.connected, "the listener to reconnect by itself")
    assert wait_for(lambda: ledger.get(pid).status == "succeeded", "ledger row done")
    assert len(ledger.get(pid).outputs) == 2

    # the next job gets live events over the new socket again
    again = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, again).state == "succeeded"
    snap = lst.snapshot(again)
    assert snap is not None and snap.state == "succeeded"


# ------------------------------------------------------------------------------------------------
# 4. the server answers slowly (timeouts)


def test_slow_server_times_out_with_sentence_watcher_waits_then_finishes(comfy_double, ledger, watchers):
    conn = Connection.local(comfy_double.url)
    client = ComfyClient(conn, transport=Transport(conn, timeout=(2.0, 0.3), retries=0))
    watcher = recording_watcher(client, None, ledger)
    watchers.append(watcher)
    try:
        comfy_double.set_slow(1.5, paths=["/queue", "/history/*"])
        with pytest.raises(E.RequestTimedOut) as slow:
            client.queue()
        assert_plain(slow.value.user_message, problem=r"did not answer", fix=r"try again")
        pid = submit(ledger, client, workflow("empty_save"), watcher)  # POST /prompt itself is quick
        p = wait_for(lambda: (p := watcher.progress(pid)) is not None and p.connection == "reconnecting" and p,
                     "the watcher to report trouble reaching the server")
        assert p.state in ("queued", "running") and watcher.result(pid) is None  # waiting, not failed
        assert ledger.get(pid).status == "queued"

        comfy_double.set_slow(0)  # the server is quick again
        done = result(watcher, pid)
        assert done.state == "succeeded" and done.files
        assert wait_for(lambda: ledger.get(pid).status == "succeeded", "ledger row done")
        assert client.queue().running == ()  # the same client
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------
# 5. 500 text bodies


def test_500_text_body_on_submit_and_while_following(local, ledger, watchers):
    double, client, lst = local
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.fail_next("/prompt", status=500, method="POST")  # ComfyUI's "Server got itself in trouble"
    with pytest.raises(E.ServerError) as exc:
        submit(ledger, client, workflow("empty_save"), watcher)
    assert_plain(exc.value.user_message, problem=r"internal error \(500\)", fix=r"check the server log")
    [rejected] = ledger.search()[0]
    assert rejected.status == "rejected" and rejected.error == exc.value.user_message

    # polls answered with the 500 text are passing trouble, not the job's end
    double.fail_next("/history/*", status=500, times=4)
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, pid).state == "succeeded"
    polls = [r for r in double.requests if r.method == "GET" and r.path == f"/api/history/{pid}"]
    assert len(polls) >= 5  # four 500s were really answered, then the one that counted
    assert wait_for(lambda: ledger.get(pid).status == "succeeded", "ledger row done")
    assert {r.status for r in ledger.search()[0]} == {"rejected", "succeeded"}


# ------------------------------------------------------------------------------------------------
# 6. HTML instead of JSON (a proxy's sign-in page)


def test_html_instead_of_json_names_the_problem_and_recovers(local, ledger, watchers):
    double, client, lst = local
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.script(per_node_delay=1.0, times=1)
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    double.serve_html_instead(True)
    with pytest.raises(E.BadResponse) as exc:
        client.queue()
    assert_plain(exc.value.user_message, problem=r"not comfyui's api", fix=r"check that the address")
    wait_for(lambda: (p := watcher.progress(pid)) is not None and p.connection == "reconnecting",
             "the watcher to report trouble reading the server")
    assert watcher.result(pid) is None  # an HTML page is not the job's end
    double.serve_html_instead(False)
    assert result(watcher, pid).state == "succeeded"
    assert wait_for(lambda: ledger.get(pid).status == "succeeded", "ledger row done")
    assert client.system_stats().comfyui_version == "0.3.75"


# ------------------------------------------------------------------------------------------------
# 7-10. Comfy Cloud: 401, 402, 429 (subscription), 503


def _posts(double: CloudDouble, path: str = "/api/prompt") -> int:
    return sum(1 for r in double.requests if r.method == "POST" and r.path == path)


def test_cloud_401_on_submit_and_while_following_then_recovers(cloud, ledger, watchers):
    double, client, lst = cloud
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    unauthorized = json.dumps({"error": {"type": "unauthorized", "message": "Invalid or missing API key"}})
    double.fail_next("/api/prompt", status=401, body=unauthorized)
    with pytest.raises(E.AuthFailed) as exc:
        submit(ledger, client, workflow("empty_save"), watcher)
    assert_plain(exc.value.user_message, problem=r"refused the credentials \(401\)", fix=r"check the api key")
    assert ledger.search(status="rejected")[1] == 1

    # the key is refused while the job is followed: following stops with the sentence, the row stays
    double.script(per_node_delay=0.3, times=1)
    double.fail_next("/api/job/*/status", status=401, body=unauthorized, times=50)
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    stopped = result(watcher, pid)
    assert stopped.result is None
    assert_plain(stopped.message, problem=r"refused the credentials", fix=r"api key")
    assert ledger.get(pid).status == "queued"  # not lost, not guessed

    double.clear_faults()
    double.wait_idle(15)
    report = reconcile(ledger, client, client.connection.server_id(), check_files=False)
    assert pid in report.completed and ledger.get(pid).status == "succeeded"
    again = submit(ledger, client, workflow("empty_save"), watcher)  # same client, same watcher
    assert result(watcher, again).state == "succeeded"


@pytest.mark.parametrize("billing, error, problem, fix", [
    ("no_credits", E.InsufficientCredits, r"run out of credits \(402\)", r"add credits"),
    ("inactive", E.SubscriptionInactive, r"subscription is not active \(429\)", r"renew the subscription"),
])
def test_cloud_billing_refusal_is_not_retried_and_the_same_client_recovers(cloud, ledger, watchers, billing, error,
                                                                           problem, fix):
    double, client, lst = cloud
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.set_billing_state(billing)
    with pytest.raises(error) as exc:
        submit(ledger, client, workflow("empty_save"), watcher)
    assert_plain(exc.value.user_message, problem=problem, fix=fix)
    assert _posts(double) == 1  # sent once: a prompt is never sent twice
    [rejected] = ledger.search()[0]
    assert rejected.status == "rejected" and rejected.error == exc.value.user_message
    if billing == "inactive":  # Cloud's 429 is not a rate limit: GETs are not retried either
        double.clear_requests()
        with pytest.raises(E.SubscriptionInactive):
            client.queue()
        assert sum(1 for r in double.requests if r.path == "/api/queue") == 1

    double.set_billing_state("ok")
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, pid).state == "succeeded"
    assert wait_for(lambda: ledger.get(pid).status == "succeeded", "ledger row done")
    assert ledger.get(rejected.prompt_id).status == "rejected"


def test_cloud_503_post_refused_once_get_retried_then_recovers(cloud, ledger, watchers):
    double, client, lst = cloud
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.fail_next("/api/prompt", status=503)
    with pytest.raises(E.ServerError) as exc:
        submit(ledger, client, workflow("empty_save"), watcher)
    assert_plain(exc.value.user_message, problem=r"temporarily unavailable \(503\)", fix=r"try again")
    assert _posts(double) == 1
    assert ledger.search(status="rejected")[1] == 1
    double.clear_requests()
    double.fail_next("/api/queue", status=503)  # a GET: retried with backoff, the user sees nothing
    assert client.queue().running == ()
    assert sum(1 for r in double.requests if r.path == "/api/queue") == 2
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, pid).state == "succeeded"


# ------------------------------------------------------------------------------------------------
# 11. /api/view answers 302 to a storage host that is down


def test_cloud_view_redirect_to_storage_that_is_down(cloud, ledger, watchers):
    double, client, lst = cloud
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    double.storage.stop()
    pid = submit(ledger, client, workflow("empty_save"), watcher)
    done = result(watcher, pid)
    assert done.state == "succeeded" and len(done.files) == 2  # the job itself is fine
    for f in done.files:
        assert f.data == b""
        assert_plain(f.error, problem=r"file storage .* could not be reached", fix=r"try again")
        assert "ComfyUI is running" not in f.error  # not the user's server: their address is fine
        assert "sig=" not in f.error and "exp=" not in f.error  # no signed query string
    rec = wait_for(lambda: (r := ledger.get(pid)).status == "succeeded" and r, "ledger row done")
    assert [o.ref for o in rec.outputs] == [f.ref for f in done.files]  # the refs are kept to fetch later

    double.storage.start()  # the storage is back, on the same address
    assert all(is_png(client.view(o.ref)) for o in rec.outputs)  # the same client
    assert not double.storage.violations


# ------------------------------------------------------------------------------------------------
# 12. ComfyUI-Manager refusals (403, 404)


@pytest.mark.parametrize("flavour, refuse, status, reason, problem, fix", [
    ("legacy", "security_text", 403, "security_level", r"refused to install .* security level", r"config\.ini|--listen"),
    ("legacy", "unlisted", 404, "unlisted", r"not in its list of known nodes", r"(?i)registry id"),
])
def test_manager_refusal_is_explained_not_retried_and_install_works_once_allowed(flavour, refuse, status, reason,
                                                                               problem, fix):
    double = ManagerDouble(flavour=flavour, refuse=refuse, version="0.3.80").start()  # past the 0.3.75 trap
    client = ComfyClient(Connection.local(double.url))
    try:
        manager = Manager(client)
        with pytest.raises(ManagerRefused) as exc:
            manager.install("comfyui-kjnodes")
        assert exc.value.status == status and exc.value.reason == reason
        message = exc.value.user_message
        assert "\n" not in message and "A security error has occurred" not in message  # not the raw text
        assert not CODE_WORDS.search(message)
        assert re.search(problem, message) and re.search(fix, message), message
        assert len(double.manager_posts) == 1  # refused once, never retried, nothing started

        double.refuse = None  # the operator changed the setting
        ui_id = manager.install("comfyui-kjnodes")  # the same Manager object, the same client
        assert ui_id and "comfyui-kjnodes" in {p.name for p in manager.installed()}
    finally:
        client.close()
        double.stop()


def test_manager_v4_strong_reboot_refusal_then_allowed():
    double = ManagerDouble(flavour="v4", refuse="strong", reboot_downtime=1.0).start()
    client = ComfyClient(Connection.local(double.url))
    try:
        manager = Manager(client)
        with pytest.raises(ManagerRefused) as exc:
            manager.reboot()
        assert exc.value.status == 403 and exc.value.reason == "security_level"
        assert re.search(r"security level", exc.value.user_message)
        assert "\n" not in exc.value.user_message and not CODE_WORDS.search(exc.value.user_message)
        double.refuse = None
        manager.reboot()
        assert manager.wait_back(timeout=20, interval=0.1) is True
        assert double.reboots == 1 and client.system_stats().comfyui_version == "0.3.75"
    finally:
        client.close()
        double.stop()


# ------------------------------------------------------------------------------------------------
# 13-14. the ledger's SQLite file: disk full, read-only


@pytest.mark.parametrize("fault, problem, fix", [
    ("full", r"disk is full", r"free some space"),
    ("readonly", r"is read-only", r"make the file writable"),
])
def test_ledger_fault_keeps_job_records_in_memory_and_writes_them_when_it_ends(local, ledger, watchers, fault,
                                                                               problem, fix):
    double, client, lst = local
    watcher = recording_watcher(client, lst, ledger)
    watchers.append(watcher)
    before = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, before).state == "succeeded"
    assert ledger.problem is None

    setattr(ledger, fault, True)
    pid = submit(ledger, client, workflow("empty_save"), watcher, big=True)  # record → send → follow: no raise
    done = result(watcher, pid)
    assert done.state == "succeeded" and all(f.data for f in done.files)  # the images still come
    wait_for(lambda: ledger.waiting >= 3, "the completion to wait in memory too")
    assert_plain(ledger.problem, problem=problem, fix=fix)
    assert "saved by themselves" in ledger.problem and str(ledger.path) not in ledger.problem
    assert ledger.get(pid) is None and ledger.get(before).status == "succeeded"  # reads still work
    with pytest.raises(E.LedgerUnavailable) as edit:  # a hand edit cannot wait: the user retries
        ledger.set_favourite(before, True)
    assert_plain(edit.value.user_message, problem=problem, fix=r"try again")

    setattr(ledger, fault, False)  # space freed / writable again: nothing else is done
    rec = ledger.get(pid)  # any read writes what waited, in order
    assert rec is not None and rec.status == "succeeded" and len(rec.outputs) == 2
    assert json.loads(rec.recipe_json)["note"] == "x" * 65536
    assert ledger.problem is None and ledger.waiting == 0
    ledger.set_favourite(before, True)
    again = submit(ledger, client, workflow("empty_save"), watcher)
    assert result(watcher, again).state == "succeeded"
    assert wait_for(lambda: ledger.get(again).status == "succeeded", "ledger row done")
    assert ledger.count() == 3 and ledger.check() == "ok"


def test_ledger_file_read_only_from_the_start_opens_for_reading(tmp_path):
    path = tmp_path / "shared.sqlite3"
    writer = Ledger(path)
    writer.record_submission(prompt_id="p-1", recipe_json="{}", api={}, server_id="local:x", user_label="u",
                             workflow_name="w", params={})
    writer.close()
    reader = Ledger(f"file:{path}?mode=ro")  # e.g. COMFYPANEL_LEDGER pointing at a read-only share
    try:
        assert reader.get("p-1").status == "submitting"
        reader.mark_queued("p-1", 1)  # a job write: kept, not raised
        assert_plain(reader.problem, problem=r"is read-only", fix=r"make the file writable")
        assert reader.waiting == 1
    finally:
        reader.close()
    missing = tmp_path / "nowhere" / "none.sqlite3"
    with pytest.raises(E.LedgerUnavailable) as exc:
        Ledger(f"file:{missing}?mode=ro")
    assert_plain(exc.value.user_message, problem=r"cannot be opened", fix=r"check that the file .* exist")


def test_ledger_locked_by_another_program_reads_go_on_records_wait_then_land(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, timeout=0.2)  # a short busy timeout: the lock below outlasts it
    other = sqlite3.connect(path, isolation_level=None)  # "another program" (a backup tool, a second panel)
    try:
        ledger.record_submission(prompt_id="a", recipe_json="{}", api={}, server_id="local:x", user_label="u",
                                 workflow_name="w", params={})
        other.execute("BEGIN EXCLUSIVE")  # holds the write lock
        ledger.mark_queued("a", 1)  # does not raise: kept
        ledger.complete("a", state="succeeded", files=())
        assert ledger.waiting == 2
        assert_plain(ledger.problem, problem=r"another program keeps its ledger file locked", fix=r"close that program")
        assert ledger.get("a").status == "submitting"  # reads go on (WAL) and do not wait for the lock
        with pytest.raises(E.LedgerUnavailable):
            ledger.add_tag("a", "keep")
        other.execute("ROLLBACK")  # the other program lets go
        ledger.record_submission(prompt_id="b", recipe_json="{}", api={}, server_id="local:x", user_label="u",
                                 workflow_name="w", params={})  # the next write takes the waiting ones first
        assert ledger.waiting == 0 and ledger.problem is None
        assert ledger.get("a").status == "succeeded" and ledger.get("b").status == "submitting"
    finally:
        other.close()
        ledger.close()
