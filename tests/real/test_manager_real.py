"""comfyui-manager 4.3 loaded into the real ComfyUI 0.3.75 (devserver.start(manager=True): the shim
custom node and an offline config.ini in the run's own data dir, comfyui-api.md §8.6/§12.8).

Offline, so no install can succeed: what is verified is detection, version, queue status, the
installed list, the form-POST refusal, an accepted-then-failed registry install (explained, sent
once), a refusal by a gated (security_level = strong) server, and a real reboot with wait_back.
"""

from __future__ import annotations

import pytest

from comfypanel import devserver
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.manager import Manager, ManagerRefused, explain_refusal, explain_task_failure
from tests.helpers import follow_manager_tasks

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

STRONG_CONFIG = """[default]
network_mode = offline
db_mode = local
file_logging = False
use_uv = False
security_level = strong
"""


def _serve(tmp_path_factory, name: str, **kw):
    server = devserver.start(data_dir=tmp_path_factory.mktemp(name), manager=True, **kw)
    try:
        yield server
    finally:
        server.stop()


def _manager_for(server):
    client = ComfyClient(Connection.local(server.url))
    yield Manager(client)
    client.close()


@pytest.fixture(scope="module")
def manager_server(tmp_path_factory):
    yield from _serve(tmp_path_factory, "comfyui-manager-data")


@pytest.fixture
def manager(manager_server):
    yield from _manager_for(manager_server)


def test_detects_v4_and_reads_status_and_installed(manager):
    info = manager.info()
    assert (info.flavour, info.version) == ("v4", "V4.3")
    assert manager.client.features()["extension"]["manager"]["supports_csrf_post"] is True
    status = manager.queue_status()
    assert status.pending == 0 and status.in_progress == 0
    assert manager.installed() == []
    # the v3-era paths are not served by 4.3's default UI mode
    assert manager.transport.request("GET", "/manager/version", ok=(404,)).status == 404


def test_form_post_is_refused_and_explained(manager):
    reply = manager.transport.request("POST", "/v2/manager/queue/start", data={"x": "1"}, ok=(400,))
    assert reply.status == 400
    exc = explain_refusal(reply, action="start the install queue", flavour="v4")
    assert exc.reason == "content_type"


def test_offline_install_is_accepted_then_fails_with_the_fix(manager):
    ui_id = manager.install("comfyui-impact-pack")
    result = manager.wait_task(ui_id, timeout=30)
    assert result is not None and result.failed
    assert "Cannot resolve install target" in result.message
    sentence = explain_task_failure(result.message)
    assert "network_mode = public" in sentence and "registry.comfy.org" in sentence
    ids = manager.transport.json("GET", "/v2/manager/queue/history_list")
    history = manager.transport.json("GET", "/v2/manager/queue/history")["history"]
    assert list(history).count(ui_id) == 1  # sent once, never retried
    assert isinstance(ids, dict)
    assert manager.installed() == []


def test_reboot_comes_back(manager, manager_server):
    pid = manager_server.pid
    manager.reboot()
    assert manager.wait_back(timeout=120, down_timeout=15) is True
    assert manager_server.pid == pid and manager_server.is_running()  # the Manager re-execs in place
    assert manager.info(refresh=True).version == "V4.3"


def test_strong_security_level_refuses_reboot_with_the_fix(tmp_path):
    config = tmp_path / "user" / "__manager" / "config.ini"
    config.parent.mkdir(parents=True)
    config.write_text(STRONG_CONFIG)
    with devserver.start(data_dir=tmp_path, manager=True) as server:
        client = ComfyClient(Connection.local(server.url))
        m = Manager(client)
        with pytest.raises(ManagerRefused) as info:
            m.reboot()
        assert info.value.reason == "security_level" and info.value.status == 403
        assert "security_level = normal" in info.value.user_message
        assert client.system_stats().comfyui_version == "0.3.75"  # not restarted
        client.close()


