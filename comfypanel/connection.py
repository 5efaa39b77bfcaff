"""Where the panel talks to, and with which credentials.

A ``Connection`` is frozen and compares by value. Its secrets (the bearer token of a local server
behind a proxy, the Comfy Cloud API key, the partner-node key) are excluded from ``repr``/``str``,
so a connection that ends up in a log or an exception shows no credential.

Sources, in order of precedence (``Connection.resolve``): explicit values, Streamlit secrets
``[comfyui]`` (passed in as a plain mapping: this module never imports Streamlit), environment
variables ``COMFYUI_URL``, ``COMFYUI_TOKEN``, ``COMFY_CLOUD_API_KEY`` (and ``COMFY_PARTNER_API_KEY``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from .errors import ConfigError, safe_url

__all__ = ["Connection", "CLOUD_URL", "DEFAULT_LOCAL_URL", "ServerPolicy", "check_resolved", "check_server_url"]

CLOUD_URL = "https://cloud.comfy.org"
DEFAULT_LOCAL_URL = "http://127.0.0.1:8188"

# Hosts that are never a ComfyUI server but are a classic server-side request forgery target.
_METADATA_HOSTS = {
    "metadata.google.internal", "metadata.goog", "metadata", "metadata.azure.com", "instance-data",
    "instance-data.ec2.internal", "metadata.tencentyun.com",
}
# Cloud metadata services outside the link-local range (AWS's IPv6 endpoint, Alibaba Cloud).
_METADATA_IPS = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: an IPv4 address inside
_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-._:")
_NUMERIC_V4 = set("0123456789abcdefx.")  # inet_aton's legacy forms: 2852039166, 0xa9fea9fe, 0251.0376...


def _ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host name literally is (any form the resolver accepts), else ``None``."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and set(host) <= _NUMERIC_V4 and host[0].isdigit():
        try:  # the resolver reads "2852039166" or "0xa9.0xfe.43518" as 169.254.169.254
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_v4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible or NAT64 IPv6 address."""
    if ip.version != 6:
        return None
    assert isinstance(ip, ipaddress.IPv6Address)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # 64:ff9b::a.b.c.d, ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refused_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for candidate in (ip, _embedded_v4(ip)):
        if candidate is None:
            continue
        if candidate in _METADATA_IPS:
            return "That address belongs to a cloud metadata service, not a ComfyUI server."
        if candidate.is_link_local or candidate.is_multicast or candidate.is_unspecified:
            return "That address (link-local, multicast or 0.0.0.0) cannot be a ComfyUI server."
    return None


def check_resolved(url: str, *, resolve=socket.getaddrinfo) -> None:
    """Refuse a host *name* that resolves to a link-local, multicast, unspecified or metadata address
    (``169.254.169.254.nip.io``); ``check_server_url`` only sees the name. Called once when a user
    connects. A name that does not resolve passes (connecting then says the server cannot be reached).

    Raises:
        ConfigError: with the same sentence ``check_server_url`` gives for the address itself.
    """
    host = (urlsplit(url).hostname or "").strip("[]")
    if not host or _ip_of(host) is not None:
        return  # an IP literal was checked by check_server_url already
    try:
        infos = resolve(host, None)
    except (OSError, UnicodeError):
        return
    for info in infos:
        try:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except (ValueError, IndexError, TypeError):
            continue
        reason = _refused_ip(ip)
        if reason:
            raise ConfigError(reason.replace("That address", f"That address ({host})", 1))


