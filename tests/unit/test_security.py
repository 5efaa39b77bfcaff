"""Security suite (issue 8), core tier: the server URL policy and the operator switch, credentials in
logs and exceptions, and redirects that must not carry a credential to another server."""

from __future__ import annotations

import http.server
import json
import socket
import logging
import threading
import traceback
from typing import Iterator

import pytest

from comfypanel import errors as E
from comfypanel.client import ComfyClient
from comfypanel.connection import CLOUD_URL, NOT_ALLOWED, Connection, ServerPolicy, check_server_url
from comfypanel.errors import ConfigError
from comfypanel.jobs import submit_and_wait
from tests.doubles.cloud import CloudDouble

KEY = "ck-SECRET-7f3a9c0e5b1d4e2a8c6f0b9d"  # distinctive: any occurrence is a leak
TOKEN = "tok-SECRET-51c0ffee9d7b"

pytestmark = pytest.mark.timeout(120)

WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 99}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "sec"}},
}


# =========================================================================== the URL policy
LINK_LOCAL = "link-local"
METADATA = "metadata"


@pytest.mark.parametrize("url, fragment", [
    # scheme
    ("ftp://10.0.0.5:8188", "http"),
    ("file:///etc/passwd", "http"),
    ("javascript://alert(1)", "http"),
    ("gopher://127.0.0.1:8188", "http"),
    ("ws://127.0.0.1:8188", "http"),
    # userinfo, however spelled
    ("http://user:pw@10.0.0.5:8188", "user name"),
    ("http://user@10.0.0.5:8188", "user name"),
    ("http://10.0.0.5:8188@evil.example", "user name"),
    ("http://evil.example\\@10.0.0.5", "user name"),
    (f"http://x:{KEY}@cloud.comfy.org", "user name"),
    # link-local, in every form the resolver reads
    ("http://169.254.0.1:8188", LINK_LOCAL),
    ("http://169.254.169.254/latest/meta-data/", LINK_LOCAL),
    ("169.254.169.254", LINK_LOCAL),
    ("http://2852039166/", LINK_LOCAL),  # decimal
    ("http://0xa9fea9fe/", LINK_LOCAL),  # hex
    ("http://0251.0376.0251.0376/", LINK_LOCAL),  # octal
    ("http://169.254.43518/", LINK_LOCAL),  # short form
    ("http://169.254.169.254./", LINK_LOCAL),  # trailing dot
    ("http://169\u3002254\u3002169\u3002254/", LINK_LOCAL),  # ideographic full stops (IDNA maps them to ".")
    ("http://[fe80::1]:8188", LINK_LOCAL),
    ("http://[::ffff:169.254.169.254]/", LINK_LOCAL),  # IPv4-mapped IPv6
    ("http://[::ffff:a9fe:a9fe]/", LINK_LOCAL),
    ("http://[64:ff9b::a9fe:a9fe]/", LINK_LOCAL),  # NAT64
    # cloud metadata services
    ("http://[fd00:ec2::254]/latest/meta-data/", METADATA),  # AWS over IPv6
    ("http://metadata.google.internal/computeMetadata/v1/", METADATA),
    ("http://METADATA.google.internal./", METADATA),
    ("http://metadata/", METADATA),
    ("http://metadata.azure.com/", METADATA),
    ("http://100.100.100.200/latest/meta-data/", METADATA),  # Alibaba Cloud
    # unspecified and multicast
    ("http://0.0.0.0:8188", "0.0.0.0"),
    ("http://0:8188", "0.0.0.0"),
    ("http://[::]:8188", "0.0.0.0"),
    ("http://[::ffff:0.0.0.0]:8188", "0.0.0.0"),
    ("http://224.0.0.1:8188", "multicast"),
    ("http://[ff02::1]:8188", "multicast"),
    # not a host at all
    ("http://%31%36%39.254.169.254/", "cannot be used"),
    ("http://[fe80::1%25eth0]:8188", "cannot be used"),
    ("http://:8188", "host"),
    ("http://host:99999", "valid URL"),
    ("", "Enter the address"),
])
def test_unsafe_addresses_are_refused_with_a_sentence(url, fragment):
    with pytest.raises(ConfigError) as exc:
        check_server_url(url)
    message = exc.value.user_message
    assert fragment in message
    assert message.endswith(".") and "\n" not in message
    assert KEY not in message and KEY not in repr(exc.value)  # the address itself is never echoed


