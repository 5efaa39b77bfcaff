"""The app shell: navigation, the sidebar connection box, per-session clients."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from components import session

from .conftest import ROOT, client_of, connect

APP = ROOT / "streamlit_app.py"

pytestmark = pytest.mark.timeout(120)

PAGES = ["pages/generate.py", "pages/inputs.py", "pages/queue.py", "pages/gallery.py", "pages/admin.py"]


# -- helpers ------------------------------------------------------------------------------------------
def app(*, secrets: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    if secrets:
        at.secrets = secrets
    return at


def unescape(text: str) -> str:
    """Undo ``components.text.plain``: Markdown backslash escapes → the characters shown."""
    return re.sub(r"\\(.)", r"\1", text)


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def tree_dump(at: AppTest) -> str:
    """Every element and widget the browser would receive, as protobuf text."""
    return "\n".join(str(n.proto) for n in walk(at._tree) if getattr(n, "proto", None) is not None)


def sidebar_text(at: AppTest) -> str:
    """What the sidebar shows, as text (metrics as ``label=value``, progress bars by their label)."""
    parts = []
    for node in walk(at.sidebar):
        kind = getattr(node, "type", "")
        if kind == "metric":
            parts.append(f"{node.label}={node.value}")
        elif kind == "progress":
            parts.append(node.proto.text)
        elif kind in ("markdown", "caption", "text", "error"):
            parts.append(str(node.value))
    return unescape("\n".join(parts))


def metric(at: AppTest, label: str) -> str:
    for m in at.sidebar.get("metric"):
        if m.label == label:
            return unescape(m.value)
    raise AssertionError(f"no metric {label!r} in the sidebar")


def errors(at: AppTest) -> list[str]:
    return [unescape(e.value) for e in at.error]




def assert_connected(at: AppTest, version: str = "0.3.75") -> None:
    assert not at.exception, at.exception
    assert errors(at) == []
    assert metric(at, "ComfyUI") == version
    text = sidebar_text(at)
    assert "Connected" in text
    assert client_of(at) is not None


# -- connect ------------------------------------------------------------------------------------------
def test_first_load_connects_to_the_env_default(monkeypatch, make_comfy_double):
    comfy = make_comfy_double()
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    at = app().run()
    assert_connected(at)
    text = sidebar_text(at)
    assert "Local ComfyUI" in text and comfy.url in text
    assert "cpu" in [t.value for t in at.sidebar.get("text")]  # the device, as plain text
    assert metric(at, "Queue") == "0"
    assert any(p.proto.text.startswith("RAM ") and "GiB" in p.proto.text for p in at.sidebar.get("progress"))
    assert "operator's key" not in text  # no credential in use
    # every page shows where it is connected
    assert any("Connected to Local ComfyUI" in unescape(c.value) for c in at.main.caption)


def test_connect_success_from_the_form(monkeypatch, make_comfy_double, closed_url):
    monkeypatch.setenv("COMFYUI_URL", closed_url)
    at = app().run()
    assert client_of(at) is None and len(at.error) == 1  # the unreachable default: just the sentence
    comfy = make_comfy_double()
    connect(at, url_local=comfy.url)
    assert_connected(at)
    assert comfy.url in sidebar_text(at)


def test_connect_failure_is_one_plain_sentence_and_keeps_the_fields(
    monkeypatch, make_comfy_double, closed_url
):
    comfy = make_comfy_double()
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    at = app().run()
    assert_connected(at)
    connect(at, url_local=closed_url, token="my-typed-token")
    assert client_of(at) is None
    [message] = errors(at)
    assert closed_url in message
    assert message.startswith(f"Cannot reach the server at {closed_url}. ")  # the address, not an API route
    assert "Traceback" not in tree_dump(at) and "Error:" not in message
    assert message.count("\n") == 0
    assert not at.exception
    # the typed values stay where they were
    assert at.text_input(key=session.widget_key("url_local")).value == closed_url
    assert at.text_input(key=session.widget_key("token")).value == "my-typed-token"
    assert "Not connected" in sidebar_text(at)
    assert at.main.info and "Not connected" in at.main.info[0].value


def test_bad_address_gets_a_sentence(monkeypatch, closed_url):
    monkeypatch.setenv("COMFYUI_URL", closed_url)
    at = app().run()
    connect(at, url_local="ftp://example.com")
    assert errors(at) == ["The server address must start with http:// or https://."]


def test_wrong_token_gets_the_auth_sentence(monkeypatch, make_comfy_double):
    comfy = make_comfy_double(token="right-token-abc")
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    at = app().run()
    [first] = errors(at)  # no token yet: the server refuses
    assert "401" in first
    connect(at, token="wrong-token-xyz")
    [message] = errors(at)
    assert "refused the credentials (401)" in message
    assert client_of(at) is None
    connect(at, token="right-token-abc")
    assert_connected(at)
    assert "operator's key" not in sidebar_text(at)  # the user's own token


def test_cloud_connect(cloud_double):
    cloud, key = cloud_double, cloud_double.api_key
    at = app(secrets={"comfyui": {"cloud_url": cloud.url}}).run()
    connect(at, mode="cloud", api_key=key)
    assert_connected(at)
    text = sidebar_text(at)
    assert "Comfy Cloud" in text and cloud.url in text
    assert "cuda:0 NVIDIA L40S" in [t.value for t in at.sidebar.get("text")]
    assert any(p.proto.text.startswith("VRAM ") for p in at.sidebar.get("progress"))
    assert "operator's key" not in text
    assert key not in tree_dump(at).replace(f'value: "{key}"', "")  # only in the user's own field
    # system_stats is public; the WebSocket carries the key as its documented token= query parameter
    authenticated = [r for r in cloud.requests if r.path not in ("/api/system_stats", "/ws")]
    assert authenticated and all(r.headers.get("X-API-Key") == key for r in authenticated)


def test_cloud_wrong_key_and_missing_key(cloud_double):
    at = app(secrets={"comfyui": {"cloud_url": cloud_double.url}}).run()
    connect(at, mode="cloud", api_key="not-the-key")
    [message] = errors(at)
    assert "401" in message
    connect(at, api_key="")
    [message] = errors(at)
    assert message.startswith("Enter your Comfy Cloud API key")


# -- operator defaults ----------------------------------------------------------------------------------
def test_operator_cloud_key_from_secrets(cloud_double):
    cloud, key = cloud_double, cloud_double.api_key
    at = app(secrets={"comfyui": {"mode": "cloud", "cloud_api_key": key, "cloud_url": cloud.url}}).run()
    assert_connected(at)
    assert "Using the operator's key" in sidebar_text(at)
    assert at.segmented_control(key=session.widget_key("mode")).value == "cloud"
    assert at.text_input(key=session.widget_key("api_key")).value == ""  # the field stays empty
    assert key not in tree_dump(at)
    assert at.query_params == {}
    # the key stays out of every page
    for page in PAGES:
        at.switch_page(page).run()
        assert key not in tree_dump(at)


def test_operator_token_from_secrets(make_comfy_double):
    token = "operator-token-77d1c"
    comfy = make_comfy_double(token=token)
    at = app(secrets={"comfyui": {"url": comfy.url, "token": token}}).run()
    assert_connected(at)
    assert "Using the operator's key" in sidebar_text(at)
    assert at.text_input(key=session.widget_key("token")).value == ""
    assert token not in tree_dump(at)
    assert at.query_params == {}


def test_operator_token_is_never_sent_to_another_server(make_comfy_double):
    token = "operator-token-never-elsewhere"
    operator_server = make_comfy_double(token=token)
    other = make_comfy_double()
    at = app(secrets={"comfyui": {"url": operator_server.url, "token": token}}).run()
    assert_connected(at)
    connect(at, url_local=other.url)
    assert_connected(at)
    assert "operator's key" not in sidebar_text(at)
    assert other.requests
    for record in other.requests:
        assert "Authorization" not in record.headers and token not in str(record.headers)


def test_misconfigured_operator_default_is_one_sentence():
    at = app(secrets={"comfyui": {"mode": "cloud"}}).run()
    assert not at.exception
    assert errors(at) == ["The operator chose Comfy Cloud but set no cloud_api_key in the secrets."]


def test_unreachable_default_just_shows_the_sentence(monkeypatch, closed_url):
    monkeypatch.setenv("COMFYUI_URL", closed_url)
    at = app().run()
    assert not at.exception
    [message] = errors(at)
    assert closed_url in message
    assert at.title[0].value == "Generate"


# -- sessions -----------------------------------------------------------------------------------------
def test_two_sessions_never_share_a_client_or_data(make_comfy_double):
    alpha = make_comfy_double(token="alpha-token", version="0.3.75")
    beta = make_comfy_double(token="beta-token", version="0.3.76")
    at1 = app(secrets={"comfyui": {"url": alpha.url, "token": "alpha-token"}}).run()
    at2 = app().run()
    connect(at2, url_local=beta.url, token="beta-token")
    assert_connected(at1, "0.3.75")
    assert_connected(at2, "0.3.76")
    c1, c2 = client_of(at1), client_of(at2)
    assert id(c1) != id(c2)
    assert c1.transport is not c2.transport and c1.transport.session is not c2.transport.session
    conn1, conn2 = at1.session_state[session.K_CONNECTION], at2.session_state[session.K_CONNECTION]
    assert conn1.fingerprint() != conn2.fingerprint()
    # each session keeps showing its own server after the other one ran
    at1.run()
    assert_connected(at1, "0.3.75")
    assert alpha.url in sidebar_text(at1) and beta.url not in sidebar_text(at1)
    assert beta.url in sidebar_text(at2) and alpha.url not in sidebar_text(at2)
    assert "Using the operator's key" in sidebar_text(at1)
    assert "operator's key" not in sidebar_text(at2)
    assert "alpha-token" not in tree_dump(at2) and "alpha-token" not in tree_dump(at1)
    # each server only ever saw its own session's credential
    assert all(r.headers.get("Authorization") == "Bearer alpha-token" for r in alpha.requests)
    assert all(r.headers.get("Authorization") == "Bearer beta-token" for r in beta.requests)
    assert not any("alpha-token" in str(r.headers) for r in beta.requests)
    assert client_of(at1) is c1  # a rerun does not rebuild the client


def test_switching_pages_keeps_the_connection(monkeypatch, make_comfy_double):
    comfy = make_comfy_double()
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    at = app().run()
    assert_connected(at)
    first = client_of(at)
    at.text_input(key=session.widget_key("token")).set_value("typed-but-not-connected").run()
    titles = []
    for page in PAGES:
        at.switch_page(page).run()
        assert_connected(at)
        assert client_of(at) is first
        titles.append(at.title[0].value)
        assert at.text_input(key=session.widget_key("token")).value == "typed-but-not-connected"
    assert titles == ["Generate", "Inputs", "Queue", "Gallery", "Admin"]
    # the Admin page shows the server details from the health check
    assert at.main.get("metric") and any(m.label == "PyTorch" for m in at.main.get("metric"))
    # no page changes anything on the server by itself: drawing them only reads (subscribing this
    # session's socket to the server log, for the Admin page's live log, is a read too)
    assert all(r.method == "GET" or (r.method, r.path) == ("PATCH", "/internal/logs/subscribe")
               for r in comfy.requests)
    assert not [r for r in comfy.requests if r.method == "POST"]


def test_refresh_runs_the_health_check_again(monkeypatch, make_comfy_double):
    comfy = make_comfy_double()
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    at = app().run()
    assert_connected(at)
    # the health check's own requests (the session's queue monitor polls /queue and /history too)
    health = lambda: [r for r in comfy.requests if r.path in ("/api/system_stats", "/api/prompt")]  # noqa: E731
    before = len(health())
    at.button(key=session.W_REFRESH).click().run()
    assert_connected(at)
    assert len(health()) >= before + 2  # background monitors may poll too
    comfy.stop()
    at.button(key=session.W_REFRESH).click().run()
    [message] = errors(at)
    assert comfy.url in message
    assert client_of(at) is None


# -- server strings are text, never Markdown ----------------------------------------------------------------
HOSTILE = "0.3.75 **bold** :red[red] [link](http://evil.example) <b>tag</b> $x$"
HOSTILE_GPU = "cuda:0 __NVIDIA__ :material/warning: [click](http://evil.example)"


def test_server_strings_are_shown_as_text(monkeypatch, make_comfy_double):
    from aiohttp import web

    from components.text import plain

    comfy = make_comfy_double(version=HOSTILE)
    original = type(comfy).h_system_stats

    async def with_gpu(self, request):
        body = json.loads((await original(self, request)).body)
        body["devices"].append({"name": HOSTILE_GPU, "type": "cuda", "index": 0, "vram_total": 8 << 30,
                                "vram_free": 2 << 30, "torch_vram_total": 0, "torch_vram_free": 0})
        return web.json_response(body)

    monkeypatch.setattr(type(comfy), "h_system_stats", with_gpu)
    comfy.stop()
    comfy.start()  # routes are bound at start
    monkeypatch.setenv("COMFYUI_URL", comfy.url)
    at = app().run()
    assert_connected(at, HOSTILE)
    # st.text for device names; every Markdown element carries the escaped form only
    assert HOSTILE_GPU in [t.value for t in at.sidebar.get("text")]
    assert any(p.proto.text == "VRAM 6.0 / 8.0 GiB" for p in at.sidebar.get("progress"))
    markdown_bodies = [n.proto.body for n in walk(at._tree)
                       if getattr(n, "proto", None) is not None and hasattr(n.proto, "body")
                       and n.type in ("markdown", "caption", "metric", "error", "info")]
    metric_bodies = [n.proto.body for n in walk(at._tree) if getattr(n, "type", "") == "metric"]
    assert plain(HOSTILE) in metric_bodies
    for body in markdown_bodies + metric_bodies:
        assert "**bold**" not in body and ":red[" not in body and "<b>" not in body and "](http" not in body
    for page in PAGES:
        at.switch_page(page).run()
        for n in walk(at._tree):
            if getattr(n, "type", "") in ("markdown", "caption", "metric"):
                assert "**bold**" not in n.proto.body and ":red[" not in n.proto.body
