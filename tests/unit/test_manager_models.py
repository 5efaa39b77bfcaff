"""Manager: the model list, model installs, git-URL installs, the v4 legacy UI, and per-task progress
from the ``cm-*`` WebSocket messages — against ``ManagerDouble`` in each flavour."""

from __future__ import annotations

import time

import pytest

from comfypanel import errors as E
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.manager import (NO_GIT_URL_SENTENCE, NO_MODEL_LIST_SENTENCE, Manager, ManagerRefused, ModelEntry,
                                TaskResult, TaskTracker, check_git_url, explain_refusal, explain_task_failure)
from comfypanel.transport import Reply
from tests.doubles.manager import MODEL_LIST, ManagerDouble
from tests.helpers import follow_manager_tasks

FLAVOURS = {"legacy": dict(flavour="legacy"), "v4": dict(flavour="v4"), "v4-legacy-ui": dict(flavour="v4", legacy_ui=True)}


@pytest.fixture
def make_manager():
    started = []

    def make(**kw):
        d = ManagerDouble(**kw).start()
        c = ComfyClient(Connection.local(d.url))
        started.extend([c, d])
        return d, Manager(c)

    yield make
    for x in started:
        (x.close if isinstance(x, ComfyClient) else x.stop)()


def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ----------------------------------------------------------------------------------- detection
def test_v4_legacy_ui_is_detected_and_labelled(make_manager):
    _, m = make_manager(flavour="v4", legacy_ui=True)
    info = m.info()
    assert info.flavour == "v4" and info.legacy_ui and info.has_model_list and info.has_git_url_install
    assert info.label.endswith("legacy UI")
    _, m2 = make_manager(flavour="v4")
    assert not m2.info().legacy_ui and not m2.info().has_model_list and not m2.info().has_git_url_install
    _, m3 = make_manager(flavour="legacy")
    assert m3.info().has_model_list and m3.info().has_git_url_install


# ----------------------------------------------------------------------------------- model list
@pytest.mark.parametrize("flavour", ["legacy", "v4-legacy-ui"])
def test_model_list_is_read_and_searchable(make_manager, flavour):
    _, m = make_manager(**FLAVOURS[flavour])
    models = m.model_list()
    assert [e.name for e in models] == [x["name"] for x in MODEL_LIST]
    taef = models[0]
    assert (taef.type, taef.base, taef.save_path, taef.size, taef.installed) == ("TAESD", "FLUX.1", "vae_approx", "4.71MB", False)
    assert [e.name for e in models if e.matches("negative sd1.5")] == ["EasyNegative"]
    assert not [e for e in models if e.matches("nothing-like-this")]


def test_v4_new_ui_has_no_model_list_and_says_what_to_do(make_manager):
    double, m = make_manager(flavour="v4")
    with pytest.raises(ManagerRefused) as exc:
        m.model_list()
    assert exc.value.reason == "no_model_list" and exc.value.user_message == NO_MODEL_LIST_SENTENCE
    assert "--enable-manager-legacy-ui" in NO_MODEL_LIST_SENTENCE


def test_model_entry_from_raw_drops_what_cannot_be_installed():
    assert ModelEntry.from_raw({"name": "x", "filename": "x.pth", "url": "file:///etc/passwd"}) is None
    assert ModelEntry.from_raw({"name": "", "filename": "x.pth", "url": "https://h/x"}) is None
    e = ModelEntry.from_raw({"name": " A \n b ", "filename": "x.safetensors", "url": "https://h/x", "installed": "True",
                             "type": ["not", "text"]})
    assert (e.name, e.type, e.save_path, e.installed) == ("A b", "", "default", True)
    assert set(e.request()) == {"name", "type", "base", "save_path", "url", "filename"}


# ----------------------------------------------------------------------------------- model install
@pytest.mark.parametrize("flavour, path", [
    ("legacy", "/api/manager/queue/install_model"),
    ("v4-legacy-ui", "/api/v2/manager/queue/install_model"),
    ("v4", "/api/v2/manager/queue/task"),
])
def test_model_install_goes_to_the_right_route_and_progress_arrives(make_manager, flavour, path):
    double, m = make_manager(**FLAVOURS[flavour])
    entry = ModelEntry.from_raw(MODEL_LIST[1])
    tracker, listener = follow_manager_tasks(m)
    try:
        ui_id = tracker.new("install-model", entry.name)
        assert m.install_model(entry, ui_id=ui_id) == ui_id
        [(sent_path, body), (start_path, _)] = double.manager_posts
        assert sent_path == path and start_path.endswith("/manager/queue/start")
        fields = body["params"] if flavour == "v4" else body
        assert {k: fields[k] for k in entry.request()} == entry.request()
        if flavour == "v4":
            assert body["kind"] == "install-model" and body["client_id"] == m.client.client_id
        assert until(lambda: tracker.get(ui_id).finished)
        assert tracker.get(ui_id).state == "success"
        assert "easynegative.safetensors" in double.models_installed
        if flavour != "v4":
            assert next(e for e in m.model_list() if e.name == "EasyNegative").installed
    finally:
        listener.stop()


