"""The admin core: audit log, admin gate, ComfyUI-Manager adapter (against ManagerDouble)."""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
from datetime import datetime, timedelta, timezone

import pytest

from comfypanel import admin as gate
from comfypanel import audit, errors as E
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.manager import Manager, ManagerRefused, explain_refusal, explain_task_failure, listen_address
from comfypanel.transport import Reply
from tests.doubles.manager import FORM_REFUSAL, SECURITY_TEXT, ManagerDouble
from tests.helpers import recordings_dir

pytestmark = pytest.mark.timeout(60)


# ================================================================= audit
def test_audit_records_queries_and_never_stores_secrets(tmp_path):
    log = audit.AuditLog(tmp_path / "a" / "audit.sqlite3")
    server = Connection.local("http://127.0.0.1:8188", "tok-SECRET-1").server_id()
    assert "SECRET" not in server
    log.record(actor="alice@example.com", server=server, action="free_memory",
               params={"unload_models": True, "api_key": "k-SECRET-2", "Authorization": "Bearer x",
                       "nested": {"password": "p-SECRET-3", "url": "http://h/?token=t-SECRET-4"}},
               result="ok", message="Memory freed.")
    log.record(actor="session-1", server=server, action="clear_queue", result="refused", message="Not an admin.")
    log.record(actor="session-1", server="local:http://other", action="manager_install",
               params={"id": "comfyui-impact-pack"}, result="failed", message="offline")
    raw = (tmp_path / "a" / "audit.sqlite3").read_bytes()
    assert b"SECRET" not in raw
    rows = log.query()
    assert [r.action for r in rows] == ["manager_install", "clear_queue", "free_memory"]  # newest first
    assert rows[2].params == {"unload_models": True, "nested": {"url": "http://h/?token=[redacted]"}}
    assert [r.action for r in log.query(actor="session-1")] == ["manager_install", "clear_queue"]
    assert [r.action for r in log.query(result="refused")] == ["clear_queue"]
    assert [r.action for r in log.query(server="local:http://other")] == ["manager_install"]
    assert [r.action for r in log.query(text="impact")] == ["manager_install"]
    assert [r.action for r in log.query(text="100%")] == []  # LIKE wildcards are literal
    assert log.query(since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    assert log.distinct("result") == ["failed", "ok", "refused"]
    with pytest.raises(ValueError):
        log.record(actor="x", server="y", action="z", result="maybe")  # type: ignore[arg-type]


def test_audit_csv_export_is_spreadsheet_safe(tmp_path):
    log = audit.AuditLog(tmp_path / "audit.sqlite3")
    log.record(actor="=HYPERLINK(\"http://evil\")", server="local:http://h", action="reboot", result="ok",
               message="-2+3")
    text = audit.to_csv(log.query())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(audit.CSV_COLUMNS)
    assert rows[0]["actor"].startswith("'=") and rows[0]["message"] == "'-2+3"


def test_audit_schema_is_versioned_wal_and_concurrent(tmp_path):
    path = tmp_path / "audit.sqlite3"
    logs = [audit.AuditLog(path) for _ in range(4)]  # four sessions, one file

    def write(i):
        for n in range(25):
            logs[i].record(actor=f"s{i}", server="local:http://h", action="free_memory", result="ok", message=str(n))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(audit.AuditLog(path).query(limit=1000)) == 100
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == audit.SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {audit.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer Comfy Panel"):
        audit.AuditLog(path).query()


def test_audit_default_path(monkeypatch, tmp_path):
    assert audit.default_path({"COMFYPANEL_DATA_DIR": str(tmp_path)}) == tmp_path / "audit.sqlite3"
    assert audit.default_path({}).name == "audit.sqlite3"
    assert "comfypanel" in str(audit.default_path({}))


# ================================================================= gate
def test_password_hashes():
    h = gate.hash_password("correct horse", n=2**10)
    assert h.startswith("scrypt$1024$8$1$") and "correct" not in h
    assert gate.verify_password("correct horse", h)
    assert not gate.verify_password("correct horsE", h)
    assert gate.hash_password("x", n=2**10) != gate.hash_password("x", n=2**10)  # salted
    import hashlib
    hexd = hashlib.sha256(b"pw").hexdigest()
    assert gate.verify_password("pw", hexd) and gate.verify_password("pw", "sha256$" + hexd.upper())
    for broken in ("", "scrypt$", "scrypt$x$8$1$a$b", "plaintext", "sha256$abc"):
        assert not gate.verify_password("pw", broken)


def test_hash_password_cli(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert gate.main(["hash-password", "--stdin"]) == 0
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("password_hash")][0]
    assert gate.verify_password("a long password", line.split('"')[1])
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert gate.main(["hash-password", "--stdin"]) == 1


def test_admin_config_from_secrets():
    assert not gate.AdminConfig.from_secrets(None).configured
    c = gate.AdminConfig.from_secrets({"password_hash": gate.hash_password("pw", n=2**10),
                                       "allowed_emails": ["Alice@Example.com "]})
    assert c.has_password and c.email_allowed("alice@example.com") and not c.email_allowed("bob@example.com")
    assert not c.email_allowed(None) and not c.email_allowed("")
    assert "password" not in repr(c) or "scrypt" not in repr(c)
    plain = gate.AdminConfig.from_secrets({"password": "hunter2"})
    assert not plain.has_password and "plain admin password" in plain.problem
    junk = gate.AdminConfig.from_secrets({"password_hash": "md5$abc"})
    assert not junk.has_password and "not in a known format" in junk.problem
    assert gate.AdminConfig.from_secrets({"allowed_emails": "a@x.org, b@x.org"}).email_allowed("b@x.org")


def test_gate_rate_limits_per_session_and_process():
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    config = gate.AdminConfig(gate.hash_password("right", n=2**10))
    process = gate.process_limiter(clock)
    s1 = gate.session_limiter(clock)
    for i in range(4):
        r = gate.check_password(config, "wrong", [s1, process])
        assert not r.ok and f"{4 - i} " in r.message
    r = gate.check_password(config, "wrong", [s1, process])  # the 5th miss locks 30 s
    assert not r.ok and "30 seconds" in r.message
    r = gate.check_password(config, "right", [s1, process])  # even the right one waits
    assert not r.ok and "Too many wrong passwords" in r.message
    now[0] += 31
    gate.check_password(config, "wrong", [s1, process])  # the 6th: 60 s
    assert 59 < s1.wait_seconds() <= 60
    # a new session starts fresh, but the process-wide limit still counts every miss
    for _ in range(14):
        s = gate.session_limiter(clock)
        gate.check_password(config, "wrong", [s, process])
    assert process.wait_seconds() > 0
    r = gate.check_password(config, "right", [gate.session_limiter(clock), process])
    assert not r.ok
    now[0] += 16 * 60
    r = gate.check_password(config, "right", [gate.session_limiter(clock), process])
    assert r.ok and process.misses == 0
    assert not gate.check_password(gate.AdminConfig(), "x", [s1]).ok  # nothing configured


# ================================================================= manager: refusals
def reply(status, body=b"", ctype="text/plain"):
    if isinstance(body, str):
        body = body.encode()
    return Reply(status, {"Content-Type": ctype}, body, "http://h/api/x")


@pytest.mark.parametrize("r, kwargs, reason, words", [
    (reply(403, SECURITY_TEXT), {"comfyui_version": "0.3.80"}, "security_level", "security_level = normal"),
    (reply(403, SECURITY_TEXT), {"comfyui_version": "0.3.80", "listen": "0.0.0.0"}, "security_level", "127.0.0.1"),
    (reply(403, SECURITY_TEXT), {"comfyui_version": "0.3.75"}, "comfyui_outdated", "0.3.76"),
    (reply(403, b'{"error": "comfyui_outdated"}', "application/json"), {}, "comfyui_outdated", "strong"),
    (reply(403, b'{"error": "security_level"}', "application/json"), {}, "security_level", "config.ini"),
    (reply(403, b'{"error": "allow_git_url_install"}', "application/json"), {}, "allow_git_url_install",
     "allow_git_url_install = true"),
    (reply(404, SECURITY_TEXT), {}, "unlisted", "Registry id"),
    (reply(403), {}, "forbidden", "origin check"),
    (reply(403), {"flavour": "v4"}, "security_level", "user/__manager/config.ini"),
    (reply(403, "[Manager] This request is banned."), {}, "forbidden", "personal_cloud"),
    (reply(404), {}, "not_found", "404"),
    (reply(400, FORM_REFUSAL), {}, "content_type", "panel bug"),
    (reply(400, "Invalid task data"), {}, "bad_request", "registry"),
])
def test_every_refusal_is_explained(r, kwargs, reason, words):
    exc = explain_refusal(r, action="install “x”", **kwargs)
    assert exc.reason == reason
    assert words in exc.user_message
    assert "\n" not in exc.user_message


def test_task_failure_sentences_and_listen():
    assert "network_mode = offline" in explain_task_failure("network_mode is offline")
    assert "internet" in explain_task_failure("Connection refused")
    assert "security" in explain_task_failure("security level too high").lower()
    assert listen_address({"system": {"argv": ["main.py", "--listen", "0.0.0.0"]}}) == "0.0.0.0"
    assert listen_address({"system": {"argv": ["main.py", "--listen"]}}) == "0.0.0.0"
    assert listen_address({"system": {"argv": ["main.py"]}}) is None


# ================================================================= manager: against the doubles
@pytest.fixture
def make_manager():
    started = []

    def make(**kw):
        d = ManagerDouble(**kw).start()
        started.append(d)
        c = ComfyClient(Connection.local(d.url))
        started.append(c)
        return d, Manager(c)

    yield make
    for x in started:
        (x.close if isinstance(x, ComfyClient) else x.stop)()


def test_v4_detect_status_install_history(make_manager):
    double, m = make_manager(flavour="v4")
    info = m.info()
    assert (info.flavour, info.version) == ("v4", "V4.3") and info.present
    assert m.installed() == []
    assert m.queue_status().total == 0 and not m.queue_status().is_processing
    ui_id = m.install("comfyui-impact-pack")
    [task_post, start_post] = double.manager_posts
    assert task_post[0] == "/api/v2/manager/queue/task"
    assert task_post[1]["kind"] == "install" and task_post[1]["params"]["id"] == "comfyui-impact-pack"
    assert task_post[1]["client_id"] == m.client.client_id
    assert start_post == ("/api/v2/manager/queue/start", None)  # no body, never a form
    [pack] = m.installed()
    assert (pack.name, pack.cnr_id, pack.enabled) == ("comfyui-impact-pack", "comfyui-impact-pack", True)
    status = m.queue_status()
    assert (status.total, status.done, status.progress) == (1, 1, 1.0)
    result = m.task_result(ui_id)
    assert result.status == "success"


def test_v4_shapes_match_the_recordings(make_manager):
    import json
    rec = lambda n: json.loads((recordings_dir() / "manager" / f"{n}.json").read_text())  # noqa: E731
    double, m = make_manager(flavour="v4")
    assert m.transport.request("GET", "/v2/manager/version").text() == rec("GET_version")["response"]["body"]
    assert set(m.transport.json("GET", "/v2/manager/queue/status")) == set(rec("GET_queue_status")["response"]["body"])
    assert m.transport.json("GET", "/v2/customnode/installed") == rec("GET_customnode_installed")["response"]["body"]
    r = m.transport.request("POST", "/v2/manager/queue/start", data={"x": "1"}, ok=(400,))
    assert (r.status, r.text()) == (400, rec("POST_queue_start_form_post_rejected")["response"]["body"])
    for name in ("GET_absent_manager_version", "GET_absent_customnode_getlist"):
        path = rec(name)["request"]["path"]
        assert m.transport.request("GET", path, ok=(404,)).status == 404
    assert m.client.features()["extension"] == rec("GET_features_with_manager")["response"]["body"]["extension"]


def test_v4_task_accepted_then_failed_is_explained(make_manager):
    double, m = make_manager(flavour="v4", refuse="task_failed")
    ui_id = m.install("comfyui-impact-pack")
    result = m.wait_task(ui_id, timeout=2)
    assert result.failed and result.status == "error"
    assert "registry.comfy.org" in explain_task_failure(result.message)
    assert "network_mode = offline" in explain_task_failure(result.message)
    assert m.installed() == []


def test_legacy_detect_install_and_refusals(make_manager):
    double, m = make_manager(flavour="legacy")
    assert (m.info().flavour, m.info().version) == ("legacy", "V3.41")
    m.install("comfyui-kjnodes", "1.0.5")
    assert [p for p, _ in double.manager_posts] == ["/api/manager/queue/install", "/api/manager/queue/start"]
    assert double.manager_posts[0][1]["id"] == "comfyui-kjnodes"
    [pack] = m.installed()
    assert (pack.name, pack.version) == ("comfyui-kjnodes", "1.0.5")
    assert m.queue_status().pending == 0


def test_legacy_forced_strong_trap_on_0_3_75_is_explained_and_not_retried(make_manager):
    double, m = make_manager(flavour="legacy", refuse="comfyui_outdated")
    with pytest.raises(ManagerRefused) as info:
        m.install("comfyui-kjnodes")
    assert info.value.reason == "comfyui_outdated" and "0.3.76" in info.value.user_message
    assert [p for p, _ in double.manager_posts] == ["/api/manager/queue/install"]  # once, no start, no retry
    with pytest.raises(ManagerRefused) as info:
        m.reboot()
    assert info.value.reason == "comfyui_outdated"


def test_legacy_security_refusal_names_the_listen_address(make_manager):
    double, m = make_manager(flavour="legacy", refuse="security_text", listen="0.0.0.0", version="0.3.80")
    with pytest.raises(ManagerRefused) as info:
        m.install("comfyui-kjnodes")
    assert info.value.reason == "security_level" and "--listen 0.0.0.0" in info.value.user_message
    assert len(double.manager_posts) == 1


def test_no_manager_and_cloud(comfy_double, cloud_double):
    c = ComfyClient(Connection.local(comfy_double.url))
    m = Manager(c)
    assert m.info().flavour == "none" and "--enable-manager" in m.info().message
    with pytest.raises(ManagerRefused) as info:
        m.install("x")
    assert info.value.reason == "no_manager"
    c.close()
    cc = ComfyClient(Connection.cloud(cloud_double.api_key, cloud_double.url))
    mc = Manager(cc)
    assert mc.info().flavour == "cloud" and "curates" in mc.info().message
    assert not [r for r in cloud_double.requests if "manager" in r.path]
    cc.close()


def test_bad_registry_ids_are_refused_before_sending(make_manager):
    double, m = make_manager(flavour="v4")
    for bad in ("", "https://github.com/x/y", "a b"):
        with pytest.raises(E.InvalidInput):
            m.install(bad)
    assert double.manager_posts == []


def test_reboot_waits_for_the_server(make_manager):
    double, m = make_manager(flavour="v4", reboot_downtime=0.8)
    m.reboot()
    assert m.wait_back(timeout=20, down_timeout=5, interval=0.1) is True
    assert double.reboots == 1
    assert m.client.system_stats().comfyui_version == "0.3.75"


def test_v4_strong_level_reboot_refusal(make_manager):
    double, m = make_manager(flavour="v4", refuse="strong")
    with pytest.raises(ManagerRefused) as info:
        m.reboot()
    assert info.value.reason == "security_level" and "security_level = normal" in info.value.user_message
    assert double.reboots == 0 and len(double.manager_posts) == 1


# ================================================================= live stats poller
def test_stats_monitor_polls_only_while_read(comfy_double):
    import time as _time

    from comfypanel.monitor import StatsMonitor

    client = ComfyClient(Connection.local(comfy_double.url))
    mon = StatsMonitor(client, interval=0.05, window=10, idle_after=0.5).start()
    try:
        deadline = _time.monotonic() + 5
        while len(mon.samples()) < 3 and _time.monotonic() < deadline:
            _time.sleep(0.05)
        samples = mon.samples()
        assert len(samples) >= 3 and samples[-1].ram_used_gib > 0 and samples[-1].queue == 0
        assert samples[-1].vram_used_gib == 0  # the double is a CPU server
        _time.sleep(0.8)  # nobody reads: the poller pauses
        count = len([r for r in comfy_double.requests if r.path.endswith("/system_stats")])
        _time.sleep(0.5)
        assert len([r for r in comfy_double.requests if r.path.endswith("/system_stats")]) == count
        assert not mon.polling
        before = len(mon.samples())  # a read wakes it
        deadline = _time.monotonic() + 5
        while len(mon.samples()) <= before and _time.monotonic() < deadline:
            _time.sleep(0.05)
        assert len(mon.samples()) > before
    finally:
        mon.stop()
        client.close()
    assert not mon._thread.is_alive()