@pytest.mark.parametrize("url, normal", [
    ("127.0.0.1:8188", "http://127.0.0.1:8188"),
    ("HTTP://LocalHost:8188/", "http://localhost:8188"),
    ("https://comfy.example/prefix/", "https://comfy.example/prefix"),
    ("http://[::1]:8188", "http://[::1]:8188"),
    ("http://[2001:db8::5]:8188", "http://[2001:db8::5]:8188"),
    ("http://10.0.0.5:8188", "http://10.0.0.5:8188"),
    ("http://192.168.1.20:8188", "http://192.168.1.20:8188"),
    ("http://2130706433:8188", "http://127.0.0.1:8188"),  # numeric forms come back canonical
    ("http://127.1:8188", "http://127.0.0.1:8188"),
    ("http://gpu-01.lan:8188", "http://gpu-01.lan:8188"),
    ("https://m\u00fcnchen.example", "https://xn--mnchen-3ya.example"),
    (CLOUD_URL, CLOUD_URL),
])
def test_ordinary_addresses_are_accepted_and_normalised(url, normal):
    assert check_server_url(url) == normal


def test_connections_apply_the_policy_too():
    with pytest.raises(ConfigError):
        Connection.local("http://169.254.169.254")
    with pytest.raises(ConfigError):
        Connection.cloud(KEY, "http://[fd00:ec2::254]")
    assert Connection.local("http://2130706433:8188").base_url == "http://127.0.0.1:8188"


# =========================================================================== the operator switch
LOCAL = "http://127.0.0.1:8188"
GPU = "http://gpu-2.lan:8188"


def test_no_switch_means_any_safe_address():
    policy = ServerPolicy.from_secrets({"url": LOCAL}, Connection.local(LOCAL))
    assert not policy.restricted
    assert policy.check("http://10.9.8.7:9000") == "http://10.9.8.7:9000"
    with pytest.raises(ConfigError, match="link-local"):  # the URL policy still holds
        policy.check("http://169.254.169.254")
    assert ServerPolicy.from_secrets(None).allows(GPU)


def test_lock_server_allows_only_the_operators_server():
    policy = ServerPolicy.from_secrets({"url": LOCAL, "lock_server": True}, Connection.local(LOCAL))
    assert policy.restricted and policy.allowed == (LOCAL,)
    assert policy.check("127.0.0.1:8188/") == LOCAL  # the same server, written differently
    for other in (GPU, "http://127.0.0.1:8189", "https://127.0.0.1:8188", "http://localhost:8188",
                  "http://127.0.0.1:8188/other-prefix"):
        with pytest.raises(ConfigError) as exc:
            policy.check(other)
        assert exc.value.user_message == NOT_ALLOWED
        assert not policy.allows(other)


def test_lock_to_cloud():
    op = Connection.cloud(KEY)
    policy = ServerPolicy.from_secrets({"cloud_api_key": KEY, "lock_server": True}, op)
    assert policy.allowed == (CLOUD_URL,)
    assert policy.allows("https://cloud.comfy.org/") and not policy.allows(LOCAL)
    assert KEY not in repr(policy)


def test_allowed_servers_adds_to_the_operators_own_and_normalises():
    policy = ServerPolicy.from_secrets(
        {"url": LOCAL, "allowed_servers": [GPU + "/", "HTTP://GPU-2.LAN:8188", "https://cloud.comfy.org:443"]},
        Connection.local(LOCAL))
    assert policy.allowed == (LOCAL, GPU, "https://cloud.comfy.org:443")
    assert policy.allows("https://cloud.comfy.org")  # the default port is the same server
    assert policy.choices(exclude=CLOUD_URL) == (LOCAL, GPU)
    assert not policy.allows("http://gpu-3.lan:8188")
    # the URL policy comes first: an unsafe address is refused for what it is
    with pytest.raises(ConfigError, match="metadata"):
        policy.check("http://metadata.google.internal")


