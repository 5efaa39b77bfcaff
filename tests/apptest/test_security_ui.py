"""Security suite (issue 8), AppTest tier: session isolation, the admin gate under out-of-order
calls, and the operator switch (``lock_server`` / ``allowed_servers``).

Every session here is a separate ``AppTest`` (its own ``st.session_state``) in one process, so
global ``st.cache_resource`` values (the ledger, the hold queue) are shared between them exactly as
between the browser sessions of one Streamlit server.
"""

from __future__ import annotations

import re
import time

import pytest
from streamlit.testing.v1 import AppTest

from comfypanel import admin as gate
from comfypanel.audit import AuditLog
from comfypanel.connection import NOT_ALLOWED
from comfypanel.ledger import Ledger
from comfypanel.types import FileRef
from comfypanel.workflow import Recipe
from components import session

from .conftest import ROOT, client_of, connect

APP = ROOT / "streamlit_app.py"
PASSWORD = "correct horse battery staple"
HASH = gate.hash_password(PASSWORD, n=2**10)
TOKEN_A = "tok-AAAA-session-a-secret"
KEY_B = "test-key"  # the cloud_double fixture's account key

pytestmark = pytest.mark.timeout(180)


# -- helpers ------------------------------------------------------------------------------------------
def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def page_text(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "text", "info", "success", "warning", "error", "metric"):
        for e in at.get(kind):
            parts.append(unescape(str(e.value)))
    return "\n".join(parts)


def new_app(secrets: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    if secrets is not None:
        at.secrets = secrets
    return at




def wait_for(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def state(at: AppTest, key: str):
    return at.session_state[key] if key in at.session_state else None


def posts(double, since: int = 0) -> list:
    return [r for r in double.requests[since:] if r.method != "GET"]


def carries(record, secret: str) -> bool:
    return secret in str(record.headers) or secret in str(record.query) or secret in record.path


def wf(color: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "iso"}},
    }


def record_job(led: Ledger, at: AppTest, prompt_id: str) -> None:
    """What the Generate page writes to the shared ledger before sending: this session's server id
    and this session's label."""
    conn = at.session_state[session.K_CONNECTION]
    api = wf(1)
    recipe = Recipe(source=api, name="iso", seeds={}, api=api)
    led.record_submission(prompt_id=prompt_id, recipe_json=recipe.to_json(), api=api, server_id=conn.server_id(),
                          user_label=at.session_state[session.K_SESSION_LABEL], workflow_name="iso",
                          params={"1.color": 1})
    led.complete(prompt_id, state="succeeded", files=[FileRef(f"{prompt_id}.png")])


def gallery_cards(at: AppTest) -> list[str]:
    prefix = session.gallery_widget("sel_")
    return sorted(c.key[len(prefix):] for c in at.main.checkbox if c.key and c.key.startswith(prefix))


