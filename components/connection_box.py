"""The sidebar connection box (drawn once per run, for every page) and the connection status.

Local / Cloud, address, token or API key, Connect → a health check (version, devices, RAM/VRAM,
queue length). The operator's defaults come from secrets ``[comfyui]`` or the environment; an
operator credential is only ever sent to the operator's own server address, so a user who types
another address cannot make the panel hand the operator's key to it.

The operator switch (``allowed_servers`` / ``lock_server`` under ``[comfyui]``, see
``comfypanel.connection.ServerPolicy``) restricts sessions to the configured servers: the box then
offers only those, and every Connect — whatever put the address in the session — is checked against
the list again, so an address set another way is refused with one sentence.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import streamlit as st

from comfypanel.client import ComfyClient
from comfypanel.connection import (CLOUD_URL, DEFAULT_LOCAL_URL, NOT_ALLOWED, Connection, ServerPolicy, check_resolved,
                                   check_server_url)
from comfypanel.errors import CannotConnect, ComfyPanelError, ConfigError, RequestTimedOut

from . import session
from .text import code, plain

__all__ = ["OperatorDefault", "operator_default", "build_connection", "health_check", "render",
           "status_line", "server_details"]

log = logging.getLogger("comfypanel.ui")

KIND_LABEL = {"local": "Local ComfyUI", "cloud": "Comfy Cloud"}
MODE_LABEL = {"local": "Local", "cloud": "Cloud"}  # short: the switch fits the sidebar
_UNEXPECTED = (
    "Something unexpected went wrong while connecting. Try again; if it keeps happening, ask whoever "
    "runs the panel."
)


# -- operator defaults ------------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorDefault:
    """What the operator configured (secrets ``[comfyui]``, else the environment)."""

    connection: Connection | None  # None when the configuration itself is unusable
    cloud_url: str  # where Cloud mode points by default
    error: str | None = None  # the configuration problem, one sentence
    policy: ServerPolicy = ServerPolicy()  # which addresses sessions may use (the operator switch)

    @property
    def cloud_allowed(self) -> bool:
        return self.policy.allows(self.cloud_url)

    def local_choices(self) -> tuple[str, ...]:
        """With the switch on: the addresses offered in Local mode (the Cloud address is Cloud's)."""
        return self.policy.choices(exclude=self.cloud_url)

    def credential_for(self, kind: str, base_url: str) -> Connection | None:
        """The operator's connection when it targets exactly this server, else ``None``."""
        c = self.connection
        return c if c is not None and c.kind == kind and c.base_url == base_url else None


def _secrets_section() -> Mapping[str, Any] | None:
    """``st.secrets["comfyui"]`` or ``None``. Without a secrets file ``st.secrets.get`` raises."""
    try:
        section = st.secrets.get("comfyui")
    except Exception:  # FileNotFoundError / StreamlitSecretNotFoundError, or an unparsable file
        return None
    return dict(section) if isinstance(section, Mapping) else None


def operator_default() -> OperatorDefault:
    secrets = _secrets_section()
    env = os.environ
    try:
        conn: Connection | None = Connection.resolve(secrets=secrets, env=env)
        problem = None
    except ConfigError as exc:
        conn, problem = None, exc.user_message
    cloud_url = CLOUD_URL
    for candidate in ((secrets or {}).get("cloud_url"), env.get("COMFY_CLOUD_URL")):
        if isinstance(candidate, str) and candidate.strip():
            try:
                cloud_url = check_server_url(candidate)
            except ConfigError:
                pass
            break
    if conn is not None and conn.is_cloud:
        cloud_url = conn.base_url
    try:
        policy = ServerPolicy.from_secrets(secrets, conn)
    except ConfigError as exc:  # a broken switch refuses every address rather than allowing any
        policy, problem = ServerPolicy.closed(), problem or exc.user_message
    if conn is not None and not policy.allows(conn.base_url):  # cannot happen: the default is listed
        conn = None
    return OperatorDefault(conn, cloud_url, problem, policy)


def _form_defaults(op: OperatorDefault) -> dict[str, str]:
    conn = op.connection
    url_local = conn.display_url if conn is not None and not conn.is_cloud else DEFAULT_LOCAL_URL
    mode = conn.kind if conn is not None else "local"
    if op.policy.restricted:
        choices = op.local_choices()
        if url_local not in choices:
            url_local = choices[0] if choices else ""
        if conn is None and not choices and op.cloud_allowed:
            mode = "cloud"
    return {
        "mode": mode,
        "url_local": url_local,
        "url_cloud": op.cloud_url,
        "token": "",  # credential fields stay empty: an operator key is used, never shown
        "api_key": "",
        "partner_key": "",
    }


# -- connecting ---------------------------------------------------------------------------------------
def _same(current: Connection | None, kind: str, url: str) -> Connection | None:
    """This session's connection when it targets this very server, else ``None``."""
    return current if current is not None and current.kind == kind and current.base_url == url else None


def _users(value: str | None, operator_value: str | None) -> str | None:
    """``value`` when it is a credential the user typed (not the operator's), else ``None``."""
    return value if value and value != operator_value else None


def build_connection(form: Mapping[str, str], op: OperatorDefault,
                     current: Connection | None = None) -> tuple[Connection, bool]:
    """The connection the form asks for, and whether it carries an operator credential.

    An empty credential field means: the key this session already uses for this server (``current``,
    typed by the user earlier: the fields are emptied after a successful Connect), else the operator's.

    Raises:
        ConfigError: the form cannot make a connection (bad address, an address the operator does
            not allow, missing Cloud key).
    """
    if form.get("mode") == "cloud":
        url = op.policy.check(form.get("url_cloud") or CLOUD_URL)
        key = (form.get("api_key") or "").strip()
        operator = op.credential_for("cloud", url)
        same = _same(current, "cloud", url)
        if not key and same is not None:
            key = _users(same.api_key, operator.api_key if operator is not None else None) or ""
        if not key and operator is not None:
            return Connection.cloud(operator.api_key or "", url, source=operator.source), True
        return Connection.cloud(key, url), False
    url = op.policy.check(form.get("url_local") or DEFAULT_LOCAL_URL)
    if not op.policy.restricted:  # a name the user typed may resolve to a metadata address
        check_resolved(url)
    token = (form.get("token") or "").strip() or None
    operator = op.credential_for("local", url)
    uses_operator = False
    partner = (form.get("partner_key") or "").strip() or None  # the user's own, when given
    same = _same(current, "local", url)
    if same is not None:  # keep what the user typed for this server before (the fields were emptied)
        token = token or _users(same.token, operator.token if operator is not None else None)
        partner = partner or _users(same.partner_key, operator.partner_key if operator is not None else None)
    if operator is not None and partner is None:
        partner = operator.partner_key  # the operator pays for partner nodes on its own server
        if not token and operator.token:
            token = operator.token
            uses_operator = True
        uses_operator = uses_operator or bool(partner and partner == operator.partner_key)
    source = operator.source if uses_operator and operator is not None else "explicit"
    return Connection.local(url, token, partner_key=partner, source=source), uses_operator


def health_check(client: ComfyClient) -> session.Health:
    """System stats and the queue length. The queue call also proves the credential works
    (Comfy Cloud answers ``/system_stats`` without one).

    Raises:
        ComfyPanelError: with a one-sentence ``user_message``.
    """
    stats = client.system_stats()
    queue_remaining = client.queue_remaining()
    return session.Health(stats, queue_remaining, datetime.now())


# Not connected because nothing answered (ComfyUI not started yet, or restarting): a later run tries
# again by itself, at most this often, while the form still asks for the same server.
RETRY_EVERY_S = 3.0
K_RETRY = "cp_connect_retry"  # (form, monotonic time) of the last connect that found no server


def _retry_due() -> bool:
    retry = st.session_state.get(K_RETRY)
    if retry is None or session.client() is not None:
        return False
    form, at = retry
    if form != {name: session.field(name) for name in session.FIELDS}:
        st.session_state[K_RETRY] = None  # the user changed the form: they press Connect themselves
        return False
    return time.monotonic() - at >= RETRY_EVERY_S


def _connect(op: OperatorDefault) -> None:
    form = {name: session.field(name) for name in session.FIELDS}
    st.session_state[K_RETRY] = None
    conn = new_client = None
    try:
        conn, uses_operator = build_connection(form, op, session.connection())
        new_client = ComfyClient(conn)
        report = health_check(new_client)
    except ComfyPanelError as exc:
        if new_client is not None:
            new_client.close()
        message = _server_sentence(exc, conn)
        log.info("connect failed: %s", message)
        session.set_failed(message)
        if isinstance(exc, (CannotConnect, RequestTimedOut)):  # may come up: retry on a later run
            st.session_state[K_RETRY] = (form, time.monotonic())
        return
    except Exception:  # a bug, not a server answer: still one sentence on the page
        if new_client is not None:
            new_client.close()
        log.exception("connect failed unexpectedly")
        session.set_failed(_UNEXPECTED)
        return
    session.set_connected(conn, new_client, report, operator_key=uses_operator)
    session.clear_credential_fields()  # the connection holds them; the page's HTML must not


def _server_sentence(exc: ComfyPanelError, conn: Connection | None) -> str:
    """The error's sentence, naming the server address the user typed rather than the API route
    that failed (``…/api/system_stats`` means nothing to them)."""
    if conn is not None:
        if isinstance(exc, CannotConnect):
            return CannotConnect(conn.display_url).user_message
        if isinstance(exc, RequestTimedOut):
            return RequestTimedOut(conn.display_url).user_message
    return exc.user_message


def _refresh() -> None:
    current = session.client()
    if current is None:
        return
    try:
        session.set_health(health_check(current))
    except ComfyPanelError as exc:
        session.set_failed(_server_sentence(exc, current.connection))
    except Exception:
        log.exception("health check failed unexpectedly")
        session.set_failed(_UNEXPECTED)


def _on_connect() -> None:
    session.store_widget()
    session.request("connect")


def _on_refresh() -> None:
    session.request("refresh")


# -- drawing ------------------------------------------------------------------------------------------
def render() -> None:
    """Draw the sidebar box; run a pending Connect / Refresh (or the first-load auto-connect)."""
    op = operator_default()
    session.init(_form_defaults(op))
    current = session.connection()
    if current is not None and not op.policy.allows(current.base_url):  # the operator changed the list
        session.set_failed(NOT_ALLOWED)
    pending = session.take_request()
    if session.autoconnect_due() and pending is None:
        if op.error:
            session.set_failed(op.error)
        else:
            pending = "connect"
    elif pending is None and _retry_due():
        pending = "connect"
    with st.sidebar:
        if pending:
            label = "Connecting…" if pending == "connect" else "Checking the server…"
            with st.spinner(label):
                if pending == "connect":
                    _connect(op)
                else:
                    _refresh()
        _status_card()
        _settings(op)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f}"