# ------------------------------------------------------------------ the v4 new UI: no model list, no git URL
def test_new_ui_has_no_model_list_and_no_git_url_install(manager):
    from comfypanel.manager import NO_GIT_URL_SENTENCE, NO_MODEL_LIST_SENTENCE

    assert not manager.info().legacy_ui  # GET /v2/manager/is_legacy_manager_ui → false
    with pytest.raises(ManagerRefused) as exc:
        manager.model_list()
    assert exc.value.user_message == NO_MODEL_LIST_SENTENCE
    # and the route really is absent here (recorded as 404 too)
    assert manager.transport.request("GET", "/v2/externalmodel/getlist", params={"mode": "cache"},
                                     ok=(404,)).status == 404
    with pytest.raises(ManagerRefused) as exc:
        manager.install_git_url("https://github.com/owner/some-nodes")
    assert exc.value.user_message == NO_GIT_URL_SENTENCE


# ------------------------------------------------------------------ the v4 legacy UI (--enable-manager-legacy-ui)
@pytest.fixture(scope="module")
def legacy_ui_server(tmp_path_factory):
    yield from _serve(tmp_path_factory, "comfyui-manager-legacy-ui", manager_legacy_ui=True)


@pytest.fixture
def legacy_ui(legacy_ui_server):
    yield from _manager_for(legacy_ui_server)


def test_legacy_ui_model_list_is_the_bundled_one(legacy_ui):
    info = legacy_ui.info()
    assert (info.flavour, info.legacy_ui, info.has_model_list) == ("v4", True, True)
    models = legacy_ui.model_list()
    assert len(models) > 100  # model-list.json bundled in the package (offline)
    taef = next(m for m in models if m.name == "TAEF1 Decoder")
    assert (taef.save_path, taef.filename, taef.installed) == ("vae_approx", "taef1_decoder.pth", False)
    assert [m.name for m in models if m.matches("taef1 decoder")] == ["TAEF1 Decoder"]


def test_legacy_ui_model_install_offline_fails_per_task_with_the_reason(legacy_ui):
    tracker, listener = follow_manager_tasks(legacy_ui)
    try:
        entry = next(m for m in legacy_ui.model_list() if m.name == "TAEF1 Decoder")
        ui_id = legacy_ui.install_model(entry, ui_id=tracker.new("install-model", entry.name))
        task = tracker.wait(ui_id, 60)  # cm-queue-status batch-done: model_result[ui_id]
        assert task is not None and task.state == "failed", task
        assert "could not download the model from github.com" in task.message
    finally:
        listener.stop()


def test_legacy_ui_registry_install_goes_through_the_batch_and_fails_offline(legacy_ui):
    tracker, listener = follow_manager_tasks(legacy_ui)
    try:
        ui_id = legacy_ui.install("comfyui-impact-pack", ui_id=tracker.new("install", "comfyui-impact-pack"))
        task = tracker.wait(ui_id, 60)
        assert task is not None and task.state == "failed", task
        assert "registry.comfy.org" in task.message
        assert legacy_ui.installed() == []
    finally:
        listener.stop()


def test_legacy_ui_git_url_install_is_refused_by_its_flag(legacy_ui):
    with pytest.raises(ManagerRefused) as exc:
        legacy_ui.install_git_url("https://github.com/owner/some-nodes")
    # observed: 403 {"reason": "allow_git_url_install"}
    assert exc.value.reason == "allow_git_url_install" and exc.value.status == 403
    assert "allow_git_url_install = true" in exc.value.user_message


def test_new_ui_task_messages_reach_this_client_only_and_drive_the_tracker(manager):
    tracker, listener = follow_manager_tasks(manager)
    try:
        ui_id = manager.install("comfyui-kjnodes", ui_id=tracker.new("install", "comfyui-kjnodes"))
        task = tracker.wait(ui_id, 60)  # no history polling here: cm-task-started/-completed only
        assert task is not None and task.state == "failed", task
        assert "registry.comfy.org" in task.message
    finally:
        listener.stop()
