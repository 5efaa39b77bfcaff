"""The Generate page: pick a workflow, fill in a friendly form, Generate, watch, download.

Pages draw, components glue, comfypanel decides: conversion, discovery, pre-flight, seeds and
batches live in ``comfypanel.generation``; following jobs in ``comfypanel.watcher`` (worker threads,
so the live fragment only reads memory). Every failure is one sentence; the form keeps its values.
"""

from __future__ import annotations

import io
import logging
import random
import time
import uuid
import zipfile
from typing import Any, Mapping

import streamlit as st

from comfypanel import errors as E
from comfypanel import schema as S
from comfypanel import workflow as W
from comfypanel.client import ComfyClient, new_prompt_id
from comfypanel.examples import EXAMPLES, load_example
from comfypanel.generation import Form, build_form, check_axis, fetch_models, submissions
from comfypanel.uploads import check_upload, upload_name

from . import live, session
from .text import plain

log = logging.getLogger("comfypanel.ui.generate")

JS_MAX = (1 << 53) - 1  # the browser's number widgets cannot hold more


def _bound(v: Any, kind: type) -> Any:
    if v is None:
        return None
    return kind(max(-JS_MAX, min(JS_MAX, v)))


SEED_MODE_LABELS = {"fixed": "Fixed", "randomize": "New each run", "increment": "+1 each run", "decrement": "−1 each run"}
K_SERVER_DATA = "cp_gen_server"  # {fingerprint: (object_info, schema, models, fetched_at)}


# ------------------------------------------------------------------------------------------------
# server data (object_info, schema, model lists), per session and per connection


def server_data(client: ComfyClient, *, refresh: bool = False) -> tuple[dict, S.Schema, dict[str, list[str]]]:
    cache = st.session_state.setdefault(K_SERVER_DATA, {})
    fp = client.connection.fingerprint()
    if refresh or fp not in cache:
        object_info = client.object_info()
        cache.clear()  # one server per session at a time: drop data of earlier connections
        cache[fp] = (object_info, S.Schema.from_object_info(object_info), {}, time.time())
    return cache[fp][0], cache[fp][1], cache[fp][2]


# ------------------------------------------------------------------------------------------------
# picking a workflow


def set_workflow(loaded: W.LoadedWorkflow, values: Mapping[str, Any] | None = None,
                 seed_modes: Mapping[str, str] | None = None) -> None:
    state = session.gen_state()
    state[session.K_GEN_WORKFLOW] = loaded
    state[session.K_GEN_TOKEN] = uuid.uuid4().hex[:8]
    state[session.K_GEN_VALUES] = dict(values or {})
    state[session.K_GEN_SEED_MODES] = dict(seed_modes or {})
    state[session.K_GEN_ERROR] = None
    state[session.K_GEN_NODE_ERRORS] = {}


def _convertible(loaded: W.LoadedWorkflow) -> W.LoadedWorkflow:
    """``loaded`` when it converts with the server's node list (or when that list cannot be had:
    the page then says why); raises ``WorkflowError`` for a file that is recognised but cannot be
    converted, so the form the person is filling in is not replaced by an error."""
    client = session.client()
    if client is None or loaded.ui is None:
        return loaded
    try:
        object_info, _schema, _models = server_data(client)
    except E.ComfyPanelError:
        return loaded
    W.to_api(loaded, object_info)
    return loaded


def _on_upload() -> None:
    up = st.session_state.get("cp_w_gen_upload")
    if up is None:
        return
    try:
        set_workflow(_convertible(W.load(up.getvalue(), up.name)))
    except W.WorkflowError as exc:
        session.gen_state()[session.K_GEN_ERROR] = exc.user_message  # the current workflow stays


def _on_example() -> None:
    key = st.session_state.get("cp_w_gen_example")
    if key:
        set_workflow(load_example(key))


def _on_library(client: ComfyClient) -> None:
    path = st.session_state.get("cp_w_gen_library")
    if not path:
        return
    try:
        data = client.get_workflow(path)
        set_workflow(_convertible(W.load_json(data, path.rsplit("/", 1)[-1].removesuffix(".json"))))
    except W.WorkflowError as exc:
        session.gen_state()[session.K_GEN_ERROR] = exc.user_message
    except E.ComfyPanelError as exc:
        session.gen_state()[session.K_GEN_ERROR] = exc.user_message


