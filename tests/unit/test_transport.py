"""Transport policies against small real HTTP servers on loopback (no mocks of requests)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from comfypanel import errors as E
from comfypanel.connection import Connection
from comfypanel.transport import Transport, install_log_redaction, redact

KEY = "ck-live-SECRET-42"


class Scripted:
    """A loopback HTTP server answering from a dict path -> (status, headers, body); records requests."""

    def __init__(self):
        self.routes: dict[str, tuple] = {}
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _go(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers)))
                route = outer.routes.get(self.path.split("?")[0], (404, {}, b""))
                if callable(route):
                    route = route(self)
                status, headers, body = route
                if status == "sleep":
                    time.sleep(headers)
                    status, headers, body = 200, {}, b"{}"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (size cap)
                    pass

            do_GET = do_POST = _go

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def srv():
    s = Scripted()
    yield s
    s.close()


@pytest.fixture
def storage():
    s = Scripted()
    yield s
    s.close()


def _json(obj, status=200):
    return (status, {"Content-Type": "application/json"}, json.dumps(obj).encode())


def test_get_is_retried_but_post_never(srv):
    calls = {"n": 0}

    def flaky(_h):
        calls["n"] += 1
        return (503, {}, b"busy") if calls["n"] < 2 else _json({"ok": 1})

    srv.routes["/api/queue"] = flaky
    t = Transport(Connection.local(srv.url))
    assert t.json("GET", "/queue") == {"ok": 1}
    assert calls["n"] == 2
    srv.routes["/api/prompt"] = (503, {}, b"busy")
    with pytest.raises(E.ServerError):
        t.request("POST", "/prompt", json_body={"prompt": {}})
    assert [r for r in srv.requests if r[0] == "POST"].__len__() == 1  # sent exactly once


def test_status_errors_are_typed(srv):
    srv.routes["/api/a"] = (500, {"Content-Type": "text/plain"}, b"500 Internal Server Error\n\nServer got itself in trouble")
    srv.routes["/api/b"] = (200, {"Content-Type": "text/html"}, b"<html><body>login</body></html>")
    srv.routes["/api/c"] = (401, {}, b"")
    srv.routes["/api/d"] = (429, {"Retry-After": "0"}, b"")
    srv.routes["/api/e"] = (200, {"Content-Type": "application/json"}, b"{broken")
    t = Transport(Connection.local(srv.url), retries=0)
    with pytest.raises(E.ServerError) as e1:
        t.json("GET", "/a")
    assert "trouble" not in e1.value.user_message
    with pytest.raises(E.BadResponse):
        t.json("GET", "/b")
    with pytest.raises(E.AuthFailed):
        t.json("GET", "/c")
    with pytest.raises(E.RateLimited):
        t.json("GET", "/d")
    with pytest.raises(E.BadResponse):
        t.json("GET", "/e")


def test_cloud_429_is_subscription_not_rate_limit(srv):
    srv.routes["/api/prompt"] = (429, {}, b"{}")
    srv.routes["/api/x"] = (402, {}, b"{}")
    t = Transport(Connection.cloud(KEY, srv.url))
    with pytest.raises(E.SubscriptionInactive):
        t.request("GET", "/prompt")
    assert len(srv.requests) == 1  # not retried
    with pytest.raises(E.InsufficientCredits):
        t.request("GET", "/x")


def test_redirect_to_other_host_drops_the_key(srv, storage):
    storage.routes["/signed/img.png"] = (200, {"Content-Type": "image/png"}, b"PNGDATA")
    srv.routes["/api/view"] = (302, {"Location": f"{storage.url}/signed/img.png?sig=abc"}, b"")
    t = Transport(Connection.cloud(KEY, srv.url))
    assert t.request("GET", "/view", params={"filename": "img.png"}).body == b"PNGDATA"
    method, path, headers = storage.requests[-1]
    assert KEY not in json.dumps(headers) and KEY not in path
    assert "x-api-key" not in {k.lower() for k in headers}
    assert srv.requests[-1][2].get("X-API-Key") == KEY


def test_an_expired_storage_link_is_not_blamed_on_the_key(srv, storage):
    storage.routes["/signed/old.png"] = (403, {"Content-Type": "application/xml"},
                                         b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
    srv.routes["/api/view"] = (302, {"Location": f"{storage.url}/signed/old.png?sig=abc&expires=1"}, b"")
    t = Transport(Connection.cloud(KEY, srv.url))
    with pytest.raises(E.DownloadLinkRefused) as exc:
        t.request("GET", "/view", params={"filename": "old.png"})
    assert "127.0.0.1" in exc.value.user_message and "reload the page" in exc.value.user_message
    assert "sig=" not in exc.value.user_message and KEY not in str(exc.value)
    srv.routes["/api/x"] = (403, {}, b"")
    with pytest.raises(E.Forbidden):  # the user's own server saying 403 is still a 403
        t.request("GET", "/x")


def test_same_origin_redirect_keeps_auth(srv):
    srv.routes["/api/old"] = (307, {"Location": "/api/new"}, b"")
    srv.routes["/api/new"] = _json({"moved": True})
    t = Transport(Connection.local(srv.url, token="tk"))
    assert t.json("GET", "/old") == {"moved": True}
    assert srv.requests[-1][2].get("Authorization") == "Bearer tk"


def test_response_size_cap(srv):
    srv.routes["/api/big"] = (200, {"Content-Type": "application/octet-stream"}, b"x" * 200_000)
    t = Transport(Connection.local(srv.url), max_bytes=100_000)
    with pytest.raises(E.ResponseTooLarge):
        t.request("GET", "/big")


def test_unreachable_and_timeout(srv):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    t = Transport(Connection.local(f"http://127.0.0.1:{port}"), retries=0)
    with pytest.raises(E.CannotConnect) as exc:
        t.json("GET", "/system_stats")
    assert f"127.0.0.1:{port}" in exc.value.user_message
    srv.routes["/api/slow"] = ("sleep", 2, b"")
    t = Transport(Connection.local(srv.url), retries=0, timeout=(2, 0.3))
    with pytest.raises(E.RequestTimedOut):
        t.request("GET", "/slow")


def test_redaction_patterns():
    text = redact(f"X-API-Key: {KEY} Authorization: Bearer abc.def wss://h/ws?clientId=1&token={KEY} "
                  f'{{"api_key_comfy_org": "{KEY}"}} headers={{"X-API-Key": "{KEY}"}}')
    assert KEY not in text and "abc.def" not in text and "clientId=1" in text


def test_log_records_are_redacted(caplog, srv):
    install_log_redaction()
    srv.routes["/api/q"] = _json({})
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("some.lib").debug("GET %s", f"/ws?clientId=x&token={KEY}")
        t = Transport(Connection.cloud(KEY, srv.url))
        t.json("GET", "/q")
    assert KEY not in caplog.text
    assert "[redacted]" in caplog.text