# -- two sessions ---------------------------------------------------------------------------------------
def test_two_sessions_with_different_servers_and_keys_share_nothing(make_comfy_double, cloud_double, tmp_path):
    a_srv = make_comfy_double(token=TOKEN_A)
    a_srv.script(class_delays={"ImageBlur": 3.0})  # A's job is still running while B looks
    b_srv = cloud_double

    # Two browser sessions, each typing its own server and credential (no operator default).
    a = connect(new_app().run(), url_local=a_srv.url, token=TOKEN_A)
    b = connect(new_app().run(), mode="cloud", url_cloud=b_srv.url, api_key=KEY_B)
    ca, cb = client_of(a), client_of(b)
    assert ca is not None and cb is not None and ca is not cb
    assert (ca.connection.base_url, cb.connection.base_url) == (a_srv.url, b_srv.url)
    assert ca.client_id != cb.client_id
    assert ca.connection.server_id() != cb.connection.server_id()

    # Each session's job: listed on its own Queue page (the positive control), absent from the other's.
    pid_a = ca.queue_prompt(wf(7)).prompt_id
    pid_b = cb.queue_prompt(wf(9)).prompt_id
    a.switch_page("pages/queue.py").run()
    b.switch_page("pages/queue.py").run()
    wait_for(lambda: pid_b in cb.history())
    wait_for(lambda: pid_a in {i.prompt_id for i in ca.queue().running})
    a.run()
    b.run()
    assert not a.exception and not b.exception, (a.exception, b.exception)
    seen_a, seen_b = shown(a), shown(b)
    assert pid_a[:8] in seen_a and pid_b[:8] in seen_b
    assert pid_a[:8] not in seen_b and pid_b[:8] not in seen_a
    assert "From this session" in seen_a and "another client" not in seen_a
    assert a.session_state[session.K_SESSION_LABEL] != b.session_state[session.K_SESSION_LABEL]

    # The shared ledger (one panel, one team gallery) holds both sessions' jobs; each session's
    # Gallery opens on its own server, and "Only this session's runs" filters by session.
    ledger = Ledger(tmp_path / "panel-data" / "ledger.sqlite3")
    record_job(ledger, a, "job-of-a")
    record_job(ledger, b, "job-of-b")
    a.switch_page("pages/gallery.py").run()
    b.switch_page("pages/gallery.py").run()
    assert not a.exception and not b.exception, (a.exception, b.exception)
    assert gallery_cards(a) == ["job-of-a"]
    assert gallery_cards(b) == ["job-of-b"]
    W = session.gallery_widget
    b.selectbox(key=W("server")).set_value("All").run()
    assert gallery_cards(b) == ["job-of-a", "job-of-b"]  # the team gallery, shared on purpose
    b.checkbox(key=W("mine")).check().run()
    assert gallery_cards(b) == ["job-of-b"]  # per-session filtering holds

    # Neither credential ever reached the other server, and B's session never talked to A.
    assert a_srv.requests and b_srv.requests
    assert not [r for r in a_srv.requests if carries(r, KEY_B)]
    assert not [r for r in b_srv.requests if carries(r, TOKEN_A)]
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN_A}" for r in a_srv.requests)
    assert all(r.headers.get("X-API-Key") == KEY_B for r in b_srv.requests if r.path != "/api/system_stats"
               and not r.path.startswith("/ws"))
    ca.interrupt()


def shown(at: AppTest) -> str:
    """Everything a page shows, plus every element key (a card's key carries its prompt id)."""
    keys = [str(getattr(n, "key", "") or "") for n in walk(at._tree)]
    return page_text(at) + "\n" + "\n".join(keys)


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def tree_dump(at: AppTest) -> str:
    """Every element and widget the browser would receive, as protobuf text."""
    return "\n".join(str(n.proto) for n in walk(at._tree) if getattr(n, "proto", None) is not None)


def test_a_typed_key_leaves_the_page_once_connected_and_stays_in_use(cloud_double):
    """A password field keeps its value in the browser's DOM (page HTML): once the connection holds
    the key the field is emptied, and Connect with the field left empty keeps the user's own key
    (not the operator's)."""
    secrets = {"comfyui": {"cloud_url": cloud_double.url, "cloud_api_key": "the-operators-key"}}
    at = new_app(secrets).run()
    connect(at, mode="cloud", api_key=KEY_B)
    conn = at.session_state[session.K_CONNECTION]
    assert conn is not None and conn.api_key == KEY_B
    assert at.text_input(key=session.widget_key("api_key")).value == ""
    assert KEY_B not in tree_dump(at)
    assert "keep the key in use" in at.text_input(key=session.widget_key("api_key")).placeholder
    at.button(key=session.W_CONNECT).click().run()  # Connect again, the field empty
    assert at.session_state[session.K_CONNECTION].api_key == KEY_B
    assert not at.session_state[session.K_OPERATOR_KEY]
    assert not sidebar_errors(at)
    for page in ("pages/queue.py", "pages/gallery.py", "pages/admin.py"):
        at.switch_page(page).run()
        assert KEY_B not in tree_dump(at)


def test_a_typed_token_is_emptied_too_and_a_failed_connect_keeps_the_fields(make_comfy_double, closed_url):
    srv = make_comfy_double(token=TOKEN_A)
    at = connect(new_app().run(), url_local=srv.url, token=TOKEN_A)
    assert at.session_state[session.K_CONNECTION].token == TOKEN_A
    assert TOKEN_A not in tree_dump(at)
    at.button(key=session.W_CONNECT).click().run()
    assert at.session_state[session.K_CONNECTION].token == TOKEN_A  # still the user's token
    connect(at, url_local=closed_url, token="typed-for-another")  # fails: what was typed stays
    assert at.session_state[session.K_CLIENT] is None
    assert at.text_input(key=session.widget_key("token")).value == "typed-for-another"