def apply_prefill() -> None:
    """A recipe sent from the Gallery ("open in Generate") becomes the current workflow."""
    recipe = st.session_state.pop(session.K_GEN_PREFILL, None)
    if recipe is None:
        return
    try:
        loaded = W.load_json(dict(recipe.source), recipe.name)
    except W.WorkflowError as exc:
        session.gen_state()[session.K_GEN_ERROR] = exc.user_message
        return
    values = dict(recipe.edits)
    values.update(recipe.seeds)
    set_workflow(loaded, values, {p: "fixed" for p in recipe.seeds})


def picker(client: ComfyClient) -> None:
    tab_file, tab_examples, tab_library = st.tabs(["Upload a workflow", "Examples", "Server library"])
    with tab_file:
        st.file_uploader(
            "Workflow file", type=["json", "png", "webp", "jpg", "jpeg"], key="cp_w_gen_upload", on_change=_on_upload,
            help="The workflow JSON a colleague saved (either “Save” or “Export (API)”), or a PNG made by ComfyUI.",
        )
    with tab_examples:
        st.caption("Small workflows that need no model: try the whole journey on any server.")
        st.selectbox("Example", [e.key for e in EXAMPLES], key="cp_w_gen_example",
                     format_func=lambda k: next(f"{e.title} — {e.description}" for e in EXAMPLES if e.key == k))
        st.button("Load example", key="cp_w_gen_load_example", on_click=_on_example)
    with tab_library:
        try:
            saved = client.list_workflows()
        except E.ComfyPanelError as exc:
            st.info(plain(exc.user_message))
            saved = []
        if saved:
            st.selectbox("Saved on the server", saved, key="cp_w_gen_library", format_func=plain)
            st.button("Load from library", key="cp_w_gen_load_library", on_click=_on_library, args=(client,))
        else:
            st.caption("The server has no saved workflows yet. Save one below after loading it.")


# ------------------------------------------------------------------------------------------------
# the form


def _store(pid: str, key: str) -> None:
    session.gen_state()[session.K_GEN_VALUES][pid] = st.session_state.get(key)
    session.gen_state()[session.K_GEN_NODE_ERRORS].pop(pid, None)


def _store_color(pid: str, key: str) -> None:
    hex_value = str(st.session_state.get(key) or "#000000").lstrip("#")
    session.gen_state()[session.K_GEN_VALUES][pid] = int(hex_value, 16)


def _seed_widget(key: str, value: Any) -> str:
    if key not in st.session_state:
        st.session_state[key] = value
    return key


def _dice(pid: str, key: str, high: int) -> None:
    value = random.SystemRandom().randint(0, min(high, 2**50))
    st.session_state[key] = value
    session.gen_state()[session.K_GEN_VALUES][pid] = value


def _set_mode(pid: str, key: str) -> None:
    session.gen_state()[session.K_GEN_SEED_MODES][pid] = st.session_state.get(key)


