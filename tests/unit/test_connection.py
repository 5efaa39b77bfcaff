"""Connection: construction, URL policy, secrets never in repr, fingerprints."""

from __future__ import annotations

import pytest

from comfypanel.connection import CLOUD_URL, Connection, check_server_url
from comfypanel.errors import ConfigError

KEY = "ck-secret-0123456789"


def test_local_defaults_and_api_urls():
    c = Connection.local("127.0.0.1:8188/")
    assert c.base_url == "http://127.0.0.1:8188"
    assert c.api_url("/prompt") == "http://127.0.0.1:8188/api/prompt"
    assert c.api_url("/api/jobs") == "http://127.0.0.1:8188/api/jobs"
    # /internal is not mirrored under /api
    assert c.api_url("/internal/logs") == "http://127.0.0.1:8188/internal/logs"
    assert c.headers() == {}
    assert c.ws_url("abc") == "ws://127.0.0.1:8188/ws?clientId=abc"


def test_local_token_is_a_bearer_header_and_hidden():
    c = Connection.local("https://gpu.example:8443", token="tok-123")
    assert c.headers() == {"Authorization": "Bearer tok-123"}
    assert c.ws_url("x").startswith("wss://gpu.example:8443/ws?")
    assert "tok-123" not in repr(c) and "tok-123" not in str(c)


def test_cloud_key_hidden_everywhere_but_headers_and_ws_url():
    c = Connection.cloud(KEY)
    assert c.base_url == CLOUD_URL
    assert c.headers() == {"X-API-Key": KEY}
    assert c.partner_key == KEY  # the same key pays for partner nodes
    assert KEY not in repr(c) and KEY not in str(c) and KEY not in c.server_id()
    assert KEY not in c.fingerprint()
    assert f"token={KEY}" in c.ws_url("cid")  # Cloud's documented WS auth; never logged (transport.redact)


def test_cloud_without_key_is_a_plain_sentence():
    with pytest.raises(ConfigError, match="API key"):
        Connection.cloud("  ")


def test_frozen():
    c = Connection.local()
    with pytest.raises(Exception):
        c.base_url = "http://other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("ftp://host", "http"),
        ("http://user:pw@host:8188", "user name"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://[fe80::1]:8188", "link-local"),
        ("http://metadata.google.internal", "metadata"),
        ("http://0.0.0.0:8188", "0.0.0.0"),
        ("", "Enter the address"),
        ("http://:8188", "host"),
        ("http://host:99999", "valid URL"),
    ],
)
def test_url_policy_refuses(url, fragment):
    with pytest.raises(ConfigError) as exc:
        check_server_url(url)
    assert fragment in exc.value.user_message


def test_url_policy_accepts_and_normalises():
    assert check_server_url(" HTTP://LocalHost:8188/ ") == "http://localhost:8188"
    assert check_server_url("https://comfy.example/prefix/") == "https://comfy.example/prefix"
    assert check_server_url("http://[::1]:8188") == "http://[::1]:8188"


def test_from_env_and_secrets_precedence():
    env = {"COMFYUI_URL": "http://10.0.0.5:8188", "COMFYUI_TOKEN": "t"}
    c = Connection.from_env(env)
    assert (c.kind, c.base_url, c.token, c.source) == ("local", "http://10.0.0.5:8188", "t", "env")
    c = Connection.from_env({"COMFY_CLOUD_API_KEY": KEY})
    assert c.is_cloud and c.api_key == KEY
    assert Connection.from_env({}).base_url == "http://127.0.0.1:8188"
    # secrets win over env when they name a server
    c = Connection.resolve(secrets={"url": "http://gpu:8188"}, env=env)
    assert c.base_url == "http://gpu:8188" and c.source == "secrets"
    c = Connection.resolve(secrets={"cloud_api_key": KEY}, env=env)
    assert c.is_cloud and c.source == "secrets"
    with pytest.raises(ConfigError):
        Connection.from_secrets({"mode": "cloud"})
    assert Connection.resolve(secrets={}, env=env).source == "env"


def test_fingerprint_separates_credentials_and_servers():
    a = Connection.local("http://h:1", token="a")
    b = Connection.local("http://h:1", token="b")
    c = Connection.local("http://h:2", token="a")
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3
    assert a.fingerprint() == Connection.local("http://h:1", token="a").fingerprint()
    assert a.server_id() == b.server_id() == "local:http://h:1"