def test_an_empty_allow_list_means_the_operators_server_only():
    policy = ServerPolicy.from_secrets({"url": GPU, "allowed_servers": []}, Connection.local(GPU))
    assert policy.restricted and policy.allowed == (GPU,)
    assert not policy.allows(LOCAL)


def test_the_documented_switch_in_the_secrets_example_is_valid():
    import tomllib
    from pathlib import Path

    example = (Path(__file__).resolve().parents[2] / ".streamlit" / "secrets.toml.example").read_text()
    wanted = ("# url =", "# lock_server =", "# allowed_servers =")
    section = tomllib.loads("\n".join(line[2:] for line in example.splitlines() if line.startswith(wanted)))
    assert section["lock_server"] is True and section["allowed_servers"]
    policy = ServerPolicy.from_secrets(section, Connection.resolve(secrets=section, env={}))
    assert policy.restricted and LOCAL in policy.allowed and GPU in policy.allowed
    assert policy.allows(CLOUD_URL) and not policy.allows("http://10.1.2.3:8188")


def test_allow_list_without_an_operator_default():
    policy = ServerPolicy.from_secrets({"allowed_servers": [GPU]})
    assert policy.allowed == (GPU,) and not policy.allows(LOCAL)


@pytest.mark.parametrize("section, fragment", [
    ({"allowed_servers": "http://127.0.0.1:8188"}, "must be a list"),
    ({"allowed_servers": [8188]}, "in quotes"),
    ({"allowed_servers": ["http://169.254.169.254"]}, "is refused"),
    ({"allowed_servers": ["ftp://files"]}, "is refused"),
    ({"lock_server": "yes"}, "true or false"),
    ({"lock_server": True}, "name no server"),
])
def test_a_malformed_switch_is_a_sentence_and_closes_everything(section, fragment):
    with pytest.raises(ConfigError) as exc:
        ServerPolicy.from_secrets(section)
    assert fragment in exc.value.user_message
    closed = ServerPolicy.closed()
    assert closed.restricted and not closed.allows(LOCAL) and not closed.allows(CLOUD_URL)


# =========================================================================== ids and fingerprints
def test_cloud_accounts_are_separate_servers_without_revealing_keys():
    a, b = Connection.cloud(KEY), Connection.cloud(KEY[::-1])
    assert a.server_id() != b.server_id()  # held jobs, thumbnails and the gallery never mix accounts
    assert a.server_id() == Connection.cloud(KEY).server_id()  # stable for the same key
    assert a.fingerprint() != b.fingerprint()
    for conn in (a, b):
        for shown in (conn.server_id(), conn.fingerprint(), conn.account_tag(), repr(conn), str(conn),
                      conn.display_url):
            assert KEY not in shown and KEY[::-1] not in shown and KEY[3:15] not in shown
    local = Connection.local(LOCAL, TOKEN)
    assert local.server_id() == Connection.local(LOCAL).server_id() == f"local:{LOCAL}"
    assert TOKEN not in repr(local) and TOKEN not in local.server_id()


# =========================================================================== logs
class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # the formatted text includes any traceback