def param_widget(p: S.Parameter, form: Form, client: ComfyClient, models: Mapping[str, list[str]]) -> None:
    spec = p.spec
    key = session.gen_widget("p", p.id)
    label = plain(p.label)
    help_text = plain(p.tooltip) if p.tooltip else None
    value = p.value
    cb = dict(on_change=_store, args=(p.id, key))
    if spec.kind == "INT" and spec.seed_like:
        modes = session.gen_state()[session.K_GEN_SEED_MODES]
        c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
        with c1:
            st.number_input(label, min_value=_bound(spec.min, int), max_value=_bound(spec.max, int), step=1,
                            key=_seed_widget(key, _bound(value, int) if isinstance(value, int) else 0),
                            help=help_text, **cb)
        with c2:
            mkey = session.gen_widget("mode", p.id)
            st.selectbox("Next run", list(SEED_MODE_LABELS), format_func=SEED_MODE_LABELS.__getitem__,
                         key=_seed_widget(mkey, modes.get(p.id, "randomize")), on_change=_set_mode, args=(p.id, mkey),
                         help="What the seed does before each run. “Fixed” repeats the same image.")
            modes.setdefault(p.id, st.session_state[mkey])
        with c3:
            st.button("🎲", key=session.gen_widget("dice", p.id), help="Pick a random seed now",
                      on_click=_dice, args=(p.id, key, int(spec.max or 2**32)))
    elif spec.kind == "INT" and spec.display == "color":
        ckey = session.gen_widget("color", p.id)
        start = int(value) if isinstance(value, int) else 0
        st.color_picker(label, key=_seed_widget(ckey, f"#{start & 0xFFFFFF:06x}"), help=help_text,
                        on_change=_store_color, args=(p.id, ckey))
    elif spec.kind == "INT":
        st.number_input(label, min_value=_bound(spec.min, int), max_value=_bound(spec.max, int),
                        step=int(spec.step) if spec.step else 1,
                        key=_seed_widget(key, _bound(value, int) if isinstance(value, (int, float)) else 0),
                        help=help_text, **cb)
    elif spec.kind == "FLOAT":
        step = float(spec.step) if spec.step else 0.01
        st.number_input(label, min_value=_bound(spec.min, float), max_value=_bound(spec.max, float), step=step,
                        format="%.3f" if step < 0.01 else "%.2f",
                        key=_seed_widget(key, float(value) if isinstance(value, (int, float)) else 0.0), help=help_text, **cb)
    elif spec.kind == "BOOLEAN":
        st.toggle(label, key=_seed_widget(key, bool(value)), help=help_text, **cb)
    elif spec.kind == "STRING":
        if spec.multiline or p.role in ("positive", "negative"):
            st.text_area(label, key=_seed_widget(key, "" if value is None else str(value)), help=help_text,
                         height=110 if p.role == "positive" else 80, **cb)
        else:
            st.text_input(label, key=_seed_widget(key, "" if value is None else str(value)), help=help_text, **cb)
    elif spec.kind == "COMBO":
        if spec.upload == "image":
            image_widget(p, key, client)
            return
        options = list(models.get(spec.model_folder, ())) if spec.model_folder else []
        for o in spec.options:
            if o not in options:
                options.append(o)
        if value not in options:
            options.insert(0, value)  # keep the file's value visible; pre-flight says it is not offered
        st.selectbox(label, options, key=_seed_widget(key, value), help=help_text, format_func=lambda o: str(o), **cb)
    for problem in form.problems_for(p.id):
        (st.error if problem.blocking else st.warning)(plain(problem.message), icon=":material/error:")
    refused = session.gen_state()[session.K_GEN_NODE_ERRORS].get(p.id)
    if refused:
        st.error(plain(refused), icon=":material/block:")


def _on_image_upload(pid: str, key: str, up_key: str, client_holder: list) -> None:
    up = st.session_state.get(up_key)
    if up is None:
        return
    client = client_holder[0]
    state = session.gen_state()
    try:
        data = up.getvalue()
        info = check_upload(data, max_bytes=_max_upload(client))
        name = upload_name(up.name, info)  # no folders or "..": the server would refuse them
        ref = client.upload_image(data, name, mime=info.mime)
    except E.ComfyPanelError as exc:
        state[session.K_GEN_NODE_ERRORS][pid] = exc.user_message
        return
    state[session.K_GEN_VALUES][pid] = ref.image_value
    st.session_state[key] = ref.image_value
    state[session.K_GEN_NODE_ERRORS].pop(pid, None)
    if ref.filename != name:
        st.toast(plain(f"The server stored the image as “{ref.filename}” (a different file already had that name)."))


def _max_upload(client: ComfyClient) -> int | None:
    try:
        return client.capabilities().max_upload_size
    except E.ComfyPanelError:
        return None


def image_widget(p: S.Parameter, key: str, client: ComfyClient) -> None:
    options = list(p.spec.options)
    value = p.value
    if value not in options:
        options.insert(0, value)
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    with c1:
        st.selectbox(plain(p.label), options, key=_seed_widget(key, value), on_change=_store, args=(p.id, key),
                     help="An image already on the server (its input folder), or upload one on the right.")
    with c2:
        up_key = session.gen_widget("upload", p.id)
        st.file_uploader("Upload", type=["png", "jpg", "jpeg", "webp"], key=up_key, label_visibility="collapsed",
                         on_change=_on_image_upload, args=(p.id, key, up_key, [client]))
    recent = _recent_outputs()
    with st.expander("Use a result, or paint a mask"):
        if recent:
            rkey = session.gen_widget("recent", p.id)
            st.selectbox("A result from this session", [""] + list(recent), key=rkey,
                         format_func=lambda n: "—" if not n else plain(n),
                         on_change=_on_use_result, args=(p.id, key, rkey, [client]))
        _mask_editor(p, key, client)
    refused = session.gen_state()[session.K_GEN_NODE_ERRORS].get(p.id)
    if refused:
        st.error(plain(refused), icon=":material/block:")