def check_server_url(url: str) -> str:
    """Normalise a server address typed by a user and refuse the dangerous ones.

    Accepts ``host:port`` without a scheme (``http://`` is assumed). Refuses other schemes,
    userinfo (``user:pass@host``), link-local, multicast and unspecified addresses (also written as
    IPv4-mapped IPv6, NAT64 or the resolver's numeric forms such as ``2852039166``) and cloud metadata
    services (``169.254.169.254``, ``fd00:ec2::254``, ``metadata.google.internal``, ...). A numeric
    host comes back in its canonical form, so what was checked is what gets connected to. Host names
    are not resolved here (that would be a different answer at connect time anyway).

    Raises:
        ConfigError: with a plain sentence saying what is wrong.
    """
    text = (url or "").strip()
    if not text:
        raise ConfigError("Enter the address of the ComfyUI server, for example http://127.0.0.1:8188.")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError("The server address is not a valid URL; use a form like http://127.0.0.1:8188.") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError("The server address must start with http:// or https://.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigError(
            "Do not put a user name or password in the server address; use the access token field instead."
        )
    host = (parts.hostname or "").lower()
    if not host.isascii():  # what the resolver will look up: "169。254。169。254" is 169.254.169.254
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ConfigError("The server address has a host name that cannot be used; check its spelling.") from None
    host = host.rstrip(".") if not host.startswith("[") else host
    if not host:
        raise ConfigError("The server address has no host name; use a form like http://127.0.0.1:8188.")
    if not set(host) <= _HOST_CHARS:
        raise ConfigError("The server address has a host name that cannot be used; check its spelling.")
    if host in _METADATA_HOSTS:
        raise ConfigError("That address belongs to a cloud metadata service, not a ComfyUI server.")
    ip = _ip_of(host)
    if ip is None and ":" in host:
        raise ConfigError("The server address is not a valid URL; use a form like http://127.0.0.1:8188.")
    if ip is not None:
        problem = _refused_ip(ip)
        if problem:
            raise ConfigError(problem)
        host = str(ip)
    netloc = f"[{host}]" if ip is not None and ip.version == 6 else host
    if port:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _first(*values: Any) -> str | None:
    for v in values:
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


