"""The Admin page's gate, confirmations and audit trail (Streamlit glue over ``comfypanel.admin``
and ``comfypanel.audit``).

* ``render_gate()`` draws the unlock box: e-mail allow-list (``st.login``) or the admin password.
* ``ask_button(...)`` draws a button that asks for confirmation (``st.dialog``) of an action.
* ``run_confirmed(...)`` runs the confirmed action once, checks the gate again at that moment and
  writes the audit entry with its result.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import streamlit as st

from comfypanel import admin as gate
from comfypanel.audit import AuditLog
from comfypanel.errors import ComfyPanelError

from . import session
from .text import plain

__all__ = ["admin_config", "user_email", "actor", "is_admin", "render_gate", "ask_button", "confirm_dialog",
           "run_confirmed", "audit_log", "record"]

log = logging.getLogger("comfypanel.ui.admin")


@st.cache_resource
def _process_limiter() -> gate.AttemptLimiter:
    """Shared by every session of this process on purpose (holds counts and times, no credential)."""
    return gate.process_limiter()


def admin_config() -> gate.AdminConfig:
    """``[comfyui.admin]`` from the secrets; empty when there is no secrets file."""
    try:
        section = st.secrets.get("comfyui")
        admin = section.get("admin") if isinstance(section, Mapping) else None
    except Exception:  # no secrets file / unparsable file
        admin = None
    return gate.AdminConfig.from_secrets(dict(admin) if isinstance(admin, Mapping) else None)


def user_email() -> str | None:
    """``st.user.email`` when the operator configured ``st.login`` and the user is logged in."""
    try:
        if st.user.is_logged_in:
            email = st.user.get("email")
            return str(email) if email else None
    except Exception:  # st.login not configured
        return None
    return None


def actor() -> str:
    """Who acts, for the audit log: the login e-mail, else this browser session's label."""
    return user_email() or session.session_label()


def audit_log() -> AuditLog:
    return AuditLog()  # cheap: holds the path; COMFYPANEL_DATA_DIR or the user data dir


def _server() -> str:
    conn = session.connection()
    return conn.server_id() if conn is not None else "-"


def record(action: str, params: Mapping[str, Any] | None, result: str, message: str) -> None:
    """Write one audit entry; a broken audit file is logged and shown, never swallowed silently."""
    try:
        audit_log().record(actor=actor(), server=_server(), action=action, params=params,
                           result=result, message=message)  # type: ignore[arg-type]
    except Exception:
        log.exception("could not write the audit log")
        st.warning("The action ran, but the audit log could not be written. Check the panel's data folder.",
                   icon=":material/warning:")


def is_admin(config: gate.AdminConfig | None = None) -> bool:
    config = config or admin_config()
    if config.email_allowed(user_email()):
        if session.admin_granted() != "email":
            session.admin_grant("email")
        return True
    if session.admin_granted() == "email":  # logged out, or removed from the list
        session.admin_revoke()
    return session.admin_granted() == "password" and config.has_password


def _try_password() -> None:
    """Callback of the unlock form: check the password, count misses, audit the attempt."""
    key = session.W_ADMIN_PASSWORD
    typed = st.session_state.get(key) or ""
    st.session_state[key] = ""  # never kept in the session once checked
    config = admin_config()
    result = gate.check_password(config, typed, [session.admin_limiter(gate.session_limiter), _process_limiter()])
    if result.ok:
        session.admin_grant("password")
    session.set_admin_notice("success" if result.ok else "error", result.message)
    record("admin_unlock", {}, "ok" if result.ok else "refused", result.message)


def _lock() -> None:
    session.admin_revoke()
    session.set_admin_notice("info", "Admin actions are locked again.")