def _recent_outputs() -> dict[str, Any]:
    """This session's finished image outputs, newest first: name -> OutputFile."""
    watcher = live.watcher()
    out: dict[str, Any] = {}
    if watcher is None:
        return out
    for run in reversed(session.gen_state()[session.K_GEN_RUNS]):
        done = watcher.result(run["prompt_id"])
        for f in (done.files if done is not None else ()):
            if f.data and f.ref.kind == "images":
                out.setdefault(f.ref.filename, f)
    return out


def _on_use_result(pid: str, key: str, rkey: str, holder: list) -> None:
    name = st.session_state.get(rkey)
    f = _recent_outputs().get(name) if name else None
    if f is None:
        return
    try:
        ref = holder[0].upload_image(f.data, f.ref.filename)
    except E.ComfyPanelError as exc:
        session.gen_state()[session.K_GEN_NODE_ERRORS][pid] = exc.user_message
        return
    session.gen_state()[session.K_GEN_VALUES][pid] = ref.image_value
    st.session_state[key] = ref.image_value


def _mask_editor(p: S.Parameter, key: str, client: ComfyClient) -> None:
    """Paint (or upload) a mask over the chosen input image; the masked copy becomes the value."""
    from comfypanel.types import FileRef
    from comfypanel.uploads import mask_from_image, mask_from_strokes

    from .inputs import image_bytes, paint_mask

    name = str(st.session_state.get(key) or p.value or "")
    if not name or "[" in name:
        st.caption("Choose an image from the server's input folder to paint a mask on it.")
        return
    sub, _, base = name.rpartition("/")
    original = FileRef(base, sub, "input")
    try:
        image = image_bytes(client, original)
        info = check_upload(image, max_pixels=10**9)
    except E.ComfyPanelError as exc:
        st.caption(plain(exc.user_message))
        return
    layer = paint_mask(image, (info.width, info.height), key=session.gen_widget("canvas", p.id))
    mask_up = st.file_uploader("…or upload a mask (white = area to change)", type=["png", "jpg", "jpeg", "webp"],
                               key=session.gen_widget("maskup", p.id))
    if st.button("Use this mask", key=session.gen_widget("usemask", p.id), disabled=layer is None and mask_up is None):
        try:
            png = (mask_from_image(mask_up.getvalue(), (info.width, info.height)) if mask_up is not None
                   else mask_from_strokes(layer, (info.width, info.height)))
            ref = client.upload_mask(png, f"{base.rsplit('.', 1)[0]}_mask.png", original, overwrite=True)
        except E.ComfyPanelError as exc:
            session.gen_state()[session.K_GEN_NODE_ERRORS][p.id] = exc.user_message
        else:
            session.gen_state()[session.K_GEN_VALUES][p.id] = ref.image_value
            st.session_state.pop(key, None)  # the selectbox picks the new value up on the next run
            st.toast(plain(f"Masked image stored as {ref.image_value}."))
        st.rerun()


def form_section(form: Form, client: ComfyClient, models: Mapping[str, list[str]]) -> None:
    for problem in form.general_problems:
        (st.error if problem.blocking else st.warning)(plain(problem.message), icon=":material/error:")
    if form.params.simple:
        for p in form.params.simple:
            param_widget(p, form, client, models)
    else:
        st.caption("This workflow has no simple parameters; everything is under Advanced.")
    groups = form.params.groups()
    if groups:
        with st.expander(f"Advanced ({len(form.params.advanced)} values)"):
            for label, params in groups:
                st.markdown(f"**{plain(label)}**")
                for p in params:
                    param_widget(p, form, client, models)


# ------------------------------------------------------------------------------------------------
# generating


def _on_generate() -> None:
    st.session_state["cp_gen_request"] = True