# -- the admin gate, poked out of order ----------------------------------------------------------------
def admin_secrets(url: str) -> dict:
    return {"comfyui": {"url": url, "admin": {"password_hash": HASH}}}


def audit_rows(tmp_path) -> list:
    """Oldest first."""
    path = tmp_path / "panel-data" / "audit.sqlite3"
    return list(reversed(AuditLog(path).query())) if path.exists() else []


def open_admin(url: str) -> AppTest:
    at = new_app(admin_secrets(url)).run()
    at.switch_page("pages/admin.py").run()
    assert not at.exception, at.exception
    assert at.session_state[session.K_CLIENT] is not None
    return at


DESTRUCTIVE = {"action": "clear_queue", "label": "Clear queue", "sentence": "Clear?", "params": {}, "show_params": False}


@pytest.mark.parametrize("poke", ["confirmed_key", "pending_then_confirm", "disabled_button", "forged_grant"])
def test_admin_actions_cannot_be_reached_without_the_gate(comfy_double, tmp_path, poke):
    at = open_admin(comfy_double.url)
    assert not state(at, session.K_ADMIN)
    before = len(comfy_double.requests)
    if poke == "confirmed_key":  # the key run_confirmed reads, set directly
        at.session_state[session.K_ADMIN_CONFIRMED] = dict(DESTRUCTIVE)
        at.run()
    elif poke == "pending_then_confirm":  # the dialog opened without the ask button, then confirmed
        at.session_state[session.K_ADMIN_PENDING] = dict(DESTRUCTIVE)
        at.run()
        at.button(key=session.admin_widget("confirm")).click().run()
    elif poke == "disabled_button":  # a forged click on the disabled ask button, then confirm
        button = at.button(key=session.admin_widget("clear_queue"))
        assert button.disabled
        button._value = True  # what a crafted browser message can send; AppTest's click() refuses it
        at.run()
        if state(at, session.K_ADMIN_PENDING) is not None:  # the runtime ran the callback: confirm it
            at.button(key=session.admin_widget("confirm")).click().run()
    else:  # an "e-mail" grant without a login, plus a confirmed action
        at.session_state[session.K_ADMIN] = "email"
        at.session_state[session.K_ADMIN_CONFIRMED] = dict(DESTRUCTIVE)
        at.run()
    assert not at.exception, at.exception
    assert posts(comfy_double, before) == []  # the server was asked to do nothing
    assert not state(at, session.K_ADMIN)
    refusals = [(r.action, r.result) for r in audit_rows(tmp_path)]
    if poke == "forged_grant":
        assert refusals == []  # the gate revoked the stale grant and dropped the confirmed action with it
        assert not state(at, session.K_ADMIN_CONFIRMED)
    elif poke == "disabled_button" and not refusals:
        pass  # Streamlit dropped the forged click of a disabled button: nothing ran, nothing to audit
    else:
        assert refusals == [("clear_queue", "refused")]
        assert any("Only an admin" in unescape(e.value) for e in at.error)
    # ... and the same steps work for an admin (the control: the poke does reach run_confirmed)
    at.text_input(key=session.W_ADMIN_PASSWORD).input(PASSWORD)
    at.button(key="FormSubmitter:" + session.admin_widget("unlock_form") + "-Unlock").click().run()
    at.session_state[session.K_ADMIN_CONFIRMED] = dict(DESTRUCTIVE)
    at.run()
    assert [r.path for r in posts(comfy_double, before)] == ["/api/queue"]
    assert [(r.action, r.result) for r in audit_rows(tmp_path)] == [
        *refusals, ("admin_unlock", "ok"), ("clear_queue", "ok")]


