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

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

STRONG_CONFIG = """[default]
network_mode = offline
db_mode = local
file_logging = False
use_uv = False
security_level = strong
"""


@pytest.fixture(scope="module")
def manager_server(tmp_path_factory):
    server = devserver.start(data_dir=tmp_path_factory.mktemp("comfyui-manager-data"), manager=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def manager(manager_server):
    client = ComfyClient(Connection.local(manager_server.url))
    yield Manager(client)
    client.close()


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