def render_gate() -> bool:
    """Draw the unlock box; True when this session may run admin actions."""
    config = admin_config()
    admin = is_admin(config)
    with st.container(border=True, key="cp_admin_gate"):
        if admin:
            with st.container(horizontal=True, vertical_alignment="center"):
                st.badge("Admin", icon=":material/verified_user:", color="green")
                how = session.admin_granted()
                st.caption(f"Signed in as {plain(user_email())}" if how == "email" else "Unlocked with the admin password")
                if how == "password":
                    st.button("Lock", key=session.admin_widget("lock"), type="tertiary", icon=":material/lock:",
                              on_click=_lock)
            return True
        st.badge("Read-only", icon=":material/visibility:", color="gray")
        if config.problem:
            st.warning(config.problem, icon=":material/key_off:")
        if config.has_password:
            with st.form(key=session.admin_widget("unlock_form"), border=False, enter_to_submit=True):
                st.text_input("Admin password", type="password", key=session.W_ADMIN_PASSWORD,
                              help="Set by whoever runs the panel. Unlocks admin actions for this browser session.")
                st.form_submit_button("Unlock", icon=":material/lock_open:", on_click=_try_password)
        elif config.allowed_emails:
            st.caption("Admin actions are for the allowed accounts: sign in with your account to use them.")
        elif not config.problem:
            st.caption(
                "Admin actions are switched off: no admin password is configured. Whoever runs the panel can "
                "add password_hash under [comfyui.admin] in .streamlit/secrets.toml (make one with "
                "“python -m comfypanel.admin hash-password”)."
            )
    return False


# -- confirmations ------------------------------------------------------------------------------------
def ask_button(label: str, action: str, sentence: str, *, params: Mapping[str, Any] | None = None,
               key: str, admin: bool, icon: str | None = None, danger: bool = False,
               show_params: bool = False) -> None:
    """A button that opens the confirmation dialog for ``action`` (disabled for non-admins).
    ``show_params``: list the parameters in the dialog (when they were typed by the user)."""
    st.button(label, key=session.admin_widget(key), icon=icon, disabled=not admin,
              type="primary" if danger else "secondary",
              help=None if admin else "Admin only: unlock admin actions above.",
              on_click=session.admin_ask, args=({"action": action, "label": label, "sentence": sentence,
                                                 "params": dict(params or {}), "show_params": show_params},))


@st.dialog("Please confirm", dismissible=False)
def confirm_dialog(pending: Mapping[str, Any]) -> None:
    st.markdown(plain(pending.get("sentence") or ""))
    if pending.get("show_params"):
        for name, value in (pending.get("params") or {}).items():
            st.text(f"{name}: {value}")  # user input: shown as text
    with st.container(horizontal=True):
        if st.button(str(pending.get("label") or "Confirm"), key=session.admin_widget("confirm"), type="primary"):
            session.admin_confirm()
            st.rerun()
        if st.button("Cancel", key=session.admin_widget("cancel")):
            session.admin_cancel()
            st.rerun()


def run_confirmed(handlers: Mapping[str, Callable[[Mapping[str, Any]], str]], config: gate.AdminConfig | None = None) -> None:
    """Run the confirmed action (if any) once, with the gate checked now, and audit its result.

    A handler returns the success sentence or raises ``ComfyPanelError`` (failed, or ``refused``
    when the error has a ``reason``: the Manager said no).
    """
    pending = session.admin_pending()
    if pending is not None:
        confirm_dialog(pending)
    action = session.admin_take_confirmed()
    if action is None:
        return
    name, params = str(action.get("action")), dict(action.get("params") or {})
    if not is_admin(config):
        message = "Only an admin can do this; unlock admin actions first."
        session.set_admin_notice("error", message)
        record(name, params, "refused", message)
        return
    handler = handlers.get(name)
    if handler is None:
        return
    try:
        with st.spinner(f"{action.get('label') or name}…"):
            message = handler(params)
    except ComfyPanelError as exc:
        result = "refused" if getattr(exc, "reason", None) else "failed"
        session.set_admin_notice("error", exc.user_message)
        record(name, params, result, exc.user_message)
        return
    except Exception:
        log.exception("admin action %s failed unexpectedly", name)
        message = "Something unexpected went wrong; the panel's log has the details."
        session.set_admin_notice("error", message)
        record(name, params, "failed", message)
        return
    session.set_admin_notice("success", message)
    record(name, params, "ok", message)


def show_notice() -> None:
    notice = session.admin_notice()
    if notice is None:
        return
    kind, sentence = notice
    {"success": st.success, "error": st.error, "info": st.info}.get(kind, st.info)(plain(sentence))
