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
    "clear_credential_fields",
    "set_health",
    "set_failed",
    "request",
    "take_request",
    "autoconnect_due",
    "W_ADMIN_SECTION",
    "W_ADMIN_PASSWORD",
    "admin_widget",
    "admin_grant",
    "admin_granted",
    "admin_revoke",
    "admin_limiter",
    "session_label",
    "admin_ask",
    "admin_pending",
    "admin_cancel",
    "admin_confirm",
    "admin_take_confirmed",
    "admin_notice",
    "set_admin_notice",
    "admin_data",
    "set_admin_data",
    "drop_admin_data",
]

# -- the keys ---------------------------------------------------------------------------------
# Stored (non-widget) copies of the connection form. Survive page switches and hidden widgets.
_FIELD_KEYS = {
    "mode": "cp_mode",  # "local" | "cloud"
    "url_local": "cp_url_local",  # the local server address as typed
    "url_cloud": "cp_url_cloud",  # the Comfy Cloud address (normally https://cloud.comfy.org)
    "token": "cp_token",  # bearer token typed by this user ("" = none / the operator's)
    "api_key": "cp_api_key",  # Comfy Cloud API key typed by this user ("" = the operator's)
    "partner_key": "cp_partner_key",  # comfy.org key for partner (API) nodes on a local server ("" = none)
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

# Admin page (components/admin_*.py). Rights are per browser session and never shared.
K_ADMIN = "cp_admin"  # str | None: how this session became admin ("password" | "email")
K_ADMIN_LIMITER = "cp_admin_limiter"  # AttemptLimiter: this session's wrong admin passwords
K_SESSION_LABEL = "cp_session_label"  # str: "session-1a2b3c4d", the audit actor without st.login
K_ADMIN_PENDING = "cp_admin_pending"  # dict | None: an action waiting for its confirmation dialog
K_ADMIN_CONFIRMED = "cp_admin_confirmed"  # dict | None: confirmed, to run in this script run
K_ADMIN_NOTICE = "cp_admin_notice"  # (kind, sentence) | None: the result of the last action
K_ADMIN_DATA = "cp_admin_data"  # dict: what the admin sections loaded, keyed by (server fingerprint, what)
W_ADMIN_SECTION = "cp_w_admin_section"
W_ADMIN_PASSWORD = "cp_w_admin_password"
_ADMIN_WIDGET_PREFIX = "cp_w_admin_"

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


CREDENTIAL_FIELDS = ("token", "api_key", "partner_key")


def clear_credential_fields() -> None:
    """Empty the credential fields (stored and widget values) once a connection holds them: a field
    keeps its value in the browser's DOM, and a key must not stay in the page's HTML for the rest of
    the session. The connection keeps the credential (``build_connection`` reuses it when the field
    is left empty)."""
    for name in CREDENTIAL_FIELDS:
        set_field(name, "")
        st.session_state[widget_key(name)] = ""


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


# -- admin ----------------------------------------------------------------------------------------
def admin_widget(name: str) -> str:
    """The key of an Admin page widget (``cp_w_admin_<name>``)."""
    return _ADMIN_WIDGET_PREFIX + name


def admin_granted() -> str | None:
    return st.session_state.get(K_ADMIN)


def admin_grant(how: str) -> None:
    st.session_state[K_ADMIN] = how


def admin_revoke() -> None:
    st.session_state[K_ADMIN] = None
    st.session_state[K_ADMIN_PENDING] = None
    st.session_state[K_ADMIN_CONFIRMED] = None


def admin_limiter(factory: Any) -> Any:
    """This session's wrong-password counter (made by ``factory`` the first time)."""
    if st.session_state.get(K_ADMIN_LIMITER) is None:
        st.session_state[K_ADMIN_LIMITER] = factory()
    return st.session_state[K_ADMIN_LIMITER]


def session_label() -> str:
    if not st.session_state.get(K_SESSION_LABEL):
        import secrets

        st.session_state[K_SESSION_LABEL] = "session-" + secrets.token_hex(4)
    return st.session_state[K_SESSION_LABEL]


def admin_ask(action: dict) -> None:
    """Callback: ask for confirmation of ``action`` (``{"action": ..., "params": {...}}``)."""
    st.session_state[K_ADMIN_PENDING] = dict(action)
    st.session_state[K_ADMIN_CONFIRMED] = None


def admin_pending() -> dict | None:
    return st.session_state.get(K_ADMIN_PENDING)


def admin_cancel() -> None:
    st.session_state[K_ADMIN_PENDING] = None


def admin_confirm() -> None:
    st.session_state[K_ADMIN_CONFIRMED] = st.session_state.get(K_ADMIN_PENDING)
    st.session_state[K_ADMIN_PENDING] = None


def admin_take_confirmed() -> dict | None:
    action = st.session_state.get(K_ADMIN_CONFIRMED)
    st.session_state[K_ADMIN_CONFIRMED] = None
    return action


def admin_notice() -> tuple[str, str] | None:
    return st.session_state.get(K_ADMIN_NOTICE)


def set_admin_notice(kind: str, sentence: str) -> None:
    st.session_state[K_ADMIN_NOTICE] = (kind, sentence)


def admin_data(key: tuple) -> Any:
    return (st.session_state.get(K_ADMIN_DATA) or {}).get(key)


def set_admin_data(key: tuple, value: Any) -> None:
    data = st.session_state.get(K_ADMIN_DATA) or {}
    data[key] = value
    st.session_state[K_ADMIN_DATA] = data


def drop_admin_data(fingerprint: str | None = None, what: str | None = None) -> None:
    """Forget loaded admin data (all, one server's, or one kind of one server's)."""
    data = st.session_state.get(K_ADMIN_DATA) or {}
    st.session_state[K_ADMIN_DATA] = {
        k: v for k, v in data.items()
        if not ((fingerprint is None or k[0] == fingerprint) and (what is None or k[1] == what))
    }


# -- generate page ----------------------------------------------------------------------------------
# The loaded workflow and the user's values survive page switches (they are not widget keys).
K_GEN_WORKFLOW = "cp_gen_workflow"  # LoadedWorkflow | None: what the form is built from
K_GEN_TOKEN = "cp_gen_token"  # str: changes with every new workflow, so widget keys start fresh
K_GEN_VALUES = "cp_gen_values"  # dict param_id -> value the user chose
K_GEN_SEED_MODES = "cp_gen_seed_modes"  # dict param_id -> fixed | randomize | increment | decrement
K_GEN_RUNS = "cp_gen_runs"  # list[dict]: this session's submitted jobs, newest last
K_GEN_ERROR = "cp_gen_error"  # str | None: the last load / submit failure, one sentence
K_GEN_NODE_ERRORS = "cp_gen_node_errors"  # dict param_id | "" -> sentence, from a refused submit
K_GEN_PREFILL = "cp_generate_prefill"  # Recipe | None: "open in Generate" from the gallery
_GEN_WIDGET_PREFIX = "cp_w_gen_"


def gen_widget(*parts: str) -> str:
    """A Generate page widget key, unique per loaded workflow."""
    token = st.session_state.get(K_GEN_TOKEN) or "0"
    return _GEN_WIDGET_PREFIX + token + "_" + "_".join(parts)


def gen_state() -> dict:
    """The Generate page's non-widget state (created on first use)."""
    state = st.session_state
    state.setdefault(K_GEN_WORKFLOW, None)
    state.setdefault(K_GEN_TOKEN, "0")
    state.setdefault(K_GEN_VALUES, {})
    state.setdefault(K_GEN_SEED_MODES, {})
    state.setdefault(K_GEN_RUNS, [])
    state.setdefault(K_GEN_ERROR, None)
    state.setdefault(K_GEN_NODE_ERRORS, {})
    return state


# -- gallery (issue 6: components/gallery_*.py) --------------------------------------------------
# "Open in Generate" puts the job's Recipe in K_GEN_PREFILL (the generate section above).
K_GALLERY_SELECTED = "cp_gallery_selected"  # set[str]: prompt ids ticked in the grid (bulk actions)
K_GALLERY_DETAIL = "cp_gallery_detail"  # str | None: the prompt id whose detail view is open
K_GALLERY_NOTICE = "cp_gallery_notice"  # (kind, sentence) | None: the result of the last action
K_GALLERY_CONFIRM = "cp_gallery_confirm"  # bool: the bulk delete waits for its confirmation
K_GALLERY_FULL = "cp_gallery_full"  # set[str]: "prompt_id/index" of outputs whose full image was asked for
_GALLERY_WIDGET_PREFIX = "cp_w_gallery_"
W_GALLERY_PAGE = "page"  # the page number, bound to the URL query (?page=3): nothing else goes there


def gallery_widget(name: str) -> str:
    """The key of a Gallery widget (``cp_w_gallery_<name>``)."""
    return _GALLERY_WIDGET_PREFIX + name


def gallery_selected() -> set[str]:
    sel = st.session_state.get(K_GALLERY_SELECTED)
    if not isinstance(sel, set):
        sel = set()
        st.session_state[K_GALLERY_SELECTED] = sel
    return sel


def set_gallery_selected(ids: set[str]) -> None:
    st.session_state[K_GALLERY_SELECTED] = set(ids)


def gallery_detail() -> str | None:
    return st.session_state.get(K_GALLERY_DETAIL)


def set_gallery_detail(prompt_id: str | None) -> None:
    st.session_state[K_GALLERY_DETAIL] = prompt_id


def gallery_notice() -> tuple[str, str] | None:
    return st.session_state.get(K_GALLERY_NOTICE)


def set_gallery_notice(kind: str | None, sentence: str = "") -> None:
    st.session_state[K_GALLERY_NOTICE] = (kind, sentence) if kind else None


def gallery_confirming() -> bool:
    return bool(st.session_state.get(K_GALLERY_CONFIRM))


def set_gallery_confirming(value: bool) -> None:
    st.session_state[K_GALLERY_CONFIRM] = bool(value)


def gallery_full() -> set[str]:
    full = st.session_state.get(K_GALLERY_FULL)
    if not isinstance(full, set):
        full = set()
        st.session_state[K_GALLERY_FULL] = full
    return full


def set_generate_prefill(recipe) -> None:
    """Hand a ``Recipe`` to the Generate page (which reads and clears ``K_GEN_PREFILL``)."""
    st.session_state[K_GEN_PREFILL] = recipe


# -- queue page (components/queue_*.py) ------------------------------------------------------------
K_QUEUE_NOTICE = "cp_queue_notice"  # (kind, sentence) | None: the result of the last queue action
K_QUEUE_SEEN = "cp_queue_seen"  # set[str]: finished prompt ids already shown (toasted or old)
K_QUEUE_INTERRUPTED = "cp_queue_interrupted"  # set[str]: prompt ids this session asked to interrupt
_QUEUE_WIDGET_PREFIX = "cp_w_queue_"


def queue_widget(name: str) -> str:
    """The key of a Queue page widget (``cp_w_queue_<name>``)."""
    return _QUEUE_WIDGET_PREFIX + name


def queue_notice() -> tuple[str, str] | None:
    return st.session_state.get(K_QUEUE_NOTICE)


def set_queue_notice(kind: str | None, sentence: str = "") -> None:
    st.session_state[K_QUEUE_NOTICE] = (kind, sentence) if kind else None


def queue_seen() -> set | None:
    """Finished prompt ids already shown to this session; None before the first look."""
    return st.session_state.get(K_QUEUE_SEEN)


def set_queue_seen(ids: set) -> None:
    st.session_state[K_QUEUE_SEEN] = set(ids)


def queue_interrupted() -> set:
    return st.session_state.setdefault(K_QUEUE_INTERRUPTED, set())


def drop_queue_widgets(prefix: str) -> None:
    """Forget Queue page widget values starting with ``cp_w_queue_<prefix>`` (re-seeded when drawn)."""
    start = _QUEUE_WIDGET_PREFIX + prefix
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(start)]:
        del st.session_state[key]
