"""The Admin page's sections: System, Models, Nodes, Manager, Audit.

What a section loaded is kept per session (``session.admin_data``, keyed by the server fingerprint)
until its Reload button, so switching sections does not refetch ``/object_info``. Server strings
are shown as text (``st.text``, dataframes, ``st.code``) or escaped with ``plain``.
"""

from __future__ import annotations

from datetime import datetime, time as dtime, timezone
from typing import Any, Callable, Mapping

import streamlit as st

from comfypanel import nodeinfo
from comfypanel.audit import RESULTS, to_csv
from comfypanel.client import ComfyClient
from comfypanel.errors import ComfyPanelError
from comfypanel.manager import (NO_GIT_URL_SENTENCE, NO_MODEL_LIST_SENTENCE, Manager, ManagerInfo, ManagerRefused,
                                ModelEntry, TaskTracker, check_git_url)
from comfypanel.monitor import StatsMonitor

from . import admin_gate, connection_box, live, session
from .text import plain

__all__ = ["SECTIONS", "handlers", "system", "models", "nodes", "manager", "audit"]

SECTIONS = ("System", "Models", "Nodes", "Manager", "Audit")
_MISSING = object()


# -- loading ------------------------------------------------------------------------------------------
def _load(client: ComfyClient, what: str, fetch: Callable[[], Any]) -> Any:
    """``fetch()`` once per session and server (until ``_reload_button``); errors shown as a sentence."""
    key = (client.connection.fingerprint(), what)
    cached = session.admin_data(key)
    if cached is not None:
        return cached[0]
    try:
        value = fetch()
    except ComfyPanelError as exc:
        st.error(plain(exc.user_message), icon=":material/error:")
        return _MISSING
    session.set_admin_data(key, (value,))
    return value


def _reload_button(client: ComfyClient, *whats: str, key: str) -> None:
    fp = client.connection.fingerprint()

    def drop() -> None:
        for what in whats:
            session.drop_admin_data(fp, what)

    st.button("Reload", key=session.admin_widget(key), icon=":material/refresh:", type="tertiary", on_click=drop)


# -- actions (run after confirmation, audited by admin_gate.run_confirmed) ------------------------------
def handlers(client: ComfyClient) -> dict[str, Callable[[Mapping[str, Any]], str]]:
    fp = client.connection.fingerprint()

    def free(params: Mapping[str, Any]) -> str:
        client.free(unload_models=True, free_memory=bool(params.get("free_memory")))
        return ("The server unloaded its models and emptied its caches." if params.get("free_memory")
                else "The server unloaded its models.")

    def clear_queue(params: Mapping[str, Any]) -> str:
        client.clear_queue()
        return "Every waiting job was removed from the queue (a running job continues)."

    def clear_history(params: Mapping[str, Any]) -> str:
        client.clear_history()
        return "The server's job history was cleared."

    def manager_obj() -> Manager:
        cached = session.admin_data((fp, "manager_info"))
        return Manager(client, cached[0] if cached and isinstance(cached[0], ManagerInfo) else None)

    def follow(m: Manager, kind: str, label: str, send: Callable[[str], str], done: str) -> str:
        """Register the task, send it once, wait briefly for its result (messages or v4 history)."""
        tracker = _tasks(client)
        ui_id = tracker.new(kind, label)
        try:
            send(ui_id)
        except ComfyPanelError:
            tracker.forget(ui_id)  # refused: it never ran
            raise
        finally:
            for what in ("manager_installed", "manager_queue", "manager_models"):
                session.drop_admin_data(fp, what)
        v4_history = m.info().flavour == "v4" and not m.info().legacy_ui
        task = tracker.wait(ui_id, 10, poll=(lambda: m.task_result(ui_id)) if v4_history else None)
        if task is not None and task.state == "failed":
            raise ManagerRefused("task_failed", task.message)
        if task is not None and task.state == "success":
            return done
        return f"The {'download' if kind == 'install-model' else 'install'} of “{label}” was queued and started; its progress is shown under Tasks."

    def install(params: Mapping[str, Any]) -> str:
        m = manager_obj()
        pack, version = str(params.get("id") or ""), str(params.get("version") or "latest")
        return follow(m, "install", pack, lambda ui_id: m.install(pack, version, ui_id=ui_id),
                      f"“{pack}” was installed. Restart the server so its nodes load.")

    def install_model(params: Mapping[str, Any]) -> str:
        m = manager_obj()
        entry = ModelEntry.from_raw(params)
        if entry is None:
            raise ManagerRefused("bad_request", "Pick a model from the Manager's model list first.")
        return follow(m, "install-model", entry.name, lambda ui_id: m.install_model(entry, ui_id=ui_id),
                      f"The model “{entry.name}” was downloaded into models/{entry.save_path if entry.save_path != 'default' else entry.type}. "
                      "Reload the model lists to use it.")

    def install_git(params: Mapping[str, Any]) -> str:
        m = manager_obj()
        m.install_git_url(str(params.get("url") or ""))
        session.drop_admin_data(fp, "manager_installed")
        return f"The node pack from {params.get('url')} was installed. Restart the server so its nodes load."

    def start_queue(params: Mapping[str, Any]) -> str:
        manager_obj().start_queue()
        session.drop_admin_data(fp, "manager_queue")
        return "The Manager's install queue was started."

    def reboot(params: Mapping[str, Any]) -> str:
        m = manager_obj()
        m.reboot()
        back = m.wait_back(timeout=180)
        session.drop_admin_data(fp)
        if not back:
            return "The restart was requested, but the server never went away; it may restart later."
        return "The server restarted and answers again."

    return {"free_memory": free, "clear_queue": clear_queue, "clear_history": clear_history,
            "manager_install": install, "manager_install_model": install_model, "manager_install_git": install_git,
            "manager_start_queue": start_queue, "manager_reboot": reboot}