def _usage_bar(label: str, total: int, free: int) -> None:
    if total <= 0:
        return
    used = max(0, min(total, total - max(free, 0)))
    st.progress(used / total, text=f"{label} {_gib(used)} / {_gib(total)} GiB")


def _status_card() -> None:
    conn, report = session.connection(), session.health()
    with st.container(border=True, key=session.STATUS_CARD):
        if conn is None or report is None:
            st.badge("Not connected", icon=":material/link_off:", color="gray")
            message = session.error()
            if message:
                st.error(plain(message), icon=":material/error:")
            else:
                st.caption("Choose a server below and press Connect.")
            return
        stats = report.stats
        with st.container(horizontal=True, vertical_alignment="center", gap="small"):
            st.badge("Connected", icon=":material/check_circle:", color="green")
            st.caption(KIND_LABEL[conn.kind])
        st.caption(code(conn.display_url))
        with st.container(horizontal=True, gap="medium"):
            st.metric("ComfyUI", plain(stats.comfyui_version))  # metric values render Markdown
            st.metric("Queue", report.queue_remaining, help="Jobs running or waiting on the server.")
        for device in stats.devices:
            with st.container(horizontal=True, vertical_alignment="center", gap="small"):
                st.caption("Device")
                st.text(device.name)
        _usage_bar("RAM", stats.ram_total, stats.ram_free)
        for device in stats.devices:
            if device.type != "cpu":
                _usage_bar("VRAM", device.vram_total, device.vram_free)
        if session.operator_key_in_use():
            st.caption(":material/key: Using the operator's key")
        with st.container(horizontal=True, vertical_alignment="center"):
            st.caption(f"Checked at {report.checked_at:%H:%M:%S}")
            st.button("Refresh", key=session.W_REFRESH, type="tertiary", icon=":material/refresh:",
                      on_click=_on_refresh, help="Run the health check again.")


