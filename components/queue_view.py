"""The Queue page's body: running, pending, held and finished jobs, and the controls over them.

Data flow: the session's ``QueueMonitor`` thread polls ``/queue`` (+ ``/history``) and publishes an
immutable view; the full script run also polls once (so a page load or an action shows the truth at
once); the fragment re-runs every second only while something is running, pending or feedable and
reads nothing but ``monitor.view()`` and the listener's snapshots — no HTTP inside it. Actions run
in button callbacks (a user's click, not the timer).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import streamlit as st

from comfypanel.errors import ComfyPanelError
from comfypanel.holdqueue import HeldJob
from comfypanel.queuewatch import QueueMonitor, QueueView
from comfypanel.types import QueueItem

from . import admin_gate, live, queue_live, session
from .text import plain

__all__ = ["render", "sidebar_badge", "workflow_label", "submitter_label"]

W = session.queue_widget
STATUS_LABEL = {
    "succeeded": (":material/check_circle:", "green", "Succeeded"),
    "failed": (":material/error:", "red", "Failed"),
    "interrupted": (":material/stop_circle:", "orange", "Interrupted"),
    "cancelled": (":material/cancel:", "gray", "Cancelled"),
    "lost": (":material/help:", "violet", "Lost"),
}
CLOUD_INTERRUPT = ("On Comfy Cloud, Interrupt stops **all** running jobs of this account, not only this "
                   "one: Comfy Cloud cannot target a single job.")
CLOUD_DELETE = "On Comfy Cloud, removing jobs only touches pending ones; running jobs keep running."


# -- labels -----------------------------------------------------------------------------------------
def workflow_label(prompt: Mapping[str, Any], held: HeldJob | None = None) -> str:
    if held is not None and held.workflow_name:
        return held.workflow_name
    classes = [str(n.get("class_type")) for n in prompt.values() if isinstance(n, Mapping)] if prompt else []
    if not classes:
        return "A workflow"
    names = sorted(set(classes))
    shown = ", ".join(names[:3]) + ("…" if len(names) > 3 else "")
    return f"{len(classes)} nodes: {shown}"


def submitter_label(client_id: str | None, held: HeldJob | None, *, my_client_id: str, my_label: str) -> str:
    if held is not None:
        if held.submitter == my_label:
            return "this session (hold queue)"
        return f"another panel session ({held.submitter or 'unnamed'}, hold queue)"
    if client_id and client_id == my_client_id:
        return "this session"
    if client_id:
        return f"another client ({client_id[:8]}…)"
    return "outside the panel"


def _age(ms: int | None, now: float) -> str:
    if not ms:
        return "—"
    return _duration(max(0.0, now - ms / 1000.0))


def _duration(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _is_mine(pid: str, client_id: str | None, view: QueueView, my_client_id: str, my_label: str) -> bool:
    held = view.held_by_prompt.get(pid)
    if held is not None:
        return held.submitter == my_label
    return bool(client_id) and client_id == my_client_id


# -- who may stop other people's jobs ----------------------------------------------------------------
GATED = ("Stopping or removing other people's jobs needs admin rights on this panel: unlock them on the "
         "Admin page, or cancel your own jobs from their rows.")


def _may_touch_others() -> bool:
    """Interrupting someone else's running job or clearing everyone's pending jobs: admins only when
    the operator configured admin rights; anyone on a panel without them (one person's panel)."""
    config = admin_gate.admin_config()
    return not config.configured or admin_gate.is_admin(config)


def _all_mine(prompt_ids: list[str], client_id_of: Mapping[str, str | None], view: QueueView) -> bool:
    client = session.client()
    if client is None:
        return False
    return all(_is_mine(pid, client_id_of.get(pid), view, client.client_id, session.session_label())
               for pid in prompt_ids)


# -- actions (button callbacks) -----------------------------------------------------------------------
def _client_and_monitor():
    return session.client(), queue_live.monitor()


def _cancel_pending(prompt_id: str) -> None:
    client, mon = _client_and_monitor()
    if client is None or mon is None:
        return
    try:
        state = client.queue()
        if any(i.prompt_id == prompt_id for i in state.running):
            session.set_queue_notice("warning", "That job started running before the cancel arrived; use "
                                     "Interrupt to stop it.")
            return
        if all(i.prompt_id != prompt_id for i in state.pending):
            session.set_queue_notice("info", "That job had already left the queue; nothing was removed.")
            return
        mon.note_cancelled(prompt_id)
        client.delete_from_queue([prompt_id])
    except ComfyPanelError as exc:
        session.set_queue_notice("error", exc.user_message)
        return
    session.set_queue_notice("success", "The job was removed from the queue.")
    _refresh(mon)


def _interrupt(prompt_id: str) -> None:
    client, mon = _client_and_monitor()
    if client is None or mon is None:
        return
    try:
        state = client.queue()
        if all(i.prompt_id != prompt_id for i in state.running):
            entry = client.history_entry(prompt_id)
            if entry is not None:
                word = STATUS_LABEL.get(entry.status, ("", "", entry.status))[2].lower()
                session.set_queue_notice("info", f"That job had already finished ({word}) before the interrupt "
                                         "was sent; nothing was stopped.")
            else:
                session.set_queue_notice("info", "That job was no longer running when the interrupt was sent; "
                                         "nothing was stopped.")
            _refresh(mon)
            return
        running = next(i for i in state.running if i.prompt_id == prompt_id)
        if not (_all_mine([prompt_id], {prompt_id: running.client_id}, mon.view()) or _may_touch_others()):
            session.set_queue_notice("error", GATED)  # checked when it runs, whatever the buttons showed
            admin_gate.record("queue_interrupt", {"prompt_id": prompt_id}, "refused", GATED)
            return
        session.queue_interrupted().add(prompt_id)
        mon.note_cancelled(prompt_id)
        client.interrupt(prompt_id)
    except ComfyPanelError as exc:
        session.set_queue_notice("error", exc.user_message)
        admin_gate.record("queue_interrupt", {"prompt_id": prompt_id}, "failed", exc.user_message)
        return
    admin_gate.record("queue_interrupt", {"prompt_id": prompt_id}, "ok", "Interrupt sent.")
    where = "every running job of this account" if client.is_cloud else "the job"
    session.set_queue_notice("success", f"Interrupt sent: {where} stops at the next node boundary. If it finishes "
                             "first, it shows here as succeeded.")
    _refresh(mon)


def _clear_pending() -> None:
    client, mon = _client_and_monitor()
    if client is None or mon is None:
        return
    try:
        state = client.queue()
        pids = [i.prompt_id for i in state.pending]
        if not (_all_mine(pids, {i.prompt_id: i.client_id for i in state.pending}, mon.view()) or _may_touch_others()):
            session.set_queue_notice("error", GATED)
            admin_gate.record("queue_clear_pending", {"jobs": len(pids)}, "refused", GATED)
            return
        for item in state.pending:
            mon.note_cancelled(item.prompt_id)
        client.clear_queue()
    except ComfyPanelError as exc:
        session.set_queue_notice("error", exc.user_message)
        admin_gate.record("queue_clear_pending", {}, "failed", exc.user_message)
        return
    message = f"Removed {len(state.pending)} pending job(s) from the server's queue."
    admin_gate.record("queue_clear_pending", {"jobs": len(pids)}, "ok", message)
    session.set_queue_notice("success", message)
    _refresh(mon)


def _refresh(mon: QueueMonitor) -> None:
    try:
        mon.poll(history=True)
    except Exception:
        mon.wake()


def _hold_action(action: str, job_id: int, arg: Any = None) -> None:
    h = queue_live.hold()
    ok = True
    if action == "remove":
        ok = h.remove(job_id)
    elif action == "dismiss":
        h.dismiss(job_id)
    elif action in ("up", "down"):
        h.move(job_id, -1 if action == "up" else +1)
        session.drop_queue_widgets("prio_")  # a move can change priorities: show the stored ones
    elif action == "priority":
        ok = h.set_priority(job_id, int(st.session_state.get(W(f"prio_{job_id}"), 0)))
    if not ok:
        session.set_queue_notice("info", "That job had already been sent to the server; it was not changed.")
    mon = queue_live.monitor()
    if mon is not None:
        mon.wake()


def _toggle_pause() -> None:
    client = session.client()
    if client is None:
        return
    h, sid = queue_live.hold(), client.connection.server_id()
    h.set_paused(sid, not h.is_paused(sid))
    session.set_queue_notice(None)
    mon = queue_live.monitor()
    if mon is not None:
        _refresh(mon)


def _set_concurrency() -> None:
    client = session.client()
    if client is None:
        return
    queue_live.hold().set_concurrency(client.connection.server_id(), int(st.session_state.get(W("concurrency"), 1)))


def _add_held(raw: bytes, name: str) -> None:
    try:
        prompt = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        session.set_queue_notice("error", "That file is not JSON. Choose a workflow saved with “Export (API)”.")
        return
    if not isinstance(prompt, dict) or not prompt or not all(
            isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        session.set_queue_notice("error", "That is not an API-format workflow. In ComfyUI use “Export (API)”, "
                                 "or hold it from the Generate page.")
        return
    job = queue_live.hold_job(prompt, workflow_name=name)
    if job is not None:
        session.set_queue_notice("success", f"“{name}” is held in the panel's queue.")


# -- drawing -------------------------------------------------------------------------------------------
def ledger_warning() -> None:
    """The job ledger's trouble (disk full, read-only file, cannot be opened), in the sidebar of every
    page while it lasts. Reading ``problem`` also writes the records that waited once the file takes
    writes again, so the warning goes away by itself."""
    from comfypanel.errors import ComfyPanelError

    from .gallery_data import ledger as shared_ledger

    try:
        problem = shared_ledger().problem
    except ComfyPanelError as exc:
        problem = exc.user_message
    if problem:
        with st.sidebar:
            st.warning(plain(problem), icon=":material/database:")


def sidebar_badge() -> None:
    """A queue-count badge in the sidebar, on every page (and the ledger's trouble, if any).

    It reads the monitor's view (kept fresh by its thread; the main run polls only when that view is
    older than 1.5 s) inside a small fragment that re-runs every 2 s while the server is busy.
    """
    ledger_warning()
    if not session.is_connected():
        return
    mon = queue_live.monitor()
    if mon is None:
        return
    view = mon.view()
    if view.polled_at is None or time.time() - view.polled_at > 1.5:
        view = mon.poll()  # the main run may read the server; the fragment below never does
    with st.sidebar:
        # idle: a slow look, so jobs queued elsewhere (other sessions, other clients) show up by themselves
        st.fragment(run_every=2.0 if view.count or view.held else IDLE_BADGE_S)(_badge)()


def _badge() -> None:
    mon = queue_live.monitor()
    if mon is None:
        return
    view = mon.view()
    text = f"Queue: {len(view.running)} running · {len(view.pending)} waiting"
    if view.held:
        text += f" · {len(view.held)} held"
    st.badge(text, icon=":material/format_list_numbered:", color="blue" if view.count else "gray")


IDLE_REFRESH_S = 5.0  # the Queue page with nothing going on: still notices new jobs from elsewhere
IDLE_BADGE_S = 10.0
SHOWN_WAITING = 20  # waiting jobs drawn as cards; beyond that only this session's own (to cancel them)


def render() -> None:
    client = session.client()
    if client is None or not session.is_connected():
        return
    mon = queue_live.monitor()
    if mon is None:
        return
    mon.poll(history=True)  # the main run reads the server once; the fragment never does
    _controls(client, mon)
    active = mon.view().active
    st.fragment(run_every=1.0 if active else IDLE_REFRESH_S)(_live)(active)


def _notice() -> None:
    n = session.queue_notice()
    if n:
        kind, sentence = n
        getattr(st, kind if kind in ("success", "info", "warning", "error") else "info")(plain(sentence))


def _controls(client, mon: QueueMonitor) -> None:
    view = mon.view()
    may = _may_touch_others()
    mine_running = bool(view.running) and _all_mine([view.running[0].prompt_id],
                                                    {view.running[0].prompt_id: view.running[0].client_id}, view)
    mine_pending = _all_mine([i.prompt_id for i in view.pending], {i.prompt_id: i.client_id for i in view.pending}, view)
    with st.container(horizontal=True, vertical_alignment="bottom", key=W("controls")):
        if st.button("Interrupt running", key=W("interrupt"), icon=":material/stop_circle:",
                     disabled=not view.running or not (may or mine_running),
                     help=None if may or mine_running else GATED):
            _confirm_interrupt(view.running[0].prompt_id if view.running else "", client.is_cloud)
        if st.button("Clear pending", key=W("clear"), icon=":material/playlist_remove:",
                     disabled=not view.pending or not (may or mine_pending),
                     help=None if may or mine_pending else GATED):
            _confirm_clear(len(view.pending), client.is_cloud)
        paused = view.paused
        st.button("Resume hold queue" if paused else "Pause hold queue", key=W("pause"),
                  icon=":material/play_arrow:" if paused else ":material/pause:", on_click=_toggle_pause)
        st.number_input("Jobs at a time", min_value=1, max_value=16, step=1, value=view.concurrency,
                        key=W("concurrency"), on_change=_set_concurrency, width=160,
                        help="How many jobs the hold queue keeps on the server at once (1 for a local "
                             "server; your tier's limit on Comfy Cloud: 1, 3 or 5).")
    if client.is_cloud:
        st.caption(":material/cloud: " + CLOUD_INTERRUPT + " " + CLOUD_DELETE)
    with st.expander("Hold a workflow", icon=":material/playlist_add:"):
        st.caption("Held jobs wait in the panel and go to the server one at a time (or as many as "
                   "“Jobs at a time”). They survive a restart of the panel.")
        up = st.file_uploader("API-format workflow (.json)", type=["json"], key=W("upload"))
        name = st.text_input("Name", key=W("upload_name"))
        if st.button("Hold it", key=W("hold"), disabled=up is None):
            _add_held(up.getvalue(), (name or up.name.rsplit(".", 1)[0]).strip() or "workflow")
            st.rerun()


@st.dialog("Interrupt the running job?")
def _confirm_interrupt(prompt_id: str, cloud: bool) -> None:
    if cloud:
        st.warning(CLOUD_INTERRUPT)
    else:
        st.write("The running job stops at the next node boundary. Pending jobs are not touched.")
    if st.button("Interrupt", key=W("interrupt_yes"), type="primary", on_click=_interrupt, args=(prompt_id,)):
        st.rerun()


@st.dialog("Remove every pending job?")
def _confirm_clear(count: int, cloud: bool) -> None:
    st.write(f"{count} pending job(s) will be removed from the server's queue. The running job keeps running; "
             "held jobs stay in the panel.")
    if cloud:
        st.info(CLOUD_DELETE)
    if st.button("Remove pending jobs", key=W("clear_yes"), type="primary", on_click=_clear_pending):
        st.rerun()


def _live(was_active: bool) -> None:
    client, mon = session.client(), queue_live.monitor()
    if client is None or mon is None:
        return
    view = mon.view()
    lst = live.listener()
    my_id, my_label = client.client_id, session.session_label()
    now = time.time()
    _notice()  # in the fragment: a click on a button in here re-runs only the fragment
    _connection_state(view, lst)
    _toasts(view, my_id, my_label)
    st.subheader("Running")
    if view.running:
        for item in view.running:
            _running(item, view, lst, my_id, my_label, client.is_cloud)
    else:
        st.caption("Nothing is running.")
    st.subheader("Waiting")
    _waiting(view, my_id, my_label, now)
    st.subheader("Recently finished")
    _finished(view, my_id, my_label)
    if view.active != was_active:
        st.rerun()  # switch the timer on or off (run_every is fixed per full run)


def _connection_state(view: QueueView, lst: Any) -> None:
    state = getattr(lst, "state", None)
    if view.error:
        st.warning(f"Reconnecting… {plain(view.error)} The list below is from the last good look at the server.",
                   icon=":material/sync_problem:")
    elif state in ("reconnecting", "connecting") and view.count:
        st.warning("Reconnecting… live progress is paused; the queue is still read from the server.",
                   icon=":material/sync_problem:")
    elif view.reconnected_at and time.time() - view.reconnected_at < 15:
        st.info(f"Reconnected at {time.strftime('%H:%M:%S', time.localtime(view.reconnected_at))}: the queue "
                "was re-read from the server; jobs that vanished meanwhile are marked lost.", icon=":material/sync:")
    if view.polled_at:
        st.caption(f"Updated {time.strftime('%H:%M:%S', time.localtime(view.polled_at))}")


def _toasts(view: QueueView, my_id: str, my_label: str) -> None:
    seen = session.queue_seen()
    ids = {f.prompt_id for f in view.finished}
    if seen is None:
        session.set_queue_seen(ids)  # the first look: old jobs are not news
        return
    for fin in view.finished:
        if fin.prompt_id in seen:
            continue
        seen.add(fin.prompt_id)
        if not _is_mine(fin.prompt_id, fin.client_id, view, my_id, my_label):
            continue
        icon, _, word = STATUS_LABEL.get(fin.status, (":material/info:", "", fin.status))
        held = view.held_by_prompt.get(fin.prompt_id)
        name = workflow_label(fin.entry.prompt if fin.entry else fin.prompt, held)
        text = f"{plain(name)}: {word.lower()}"
        if fin.reason and fin.status in ("failed", "lost"):
            text += f" — {plain(fin.reason)}"
        st.toast(text, icon=icon)
    session.set_queue_seen(seen)


def _node_name(prompt: Mapping[str, Any], node_id: str | None) -> str:
    if node_id is None:
        return "—"
    node = prompt.get(node_id) if isinstance(prompt, Mapping) else None
    title = None
    if isinstance(node, Mapping):
        meta = node.get("_meta")
        title = (meta.get("title") if isinstance(meta, Mapping) else None) or node.get("class_type")
    return f"{title} (node {node_id})" if title else f"node {node_id}"


def _running(item: QueueItem, view: QueueView, lst: Any, my_id: str, my_label: str, cloud: bool) -> None:
    held = view.held_by_prompt.get(item.prompt_id)
    snap = lst.snapshot(item.prompt_id) if lst is not None else None
    with st.container(border=True, key=W(f"running_{item.prompt_id}")):
        st.markdown(f"**{plain(workflow_label(item.prompt, held))}**")
        who = submitter_label(item.client_id, held, my_client_id=my_id, my_label=my_label)
        started = ""
        if snap is not None and snap.started_at is not None:
            started = f" · running for {_duration(time.monotonic() - snap.started_at)}"
        elif item.create_time:
            started = f" · queued {_age(item.create_time, time.time())} ago"
        st.caption(f"From {plain(who)}{started} · id {plain(item.prompt_id[:8])}")
        if snap is None:
            st.caption("No live progress for this job: the server only tells the submitting client. "
                       "Its end shows up here from the server's history.")
            return
        current = snap.current_node or next(
            (nid for nid, n in snap.nodes.items() if n.state == "running"), None)  # no `executing` for others' jobs
        st.write(f"Current node: {plain(_node_name(item.prompt, current))}")
        if snap.step is not None:
            value, mx = snap.step
            if mx:
                st.progress(min(1.0, value / mx), text=f"Step {int(value)} of {int(mx)}")
        if snap.nodes:
            total = len(item.prompt) or len(snap.nodes)
            done = sum(1 for n in snap.nodes.values() if n.state == "finished")
            st.progress(min(1.0, done / total) if total else 0.0, text=f"{done} of {total} nodes done")
            with st.expander("Nodes", expanded=False):
                for nid, n in snap.nodes.items():
                    frac = (n.value / n.max) if n.max else (1.0 if n.state == "finished" else 0.0)
                    st.progress(min(1.0, max(0.0, frac)), text=f"{plain(_node_name(item.prompt, nid))} — {n.state}")
        if snap.latest_preview is not None:
            live.preview_image(snap.latest_preview.image, caption="Latest preview", width=320)


def _waiting(view: QueueView, my_id: str, my_label: str, now: float) -> None:
    if not view.pending and not view.held and not view.rejected:
        st.caption("Nothing is waiting.")
        return
    n = 0
    hidden = 0
    for item in view.pending:
        n += 1
        held = view.held_by_prompt.get(item.prompt_id)
        if n > SHOWN_WAITING and not _is_mine(item.prompt_id, item.client_id, view, my_id, my_label):
            hidden += 1  # a long queue stays cheap to draw; one's own jobs stay reachable
            continue
        who = submitter_label(item.client_id, held, my_client_id=my_id, my_label=my_label)
        with st.container(border=True, horizontal=True, vertical_alignment="center",
                          key=W(f"pending_{item.prompt_id}")):
            st.markdown(f"**{n}.** {plain(workflow_label(item.prompt, held))}")
            st.caption(f"waiting {_age(item.create_time, now)} · {plain(who)}")
            st.button("Cancel", key=W(f"cancel_{item.prompt_id}"), icon=":material/close:",
                      on_click=_cancel_pending, args=(item.prompt_id,), type="tertiary")
    if hidden:
        st.caption(f"… and {hidden} more waiting job(s) of other people, not listed here.")
    if view.held:
        st.caption(":material/pause_circle: Held in the panel" + (" — paused" if view.paused else
                   f" — fed to the server {view.concurrency} at a time"))
    for job in view.rejected:
        with st.container(border=True, horizontal=True, vertical_alignment="center", key=W(f"rejected_{job.id}")):
            st.badge("refused", color="red", icon=":material/error:")
            st.markdown(f"**{plain(job.workflow_name or workflow_label(job.prompt))}**")
            st.caption(plain(job.error or "The server refused this held job."))
            st.button("Dismiss", key=W(f"dismiss_{job.id}"), type="tertiary", icon=":material/close:",
                      on_click=_hold_action, args=("dismiss", job.id))
    for job in view.held:
        n += 1
        with st.container(border=True, horizontal=True, vertical_alignment="center", key=W(f"held_{job.id}")):
            st.badge("held", color="orange", icon=":material/pause:")
            st.markdown(f"**{n}.** {plain(job.workflow_name or workflow_label(job.prompt))}")
            who = "this session" if job.submitter == my_label else f"another panel session ({job.submitter})"
            st.caption(f"held {_duration(now - job.created_at)} · {plain(who)}"
                       + (" · sending…" if job.state == "sending" else ""))
            st.number_input("Priority", value=job.priority, step=1, key=W(f"prio_{job.id}"), width=120,
                            on_change=_hold_action, args=("priority", job.id),
                            help="Higher runs earlier; equal priorities keep their order.")
            st.button("Up", key=W(f"up_{job.id}"), icon=":material/arrow_upward:", type="tertiary",
                      on_click=_hold_action, args=("up", job.id))
            st.button("Down", key=W(f"down_{job.id}"), icon=":material/arrow_downward:", type="tertiary",
                      on_click=_hold_action, args=("down", job.id))
            st.button("Remove", key=W(f"remove_{job.id}"), icon=":material/delete:", type="tertiary",
                      on_click=_hold_action, args=("remove", job.id))


def _finished(view: QueueView, my_id: str, my_label: str) -> None:
    if not view.finished:
        st.caption("No finished jobs in the server's recent history.")
        return
    interrupted = session.queue_interrupted()
    for fin in view.finished:
        icon, color, word = STATUS_LABEL.get(fin.status, (":material/info:", "gray", fin.status))
        held = view.held_by_prompt.get(fin.prompt_id)
        prompt = fin.entry.prompt if fin.entry else fin.prompt
        with st.container(border=True, key=W(f"done_{fin.prompt_id}")):
            with st.container(horizontal=True, vertical_alignment="center"):
                st.badge(word, icon=icon, color=color)
                st.markdown(f"**{plain(workflow_label(prompt, held))}**")
                when = time.strftime("%H:%M:%S", time.localtime(fin.ended_at)) if fin.ended_at else ""
                who = submitter_label(fin.client_id, held, my_client_id=my_id, my_label=my_label)
                st.caption(f"{plain(who)} · {when}")
            reason = fin.reason
            if fin.status == "succeeded" and fin.prompt_id in interrupted:
                reason = "It finished before the interrupt landed, so nothing was stopped."
            if reason:
                st.caption(plain(reason))
            if fin.entry is not None and fin.entry.files:
                names = ", ".join(f.filename for f in fin.entry.files[:6])
                more = f" and {len(fin.entry.files) - 6} more" if len(fin.entry.files) > 6 else ""
                st.caption(f"Outputs: {plain(names)}{more} — see the Gallery.")
