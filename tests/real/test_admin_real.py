"""Admin data against the real ComfyUI 0.3.75 (no Manager installed): stats, models with counts,
safetensors metadata, embeddings, free, logs, the node browser's view of /object_info, and the
Manager detection (none) with its sentence."""

from __future__ import annotations

import pytest

from comfypanel import nodeinfo
from comfypanel.audit import AuditLog
from comfypanel.manager import Manager, ManagerRefused, listen_address

pytestmark = pytest.mark.real


def test_admin_system_data(client):
    stats = client.system_stats()
    assert stats.comfyui_version == "0.3.75" and stats.python_version.startswith("3.")
    assert stats.ram_total > 0 and stats.devices and stats.devices[0].type == "cpu"
    assert listen_address(stats.raw) in (None, "127.0.0.1")  # loopback: the Manager's gates would allow installs
    feats = client.features()
    assert feats["max_upload_size"] > 0
    q = client.queue()
    assert isinstance(q.running, tuple) and isinstance(q.pending, tuple)
    entries = client.logs_raw()
    assert entries and any("ComfyUI version" in m or "Starting server" in m for _, m in entries)
    assert isinstance(client.logs(), str)


def test_admin_models_counts_metadata_embeddings(client):
    folders = {name: client.models(name) for name in client.models()}
    assert "upscale_models" in folders and "checkpoints" in folders
    assert "tiny_compact_x1.safetensors" in folders["upscale_models"]
    meta = client.view_metadata("upscale_models", "tiny_compact_x1.safetensors")
    assert meta.get("modelspec.architecture") == "Compact"
    assert isinstance(client.embeddings(), list)


def test_admin_free_is_accepted(client):
    client.free(unload_models=True, free_memory=False)
    client.free(unload_models=True, free_memory=True)
    assert client.system_stats().comfyui_version == "0.3.75"  # still up


def test_node_browser_over_real_object_info(client):
    info = client.object_info()
    assert len(info) > 300
    assert "sampling" in nodeinfo.categories(info)
    found = nodeinfo.search(info, "ksampler")
    assert {"KSampler", "KSamplerAdvanced"} <= {n for n, _, _ in found}
    assert all(cat.startswith("image") for _, _, cat in nodeinfo.search(info, category="image"))
    rows = {r["input"]: r for r in nodeinfo.input_rows(info["KSampler"])}
    assert rows["steps"]["type"] == "INT" and rows["steps"]["default"] == "20" and "min 1" in rows["steps"]["range / choices"]
    assert rows["sampler_name"]["type"] == "COMBO" and "euler" in rows["sampler_name"]["range / choices"]
    assert nodeinfo.output_rows(info["LoadImage"]) == [
        {"output": "IMAGE", "type": "IMAGE", "list": "no"}, {"output": "MASK", "type": "MASK", "list": "no"}]


def test_plain_server_has_no_manager(client, tmp_path):
    m = Manager(client)
    info = m.info()
    assert info.flavour == "none" and not info.present
    with pytest.raises(ManagerRefused) as exc:
        m.install("comfyui-impact-pack")
    assert exc.value.reason == "no_manager"
    log = AuditLog(tmp_path / "audit.sqlite3")
    log.record(actor="real-test", server=client.connection.server_id(), action="manager_install",
               params={"id": "comfyui-impact-pack"}, result="refused", message=exc.value.user_message)
    assert log.query()[0].server == client.connection.server_id()


def test_live_log_lines_arrive_over_the_socket(client, listener):
    """The Admin page's live log: subscribe, run a prompt, the server's own lines stream in."""
    import time

    from components.live import LogTail
    from comfypanel.jobs import submit_and_wait
    from tests.helpers import workflow

    tail = LogTail(client, listener)
    try:
        assert tail.error is None
        wf = workflow("empty_save")
        wf["1"]["inputs"]["color"] = int(time.time()) % 0xFFFFFF  # not cached
        assert submit_and_wait(client, wf, listener=listener, timeout=60).ok
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("got prompt" in m for _, m in tail.lines()):
            time.sleep(0.1)
        assert any("got prompt" in m for _, m in tail.lines())
    finally:
        tail.close()