def _modes(op: OperatorDefault) -> list[str]:
    """Local / Cloud, or with the operator switch on, only the kinds it leaves."""
    if not op.policy.restricted:
        return ["local", "cloud"]
    modes = ["local"] if op.local_choices() else []
    if op.cloud_allowed:
        modes.append("cloud")
    return modes


def _offer(name: str, options: list[str]) -> str:
    """Seed a choice widget, replacing a stored value that is not among ``options`` (which a
    selectbox would not accept) with the first option. Returns the widget key."""
    key = session.seed_widget(name)
    if options and st.session_state.get(key) not in options:
        st.session_state[key] = options[0]
    return key


def _settings(op: OperatorDefault) -> None:
    connected = session.is_connected()
    restricted = op.policy.restricted
    with st.expander("Connection settings", expanded=not connected, icon=":material/settings_ethernet:"):
        modes = _modes(op)
        if restricted:
            st.caption(":material/lock: Whoever runs this panel limits it to the servers offered here.")
        if not modes:  # a broken switch: nothing may be used (the status card says why)
            return
        mode = st.segmented_control(
            "Server",
            options=modes,
            format_func=MODE_LABEL.__getitem__,
            key=_offer("mode", modes) if restricted else session.seed_widget("mode"),
            on_change=session.store_widget,
            args=("mode",),
            required=True,
            width="stretch",
        )
        if mode == "cloud":
            if restricted:  # the one Cloud address the operator allows
                st.text_input("Cloud address", value=op.cloud_url, disabled=True, key=session.widget_key("url_cloud") + "_fixed")
                session.set_field("url_cloud", op.cloud_url)
            else:
                st.text_input(
                    "Cloud address", key=session.seed_widget("url_cloud"), placeholder=CLOUD_URL,
                    on_change=session.store_widget, args=("url_cloud",),
                )
            has_operator_key = op.connection is not None and op.connection.is_cloud
            in_use = session.connection() is not None and session.connection().is_cloud \
                and not session.operator_key_in_use()
            st.text_input(
                "API key", type="password", key=session.seed_widget("api_key"),
                placeholder="Leave empty to keep the key in use" if in_use
                else "Leave empty to use the operator's key" if has_operator_key
                else "From platform.comfy.org",
                help="Your Comfy Cloud API key. It stays on the panel's server, in this browser session only.",
                on_change=session.store_widget, args=("api_key",),
            )
        else:
            if restricted:
                choices = list(op.local_choices())
                st.selectbox(
                    "Server address", choices, key=_offer("url_local", choices), disabled=len(choices) < 2,
                    on_change=session.store_widget, args=("url_local",),
                    help="The servers whoever runs this panel allows.",
                )
            else:
                st.text_input(
                    "Server address", key=session.seed_widget("url_local"), placeholder=DEFAULT_LOCAL_URL,
                    on_change=session.store_widget, args=("url_local",),
                )
            operator = op.connection
            has_operator_token = operator is not None and not operator.is_cloud and bool(operator.token)
            current = session.connection()
            token_in_use = current is not None and not current.is_cloud and bool(current.token) \
                and not session.operator_key_in_use()
            st.text_input(
                "Access token", type="password", key=session.seed_widget("token"),
                placeholder="Leave empty to keep the token in use" if token_in_use
                else "Leave empty to use the operator's token" if has_operator_token else "Optional",
                help="Only needed when the server sits behind a proxy that asks for a bearer token.",
                on_change=session.store_widget, args=("token",),
            )
            st.text_input(
                "Partner-node key", type="password", key=session.seed_widget("partner_key"), placeholder="Optional",
                help="Your comfy.org API key, for workflows that use paid partner (API) nodes. It is sent with "
                     "each job and stays in this browser session only.",
                on_change=session.store_widget, args=("partner_key",),
            )
        st.button("Connect", key=session.W_CONNECT, type="primary", icon=":material/power:",
                  width="stretch", on_click=_on_connect)