# -- System -------------------------------------------------------------------------------------------
@st.cache_resource(scope="session", max_entries=2, on_release=lambda m: m.stop(), show_spinner=False)
def _monitor(fingerprint: str, client_id: str, _client: ComfyClient) -> StatsMonitor:
    """This session's poller (per session, released with it; the newest two clients at most)."""
    return StatsMonitor(_client).start()


@st.fragment(run_every=2.0)
def _live_chart(monitor: StatsMonitor) -> None:
    """Reads the poller's samples: no HTTP here. The poller pauses when this stops reading."""
    samples = monitor.samples()
    if monitor.error:
        st.caption(plain(monitor.error))
    if len(samples) < 2:
        st.caption("Collecting samples for the live chart…")
        return
    times = [datetime.fromtimestamp(x.at) for x in samples]
    memory = {"time": times, "RAM GiB": [round(x.ram_used_gib, 2) for x in samples]}
    if any(x.vram_used_gib for x in samples):
        memory["VRAM GiB"] = [round(x.vram_used_gib, 2) for x in samples]
    with st.container(horizontal=True):
        st.line_chart(memory, x="time", y=[k for k in memory if k != "time"], height=180, x_label="",
                      y_label="GiB")
        st.line_chart({"time": times, "jobs": [x.queue for x in samples]}, x="time", y="jobs", height=180,
                      x_label="", y_label="queue")


def system(client: ComfyClient, admin: bool) -> None:
    connection_box.server_details()
    st.subheader("Last minutes")
    _live_chart(_monitor(client.connection.fingerprint(), client.client_id, client))
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader("Queue and memory")
        _reload_button(client, "queue", "features", "logs", key="reload_system")
    queue = _load(client, "queue", client.queue)
    if queue is not _MISSING:
        with st.container(horizontal=True):
            st.metric("Running", len(queue.running), border=True)
            st.metric("Waiting", len(queue.pending), border=True)
    with st.container(horizontal=True):
        admin_gate.ask_button("Unload models", "free_memory", "Unload every model from the server's memory? "
                              "The next job loads them again.", params={"free_memory": False}, key="unload",
                              admin=admin, icon=":material/memory:")
        admin_gate.ask_button("Free all memory", "free_memory", "Unload every model and empty the server's "
                              "caches? The next jobs start from scratch.", params={"free_memory": True},
                              key="free", admin=admin, icon=":material/mop:")
        admin_gate.ask_button("Clear queue", "clear_queue", "Remove every waiting job from the server's "
                              "queue, for every user? The running job continues.", key="clear_queue",
                              admin=admin, icon=":material/playlist_remove:", danger=True)
        admin_gate.ask_button("Clear history", "clear_history", "Clear the server's job history for every "
                              "user? Images stay in the output folder.", key="clear_history", admin=admin,
                              icon=":material/delete_history:", danger=True)
    st.subheader("Server features")
    feats = _load(client, "features", client.features)
    if feats is not _MISSING:
        st.json(feats, expanded=False)
    st.subheader("Server log")
    if client.is_cloud:
        st.caption("Comfy Cloud does not share its server log.")
        return
    entries = _load(client, "logs", client.logs_raw)
    if entries is _MISSING:
        return
    follow = st.toggle("Follow live", value=True, key=session.admin_widget("log_follow"),
                       help="New lines arrive over this session's WebSocket as the server writes them.")
    tail = live.log_tail() if follow else None

    @st.fragment(run_every=2.0 if tail is not None else None)
    def log_view() -> None:
        # memory only: the snapshot loaded above plus what streamed in since (no HTTP here)
        lines = list(entries)
        if tail is not None:
            seen = {(t, m) for t, m in lines[-400:]}
            lines += [e for e in tail.lines() if tuple(e) not in seen]
        text = "".join(m for _, m in lines[-300:])
        st.code(text or "(empty)", language=None, height=320)  # st.code shows text literally
        if tail is not None and tail.error:
            st.caption(plain(tail.error))

    log_view()


