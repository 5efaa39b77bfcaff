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
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from .errors import ConfigError, safe_url

__all__ = ["Connection", "CLOUD_URL", "DEFAULT_LOCAL_URL", "check_server_url"]

CLOUD_URL = "https://cloud.comfy.org"
DEFAULT_LOCAL_URL = "http://127.0.0.1:8188"

# Hosts that are never a ComfyUI server but are a classic server-side request forgery target.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "metadata.azure.com", "instance-data"}


def check_server_url(url: str) -> str:
    """Normalise a server address typed by a user and refuse the dangerous ones.

    Accepts ``host:port`` without a scheme (``http://`` is assumed). Refuses other schemes,
    userinfo (``user:pass@host``), link-local and cloud metadata addresses.

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
    if not host:
        raise ConfigError("The server address has no host name; use a form like http://127.0.0.1:8188.")
    if host in _METADATA_HOSTS:
        raise ConfigError("That address belongs to a cloud metadata service, not a ComfyUI server.")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and (ip.is_link_local or ip.is_multicast or ip.is_unspecified):
        raise ConfigError("That address (link-local, multicast or 0.0.0.0) cannot be a ComfyUI server.")
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
        """Which server, without any credential: for the ledger and the UI."""
        return f"{self.kind}:{self.display_url}"