def test_gate_functions_called_in_another_order_run_nothing(comfy_double, tmp_path, monkeypatch):
    """A page that calls the confirm flow's functions out of order (ask, confirm, run, before the
    gate was ever drawn) still gets the gate checked at the moment the action runs."""
    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)

    def script():
        from components import admin_gate, admin_sections, connection_box, session

        connection_box.render()
        session.admin_grant("password")  # a stale grant: no password is configured in this run
        session.admin_ask({"action": "clear_history", "label": "Clear history", "params": {}})
        session.admin_confirm()
        client = session.client()
        if client is not None:
            admin_gate.run_confirmed(admin_sections.handlers(client))

    at = AppTest.from_function(script, default_timeout=30)
    at.secrets = {"comfyui": {"admin": {"password_hash": ""}}}
    at.run()
    assert not at.exception, at.exception
    assert at.session_state[session.K_CLIENT] is not None  # connected: the handler could have run
    assert posts(comfy_double) == []
    assert [(r.action, r.result) for r in audit_rows(tmp_path)] == [("clear_history", "refused")]


# -- the operator switch -------------------------------------------------------------------------------
def sidebar_errors(at: AppTest) -> list[str]:
    return [unescape(e.value) for e in at.sidebar.error]


def test_lock_server_offers_only_the_operators_server_and_refuses_others(make_comfy_double):
    allowed, other = make_comfy_double(), make_comfy_double()
    at = new_app({"comfyui": {"url": allowed.url, "lock_server": True}}).run()
    assert not at.exception, at.exception
    assert at.session_state[session.K_CLIENT] is not None  # auto-connected to the allowed server
    box = at.sidebar.selectbox(key=session.widget_key("url_local"))
    assert box.options == [allowed.url] and box.disabled
    assert at.sidebar.segmented_control(key=session.widget_key("mode")).options == ["Local"]
    assert not [t for t in at.sidebar.text_input if t.key == session.widget_key("url_local")]

    # the stored address forged in the session, then Connect: the box's own choice wins
    at.session_state["cp_url_local"] = other.url
    at.button(key=session.W_CONNECT).click().run()
    assert at.session_state[session.K_CONNECTION].base_url == allowed.url
    # the stored address forged and a connect requested without the box: refused, one sentence
    at.session_state["cp_url_local"] = other.url
    at.session_state[session.K_REQUEST] = "connect"
    at.run()
    assert sidebar_errors(at) == [NOT_ALLOWED]
    assert at.session_state[session.K_CLIENT] is None
    # Cloud mode forged: the address is refused as well
    at.session_state["cp_mode"] = "cloud"
    at.session_state["cp_url_cloud"] = other.url
    at.session_state["cp_api_key"] = "some-key"
    at.session_state[session.K_REQUEST] = "connect"
    at.run()
    assert sidebar_errors(at) == [NOT_ALLOWED]
    assert not at.exception, at.exception
    assert other.requests == []  # never contacted


def test_query_params_cannot_pick_a_server(make_comfy_double):
    allowed, other = make_comfy_double(), make_comfy_double()
    at = new_app({"comfyui": {"url": allowed.url, "lock_server": True}})
    for name in ("url", "server", "url_local", "cp_url_local", "cp_w_url_local", "mode", "api_key"):
        at.query_params[name] = other.url
    at.run()
    at.button(key=session.W_CONNECT).click().run()
    assert not at.exception, at.exception
    assert at.session_state[session.K_CONNECTION].base_url == allowed.url
    assert other.requests == [] and allowed.requests


def test_allowed_servers_lists_several_and_a_typed_address_needs_no_list(make_comfy_double, closed_url):
    one, two, other = make_comfy_double(), make_comfy_double(), make_comfy_double()
    at = new_app({"comfyui": {"url": one.url, "allowed_servers": [two.url + "/", "https://cloud.comfy.org"]}}).run()
    box = at.sidebar.selectbox(key=session.widget_key("url_local"))
    assert box.options == [one.url, two.url] and not box.disabled
    assert at.sidebar.segmented_control(key=session.widget_key("mode")).options == ["Local", "Cloud"]
    box.set_value(two.url).run()
    at.button(key=session.W_CONNECT).click().run()
    assert at.session_state[session.K_CONNECTION].base_url == two.url  # a listed server connects
    at.session_state["cp_url_local"] = other.url
    at.session_state[session.K_REQUEST] = "connect"
    at.run()
    assert sidebar_errors(at) == [NOT_ALLOWED] and other.requests == []

    # without the switch the same typed address connects (the control for the refusals above)
    free = connect(new_app({"comfyui": {"url": closed_url}}).run(), url_local=other.url)
    assert free.session_state[session.K_CONNECTION].base_url == other.url and other.requests