@pytest.fixture
def all_logs() -> Iterator[_Capture]:
    """Every logger of the process at DEBUG into one handler (plus websocket-client's trace)."""
    import websocket

    capture = _Capture()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)}
    old_root = root.level
    root.setLevel(logging.DEBUG)
    for name in levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(capture)
    websocket.enableTrace(True, handler=capture)  # full handshake lines, headers included
    try:
        yield capture
    finally:
        websocket.enableTrace(False)
        logging.getLogger("websocket").removeHandler(capture)
        root.removeHandler(capture)
        root.setLevel(old_root)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_a_cloud_job_logs_no_key_at_debug(all_logs):
    with CloudDouble(api_key=KEY) as cloud:
        client = ComfyClient(Connection.cloud(KEY, cloud.url))
        listener = client.listener(name="security-test")
        listener.start()
        try:
            result = submit_and_wait(client, WF, listener=listener, timeout=60, poll_interval=0.2)
            assert result.ok, result.user_message
            [ref] = result.files
            assert client.view(ref)[:8] == b"\x89PNG\r\n\x1a\n"  # 302 to the signed storage URL
            client.jobs(limit=5)
            # a wrong key: a 401 over HTTP and a refused WebSocket handshake, both logged
            wrong = ComfyClient(Connection.cloud(KEY + "-WRONG", cloud.url))
            with pytest.raises(E.AuthFailed):
                wrong.queue()
            bad_listener = wrong.listener(name="security-test-wrong")
            bad_listener.start()
            bad_listener.wait_connected(2.0)
            bad_listener.stop(timeout=3.0)
            wrong.close()
        finally:
            listener.stop(timeout=3.0)
            client.close()
        assert cloud.storage.requests  # the redirect was followed ...
        assert not cloud.storage.violations  # ... without the key
    text = "\n".join(all_logs.lines)
    # the controls: the WebSocket URL, the HTTP requests and the redirect really were logged
    assert "token=[redacted]" in text
    assert "/api/prompt" in text and "/api/view" in text
    assert "redirect" in text
    assert KEY not in text
    assert KEY[3:20] not in text  # not even part of it


# =========================================================================== exceptions
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    shown = [str(exc), repr(exc), getattr(exc, "user_message", ""), "".join(traceback.format_exception(exc))]
    shown += [repr(e) + str(e) + repr(getattr(e, "args", "")) for e in _chain(exc)]
    for secret in secrets:
        assert not [s for s in shown if secret in s], (secret, shown)


def test_exceptions_never_carry_the_key(closed_port_url):
    # unreachable Cloud
    with pytest.raises(E.CannotConnect) as unreachable:
        ComfyClient(Connection.cloud(KEY, closed_port_url)).transport.request("GET", "/queue", retry=False)
    assert_no_secret(unreachable.value, KEY)
    # the WebSocket URL (key in its query) failing to connect
    client = ComfyClient(Connection.cloud(KEY, closed_port_url))
    listener = client.listener(name="security-test-closed")
    listener.start()
    listener.wait_connected(1.0)
    listener.stop(timeout=3.0)
    assert listener.last_error and KEY not in listener.last_error
    assert KEY not in repr(listener) and KEY not in repr(client)
    # a refused key, a refused token, a bad address that contains the key
    with CloudDouble(api_key="the-right-key") as cloud:
        with pytest.raises(E.AuthFailed) as refused:
            ComfyClient(Connection.cloud(KEY, cloud.url)).queue()
        assert_no_secret(refused.value, KEY)
    for bad in (f"http://u:{KEY}@host", f"ftp://{KEY}.example", f"http://{KEY}:99999"):
        with pytest.raises(ConfigError) as config:
            Connection.cloud(KEY, bad)
        assert_no_secret(config.value, KEY)
    with pytest.raises(ConfigError) as config:
        ServerPolicy.from_secrets({"allowed_servers": [f"http://x:{TOKEN}@gpu"]})
    assert_no_secret(config.value, TOKEN)