# -- Models -------------------------------------------------------------------------------------------
def models(client: ComfyClient) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader("Model folders")
        _reload_button(client, "model_folders", "embeddings", key="reload_models")

    def folders() -> dict[str, list[str]]:
        return {name: client.models(name) for name in client.models()}

    data = _load(client, "model_folders", folders)
    if data is _MISSING:
        return
    st.dataframe([{"folder": k, "files": len(v)} for k, v in sorted(data.items())], hide_index=True,
                 key=session.admin_widget("folders_table"))
    folder = st.selectbox("Folder", sorted(data), key=session.admin_widget("model_folder"))
    needle = st.text_input("Search", key=session.admin_widget("model_search"), placeholder="part of a file name")
    files = [f for f in data.get(folder or "", []) if needle.lower() in f.lower()]
    st.dataframe({"file": files}, hide_index=True)
    if not client.is_cloud:
        candidates = [f for f in files if f.endswith(".safetensors")]
        if candidates:
            pick = st.selectbox("Metadata of", candidates, key=session.admin_widget("meta_file"))
            if st.button("Show metadata", key=session.admin_widget("meta_show"), icon=":material/info:"):
                try:
                    meta = client.view_metadata(folder, pick)
                except ComfyPanelError as exc:
                    st.error(plain(exc.user_message))
                else:
                    if meta:
                        st.dataframe([{"key": k, "value": v} for k, v in meta.items()], hide_index=True,
                                     key=session.admin_widget("meta_table"))
                    else:
                        st.caption("This file has no metadata.")
        st.subheader("Embeddings")
        emb = _load(client, "embeddings", client.embeddings)
        if emb is not _MISSING:
            st.dataframe({"embedding": emb}, hide_index=True) if emb else st.caption("No embeddings installed.")


# -- Nodes --------------------------------------------------------------------------------------------
def nodes(client: ComfyClient) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader("Node browser")
        _reload_button(client, "object_info", key="reload_nodes")
    info = _load(client, "object_info", client.object_info)
    if info is _MISSING:
        return
    cats = nodeinfo.categories(info)
    with st.container(horizontal=True):
        text = st.text_input("Search nodes", key=session.admin_widget("node_search"), placeholder="name")
        cat = st.selectbox("Category", ["(all)", *cats], key=session.admin_widget("node_category"))
    found = nodeinfo.search(info, text, None if cat in (None, "(all)") else cat)
    st.caption(f"{len(found)} of {len(info)} node types")
    if not found:
        return
    labels = {name: f"{display} ({name})" if display != name else name for name, display, _ in found}
    pick = st.selectbox("Node", list(labels), format_func=labels.__getitem__, key=session.admin_widget("node_pick"))
    node = info.get(pick) or {}
    st.text(f"Category: {node.get('category') or '—'}")
    if node.get("description"):
        st.text(str(node.get("description")))
    st.dataframe(nodeinfo.input_rows(node), hide_index=True, key=session.admin_widget("node_inputs"))
    st.dataframe(nodeinfo.output_rows(node), hide_index=True, key=session.admin_widget("node_outputs"))