@pytest.mark.parametrize("flavour", ["legacy", "v4-legacy-ui", "v4"])
def test_model_download_failure_is_reported_per_task_in_plain_words(make_manager, flavour):
    double, m = make_manager(**FLAVOURS[flavour], refuse="model_download")
    tracker, listener = follow_manager_tasks(m)
    try:
        ui_id = m.install_model(ModelEntry.from_raw(MODEL_LIST[0]), ui_id=tracker.new("install-model", "TAEF1 Decoder"))
        assert until(lambda: tracker.get(ui_id).finished)
        task = tracker.get(ui_id)
        assert task.state == "failed"
        assert "could not download the model from github.com" in task.message and "\n" not in task.message
    finally:
        listener.stop()


def test_a_model_not_in_the_list_is_refused_once_and_explained(make_manager):
    double, m = make_manager(flavour="legacy")
    forged = ModelEntry("EasyNegative", "embedding", "SD1.5", "embeddings/SD1.5", "easynegative.safetensors",
                        "https://evil.example/x.safetensors")
    with pytest.raises(ManagerRefused) as exc:
        m.install_model(forged)
    assert exc.value.reason == "bad_request" and "not in its model list" in exc.value.user_message
    assert [p for p, _ in double.manager_posts] == ["/api/manager/queue/install_model"]  # no start, no retry


def test_model_install_security_refusal_is_explained(make_manager):
    double, m = make_manager(flavour="legacy", refuse="security_text")
    with pytest.raises(ManagerRefused) as exc:
        m.install_model(ModelEntry.from_raw(MODEL_LIST[1]))
    # the double reports ComfyUI 0.3.75: a legacy Manager ≥ 3.38 there is forced to "strong" (§8.5)
    assert exc.value.reason == "comfyui_outdated" and "0.3.76" in exc.value.user_message
    assert len(double.manager_posts) == 1


# ----------------------------------------------------------------------------------- git URL
@pytest.mark.parametrize("flavour, path, body", [
    ("legacy", "/api/customnode/install/git_url", '{"url": "https://github.com/owner/some-nodes"}'),
    ("v4-legacy-ui", "/api/v2/customnode/install/git_url", "https://github.com/owner/some-nodes"),
])
def test_git_url_install_per_flavour(make_manager, flavour, path, body):
    double, m = make_manager(**FLAVOURS[flavour])
    m.install_git_url("  https://github.com/owner/some-nodes  ")
    assert double.manager_posts == [(path, body)]
    assert "some-nodes" in [p.name for p in m.installed()]


def test_git_url_install_is_not_offered_by_the_v4_new_ui(make_manager):
    double, m = make_manager(flavour="v4")
    with pytest.raises(ManagerRefused) as exc:
        m.install_git_url("https://github.com/owner/some-nodes")
    assert exc.value.reason == "no_git_url" and exc.value.user_message == NO_GIT_URL_SENTENCE
    assert double.manager_posts == []


@pytest.mark.parametrize("flavour", ["legacy", "v4-legacy-ui"])
def test_git_url_flag_refusal_names_the_setting(make_manager, flavour):
    double, m = make_manager(**FLAVOURS[flavour], refuse="git_flag")
    with pytest.raises(ManagerRefused) as exc:
        m.install_git_url("https://github.com/owner/some-nodes")
    assert exc.value.reason == "allow_git_url_install"
    assert "allow_git_url_install = true" in exc.value.user_message and "127.0.0.1" in exc.value.user_message
    assert len(double.manager_posts) == 1  # never retried


@pytest.mark.parametrize("url", ["", "github.com/owner/repo", "ftp://github.com/a/b", "file:///etc/passwd",
                                 "https://user:pw@github.com/a/b", "https://github.com/only-owner",
                                 "https://github.com/a/b c", "ssh://git@github.com/a/b.git",
                                 "https://github.com/a/b\nhttps://evil.example/c/d"])
def test_bad_git_urls_are_refused_before_sending(url):
    with pytest.raises(E.InvalidInput) as exc:
        check_git_url(url)
    assert "https://github.com/owner/repo" in exc.value.user_message