@pytest.fixture
def closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# =========================================================================== redirects
class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from ``server.routes[path] = (status, headers, body)``; records every request."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        status, headers, payload = self.server.routes.get(self.path.split("?")[0], (404, {}, b"{}"))  # type: ignore[attr-defined]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def two_servers() -> Iterator[tuple]:
    servers = []
    for _ in range(2):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        srv.routes, srv.seen = {}, []  # type: ignore[attr-defined]
        srv.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield tuple(servers)
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _leaks(seen: list, *secrets: str) -> list:
    out = []
    for method, path, headers, body in seen:
        lower = {k.lower() for k in headers}
        if "x-api-key" in lower or "authorization" in lower:
            out.append((method, path, "auth header"))
        blob = path + json.dumps(headers) + body.decode("latin-1")
        out += [(method, path, "secret") for s in secrets if s in blob]
    return out


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("kind", ["cloud", "local-token"])
def test_a_redirect_to_another_loopback_port_gets_no_credential(two_servers, status, kind):
    origin, other = two_servers
    other.routes["/landing"] = (200, {"Content-Type": "application/json"}, b'{"landed": true}')
    origin.routes["/api/queue"] = (status, {"Location": f"{other.url}/landing?x=1"}, b"")
    conn = Connection.cloud(KEY, origin.url) if kind == "cloud" else Connection.local(origin.url, TOKEN)
    client = ComfyClient(conn)
    try:
        assert client.transport.json("GET", "/queue") == {"landed": True}
        client.transport.request("POST", "/queue", json_body={"clear": True, "note": "body"}, ok=(404,))
    finally:
        client.close()
    # the origin did get the credential (the control), the other port never did
    assert all(("X-API-Key" if kind == "cloud" else "Authorization") in h for _, _, h, _ in origin.seen)
    assert len(other.seen) == 2
    assert _leaks(other.seen, KEY, TOKEN) == []
    assert all(b"clear" not in body for _, _, _, body in other.seen)  # nor the request body


def test_a_redirect_back_to_the_origin_keeps_the_credential_but_a_hop_away_drops_it(two_servers):
    """origin -> other port -> origin again: once a hop left the origin, the way back is a new
    request to the origin, and the chain never hands the key to the middle server."""
    origin, other = two_servers
    origin.routes["/api/view"] = (302, {"Location": f"{other.url}/bounce"}, b"")
    other.routes["/bounce"] = (302, {"Location": f"{origin.url}/final"}, b"")
    origin.routes["/final"] = (200, {"Content-Type": "application/octet-stream"}, b"DATA")
    client = ComfyClient(Connection.cloud(KEY, origin.url))
    try:
        assert client.transport.request("GET", "/view").body == b"DATA"
    finally:
        client.close()
    assert _leaks(other.seen, KEY) == []
    assert [p for _, p, _, _ in other.seen] == ["/bounce"]


# ---------------------------------------------------------------- host names resolving to forbidden addresses
@pytest.mark.parametrize("answer, refused", [
    ("169.254.169.254", True), ("fe80::1%eth0", True), ("fd00:ec2::254", True), ("0.0.0.0", True),
    ("::ffff:169.254.169.254", True), ("10.0.0.5", False), ("127.0.0.1", False), ("192.168.1.20", False),
])
def test_a_name_resolving_to_a_metadata_or_link_local_address_is_refused(answer, refused):
    from comfypanel.connection import check_resolved
    from comfypanel.errors import ConfigError

    family = socket.AF_INET6 if ":" in answer else socket.AF_INET
    asked = []

    def resolve(host, port):
        asked.append(host)
        return [(family, socket.SOCK_STREAM, 6, "", (answer, 0))]

    if refused:
        with pytest.raises(ConfigError) as exc:
            check_resolved("http://gpu.example.test:8188", resolve=resolve)
        assert "gpu.example.test" in exc.value.user_message and "\n" not in exc.value.user_message
    else:
        check_resolved("http://gpu.example.test:8188", resolve=resolve)
    assert asked == ["gpu.example.test"]


def test_ip_literals_and_unresolvable_names_are_not_looked_up_again():
    from comfypanel.connection import check_resolved

    def boom(host, port):
        raise AssertionError("no lookup for an IP literal")

    check_resolved("http://127.0.0.1:8188", resolve=boom)
    check_resolved("http://[::1]:8188", resolve=boom)

    def fails(host, port):
        raise socket.gaierror("no such name")

    check_resolved("http://nowhere.invalid:8188", resolve=fails)  # connecting says it cannot be reached