def run_controls(form: Form) -> tuple[int, tuple | None, tuple | None, bool]:
    """Runs and the XY grid; the last value is True when the grid's values cannot be used (Generate
    is then blocked rather than silently running without the grid)."""
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    with c1:
        count = st.number_input("Runs", min_value=1, max_value=100, value=1, step=1, key="cp_w_gen_count",
                                help="How many times to run; the seed follows its “Next run” setting.")
    grid_x = grid_y = None
    grid_bad = False
    with c2:
        with st.expander("XY grid (compare values)"):
            candidates = [p for p in form.params if p.spec.kind in ("INT", "FLOAT", "COMBO") and p.spec.upload is None]
            ids = [""] + [p.id for p in candidates]
            fmt = lambda pid: "—" if not pid else plain(form.params[pid].label)  # noqa: E731
            gx = st.selectbox("X parameter", ids, format_func=fmt, key="cp_w_gen_gx")
            vx = st.text_input("X values (comma-separated)", key="cp_w_gen_vx", placeholder="e.g. 4, 6, 8")
            gy = st.selectbox("Y parameter (optional)", ids, format_func=fmt, key="cp_w_gen_gy")
            vy = st.text_input("Y values", key="cp_w_gen_vy")
            try:
                if gx and vx.strip():
                    grid_x = (gx, _parse_values(form.params[gx], vx))
                    check_axis(form, *grid_x)
                if gx and gy and vy.strip():
                    grid_y = (gy, _parse_values(form.params[gy], vy))
                    check_axis(form, *grid_y)
            except E.InvalidInput as exc:
                st.error(plain(exc.user_message))
                grid_x = grid_y = None
                grid_bad = True
            if grid_x:
                n = len(grid_x[1]) * (len(grid_y[1]) if grid_y else 1)
                st.caption(f"{n} images, one per combination; Runs is ignored for a grid.")
    return int(count), grid_x, grid_y, grid_bad


def _parse_values(p: S.Parameter, text: str) -> list[Any]:
    out: list[Any] = []
    for raw in [t.strip() for t in text.split(",") if t.strip()]:
        try:
            if p.spec.kind == "INT":
                number = float(raw)
                if not number.is_integer():  # also NaN and infinity
                    raise E.InvalidInput(f"“{raw}” is not a whole number, but {p.label} needs whole numbers.")
                out.append(int(number))
            elif p.spec.kind == "FLOAT":
                number = float(raw)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError(raw)
                out.append(number)
            else:
                out.append(raw)
        except (ValueError, OverflowError):
            raise E.InvalidInput(f"“{raw}” is not a number, but {p.label} needs numbers.") from None
    if not out:
        raise E.InvalidInput("Give at least one value.")
    return out


def submit(client: ComfyClient, loaded: W.LoadedWorkflow, form: Form, count: int, grid_x, grid_y) -> None:
    """Record, send and start following each prompt; a refusal stops the rest and marks the fields."""
    state = session.gen_state()
    state[session.K_GEN_ERROR] = None
    state[session.K_GEN_NODE_ERRORS] = {}
    try:
        subs = submissions(loaded, form, seed_modes=state[session.K_GEN_SEED_MODES], count=count,
                           grid_x=grid_x, grid_y=grid_y)
    except E.InvalidInput as exc:  # a grid or run count the server would refuse: nothing is sent
        state[session.K_GEN_ERROR] = exc.user_message
        return
    if st.session_state.get("cp_w_gen_hold"):
        from . import queue_live

        for sub in subs:
            queue_live.hold_job(sub.graph, workflow_name=loaded.name + (f" · {sub.label}" if sub.label else ""))
        st.toast(f"{len(subs)} job{'s' if len(subs) != 1 else ''} held in the panel queue; the Queue page "
                 "sends them one at a time.")
        return
    ledger = live.ledger()
    watcher = live.watcher()
    batch_id = uuid.uuid4().hex[:12] if len(subs) > 1 else None
    for sub in subs:
        pid = new_prompt_id()
        if ledger is not None:
            ledger.record_submission(
                prompt_id=pid, recipe_json=sub.recipe.to_json(), api=sub.graph,
                server_id=client.connection.server_id(), user_label=session_label(), workflow_name=loaded.name,
                params=_flat_params(form, sub), batch_id=batch_id, grid_label=sub.label or None)
        try:
            queued = client.queue_prompt(sub.graph, prompt_id=pid, workflow=loaded.ui)
        except E.PromptRejected as exc:
            if ledger is not None:
                ledger.mark_rejected(pid, exc.user_message)
            state[session.K_GEN_ERROR] = exc.user_message
            state[session.K_GEN_NODE_ERRORS] = {f"{e.node_id}.{e.input_name}": e.message for e in exc.node_errors
                                                if e.input_name}
            return
        except E.ComfyPanelError as exc:
            if ledger is not None:
                ledger.mark_rejected(pid, exc.user_message)
            state[session.K_GEN_ERROR] = exc.user_message
            return
        if ledger is not None:
            ledger.mark_queued(pid, queued.number)
        state[session.K_GEN_RUNS].append({
            "prompt_id": pid, "label": sub.label, "seeds": dict(sub.seeds), "name": loaded.name,
            "submitted": time.time(), "warnings": [e.message for e in queued.node_errors], "recorded": False,
            "batch": batch_id, "grid": (sub.grid_x, sub.grid_y) if grid_x else None,
            "axes": (form.params[grid_x[0]].label, form.params[grid_y[0]].label if grid_y else "") if grid_x else None,
            "titles": {nid: S.clean_title((n.get("_meta") or {}).get("title")) or n.get("class_type", nid)
                       for nid, n in sub.graph.items()},
        })
        if watcher is not None:
            watcher.watch(pid, nodes_total=len(sub.graph), queued=queued)
    # the seeds used become the form's values, so "Fixed" repeats exactly what was just made
    last = subs[-1].seeds if subs else {}
    for pid, seed in last.items():
        state[session.K_GEN_VALUES][pid] = seed
        st.session_state[session.gen_widget("p", pid)] = seed