def test_git_url_refusal_sentences():
    empty403 = Reply(403, {"Content-Type": "text/plain"}, b"", "http://h/api/x")
    assert explain_refusal(empty403, action="install x", kind="git_url").reason == "allow_git_url_install"
    bad = Reply(400, {"Content-Type": "text/plain"}, b"", "http://h/api/x")
    assert "ComfyUI log" in explain_refusal(bad, action="install x", kind="git_url").user_message
    reason = Reply(403, {"Content-Type": "application/json"}, b'{"reason": "allow_git_url_install"}', "http://h/api/x")
    assert explain_refusal(reason, action="install x").reason == "allow_git_url_install"


# ----------------------------------------------------------------------------------- v4 legacy UI node install
def test_v4_legacy_ui_node_install_uses_the_batch_route(make_manager):
    double, m = make_manager(flavour="v4", legacy_ui=True)
    tracker, listener = follow_manager_tasks(m)
    try:
        ui_id = m.install("comfyui-kjnodes", ui_id=tracker.new("install", "comfyui-kjnodes"))
        [(path, body)] = double.manager_posts  # the batch starts the queue itself
        assert path == "/api/v2/manager/queue/batch" and body["install"][0]["id"] == "comfyui-kjnodes"
        assert until(lambda: tracker.get(ui_id).finished) and tracker.get(ui_id).state == "success"
        assert m.task_result(ui_id) is None  # the legacy UI's history answers 400 for ?ui_id: no result
    finally:
        listener.stop()


def test_v4_legacy_ui_batch_refusal_is_explained(make_manager):
    double, m = make_manager(flavour="v4", legacy_ui=True, refuse="unlisted")
    with pytest.raises(ManagerRefused) as exc:
        m.install("comfyui-kjnodes")
    assert "ComfyUI server log" in exc.value.user_message and len(double.manager_posts) == 1


# ----------------------------------------------------------------------------------- the tracker itself
def test_tracker_v4_messages_and_history_fallback():
    t = TaskTracker()
    t.add("a", "install", "pack-a")
    t.add("b", "install", "pack-b")
    assert t.pending and not t.feed("cm-task-started", {"ui_id": "zzz"})
    assert t.feed("cm-task-started", {"ui_id": "a", "kind": "install"}) and t.get("a").state == "running"
    t.feed("cm-task-completed", {"ui_id": "a", "result": "Cannot resolve install target: 'pack-a@latest'",
                                 "status": {"status_str": "error", "messages": ["Cannot resolve install target: 'pack-a@latest'"]}})
    assert t.get("a").state == "failed" and "registry.comfy.org" in t.get("a").message
    t.feed("cm-queue-status", {"status": "all-done"})  # b's completion went to another client: result unknown
    assert t.get("b").state == "done" and not t.pending
    assert t.apply_result(TaskResult("b", "success", ""))  # the history fills it in
    assert t.get("b").state == "success"
    assert not t.apply_result(TaskResult("a", "success", ""))  # a known result is not overwritten


def test_tracker_legacy_messages_and_junk():
    t = TaskTracker()
    t.add("m", "install-model", "A model")
    for junk in [("status", {"ui_id": "m"}), ("cm-queue-status", None), ("cm-queue-status", ["x"]),
                 ("cm-queue-status", {"model_result": {"m": None}, "status": "in_progress"}), (None, {})]:
        t.feed(*junk)
    assert t.get("m").state in ("queued", "failed")
    t2 = TaskTracker()
    t2.add("m", "install-model", "A model")
    t2.feed("cm-queue-status", {"status": "in_progress", "target": "m", "total_count": 1, "done_count": 1})
    assert t2.get("m").state == "running" and (t2.queue_done, t2.queue_total) == (1, 1)
    t2.feed("cm-queue-status", {"status": "done", "nodepack_result": {}, "model_result": {"m": "success"}})
    assert t2.get("m").state == "success"


def test_tracker_is_bounded_and_wait_polls():
    t = TaskTracker(limit=3)
    for i in range(5):
        t.add(str(i), "install", f"p{i}")
    assert [x.ui_id for x in t.tasks()] == ["4", "3", "2"]
    clock = [0.0]
    calls = []

    def poll():
        calls.append(1)
        return TaskResult("4", "success", "") if len(calls) >= 3 else None

    task = t.wait("4", 10, poll=poll, sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])
    assert task.state == "success" and len(calls) == 3
    assert t.wait("3", 1, sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0]).state == "queued"


def test_model_failure_sentence():
    s = explain_task_failure("Model installation error: https://civitai.com/api/download/models/9208")
    assert "civitai.com" in s and "models folder" in s and "\n" not in s