# -- Manager ------------------------------------------------------------------------------------------
class _Tasks:
    """This session's ``TaskTracker``, fed by its WebSocket listener (``cm-*`` messages)."""

    def __init__(self, listener: Any) -> None:
        self.tracker = TaskTracker()
        self._unsubscribe = listener.subscribe(self.tracker.feed_event) if listener is not None else None

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()


@st.cache_resource(scope="session", max_entries=2, on_release=lambda t: t.close(), show_spinner=False)
def _session_tasks(fingerprint: str, client_id: str, _listener: Any) -> _Tasks:
    return _Tasks(_listener)


def _tasks(client: ComfyClient) -> TaskTracker:
    return _session_tasks(client.connection.fingerprint(), client.client_id, live.listener()).tracker


_STATE_LABEL = {"queued": "waiting", "running": "working…", "success": "done", "failed": "failed",
                "done": "finished (result not reported)"}


def _task_table(client: ComfyClient, info: ManagerInfo) -> None:
    """This session's Manager tasks; the table refreshes itself each second while one is unfinished.

    The fragment only reads the tracker (fed by the WebSocket thread). The v4 history, the fallback
    for a missed ``cm-task-completed``, is read here in the full run, which the fragment triggers
    once when the last task stops being pending.
    """
    tracker = _tasks(client)
    if info.flavour == "v4" and not info.legacy_ui:
        m = Manager(client, info)
        for task in tracker.tasks():
            if task.state not in ("success", "failed"):
                try:
                    result = m.task_result(task.ui_id)
                except ComfyPanelError:
                    break
                if result is not None:
                    tracker.apply_result(result)
    was_pending = tracker.pending

    @st.fragment(run_every=1.0 if was_pending else None)
    def table() -> None:
        tasks = tracker.tasks()
        if not tasks:
            return
        st.caption("Tasks started from this browser")
        st.dataframe([{"what": t.label, "kind": "model" if t.kind == "install-model" else "node pack",
                       "state": _STATE_LABEL.get(t.state, t.state), "details": t.message} for t in tasks],
                     hide_index=True, key=session.admin_widget("manager_tasks"))
        if tracker.queue_total:
            st.progress(min(1.0, tracker.queue_done / tracker.queue_total),
                        text=f"Manager queue: {tracker.queue_done} of {tracker.queue_total} done")
        if was_pending and not tracker.pending:
            st.rerun()  # stop the timer, and let the full run settle unknown results from the history

    table()


def _model_list(client: ComfyClient, info: ManagerInfo, admin: bool) -> None:
    with st.expander("Install a model from the Manager's model list"):
        if not info.has_model_list:
            st.info(plain(NO_MODEL_LIST_SENTENCE), icon=":material/info:")
            return
        models = _load(client, "manager_models", Manager(client, info).model_list)
        if models is _MISSING:
            return
        query = st.text_input("Search the model list", key=session.admin_widget("model_search"),
                              placeholder="name, type, base model…")
        hits = [e for e in models if e.matches(query)] if query.strip() else list(models)
        st.caption(f"{len(hits)} of {len(models)} models")
        st.dataframe([{"name": e.name, "type": e.type, "base": e.base, "size": e.size,
                       "folder": e.save_path, "file": e.filename, "installed": "yes" if e.installed else ""}
                      for e in hits[:500]], hide_index=True, key=session.admin_widget("model_table"))
        if not hits:
            return
        labels = {f"{e.name} — {e.type}, {e.base} ({e.size or 'size unknown'})": e for e in hits[:500]}
        choice = st.selectbox("Model to install", list(labels), key=session.admin_widget("model_pick"))
        entry = labels.get(choice) if choice else None
        if entry is None:
            return
        note = " It is already installed." if entry.installed else ""
        admin_gate.ask_button("Install model", "manager_install_model",
                              f"Download the model “{entry.name}” ({entry.size or 'size unknown'}) from "
                              f"{entry.url.split('/')[2]} into the server's models folder?{note}",
                              params=entry.request(), key="install_model", admin=admin,
                              icon=":material/download:", show_params=True)