def session_label() -> str:
    try:
        email = getattr(st.user, "email", None)
    except Exception:
        email = None
    if email:
        return str(email)
    label = st.session_state.get("cp_session_label")
    if not label:
        label = st.session_state["cp_session_label"] = f"session-{uuid.uuid4().hex[:8]}"
    return label


def _flat_params(form: Form, sub: Any) -> dict[str, Any]:
    out = {}
    for p in form.params:
        value = sub.graph.get(p.node_id, {}).get("inputs", {}).get(p.input_name, p.value)
        out[p.label] = value
    return out


# ------------------------------------------------------------------------------------------------
# live status and results


def _on_cancel(prompt_id: str) -> None:
    client = session.client()
    if client is None:
        return
    try:
        client.cancel(prompt_id)
        st.toast("Cancelling the job…")
    except E.ComfyPanelError as exc:
        st.toast(plain(exc.user_message))


def _on_clear_runs() -> None:
    watcher = live.watcher()
    state = session.gen_state()
    keep = []
    for run in state[session.K_GEN_RUNS]:
        if watcher is not None and watcher.is_watching(run["prompt_id"]):
            keep.append(run)
        elif watcher is not None:
            watcher.forget(run["prompt_id"])
    state[session.K_GEN_RUNS] = keep


def results_section() -> None:
    runs = session.gen_state()[session.K_GEN_RUNS]
    if not runs:
        return
    watcher = live.watcher()
    active = watcher is not None and watcher.active()

    @st.fragment(run_every=1.0 if active else None)
    def live_view() -> None:
        w = live.watcher()
        lst = live.listener()
        still = w is not None and w.active()
        shown: set[str] = set()
        for run in reversed(session.gen_state()[session.K_GEN_RUNS][-48:]):
            if run["prompt_id"] in shown:
                continue
            if run.get("grid") and run.get("batch"):
                cells = [r for r in session.gen_state()[session.K_GEN_RUNS] if r.get("batch") == run["batch"]]
                shown.update(r["prompt_id"] for r in cells)
                _grid_card(cells, w, lst)
            else:
                shown.add(run["prompt_id"])
                _run_card(run, w, lst)
            if len(shown) >= 12:
                break
        if active and not still:
            st.rerun()  # the last job ended: one full run draws the results and stops the timer

    st.subheader("Results")
    live_view()
    if not active:
        st.button("Clear results", key="cp_w_gen_clear", on_click=_on_clear_runs, type="tertiary")


def _run_card(run: dict, watcher: Any, lst: Any) -> None:
    pid = run["prompt_id"]
    done = watcher.result(pid) if watcher is not None else None
    title = run["name"] + (f" · {run['label']}" if run.get("label") else "")
    with st.container(border=True, key=f"cp_run_{pid}"):
        if done is None:
            progress = watcher.progress(pid) if watcher is not None else None
            _running(pid, title, progress, lst, run.get("titles"))
        else:
            _finished(pid, title, run, done)