def status_line() -> None:
    """One line for the top of a page: where this session is connected, or how to connect."""
    conn, report = session.connection(), session.health()
    if conn is None or report is None:
        st.info("Not connected. Use the connection box in the sidebar to connect to ComfyUI or Comfy Cloud.",
                icon=":material/link_off:")
        return
    st.caption(
        f":material/check_circle: Connected to {KIND_LABEL[conn.kind]} at {code(conn.display_url)}"
        f" · ComfyUI {plain(report.stats.comfyui_version)}"
    )


def server_details() -> None:
    """What the last health check found, in full (for the Admin page)."""
    report = session.health()
    if report is None:
        return
    s = report.stats
    with st.container(horizontal=True, gap="medium"):
        # Metric values render Markdown: server strings are escaped.
        st.metric("ComfyUI", plain(s.comfyui_version), border=True)
        st.metric("Frontend", plain(s.frontend_version or "—"), border=True)
        st.metric("Python", plain(s.python_version or "—"), border=True)
        st.metric("PyTorch", plain(s.pytorch_version or "—"), border=True)
        st.metric("Queue", report.queue_remaining, border=True)
    with st.container(border=True):
        st.caption("Devices")
        for d in s.devices:
            st.text(d.name)
        _usage_bar("RAM", s.ram_total, s.ram_free)
        for d in s.devices:
            if d.type != "cpu":
                _usage_bar("VRAM", d.vram_total, d.vram_free)
    st.caption(f"Checked at {report.checked_at:%H:%M:%S}. Refresh from the sidebar.")
