"""The one module that owns ``st.session_state`` keys.

Everything tied to credentials (the ``Connection``, the ``ComfyClient``, what the server said)
lives here, per browser session, and nowhere global: ``st.cache_resource`` is shared by every
user of the server process and must hold nothing tied to a key.

Widget values are dropped by Streamlit when their widget is not drawn in a run (a field hidden in
Cloud mode, another page). So each connection field has two keys: the widget's own key and a
plain "stored" key that callbacks copy the value into; before a widget is drawn its key is seeded
from the stored copy (``seed_widget``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import streamlit as st

from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.types import SystemStats

__all__ = [
    "Health",
    "FIELDS",
    "K_CLIENT",
    "K_CONNECTION",
    "W_CONNECT",
    "W_REFRESH",
    "STATUS_CARD",
    "init",
    "field",
    "set_field",
    "widget_key",
    "seed_widget",
    "store_widget",
    "client",
    "connection",
    "health",
    "error",
    "operator_key_in_use",
    "is_connected",
    "set_connected",
    "set_health",
    "set_failed",
    "request",
    "take_request",
    "autoconnect_due",
]

# -- the keys ---------------------------------------------------------------------------------
# Stored (non-widget) copies of the connection form. Survive page switches and hidden widgets.
_FIELD_KEYS = {
    "mode": "cp_mode",  # "local" | "cloud"
    "url_local": "cp_url_local",  # the local server address as typed
    "url_cloud": "cp_url_cloud",  # the Comfy Cloud address (normally https://cloud.comfy.org)
    "token": "cp_token",  # bearer token typed by this user ("" = none / the operator's)
    "api_key": "cp_api_key",  # Comfy Cloud API key typed by this user ("" = the operator's)
}
FIELDS = tuple(_FIELD_KEYS)
_WIDGET_PREFIX = "cp_w_"  # widget keys: cp_w_mode, cp_w_url_local, ...

K_CONNECTION = "cp_connection"  # Connection | None: what the client talks to
K_CLIENT = "cp_client"  # ComfyClient | None: this session's client (never shared)
K_HEALTH = "cp_health"  # Health | None: the last successful health check
K_ERROR = "cp_error"  # str | None: the last failure, one plain sentence
K_OPERATOR_KEY = "cp_operator_key"  # bool: the client uses a credential from secrets/env
K_REQUEST = "cp_request"  # "connect" | "refresh" | None: asked for by a button callback
K_STARTED = "cp_started"  # bool: the first-load auto-connect has been run

# Buttons (their keys are session_state keys too) and the status card (a CSS class, st-key-…).
W_CONNECT = _WIDGET_PREFIX + "connect"
W_REFRESH = _WIDGET_PREFIX + "refresh"
STATUS_CARD = "cp_status_card"


@dataclass(frozen=True, slots=True)
class Health:
    """What the health check found: shown in the sidebar and on the Admin page."""

    stats: SystemStats
    queue_remaining: int
    checked_at: datetime


def init(defaults: dict[str, str]) -> None:
    """Create the session's keys once; ``defaults`` fills the connection form the first time."""
    state = st.session_state
    for name, key in _FIELD_KEYS.items():
        if key not in state:
            state[key] = defaults.get(name, "")
    for key in (K_CONNECTION, K_CLIENT, K_HEALTH, K_ERROR, K_REQUEST):
        state.setdefault(key, None)
    state.setdefault(K_OPERATOR_KEY, False)
    state.setdefault(K_STARTED, False)


# -- the connection form ------------------------------------------------------------------------
def field(name: str) -> str:
    return str(st.session_state.get(_FIELD_KEYS[name]) or "")


def set_field(name: str, value: str) -> None:
    st.session_state[_FIELD_KEYS[name]] = value


def widget_key(name: str) -> str:
    if name not in _FIELD_KEYS:
        raise KeyError(f"no connection field {name!r}")
    return _WIDGET_PREFIX + name


def seed_widget(name: str) -> str:
    """Give the widget its stored value if Streamlit dropped it; returns the widget key."""
    key = widget_key(name)
    if key not in st.session_state:
        st.session_state[key] = field(name)
    return key


def store_widget(*names: str) -> None:
    """Callback: copy widget values to their stored keys (so they survive unrendered runs)."""
    for name in names or FIELDS:
        key = widget_key(name)
        if key in st.session_state:
            value = st.session_state[key]
            set_field(name, value if isinstance(value, str) else "")


# -- the connection -----------------------------------------------------------------------------
def client() -> ComfyClient | None:
    """This session's client, or ``None`` when not connected."""
    return st.session_state.get(K_CLIENT)


def connection() -> Connection | None:
    return st.session_state.get(K_CONNECTION)


def health() -> Health | None:
    return st.session_state.get(K_HEALTH)


def error() -> str | None:
    return st.session_state.get(K_ERROR)


def operator_key_in_use() -> bool:
    return bool(st.session_state.get(K_OPERATOR_KEY)) and client() is not None


def is_connected() -> bool:
    return client() is not None and health() is not None


def set_connected(conn: Connection, new_client: ComfyClient, report: Health, *, operator_key: bool) -> None:
    """Make ``new_client`` this session's client; the previous one is closed."""
    _drop_client(keep=new_client)
    st.session_state[K_CONNECTION] = conn
    st.session_state[K_CLIENT] = new_client
    st.session_state[K_HEALTH] = report
    st.session_state[K_OPERATOR_KEY] = operator_key
    st.session_state[K_ERROR] = None


def set_health(report: Health) -> None:
    st.session_state[K_HEALTH] = report
    st.session_state[K_ERROR] = None


def set_failed(message: str) -> None:
    """Record a failure sentence and drop the client: after a failed Connect the form shows
    another target than the old client, and after a failed Refresh the server is gone."""
    _drop_client()
    st.session_state[K_CONNECTION] = None
    st.session_state[K_OPERATOR_KEY] = False
    st.session_state[K_HEALTH] = None
    st.session_state[K_ERROR] = message


def _drop_client(keep: Any = None) -> None:
    old = st.session_state.get(K_CLIENT)
    st.session_state[K_CLIENT] = None
    if old is not None and old is not keep:
        try:
            old.close()
        except Exception:  # closing a pool must never break the page
            pass


# -- requests from callbacks ----------------------------------------------------------------------
def request(what: Literal["connect", "refresh"]) -> None:
    st.session_state[K_REQUEST] = what


def take_request() -> str | None:
    what = st.session_state.get(K_REQUEST)
    st.session_state[K_REQUEST] = None
    return what


def autoconnect_due() -> bool:
    """True exactly once per session: the first run connects with the operator default."""
    if st.session_state.get(K_STARTED):
        return False
    st.session_state[K_STARTED] = True
    return True