def _grid_card(cells: list[dict], watcher: Any, lst: Any) -> None:
    """An XY grid's results as a labelled table: columns are X values, rows are Y values."""
    first = cells[0]
    xs: list[Any] = []
    ys: list[Any] = []
    for c in cells:
        x, y = c["grid"]
        if x not in xs:
            xs.append(x)
        if y not in ys:
            ys.append(y)
    done = sum(1 for c in cells if watcher is not None and watcher.result(c["prompt_id"]) is not None)
    with st.container(border=True, key=f"cp_grid_{first['batch']}"):
        st.markdown(f"**{plain(first['name'])}** — XY grid, {done} of {len(cells)} done")
        x_label, y_label = first.get("axes") or ("X", "")
        header = st.columns(len(xs) + 1)
        header[0].caption(plain(f"{y_label} ↓ / {x_label} →" if y_label else x_label))
        for i, x in enumerate(xs, 1):
            header[i].caption(plain(f"{x}"))
        for y in ys:
            row = st.columns(len(xs) + 1)
            row[0].caption(plain("" if y is None else f"{y}"))
            for i, x in enumerate(xs, 1):
                cell = next((c for c in cells if c["grid"] == (x, y)), None)
                if cell is None:
                    continue
                fin = watcher.result(cell["prompt_id"]) if watcher is not None else None
                with row[i]:
                    if fin is None:
                        st.caption("running…")
                    else:
                        img = next((f for f in fin.files if f.data and f.ref.kind == "images"), None)
                        if img is not None:
                            st.image(img.data, width="stretch")
                        else:
                            st.caption(plain(fin.message))
                    if fin is not None and not cell.get("recorded"):
                        _record(cell, fin)


def _record(run: dict, done: Any) -> None:
    ledger = live.ledger()
    # done.result is None when following failed (auth, timeout), not the job: its row stays as it is
    # and the ledger's reconcile settles it from the server later.
    if ledger is not None and not run.get("recorded") and done.result is not None:
        result = done.result
        ledger.complete(run["prompt_id"], state=done.state, files=result.files,
                        error=None if done.state == "succeeded" else done.message,
                        duration_s=result.duration_s)
    run["recorded"] = True


def _running(pid: str, title: str, progress: Any, lst: Any, run_titles: Mapping[str, str] | None = None) -> None:
    state = progress.state if progress is not None else "queued"
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    with c1:
        if state == "queued":
            pos = progress.position if progress is not None else None
            st.markdown(f"**{plain(title)}** — waiting" + (f" (number {pos} in the queue)" if pos else ""))
        else:
            st.markdown(f"**{plain(title)}** — running")
    with c2:
        st.button("Cancel", key=f"cp_w_gen_cancel_{pid}", on_click=_on_cancel, args=(pid,),
                  help="Removes the job if it is waiting, stops it if it is running.")
    fraction = progress.fraction if progress is not None else None
    text = []
    if progress is not None and progress.current_node:
        title = (run_titles or {}).get(progress.current_node, "")
        text.append(f"{title} (node {progress.current_node})" if title else f"node {progress.current_node}")
    if progress is not None and progress.nodes_total:
        text.append(f"{progress.nodes_done} of {progress.nodes_total} nodes done")
    if progress is not None and progress.step:
        text.append(f"step {progress.step[0]:g}/{progress.step[1]:g}")
    if progress is not None and progress.connection == "reconnecting":
        text.append("reconnecting to the server…")
    st.progress(fraction or 0.0, text=plain(" · ".join(text)) or None)  # node titles are author text
    snap = lst.snapshot(pid) if lst is not None else None
    preview = getattr(snap, "latest_preview", None) if snap is not None else None
    if preview is not None and preview.image:
        live.preview_image(preview.image, caption="Preview", width=256)


def _finished(pid: str, title: str, run: dict, done: Any) -> None:
    if not run.get("recorded"):
        _record(run, done)
        if done.state == "succeeded":
            st.toast(plain(f"{run['name']} finished."))
        else:
            st.toast(plain(f"{run['name']}: {done.message}"))
    state = done.state
    seeds = ", ".join(f"{v}" for v in run.get("seeds", {}).values())
    head = f"**{plain(title)}**" + (f" · seed {plain(seeds)}" if seeds else "")
    if state == "succeeded":
        st.markdown(head + f" — {plain(done.message)}")
        for warning in run.get("warnings", []):
            st.warning(plain(warning))
        images = [f for f in done.files if f.data and f.ref.kind == "images"]
        others = [f for f in done.files if f not in images]
        if images:
            cols = st.columns(3)  # a steady grid: one image does not fill the page; click to enlarge
            for i, f in enumerate(images):
                with cols[i % len(cols)]:
                    st.image(f.data, caption=plain(f.ref.filename))
                    st.download_button("Download", f.data, file_name=f.ref.filename, key=f"cp_w_gen_dl_{pid}_{i}",
                                       mime="image/png", icon=":material/download:", type="tertiary")
        for f in others:
            if f.error:
                st.caption(plain(f"{f.ref.filename}: {f.error}"))
            elif f.data:
                st.download_button(f"Download {f.ref.filename}", f.data, file_name=f.ref.filename,
                                   key=f"cp_w_gen_dlo_{pid}_{f.ref.filename}")
        if len([f for f in done.files if f.data]) > 1:
            st.download_button("Download all (zip)", _zip(done.files), file_name=f"{run['name']}.zip",
                               mime="application/zip", key=f"cp_w_gen_zip_{pid}", icon=":material/folder_zip:")
    elif state in ("interrupted", "cancelled"):
        st.markdown(head)
        st.info(plain(done.message), icon=":material/stop_circle:")
    else:
        st.markdown(head)
        st.error(plain(done.message), icon=":material/error:")


