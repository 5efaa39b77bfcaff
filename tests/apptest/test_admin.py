"""The Admin page: the gate (no password, wrong, right, rate limit), each action's confirmation
and its audit record, and the read-only sections."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from comfypanel import admin as gate
from comfypanel.audit import AuditLog
from components import session
from tests.doubles.manager import ManagerDouble

from .conftest import ROOT
from .test_shell import tree_dump, unescape

APP = ROOT / "streamlit_app.py"
PASSWORD = "the right admin password"
HASH = gate.hash_password(PASSWORD, n=2**10)

pytestmark = pytest.mark.timeout(120)


def w(name: str) -> str:
    return session.admin_widget(name)


def open_admin(url: str, *, secrets: dict | None = None, section: str = "System") -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    if secrets is not None:
        at.secrets = secrets
    at.run()
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    if section != "System":
        at.segmented_control(key=session.W_ADMIN_SECTION).set_value(section).run()
        assert not at.exception, at.exception
    return at


def admin_secrets(**extra) -> dict:
    return {"comfyui": {"admin": {"password_hash": HASH, **extra}}}


def unlock(at: AppTest, password: str) -> AppTest:
    at.text_input(key=session.W_ADMIN_PASSWORD).input(password)
    at.button(key="FormSubmitter:" + w("unlock_form") + "-Unlock").click().run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    return [unescape(e.value) for e in getattr(at, kind)]


def audit_rows(tmp_path) -> list:
    return AuditLog(tmp_path / "panel-data" / "audit.sqlite3").query()


def confirm(at: AppTest, button: str, label: str | None = None) -> AppTest:
    at.button(key=w(button)).click().run()
    assert not at.exception, at.exception
    at.button(key=w("confirm")).click().run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def comfy(monkeypatch, comfy_double):
    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    return comfy_double


# ------------------------------------------------------------------------------------ the gate
def test_no_password_configured_is_read_only(comfy, tmp_path):
    at = open_admin(comfy.url)
    assert "Read-only" in tree_dump(at)
    assert any("no admin password is configured" in unescape(c.value) for c in at.caption)
    assert at.button(key=w("free")).disabled and at.button(key=w("clear_queue")).disabled
    assert not [t for t in at.text_input if t.key == session.W_ADMIN_PASSWORD]
    # health is still visible
    assert any(m.label == "ComfyUI" for m in at.main.get("metric"))


def test_plain_password_in_secrets_is_refused(comfy):
    at = open_admin(comfy.url, secrets={"comfyui": {"admin": {"password": "hunter2"}}})
    assert any("plain admin password" in unescape(x.value) for x in at.warning)
    assert not [t for t in at.text_input if t.key == session.W_ADMIN_PASSWORD]


def test_wrong_then_right_password_and_audit(comfy, tmp_path):
    at = open_admin(comfy.url, secrets=admin_secrets())
    unlock(at, "nope")
    assert any(e.startswith("Wrong password. 4 tries left") for e in texts(at, "error"))
    assert at.button(key=w("free")).disabled
    assert at.text_input(key=session.W_ADMIN_PASSWORD).value == ""  # not kept
    unlock(at, PASSWORD)
    assert any("unlocked" in s for s in texts(at, "success"))
    assert not at.button(key=w("free")).disabled
    rows = audit_rows(tmp_path)
    assert [(r.action, r.result) for r in rows] == [("admin_unlock", "ok"), ("admin_unlock", "refused")]
    assert rows[0].actor.startswith("session-") and rows[0].server == f"local:{comfy.url}"
    assert PASSWORD not in str(rows) and "nope" not in str(rows)
    at.button(key=w("lock")).click().run()
    assert at.button(key=w("free")).disabled


def test_wrong_passwords_are_rate_limited(comfy):
    at = open_admin(comfy.url, secrets=admin_secrets())
    for _ in range(5):
        unlock(at, "wrong")
    assert any("try again in 30 seconds" in e for e in texts(at, "error"))
    unlock(at, PASSWORD)  # locked out: even the right one is not accepted now
    assert any("Too many wrong passwords" in e for e in texts(at, "error"))
    assert at.button(key=w("free")).disabled


def test_oidc_allow_list(comfy, monkeypatch):
    from components import admin_gate

    monkeypatch.setattr(admin_gate, "user_email", lambda: "Alice@Example.com")
    at = open_admin(comfy.url, secrets={"comfyui": {"admin": {"allowed_emails": ["alice@example.com"]}}})
    # user_email is patched in this process; AppTest runs the script in-process
    assert not at.button(key=w("free")).disabled
    assert at.session_state[session.K_ADMIN] == "email"
    assert not [t for t in at.text_input if t.key == session.W_ADMIN_PASSWORD]  # no password needed


# ------------------------------------------------------------------------------------ actions
@pytest.mark.parametrize("button, action, check", [
    ("unload", "free_memory", lambda d: any(r.method == "POST" and r.path.endswith("/free") for r in d.requests)),
    ("free", "free_memory", lambda d: any(r.method == "POST" and r.path.endswith("/free") for r in d.requests)),
    ("clear_queue", "clear_queue", lambda d: any(r.method == "POST" and r.path.endswith("/queue") for r in d.requests)),
    ("clear_history", "clear_history", lambda d: any(r.method == "POST" and r.path.endswith("/history") for r in d.requests)),
])
def test_each_system_action_confirms_runs_and_is_audited(comfy, tmp_path, button, action, check):
    at = open_admin(comfy.url, secrets=admin_secrets())
    unlock(at, PASSWORD)
    before = len(comfy.requests)
    at.button(key=w(button)).click().run()
    assert at.session_state[session.K_ADMIN_PENDING]["action"] == action  # the dialog is open
    assert len(comfy.requests) - before < 20 and not [r for r in comfy.requests[before:] if r.method == "POST"]
    at.button(key=w("confirm")).click().run()
    assert not at.exception, at.exception
    assert check(comfy)
    posts = [r for r in comfy.requests[before:] if r.method == "POST"]
    assert len(posts) == 1  # exactly once
    [row] = [r for r in audit_rows(tmp_path) if r.action == action]
    assert row.result == "ok" and row.message
    assert any(row.message in s for s in texts(at, "success"))


def test_cancel_runs_nothing(comfy, tmp_path):
    at = open_admin(comfy.url, secrets=admin_secrets())
    unlock(at, PASSWORD)
    before = len(comfy.requests)
    at.button(key=w("clear_queue")).click().run()
    at.button(key=w("cancel")).click().run()
    assert not [r for r in comfy.requests[before:] if r.method == "POST"]
    assert [r.action for r in audit_rows(tmp_path)] == ["admin_unlock"]


def test_action_after_lock_is_refused_and_audited(comfy, tmp_path):
    at = open_admin(comfy.url, secrets=admin_secrets())
    unlock(at, PASSWORD)
    at.button(key=w("clear_queue")).click().run()
    session_state = at.session_state
    session_state[session.K_ADMIN] = None  # the gate is checked again when the action runs
    before = len(comfy.requests)
    at.button(key=w("confirm")).click().run()
    assert not [r for r in comfy.requests[before:] if r.method == "POST"]
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("clear_queue", "refused")


# ------------------------------------------------------------------------------------ manager
@pytest.fixture
def manager_double(monkeypatch):
    doubles = []

    def make(**kw):
        d = ManagerDouble(**kw).start()
        doubles.append(d)
        monkeypatch.setenv("COMFYUI_URL", d.url)
        return d

    yield make
    for d in doubles:
        d.stop()


def test_manager_install_confirm_and_audit(manager_double, tmp_path):
    d = manager_double(flavour="v4")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    assert any("ComfyUI-Manager 4" in t.value and "V4.3" in t.value for t in at.text)
    assert at.button(key=w("install")).disabled  # not admin, and no id yet
    unlock(at, PASSWORD)
    at.text_input(key=w("pack_id")).input("comfyui-impact-pack").run()
    confirm(at, "install")
    assert [p for p, _ in d.manager_posts] == ["/api/v2/manager/queue/task", "/api/v2/manager/queue/start"]
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result, row.params) == (
        "manager_install", "ok", {"id": "comfyui-impact-pack", "version": "latest"})
    assert any("comfyui-impact-pack" in str(df.value) for df in at.dataframe)  # the installed list reloaded


def test_manager_refusal_is_explained_audited_and_not_retried(manager_double, tmp_path):
    d = manager_double(flavour="legacy", refuse="comfyui_outdated")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    unlock(at, PASSWORD)
    at.text_input(key=w("pack_id")).input("comfyui-kjnodes").run()
    confirm(at, "install")
    assert any("0.3.76" in e for e in texts(at, "error"))
    assert len(d.manager_posts) == 1
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("manager_install", "refused") and "0.3.76" in row.message


def test_manager_reboot_waits_and_is_audited(manager_double, tmp_path):
    d = manager_double(flavour="v4", reboot_downtime=0.5)
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    unlock(at, PASSWORD)
    confirm(at, "reboot")
    assert d.reboots == 1
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("manager_reboot", "ok") and "answers again" in row.message


def test_no_manager_is_explained(comfy):
    at = open_admin(comfy.url, section="Manager")
    assert any("no ComfyUI-Manager" in unescape(i.value) for i in at.info)


# ------------------------------------------------------------------------------------ read-only sections
def test_models_nodes_and_audit_sections(comfy, tmp_path):
    at = open_admin(comfy.url, secrets=admin_secrets(), section="Models")
    folders = at.dataframe[0].value
    assert "upscale_models" in list(folders["folder"])
    at.selectbox(key=w("model_folder")).set_value("upscale_models").run()
    at.button(key=w("meta_show")).click().run()
    assert any("modelspec.architecture" in str(df.value) for df in at.dataframe)
    at.segmented_control(key=session.W_ADMIN_SECTION).set_value("Nodes").run()
    at.text_input(key=w("node_search")).input("KSampler").run()
    at.selectbox(key=w("node_pick")).set_value("KSampler").run()
    inputs = [df.value for df in at.dataframe if "input" in getattr(df.value, "columns", [])][0]
    row = inputs[inputs["input"] == "steps"].iloc[0]
    assert (row["type"], row["default"]) == ("INT", "20") and "min 1" in row["range / choices"]
    unlock(at, "wrong")
    unlock(at, PASSWORD)
    at.segmented_control(key=session.W_ADMIN_SECTION).set_value("Audit").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["action"]) == ["admin_unlock", "admin_unlock"]
    at.selectbox(key=w("audit_result")).set_value("refused").run()
    assert list(at.dataframe[0].value["result"]) == ["refused"]


def test_manager_task_failure_offline_is_refused_with_the_fix(manager_double, tmp_path):
    d = manager_double(flavour="v4", refuse="task_failed")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    unlock(at, PASSWORD)
    at.text_input(key=w("pack_id")).input("comfyui-impact-pack").run()
    confirm(at, "install")
    assert any("network_mode = public" in e for e in texts(at, "error"))
    [task, start] = d.manager_posts  # sent once, started once, never retried
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("manager_install", "refused")


def test_every_section_on_comfy_cloud(cloud_double):
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.secrets = {"comfyui": {"cloud_api_key": cloud_double.api_key, "cloud_url": cloud_double.url}}
    at.run()
    at.switch_page("pages/admin.py").run()
    for section in ("System", "Models", "Nodes", "Manager", "Audit"):
        at.segmented_control(key=session.W_ADMIN_SECTION).set_value(section).run()
        assert not at.exception, (section, at.exception)
    at.segmented_control(key=session.W_ADMIN_SECTION).set_value("Manager").run()
    assert any("curates its custom nodes" in unescape(i.value) for i in at.info)
    assert cloud_double.api_key not in tree_dump(at)


def test_server_log_follows_live_over_the_socket(comfy):
    at = open_admin(comfy.url)
    assert any("Starting server" in c.value for c in at.code)
    comfy.log("hello from the server\n")  # written after the page loaded: arrives as a WS `logs` message
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("hello from the server" in c.value for c in at.code):
        time.sleep(0.2)
        at.run()
    assert any("hello from the server" in c.value for c in at.code)
    assert [r for r in comfy.requests if r.path == "/internal/logs/subscribe"]


# ------------------------------------------------------------------------------------ manager: models, git URL, tasks
def test_manager_model_list_install_confirm_audit_and_task_table(manager_double, tmp_path):
    d = manager_double(flavour="legacy")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    table = next(df.value for df in at.dataframe if "file" in getattr(df.value, "columns", []))
    assert list(table["name"]) == ["TAEF1 Decoder", "EasyNegative", "4x-UltraSharp"]
    assert at.button(key=w("install_model")).disabled  # not admin yet
    at.text_input(key=w("model_search")).input("negative").run()
    assert [o for o in at.selectbox(key=w("model_pick")).options] == ["EasyNegative — embedding, SD1.5 (25KB)"]
    unlock(at, PASSWORD)
    confirm(at, "install_model")
    assert not at.exception, at.exception
    assert [p for p, _ in d.manager_posts] == ["/api/manager/queue/install_model", "/api/manager/queue/start"]
    assert "easynegative.safetensors" in d.models_installed
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("manager_install_model", "ok")
    assert row.params["url"] == "https://civitai.com/api/download/models/9208" and "downloaded" in row.message
    tasks = next(df.value for df in at.dataframe if "state" in getattr(df.value, "columns", []))
    assert list(tasks["what"]) == ["EasyNegative"] and list(tasks["state"]) == ["done"]


def test_manager_model_download_failure_shows_in_tasks_and_audit(manager_double, tmp_path):
    d = manager_double(flavour="v4", legacy_ui=True, refuse="model_download")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    unlock(at, PASSWORD)
    confirm(at, "install_model")  # the first model of the list is picked by default
    assert any("could not download the model from github.com" in e for e in texts(at, "error"))
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("manager_install_model", "refused")
    tasks = next(df.value for df in at.dataframe if "state" in getattr(df.value, "columns", []))
    assert list(tasks["state"]) == ["failed"] and "github.com" in tasks["details"][0]
    assert [p for p, _ in d.manager_posts] == ["/api/v2/manager/queue/install_model", "/api/v2/manager/queue/start"]


def test_manager_v4_new_ui_explains_no_model_list_and_no_git_url(manager_double):
    d = manager_double(flavour="v4")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    assert any("--enable-manager-legacy-ui" in unescape(i.value) and "model list" in unescape(i.value) for i in at.info)
    assert any("registry id" in unescape(c.value) and "git URL" in unescape(c.value) for c in at.caption)
    assert w("git_url") not in [e.key for e in at.text_input]  # nothing to type a URL into
    assert w("install_model") not in [b.key for b in at.button]


def test_manager_git_url_install_checked_confirmed_and_refusal_explained(manager_double, tmp_path):
    d = manager_double(flavour="legacy", refuse="git_flag")
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    unlock(at, PASSWORD)
    at.text_input(key=w("git_url")).input("github.com/owner/repo").run()
    assert at.button(key=w("install_git")).disabled  # not an https URL: said, and nothing to confirm
    assert any("https://github.com/owner/repo" in unescape(c.value) for c in at.caption)
    at.text_input(key=w("git_url")).input("https://github.com/owner/some-nodes").run()
    confirm(at, "install_git")
    assert any("allow_git_url_install = true" in e for e in texts(at, "error"))
    assert d.manager_posts == [("/api/customnode/install/git_url", '{"url": "https://github.com/owner/some-nodes"}')]
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result, row.params) == ("manager_install_git", "refused",
                                                    {"url": "https://github.com/owner/some-nodes"})


def test_manager_git_url_install_succeeds_on_v4_legacy_ui(manager_double, tmp_path):
    d = manager_double(flavour="v4", legacy_ui=True)
    at = open_admin(d.url, secrets=admin_secrets(), section="Manager")
    assert any("legacy UI" in t.value for t in at.text)
    unlock(at, PASSWORD)
    at.text_input(key=w("git_url")).input("https://github.com/owner/some-nodes").run()
    confirm(at, "install_git")
    assert d.git_installs == ["https://github.com/owner/some-nodes"]
    assert any("some-nodes" in str(df.value) for df in at.dataframe)  # the installed list reloaded
    row = audit_rows(tmp_path)[0]
    assert (row.action, row.result) == ("manager_install_git", "ok")