@dataclass(frozen=True)
class Connection:
    """A local ComfyUI (``kind="local"``) or Comfy Cloud (``kind="cloud"``).

    Build with ``Connection.local(...)``, ``Connection.cloud(...)`` or ``Connection.resolve(...)``.
    """

    kind: Literal["local", "cloud"]
    base_url: str
    token: str | None = field(default=None, repr=False)  # bearer token (local server behind a proxy)
    api_key: str | None = field(default=None, repr=False)  # Comfy Cloud API key (X-API-Key)
    partner_key: str | None = field(default=None, repr=False)  # comfy.org key for partner (API) nodes
    source: str = field(default="explicit", compare=False)  # "explicit" | "secrets" | "env": for the UI

    def __post_init__(self) -> None:
        if self.kind not in ("local", "cloud"):
            raise ConfigError("The connection kind must be local or cloud.")
        if self.kind == "cloud" and not self.api_key:
            raise ConfigError("Enter your Comfy Cloud API key (from platform.comfy.org) to connect to Comfy Cloud.")
        object.__setattr__(self, "base_url", check_server_url(self.base_url))

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def local(
        cls, url: str = DEFAULT_LOCAL_URL, token: str | None = None, *, partner_key: str | None = None,
        source: str = "explicit",
    ) -> "Connection":
        return cls("local", url, token=_first(token), partner_key=_first(partner_key), source=source)

    @classmethod
    def cloud(cls, api_key: str, base_url: str = CLOUD_URL, *, source: str = "explicit") -> "Connection":
        key = _first(api_key)
        # On Cloud the same key also pays for partner nodes (extra_data.api_key_comfy_org).
        return cls("cloud", base_url, api_key=key, partner_key=key, source=source)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Connection":
        """From ``COMFY_CLOUD_API_KEY`` (cloud) or ``COMFYUI_URL`` / ``COMFYUI_TOKEN`` (local)."""
        env = os.environ if env is None else env
        key = _first(env.get("COMFY_CLOUD_API_KEY"))
        if key:
            return cls.cloud(key, _first(env.get("COMFY_CLOUD_URL")) or CLOUD_URL, source="env")
        return cls.local(
            _first(env.get("COMFYUI_URL")) or DEFAULT_LOCAL_URL,
            env.get("COMFYUI_TOKEN"),
            partner_key=env.get("COMFY_PARTNER_API_KEY"),
            source="env",
        )

    @classmethod
    def from_secrets(cls, section: Mapping[str, Any]) -> "Connection":
        """From the ``[comfyui]`` secrets table: ``mode``, ``url``, ``token``, ``cloud_api_key``,
        ``cloud_url``, ``partner_api_key``. ``mode`` defaults to cloud when a cloud key is set."""
        key = _first(section.get("cloud_api_key"))
        mode = _first(section.get("mode")) or ("cloud" if key else "local")
        if mode == "cloud":
            if not key:
                raise ConfigError("The operator chose Comfy Cloud but set no cloud_api_key in the secrets.")
            return cls.cloud(key, _first(section.get("cloud_url")) or CLOUD_URL, source="secrets")
        return cls.local(
            _first(section.get("url")) or DEFAULT_LOCAL_URL,
            section.get("token"),
            partner_key=section.get("partner_api_key"),
            source="secrets",
        )

    @classmethod
    def resolve(
        cls,
        *,
        secrets: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Connection":
        """The operator default: secrets ``[comfyui]`` when present, else the environment."""
        if secrets and any(_first(secrets.get(k)) for k in ("url", "cloud_api_key", "mode")):
            return cls.from_secrets(secrets)
        return cls.from_env(env)

    # -- derived values ----------------------------------------------------------------------
    @property
    def is_cloud(self) -> bool:
        return self.kind == "cloud"

    @property
    def display_url(self) -> str:
        return safe_url(self.base_url)

    @property
    def has_credentials(self) -> bool:
        return bool(self.token or self.api_key)

    def api_url(self, path: str) -> str:
        """Absolute URL of an API route; ``path`` like ``/prompt`` (``/api`` is added) or ``/internal/logs``."""
        if not path.startswith("/"):
            path = "/" + path
        if not (path.startswith("/api/") or path.startswith("/internal/")):
            path = "/api" + path
        return self.base_url + path

    def headers(self) -> dict[str, str]:
        """Authentication headers for HTTP requests (never logged: see transport's redaction)."""
        if self.kind == "cloud":
            return {"X-API-Key": self.api_key or ""}
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def ws_url(self, client_id: str) -> str:
        """WebSocket URL. On Cloud the key travels in the query string: never log this value."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = {"clientId": client_id}
        if self.kind == "cloud":
            query["token"] = self.api_key or ""
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", urlencode(query, quote_via=quote), ""))

    def ws_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.kind == "local" and self.token else {}

    def fingerprint(self) -> str:
        """A short stable id for cache keys: server and credential, without revealing either.

        Two sessions with different keys for the same server get different fingerprints, so nothing
        cached for one credential is served to another.
        """
        secret = self.api_key or self.token or ""
        cred = hashlib.sha256(("comfypanel-cred\0" + secret).encode()).hexdigest()[:16] if secret else "-"
        raw = f"{self.kind}\0{self.base_url}\0{cred}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def server_id(self) -> str:
        """Which server, without any credential: for the ledger, the hold queue, the thumbnail cache,
        the audit log and the UI.

        On Comfy Cloud every API key is its own account with its own jobs, queue and files (two
        accounts can both have an ``output/ComfyUI_00001_.png``), so the id names the account too, by
        a short one-way tag of the key: sessions with different keys never share held jobs or
        thumbnails. A local server is one queue and one output folder whatever the proxy token.
        """
        if self.kind == "cloud":
            return f"cloud:{self.display_url} (account {self.account_tag()})"
        return f"{self.kind}:{self.display_url}"

    def account_tag(self) -> str:
        """12 hex digits naming the Cloud account (a salted hash of the key; ``""`` without a key)."""
        if not self.api_key:
            return ""
        return hashlib.sha256(("comfypanel-account\0" + self.api_key).encode()).hexdigest()[:12]


# -- the operator switch: which servers a session may use ---------------------------------------------
NOT_ALLOWED = (
    "This panel only connects to the servers its operator configured; choose one of those."
)


def _same_server_key(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"))


@dataclass(frozen=True)
class ServerPolicy:
    """Which server addresses a browser session may connect to (the operator's switch).

    ``ServerPolicy()`` lets a session use any address ``check_server_url`` accepts. A restricted
    policy (``restricted=True``) allows only ``allowed`` (normalised base URLs); with nothing allowed
    (a broken allow-list) every address is refused: a mistake in the list never means "anything".
    Built from the ``[comfyui]`` secrets with ``ServerPolicy.from_secrets``; pure, no Streamlit.
    """

    allowed: tuple[str, ...] = ()
    restricted: bool = False

    @classmethod
    def from_secrets(cls, section: Mapping[str, Any] | None, operator: "Connection | None" = None) -> "ServerPolicy":
        """``allowed_servers = ["http://...", ...]`` and/or ``lock_server = true`` under ``[comfyui]``.

        With either set, sessions may only use the listed addresses plus the operator's own
        server (``operator``: the default connection from ``url`` / ``cloud_url`` / the environment).
        Neither set: unrestricted.

        Raises:
            ConfigError: the switch is set but malformed (a plain sentence for the operator); the
                caller should then refuse every address (``ServerPolicy.closed()``).
        """
        section = section or {}
        lock = section.get("lock_server", False)
        if not isinstance(lock, bool):
            raise ConfigError("lock_server in the panel's secrets must be true or false.")
        listed = section.get("allowed_servers")
        if listed is None and not lock:
            return cls()
        if listed is None:
            listed = []
        if isinstance(listed, str) or not isinstance(listed, (list, tuple)):
            raise ConfigError('allowed_servers in the panel\'s secrets must be a list, like ["http://127.0.0.1:8188"].')
        allowed: list[str] = []
        for entry in listed:
            if not isinstance(entry, str):
                raise ConfigError("Every entry of allowed_servers in the panel's secrets must be an address in quotes.")
            try:
                allowed.append(check_server_url(entry))
            except ConfigError as exc:
                raise ConfigError(f"An entry of allowed_servers in the panel's secrets is refused: {exc.user_message}") from None
        if operator is not None:
            allowed.insert(0, operator.base_url)
        unique: list[str] = []
        for url in allowed:
            if all(_same_server_key(url) != _same_server_key(u) for u in unique):
                unique.append(url)
        if not unique:
            raise ConfigError("lock_server is set, but the panel's secrets name no server to lock to.")
        return cls(tuple(unique), True)

    @classmethod
    def closed(cls) -> "ServerPolicy":
        """Nothing allowed: what a malformed operator switch means."""
        return cls((), True)

    def allows(self, url: str) -> bool:
        """Whether ``url`` (already normalised or not) may be used; never raises."""
        try:
            self.check(url)
        except ConfigError:
            return False
        return True

    def check(self, url: str) -> str:
        """``check_server_url(url)``, then the operator's list. Returns the normalised address.

        Raises:
            ConfigError: the address is unsafe, or not one the operator allows (one sentence).
        """
        normal = check_server_url(url)
        if self.restricted and all(_same_server_key(normal) != _same_server_key(a) for a in self.allowed):
            raise ConfigError(NOT_ALLOWED)
        return normal

    def choices(self, exclude: str | None = None) -> tuple[str, ...]:
        """The allowed addresses except ``exclude`` (e.g. the Cloud address, offered in Cloud mode)."""
        if exclude is None:
            return self.allowed
        return tuple(a for a in self.allowed if _same_server_key(a) != _same_server_key(check_server_url(exclude)))