def manager(client: ComfyClient, admin: bool) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader("ComfyUI-Manager")
        _reload_button(client, "manager_info", "manager_installed", "manager_queue", "manager_models",
                       key="reload_manager")
    info = _load(client, "manager_info", lambda: Manager(client).info())
    if info is _MISSING:
        return
    st.text(f"{info.label}{' ' + info.version if info.version else ''}")
    if not info.present:
        st.info(plain(info.message), icon=":material/extension_off:")
        return
    m = Manager(client, info)
    status = _load(client, "manager_queue", m.queue_status)
    if status is not _MISSING:
        st.progress(status.progress, text=f"Install queue: {status.done} of {status.total} done, "
                                          f"{status.pending} waiting{', working' if status.is_processing else ''}")
    installed = _load(client, "manager_installed", m.installed)
    if installed is not _MISSING:
        if installed:
            st.dataframe([{"pack": p.name, "version": p.version, "registry id": p.cnr_id,
                           "enabled": "yes" if p.enabled else "no"} for p in installed], hide_index=True,
                         key=session.admin_widget("installed_table"))
        else:
            st.caption("No custom node packs are installed through the Manager.")
    with st.container(border=True):
        st.caption("Install a node pack from the Comfy Registry (registry.comfy.org)")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            pack = st.text_input("Registry id", key=session.admin_widget("pack_id"), placeholder="comfyui-impact-pack")
            version = st.text_input("Version", key=session.admin_widget("pack_version"), value="latest")
        admin_gate.ask_button("Install", "manager_install",
                              f"Install the node pack “{pack.strip()}” ({version.strip() or 'latest'}) on the "
                              "server? It runs code on the server; restart the server afterwards.",
                              params={"id": pack.strip(), "version": version.strip() or "latest"},
                              key="install", admin=admin and bool(pack.strip()), icon=":material/download:",
                              show_params=True)
    with st.container(border=True):
        st.caption("Install a node pack from a git URL")
        if info.has_git_url_install:
            url = st.text_input("Git URL", key=session.admin_widget("git_url"),
                                placeholder="https://github.com/owner/repo")
            problem = ""
            if url.strip():
                try:
                    check_git_url(url)
                except ComfyPanelError as exc:
                    problem = exc.user_message
                    st.caption(plain(problem))
            admin_gate.ask_button("Install from URL", "manager_install_git",
                                  f"Clone and install the node pack from {url.strip()} on the server? It runs "
                                  "code from that repository on the server; restart the server afterwards.",
                                  params={"url": url.strip()}, key="install_git",
                                  admin=admin and bool(url.strip()) and not problem,
                                  icon=":material/download:", danger=True, show_params=True)
        else:
            st.caption(plain(NO_GIT_URL_SENTENCE))
    _model_list(client, info, admin)
    _task_table(client, info)
    with st.container(horizontal=True):
        admin_gate.ask_button("Start install queue", "manager_start_queue", "Start the Manager's install queue?",
                              key="start_queue", admin=admin, icon=":material/play_arrow:")
        admin_gate.ask_button("Restart server", "manager_reboot", "Restart the ComfyUI server? Running jobs "
                              "stop and every user is disconnected until it is back.", key="reboot",
                              admin=admin, icon=":material/restart_alt:", danger=True)


# -- Audit --------------------------------------------------------------------------------------------
def audit(admin: bool) -> None:
    st.subheader("Audit log")
    log = admin_gate.audit_log()
    try:
        actions = log.distinct("action")
    except Exception:
        st.error("The audit log cannot be read. Check the panel's data folder (COMFYPANEL_DATA_DIR).")
        return
    with st.container(horizontal=True):
        action = st.selectbox("Action", ["(all)", *actions], key=session.admin_widget("audit_action"))
        result = st.selectbox("Result", ["(all)", *RESULTS], key=session.admin_widget("audit_result"))
        text = st.text_input("Contains", key=session.admin_widget("audit_text"))
        day = st.date_input("Since", value=None, key=session.admin_widget("audit_since"))
    since = datetime.combine(day, dtime.min, tzinfo=timezone.utc) if day else None
    entries = log.query(action=None if action == "(all)" else action, result=None if result == "(all)" else result,
                        text=text or None, since=since, limit=2000)
    rows = [e.as_row() for e in entries]
    st.dataframe(rows, hide_index=True, key=session.admin_widget("audit_table"),
                 column_order=("at", "actor", "server", "action", "params", "result", "message"))
    st.download_button("Download CSV", to_csv(entries), file_name="comfypanel-audit.csv", mime="text/csv",
                       key=session.admin_widget("audit_csv"), icon=":material/download:", on_click="ignore",
                       disabled=not entries)