def _zip(files: Any) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        used = set()
        for f in files:
            if not f.data:
                continue
            name = f.ref.filename.replace("/", "_")
            while name in used:
                name = "_" + name
            used.add(name)
            z.writestr(name, f.data)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# saving to the library


def _on_save(client: ComfyClient, graph: Mapping[str, Any]) -> None:
    name = (st.session_state.get("cp_w_gen_save_name") or "").strip()
    if not name:
        st.toast("Type a name for the workflow first.")
        return
    try:
        path = client.save_workflow(name, dict(graph), overwrite=bool(st.session_state.get("cp_w_gen_save_over")))
        st.toast(plain(f"Saved as {path}."))
    except E.ComfyPanelError as exc:
        session.gen_state()[session.K_GEN_ERROR] = exc.user_message


def save_section(client: ComfyClient, form: Form) -> None:
    with st.expander("Save to the server library"):
        st.text_input("Name", key="cp_w_gen_save_name", placeholder="e.g. team/portrait")
        st.checkbox("Replace a workflow of the same name", key="cp_w_gen_save_over")
        st.button("Save with these values", key="cp_w_gen_save", on_click=_on_save, args=(client, form.graph))


# ------------------------------------------------------------------------------------------------
# the page


def render() -> None:
    state = session.gen_state()
    apply_prefill()
    client = session.client()
    if client is None:
        return  # the page's status line says how to connect
    picker(client)
    if state[session.K_GEN_ERROR]:
        st.error(plain(state[session.K_GEN_ERROR]), icon=":material/error:")
    loaded: W.LoadedWorkflow | None = state[session.K_GEN_WORKFLOW]
    if loaded is None:
        st.caption("No workflow yet: upload one, or start with an example.")
        results_section()
        return
    try:
        object_info, schema, models = server_data(client)
        base = W.to_api(loaded, object_info)
        models = fetch_models(client, base, schema, models)
        form = build_form(loaded, object_info, schema, state[session.K_GEN_VALUES], models)
    except W.WorkflowError as exc:
        st.error(plain(exc.user_message), icon=":material/error:")
        return
    except E.ComfyPanelError as exc:
        st.error(plain(exc.user_message), icon=":material/error:")
        return
    st.subheader(plain(loaded.name))
    if loaded.format != "api":
        st.caption({"ui": "A “Save” workflow, converted with this server’s node list.",
                    "png-ui": "Read from the image’s ComfyUI metadata.",
                    "png-api": "Read from the image’s ComfyUI metadata (API format)."}[loaded.format])
    form_section(form, client, models)
    count, grid_x, grid_y, grid_bad = run_controls(form)
    st.checkbox("Hold in the panel queue instead of sending now", key="cp_w_gen_hold",
                help="The Queue page feeds held jobs to the server one at a time; pause, reorder or "
                     "re-prioritise them there.")
    blocked = bool(form.blocking) or grid_bad
    st.button("Generate", type="primary", key="cp_w_gen_go", disabled=blocked, on_click=_on_generate,
              icon=":material/play_arrow:", width="stretch",
              help="Fix the problems shown above first." if blocked else None)
    if st.session_state.pop("cp_gen_request", False) and not blocked:
        submit(client, loaded, form, count, grid_x, grid_y)
        if state[session.K_GEN_ERROR]:
            st.error(plain(state[session.K_GEN_ERROR]), icon=":material/error:")
    save_section(client, form)
    results_section()
