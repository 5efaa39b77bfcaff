"""Gallery drawing: filters, the thumbnail grid with pagination, bulk actions and the detail view.

Server and user strings (workflow names, prompts, tags, errors) are shown as plain text only.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time as dtime, timedelta
from typing import Any

import streamlit as st

from comfypanel import errors as E
from comfypanel.ledger import JobRecord

from . import gallery_data as data
from . import session
from .text import code, plain

W = session.gallery_widget
_STATUSES = ["succeeded", "failed", "interrupted", "cancelled", "lost", "rejected", "queued", "running",
             "submitting"]
# Material icons (bundled with Streamlit): emoji need a font the browser may not have.
_ICON = {"succeeded": ":material/check_circle:", "failed": ":material/error:", "interrupted": ":material/stop_circle:",
         "cancelled": ":material/cancel:", "lost": ":material/help:", "rejected": ":material/block:",
         "queued": ":material/schedule:", "running": ":material/progress_activity:",
         "submitting": ":material/schedule:"}
_ALL = "All"


# -- notices and callbacks ------------------------------------------------------------------------
def notice() -> None:
    """The last action's sentence, and the ledger's own trouble (disk full, read-only) while it lasts.

    A ledger that cannot be opened at all stops the page here with its sentence (nothing below could
    be drawn without it).
    """
    try:
        problem = data.ledger().problem  # reading it also writes records that waited, once possible
    except E.ComfyPanelError as exc:
        st.error(plain(exc.user_message), icon=":material/database:")
        st.stop()
    if problem:
        st.warning(plain(problem), icon=":material/database:")
    n = session.gallery_notice()
    if n:
        session.set_gallery_notice(None)  # shown once: the next interaction clears it
        kind, sentence = n
        {"error": st.error, "warning": st.warning, "success": st.success}.get(kind, st.info)(plain(sentence))


def _do(kind_ok: str, fn, *args, **kwargs) -> None:
    try:
        sentence = fn(*args, **kwargs)
        session.set_gallery_notice(kind_ok, sentence)
    except E.ComfyPanelError as exc:
        session.set_gallery_notice("error", exc.user_message)


def _rerun(prompt_id: str, new_seed: bool) -> None:
    rec = data.ledger().get(prompt_id)
    if rec is None:
        session.set_gallery_notice("error", "That job is no longer in the gallery.")
        return

    def go() -> str:
        new_id = data.rerun(rec, new_seed=new_seed)
        how = "with a new seed" if new_seed else "exactly"
        return f"Submitted again {how} as job {new_id[:8]}. It appears here when it is done (use Sync)."

    _do("success", go)


def _edit(fn, *args) -> bool:
    """Run a hand edit of the ledger; a disk that takes no writes gives a sentence, not a traceback."""
    try:
        fn(*args)
        return True
    except E.ComfyPanelError as exc:
        session.set_gallery_notice("error", exc.user_message)
        return False


def _toggle_favourite(prompt_id: str, value: bool) -> None:
    _edit(data.ledger().set_favourite, prompt_id, value)


def _add_tag(prompt_id: str) -> None:
    key = W(f"tag_{prompt_id}")
    tag = str(st.session_state.get(key) or "").strip()
    if tag and _edit(data.ledger().add_tag, prompt_id, tag):
        st.session_state[key] = ""


def _remove_tag(prompt_id: str, tag: str) -> None:
    _edit(data.ledger().remove_tag, prompt_id, tag)


def _sync() -> None:
    _do("info", data.sync)


def _on_select(prompt_id: str) -> None:
    sel = session.gallery_selected()
    if st.session_state.get(W(f"sel_{prompt_id}")):
        sel.add(prompt_id)
    else:
        sel.discard(prompt_id)


def _select(ids: list[str], add: bool) -> None:
    sel = session.gallery_selected()
    if add:
        sel.update(ids)
    else:
        sel.difference_update(ids)


def _delete_confirmed() -> None:
    ids = sorted(session.gallery_selected())
    from_server = bool(st.session_state.get(W("delete_server")))
    _do("success", data.delete, ids, from_server=from_server)
    session.set_gallery_selected(set())
    session.set_gallery_confirming(False)
    if session.gallery_detail() in ids:
        session.set_gallery_detail(None)


# -- filters ------------------------------------------------------------------------------------------
def filters() -> dict[str, Any]:
    """Draw the filters; returns keyword arguments for ``Ledger.search``."""
    led = data.ledger()
    here = data.server_id()
    with st.container(border=True):
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        text = c1.text_input("Search prompts and every parameter value", key=W("text"),
                             placeholder="a red fox, 42, euler, my_lora…")
        c2.button("Sync with server", key=W("sync"), on_click=_sync, disabled=here is None,
                  help="Import runs made outside the panel and mark jobs the server forgot.")
        with st.expander("Filters"):
            a, b, c = st.columns(3)
            statuses = a.multiselect("Status", _STATUSES, key=W("status"))
            dates = b.date_input("Made between", value=(), key=W("dates"), format="YYYY-MM-DD")
            workflows = [_ALL, *led.workflows()]
            workflow = c.selectbox("Workflow", workflows, key=W("workflow"))
            servers = [_ALL, *led.servers()]
            if here is not None and here not in servers:
                servers.append(here)  # nothing made here yet: still open on it, not on everyone's jobs
            if W("server") not in st.session_state and here is not None:
                st.session_state[W("server")] = here  # this session's server first
            server = a.selectbox("Server", servers, key=W("server"))
            tags = [_ALL, *led.all_tags()]
            tag = b.selectbox("Tag", tags, key=W("tag"))
            favourites = c.checkbox("Favourites only", key=W("favourites"))
            mine = c.checkbox("Only this session's runs", key=W("mine"))
    kwargs: dict[str, Any] = {}
    if text and text.strip():
        kwargs["text"] = text
    if statuses:
        kwargs["status"] = list(statuses)
    if isinstance(dates, (list, tuple)) and dates:
        start = dates[0]
        end = dates[1] if len(dates) > 1 else dates[0]
        kwargs["since"] = datetime.combine(start, dtime.min)
        kwargs["until"] = datetime.combine(end + timedelta(days=1), dtime.min)
    elif isinstance(dates, date):
        kwargs["since"] = datetime.combine(dates, dtime.min)
        kwargs["until"] = datetime.combine(dates + timedelta(days=1), dtime.min)
    if workflow and workflow != _ALL:
        kwargs["workflow"] = workflow
    if server and server != _ALL:
        kwargs["server_id"] = server
    if tag and tag != _ALL:
        kwargs["tag"] = tag
    if favourites:
        kwargs["favourite"] = True
    if mine:
        kwargs["user_label"] = session.session_label()
    return kwargs


# -- the grid -------------------------------------------------------------------------------------------
def grid(query: dict[str, Any]) -> list[JobRecord]:
    """Pagination (bound to ``?page=``) and one page of cards, newest first. Returns the page."""
    led = data.ledger()
    _, total = led.search(**query, limit=0)
    pages = max(1, math.ceil(total / data.PAGE_SIZE))
    key = session.W_GALLERY_PAGE
    current = st.session_state.get(key)
    if isinstance(current, int) and current > pages:
        st.session_state[key] = pages
    if total == 0:
        st.info("No jobs match. Images made on the Generate page appear here; use Sync with server "
                "to import runs made elsewhere.")
        return []
    top = st.container(horizontal=True, vertical_alignment="center")
    page = st.pagination(pages, key=key, bind="query-params")
    page = min(max(1, int(page or 1)), pages)
    records, total = led.search(**query, limit=data.PAGE_SIZE, offset=(page - 1) * data.PAGE_SIZE)
    top.caption(f"{total} job(s), page {page} of {pages}, newest first")
    ids = [r.prompt_id for r in records]
    top.button("Select page", key=W("select_page"), on_click=_select, args=(ids, True))
    sel = session.gallery_selected()
    with st.grid("auto", min_column_width=200, key=W("grid")):
        for rec in records:
            _card(rec, rec.prompt_id in sel)
    return records


def _card(rec: JobRecord, selected: bool) -> None:
    with st.container(border=True, key=W(f"card_{rec.prompt_id}")):
        shown = False
        for out in rec.outputs[:1]:
            thumb = data.thumbnail(rec, out)
            if thumb is not None:
                st.image(thumb, width="stretch")
                shown = True
            elif out.missing:
                st.caption("The image is no longer on the server.")
                shown = True
        if not shown:
            st.caption("No preview" if rec.outputs else "No image")
        more = f" (+{len(rec.outputs) - 1})" if len(rec.outputs) > 1 else ""
        star = ":material/star: " if rec.favourite else ""
        st.caption(f"{_ICON.get(rec.status, '')} {star}{plain(rec.workflow_name or 'workflow')}{more} · "
                   f"{rec.created.strftime('%Y-%m-%d %H:%M')}")
        key = W(f"sel_{rec.prompt_id}")
        st.session_state[key] = selected
        row = st.container(horizontal=True)
        row.checkbox("Select", key=key, on_change=_on_select, args=(rec.prompt_id,))
        row.button("Details", key=W(f"open_{rec.prompt_id}"), on_click=session.set_gallery_detail,
                   args=(rec.prompt_id,))


# -- bulk actions ---------------------------------------------------------------------------------------
def bulk_bar() -> None:
    sel = session.gallery_selected()
    if not sel:
        return
    led = data.ledger()
    with st.container(border=True, key=W("bulk")):
        row = st.container(horizontal=True, vertical_alignment="center")
        row.markdown(f"**{len(sel)} selected**")
        row.button("Clear selection", key=W("clear"), on_click=_select, args=(sorted(sel), False))
        records = [r for r in (led.get(pid) for pid in sorted(sel)) if r is not None]
        row.download_button("Download selection (zip)", data=data.zip_maker(records), file_name="comfypanel.zip",
                            mime="application/zip", key=W("zip"), on_click="ignore")
        row.button("Delete…", key=W("delete"), on_click=session.set_gallery_confirming, args=(True,))
        if session.gallery_confirming():
            st.warning(f"Delete {len(sel)} job(s) from the gallery? Their recipes and parameters are forgotten. "
                       "Image files on the server are not deleted: ComfyUI's API cannot delete files.")
            st.checkbox("Also delete them from the server's history", key=W("delete_server"))
            c = st.container(horizontal=True)
            c.button("Delete", type="primary", key=W("delete_yes"), on_click=_delete_confirmed)
            c.button("Cancel", key=W("delete_no"), on_click=session.set_gallery_confirming, args=(False,))


# -- the detail view ---------------------------------------------------------------------------------
def detail() -> None:
    pid = session.gallery_detail()
    if not pid:
        return
    rec = data.ledger().get(pid)
    if rec is None:
        session.set_gallery_detail(None)
        return
    with st.container(border=True, key=W("detail")):
        head = st.container(horizontal=True, vertical_alignment="center")
        head.subheader(plain(rec.workflow_name or "workflow"))
        head.button("Close", key=W("close"), on_click=session.set_gallery_detail, args=(None,))
        left, right = st.columns([3, 2])
        with left:
            _images(rec)
        with right:
            _facts(rec)
            _actions(rec)
        _parameters(rec)


def _images(rec: JobRecord) -> None:
    if not rec.outputs:
        st.caption("This job has no output files." if rec.status == "succeeded" else plain(rec.error or ""))
    full = session.gallery_full()
    for i, out in enumerate(rec.outputs):
        k = f"{rec.prompt_id}/{i}"
        if out.missing:
            st.caption(f"{plain(out.ref.filename)}: no longer on the server.")
            continue
        if k in full:
            try:
                img = data.full_image(rec, out)
            except E.ComfyPanelError as exc:
                st.error(plain(exc.user_message))
                continue
            st.image(img, caption=plain(out.ref.filename))
            st.download_button("Download", data=img, file_name=out.ref.filename, key=W(f"dl_{k}"), on_click="ignore")
            meta = data.metadata(img)
            if meta:
                with st.expander("PNG metadata"):
                    st.code(json.dumps(meta, indent=2, default=str)[:200_000], language="json")
        else:
            thumb = data.thumbnail(rec, out)
            if thumb is not None:
                st.image(thumb, caption=plain(out.ref.filename))
            st.button("Show full image", key=W(f"full_{k}"), on_click=full.add, args=(k,),
                      disabled=not data.can_fetch(rec))


def _facts(rec: JobRecord) -> None:
    lines = [
        ("Status", rec.status + (" (made outside the panel)" if rec.external else "")),
        ("Made", rec.created.strftime("%Y-%m-%d %H:%M:%S")),
        ("Duration", f"{rec.duration_s:.1f} s" if rec.duration_s is not None else "unknown"),
        ("Server", rec.server_id),
        ("By", rec.user_label or "unknown"),
        ("Job", rec.prompt_id),
    ]
    seeds = rec.seeds
    if seeds:
        lines.append(("Seed", ", ".join(str(v) for v in seeds.values())))
    if rec.grid_label:
        lines.append(("Grid cell", rec.grid_label))
    for label, value in lines:
        shown = code(value) if label in ("Server", "Job") else plain(value)  # an address must not become a link
        st.markdown(f"**{label}:** {shown}")
    if rec.error:
        st.error(plain(rec.error))
    src, fmt = data.recipe_source(rec)
    c = st.container(horizontal=True)
    c.download_button("Workflow (API)", data=json.dumps(rec.api, indent=2), file_name=f"{rec.prompt_id[:8]}_api.json",
                      mime="application/json", key=W("dl_api"), on_click="ignore")
    c.download_button(f"Workflow (original, {fmt})", data=src, file_name=f"{rec.prompt_id[:8]}_workflow.json",
                      mime="application/json", key=W("dl_src"), on_click="ignore")


def _actions(rec: JobRecord) -> None:
    connected = data.can_fetch(rec)
    c = st.container(horizontal=True)
    c.button("★ Unfavourite" if rec.favourite else "☆ Favourite", key=W("fav"), on_click=_toggle_favourite,
             args=(rec.prompt_id, not rec.favourite))
    c.button("Re-run exactly", key=W("rerun"), on_click=_rerun, args=(rec.prompt_id, False), disabled=not connected)
    c.button("Re-run with a new seed", key=W("rerun_seed"), on_click=_rerun, args=(rec.prompt_id, True),
             disabled=not connected)
    if c.button("Open in Generate", key=W("generate")):
        try:
            data.open_in_generate(rec)
        except E.ComfyPanelError as exc:
            st.error(plain(exc.user_message))
    if not connected:
        st.caption(f"Connect to {plain(rec.server_id)} to re-run this job or see its full images.")
    t = st.container(horizontal=True, vertical_alignment="bottom")
    t.text_input("Add a tag", key=W(f"tag_{rec.prompt_id}"), max_chars=64)
    t.button("Add", key=W("tag_add"), on_click=_add_tag, args=(rec.prompt_id,))
    if rec.tags:
        tags = st.container(horizontal=True)
        for i, tag in enumerate(rec.tags):
            tags.button(f"✕ {plain(tag)}", key=W(f"untag_{i}"), on_click=_remove_tag, args=(rec.prompt_id, tag),
                        help="Remove this tag")


def _parameters(rec: JobRecord) -> None:
    if not rec.params:
        return
    st.markdown("**Parameters**")
    names = list(rec.params)
    values = [v if isinstance(v, str) else json.dumps(v) for v in rec.params.values()]
    st.dataframe({"Parameter": names, "Value": values}, hide_index=True, width="stretch")
