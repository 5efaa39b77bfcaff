"""Gallery glue: the shared ledger, thumbnails, re-runs and bulk actions (no drawing here).

The ledger is global (``st.cache_resource``): it holds no credential. Everything that talks to a
server uses this session's client from ``components.session`` and only for jobs recorded against
the server this session is connected to (a thumbnail is never fetched from another server).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import streamlit as st

from comfypanel import errors as E
from comfypanel.client import new_prompt_id
from comfypanel.images import ImageRefused, ThumbnailCache, png_metadata
from comfypanel.ledger import JobRecord, Ledger, OutputRecord, data_dir, export_zip, ledger_path, reconcile
from comfypanel.workflow import Recipe

from . import session

THUMB_SIZE = 256
PAGE_SIZE = 48


@st.cache_resource(show_spinner=False)
def _open_ledger(path: str) -> Ledger:
    return Ledger(path)


def ledger() -> Ledger:
    """The ledger at the configured location (one per path, shared by every session)."""
    return _open_ledger(str(ledger_path()))


def thumb_cache() -> ThumbnailCache:
    return ThumbnailCache(data_dir() / "thumbnails")


def server_id() -> str | None:
    """The server this session is connected to (no credential), or ``None``."""
    conn = session.connection()
    return conn.server_id() if conn is not None and session.client() is not None else None


def can_fetch(rec: JobRecord) -> bool:
    return session.client() is not None and server_id() == rec.server_id


def thumbnail(rec: JobRecord, out: OutputRecord) -> bytes | None:
    """A WebP thumbnail (from the disk cache, else fetched with this session's client); ``None``
    when it cannot be shown (another server, not connected, file gone, not an image)."""
    cache = thumb_cache()
    cached = cache.get(rec.server_id, out.ref, THUMB_SIZE)
    if cached is not None or out.missing or not can_fetch(rec):
        return cached
    try:
        data, size = cache.fetch(session.client(), rec.server_id, out.ref, THUMB_SIZE)
    except E.NotFound:
        ledger().mark_missing(rec.prompt_id, out.ref, True)
        return None
    except (ImageRefused, E.ComfyPanelError):
        return None
    if size is not None and out.size != size:
        ledger().set_output_size(rec.prompt_id, out.ref, size)
    return data


def full_image(rec: JobRecord, out: OutputRecord) -> bytes:
    """The full file, fetched server-side. Raises ComfyPanelError with a plain sentence."""
    if not can_fetch(rec):
        raise E.ComfyPanelError("Connect to the server that made this image to see it in full: "
                                f"{rec.server_id}.")
    try:
        return session.client().view(out.ref)
    except E.NotFound:
        ledger().mark_missing(rec.prompt_id, out.ref, True)
        raise


def metadata(data: bytes) -> dict[str, Any]:
    return png_metadata(data)


def sync() -> str:
    """Reconcile the ledger with the connected server's history. Returns one sentence."""
    client, sid = session.client(), server_id()
    if client is None or sid is None:
        return "Connect to a server first."
    report = reconcile(ledger(), client, sid)
    return report.summary


def rerun(rec: JobRecord, *, new_seed: bool) -> str:
    """Submit the job again (same seeds, or new ones) and record it the way Generate does.

    Returns the new prompt id. Raises ComfyPanelError (PromptRejected, CannotConnect, ...).
    """
    client, sid = session.client(), server_id()
    if client is None or sid is None:
        raise E.ComfyPanelError("Connect to a server first: re-running needs one.")
    recipe = Recipe.from_json(rec.recipe_json)
    old_seeds = dict(recipe.seeds)
    if new_seed:
        if not old_seeds:
            raise E.ComfyPanelError("This workflow has no seed to change; use “Re-run exactly”.")
        recipe = recipe.with_new_seeds()
    object_info = None if recipe.api is not None else client.object_info()
    graph = recipe.build(object_info)
    params = _params_with_seeds(rec.params, old_seeds, dict(recipe.seeds)) if new_seed else dict(rec.params)
    prompt_id = new_prompt_id()
    led = ledger()
    led.record_submission(
        prompt_id=prompt_id, recipe_json=Recipe(recipe.source, recipe.source_format, recipe.name,
                                                dict(recipe.edits), dict(recipe.seeds), dict(recipe.seed_modes),
                                                recipe.batch_count, recipe.grid, graph).to_json(),
        api=graph, server_id=sid, user_label=session.session_label(), workflow_name=rec.workflow_name,
        params=params, batch_id=rec.batch_id, grid_label=rec.grid_label,
    )
    try:
        queued = client.queue_prompt(graph, prompt_id=prompt_id)
    except E.PromptRejected as exc:
        led.mark_rejected(prompt_id, exc.user_message)
        raise
    except E.ComfyPanelError as exc:
        led.mark_rejected(prompt_id, exc.user_message)
        raise
    led.mark_queued(prompt_id, queued.number)
    return prompt_id


def _params_with_seeds(params: dict, old: dict, new: dict) -> dict:
    """The flattened parameters with each seed replaced. Generate keys them by the form's label
    ("Seed"), older rows and external runs by id ("3.seed"): match the id, else a seed-named key
    holding the old value."""
    out = dict(params)
    for pid, value in new.items():
        if pid in out:
            out[pid] = value
            continue
        hits = [k for k, v in out.items() if "seed" in str(k).lower() and v == old.get(pid)]
        if hits:
            out[hits[0]] = value
        else:
            out[pid] = value
    return out


def open_in_generate(rec: JobRecord) -> None:
    session.set_generate_prefill(Recipe.from_json(rec.recipe_json))
    st.switch_page("pages/generate.py")


def delete(prompt_ids: list[str], *, from_server: bool) -> str:
    """Forget jobs in the ledger (and optionally in the server's history). Returns one sentence."""
    led = ledger()
    note = ""
    if from_server:
        client, sid = session.client(), server_id()
        mine = [pid for pid in prompt_ids if (r := led.get(pid)) is not None and r.server_id == sid]
        if client is None or sid is None:
            note = " Not connected: the server's history was left as it is."
        elif mine:
            try:
                client.delete_history(mine)
                note = f" {len(mine)} removed from the server's history."
            except E.ComfyPanelError as exc:
                note = f" The server's history was not changed: {exc}"
    n = led.delete(prompt_ids)
    return (f"{n} job(s) deleted from the gallery.{note} Image files stay on the server: ComfyUI's API "
            "cannot delete them.")


def zip_maker(records: list[JobRecord]) -> Callable[[], bytes]:
    """A callable building a zip of the selected jobs (run when the user clicks Download).

    It captures this session's client now: the callable runs outside the script thread.
    """
    client, sid = session.client(), server_id()
    return lambda: export_zip(client, records, sid)


def recipe_source(rec: JobRecord) -> tuple[str, str]:
    """(json text, format word) of the workflow as it was given."""
    try:
        recipe = Recipe.from_json(rec.recipe_json)
    except E.ComfyPanelError:
        return "{}", "api"
    return json.dumps(recipe.source, indent=2), recipe.source_format