def test_a_broken_allow_list_refuses_every_address(make_comfy_double):
    srv = make_comfy_double()
    at = new_app({"comfyui": {"url": srv.url, "allowed_servers": "http://127.0.0.1:8188"}}).run()
    assert not at.exception, at.exception
    assert at.session_state[session.K_CLIENT] is None
    assert any("allowed_servers" in e and "must be a list" in e for e in sidebar_errors(at))
    at.session_state["cp_url_local"] = srv.url
    at.session_state[session.K_REQUEST] = "connect"
    at.run()
    assert sidebar_errors(at) == [NOT_ALLOWED] and srv.requests == []


def test_lock_to_comfy_cloud_offers_only_cloud(cloud_double, make_comfy_double):
    other = make_comfy_double()
    at = new_app({"comfyui": {"mode": "cloud", "cloud_api_key": KEY_B, "cloud_url": cloud_double.url,
                              "lock_server": True}}).run()
    assert not at.exception, at.exception
    assert at.session_state[session.K_CONNECTION].base_url == cloud_double.url
    assert at.sidebar.segmented_control(key=session.widget_key("mode")).options == ["Cloud"]
    fixed = [t for t in at.sidebar.text_input if t.label == "Cloud address"]
    assert len(fixed) == 1 and fixed[0].disabled and fixed[0].value == cloud_double.url
    assert KEY_B not in tree_dump(at)
    at.session_state["cp_mode"] = "local"  # forged: Local mode with another server
    at.session_state["cp_url_local"] = other.url
    at.session_state[session.K_REQUEST] = "connect"
    at.run()
    assert sidebar_errors(at) == [NOT_ALLOWED] and other.requests == []


# -- two accounts on one Cloud address -----------------------------------------------------------------
def test_two_cloud_accounts_on_one_address_never_share_held_jobs_or_the_gallery(tmp_path):
    """Two users of the same Comfy Cloud with their own keys: the hold queue and the gallery are keyed
    by account, so B's session never lists A's held job and never sends it with B's key."""
    from comfypanel.holdqueue import HoldQueue, default_path
    from tests.doubles.payloads import TwoAccountCloudDouble

    key_a, key_b = "acct-A-key-0001", "acct-B-key-0002"
    with TwoAccountCloudDouble(api_key=key_a, other_keys=(key_b,)) as cloud:
        secrets = {"comfyui": {"cloud_url": cloud.url}}
        b = connect(new_app(secrets).run(), mode="cloud", api_key=key_b)
        b.switch_page("pages/queue.py").run()  # B's queue monitor runs (and would feed held jobs)
        a = connect(new_app(secrets).run(), mode="cloud", api_key=key_a)
        sid_a, sid_b = (x.session_state[session.K_CONNECTION].server_id() for x in (a, b))
        assert sid_a != sid_b and key_a not in sid_a and key_b not in sid_b

        hold = HoldQueue(default_path())
        hold.pause(sid_a)  # A's job waits in the panel while B's session looks
        a.switch_page("pages/queue.py").run()
        held = hold.add(sid_a, wf(3), workflow_name="held-by-a",
                        submitter=a.session_state[session.K_SESSION_LABEL])
        a.run()
        b.run()
        assert "held-by-a" in shown(a)  # the control: A's page lists it
        assert "held-by-a" not in shown(b)

        hold.resume(sid_a)
        wait_for(lambda: any(r.method == "POST" and r.path == "/api/prompt" for r in cloud.requests), 20)
        sent = [r for r in cloud.requests if r.method == "POST" and r.path == "/api/prompt"]
        assert [r.headers.get("X-API-Key") for r in sent] == [key_a]  # sent by A's session, with A's key
        assert hold.get(held.id).state != "held"

        # the gallery: each session opens on its own account (before the fix both were one server)
        ledger = Ledger(tmp_path / "panel-data" / "ledger.sqlite3")
        record_job(ledger, a, "cloud-job-of-a")
        record_job(ledger, b, "cloud-job-of-b")
        b.switch_page("pages/gallery.py").run()
        assert gallery_cards(b) == ["cloud-job-of-b"]
        a.switch_page("pages/gallery.py").run()
        assert gallery_cards(a) == ["cloud-job-of-a"]
