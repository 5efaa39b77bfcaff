"""The Inputs page: the server's input images, uploads, and masks (painted or uploaded).

Images are fetched server-side (``client.view``) and shown as bytes: the browser never gets a
ComfyUI URL. Uploads are checked before they are sent (real image content, a pixel cap, the
server's size limit). A mask is sent with ``/upload/mask`` and ``original_ref``; painted pixels
become alpha 0, which LoadImage reads as "masked", and the stored file is read back to check it.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from comfypanel import errors as E
from comfypanel.client import ComfyClient
from comfypanel.types import FileRef
from comfypanel.uploads import check_upload, composite, mask_from_image, mask_from_strokes, upload_name

from . import session
from .text import plain

log = logging.getLogger("comfypanel.ui.inputs")

K_THUMBS = "cp_inputs_thumbs"  # {(fingerprint, name): webp bytes}, this session only
K_SELECTED = "cp_inputs_selected"  # str | None: the image shown large
K_NOTICE = "cp_inputs_notice"  # list[(kind, sentence)]: results of the last upload / mask
K_MASK = "cp_inputs_mask"  # (original name, mask FileRef, composite bytes) | None
PAGE = 24


def input_images(client: ComfyClient) -> list[str]:
    """Top-level image files of the server's input folder (LoadImage's own list, newest server data)."""
    info = client.object_info("LoadImage").get("LoadImage") or {}
    spec = ((info.get("input") or {}).get("required") or {}).get("image")
    options = spec[0] if isinstance(spec, list) and spec and isinstance(spec[0], list) else []
    return [str(o) for o in options]


def thumb(client: ComfyClient, name: str) -> bytes | None:
    cache = st.session_state.setdefault(K_THUMBS, {})
    key = (client.connection.fingerprint(), name)
    if key not in cache:
        try:
            cache[key] = client.view(FileRef(name, "", "input"), preview="webp;70", max_bytes=8 * 1024 * 1024)
        except E.ComfyPanelError:
            cache[key] = None
        if len(cache) > 300:
            cache.pop(next(iter(cache)))
    return cache[key]


def image_bytes(client: ComfyClient, ref: FileRef) -> bytes:
    """The full bytes of a server file, cached for this session (a few recent ones).

    Raises:
        ComfyPanelError: the file cannot be read.
    """
    cache = st.session_state.setdefault("cp_inputs_images", {})
    key = (client.connection.fingerprint(), ref.filename, ref.subfolder, ref.type)
    if key not in cache:
        cache[key] = client.view(ref)
        while len(cache) > 8:
            cache.pop(next(iter(cache)))
    return cache[key]


def _notice(kind: str, text: str) -> None:
    st.session_state.setdefault(K_NOTICE, []).append((kind, text))


def _on_upload(client_holder: list) -> None:
    files = st.session_state.get("cp_w_inputs_upload") or []
    overwrite = bool(st.session_state.get("cp_w_inputs_overwrite"))
    client: ComfyClient = client_holder[0]
    try:
        limit = client.capabilities().max_upload_size
    except E.ComfyPanelError:
        limit = None
    for up in files:
        data = up.getvalue()
        try:
            info = check_upload(data, max_bytes=limit)
            name = upload_name(up.name, info)  # no folders or "..": the server would refuse them
            ref = client.upload_image(data, name, overwrite=overwrite, mime=info.mime)
        except E.ComfyPanelError as exc:
            _notice("error", f"{up.name}: {exc.user_message}")
            continue
        if ref.filename == name:
            renamed = f" as “{name}”" if name != up.name else ""
            _notice("success", f"{up.name}: stored{renamed}" + (" (replacing the old file)." if overwrite else "."))
        else:
            _notice("info", f"{up.name}: stored as “{ref.filename}”, because a different image already had that "
                            "name. Tick “Replace files with the same name” to overwrite instead.")
        st.session_state[K_SELECTED] = ref.filename


def _select(name: str) -> None:
    st.session_state[K_SELECTED] = name
    st.session_state[K_MASK] = None


def _save_mask(client: ComfyClient, original: str, mask_png: bytes, image_bytes: bytes) -> None:
    base = original.rsplit(".", 1)[0]
    try:
        ref = client.upload_mask(mask_png, f"{base}_mask.png", FileRef(original, "", "input"), overwrite=True)
        stored = client.view(ref)
        preview = composite(image_bytes, stored)
    except E.ComfyPanelError as exc:
        _notice("error", exc.user_message)
        return
    st.session_state[K_MASK] = (original, ref, preview)
    _notice("success", f"Mask saved as “{ref.image_value}”. Use that name as the image in Generate to repaint "
                       "the marked area.")


def paint_mask(image: bytes, size: tuple[int, int], key: str) -> Any:
    """A drawing canvas over the image (streamlit-drawable-canvas 0.13); returns the painted RGBA
    layer as a PIL image, or None when nothing is painted or painting is unavailable here."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception:  # not installed, or custom components unavailable (AppTest)
        st.caption("Painting is not available here; upload a mask image instead.")
        return None
    from PIL import Image

    width = min(640, size[0])
    height = max(1, round(size[1] * width / size[0]))
    st.caption("Paint over the area to change. Brush size:")
    brush = st.slider("Brush size", 5, 80, 30, key=f"{key}_brush", label_visibility="collapsed")
    result = st_canvas(stroke_width=brush, stroke_color="rgba(255, 40, 80, 0.8)", background_image=image,
                       height=height, width=width, drawing_mode="freedraw", key=key, return_image_data=True)
    data = getattr(result, "image_data", None)
    if data is None:
        return None
    layer = Image.fromarray(data.astype("uint8"), "RGBA")
    if layer.getchannel("A").getbbox() is None:
        return None
    return layer


def render() -> None:
    client = session.client()
    if client is None:
        return  # the page's status line says how to connect
    holder = [client]
    with st.container(border=True):
        st.file_uploader("Upload images", type=["png", "jpg", "jpeg", "webp"], accept_multiple_files=True,
                         key="cp_w_inputs_upload", on_change=_on_upload, args=(holder,),
                         help="Each file is checked before it is sent: it must really be an image.")
        st.checkbox("Replace files with the same name", key="cp_w_inputs_overwrite")
    for kind, text in st.session_state.pop(K_NOTICE, []):
        getattr(st, kind)(plain(text))
    try:
        names = input_images(client)
    except E.ComfyPanelError as exc:
        st.error(plain(exc.user_message))
        return
    if not names:
        st.caption("The server's input folder has no images yet.")
        return
    query = st.text_input("Search", key="cp_w_inputs_search", placeholder="File name contains…")
    shown = [n for n in names if query.lower() in n.lower()] if query else names
    pages = max(1, (len(shown) + PAGE - 1) // PAGE)
    page = st.number_input("Page", 1, pages, 1, key="cp_w_inputs_page") if pages > 1 else 1
    selected = st.session_state.get(K_SELECTED)
    cols = st.columns(6)
    for i, name in enumerate(shown[(page - 1) * PAGE: page * PAGE]):
        with cols[i % 6]:
            data = thumb(client, name)
            if data:
                st.image(data, caption=plain(name), width="stretch")
            else:
                st.caption(plain(name) + " (no preview)")
            st.button("Open", key=f"cp_w_inputs_open_{name}", on_click=_select, args=(name,),
                      type="primary" if name == selected else "secondary", width="stretch")
    if selected:
        detail(client, selected)


def detail(client: ComfyClient, name: str) -> None:
    st.divider()
    st.subheader(plain(name))
    try:
        image = image_bytes(client, FileRef(name, "", "input"))
        info = check_upload(image, max_pixels=10**9)
    except E.ComfyPanelError as exc:
        st.error(plain(exc.user_message))
        return
    st.caption(f"{info.width} × {info.height} pixels · {info.format}")
    mask_state = st.session_state.get(K_MASK)
    left, right = st.columns(2)
    with left:
        tab_paint, tab_upload = st.tabs(["Paint a mask", "Upload a mask"])
        with tab_paint:
            layer = paint_mask(image, (info.width, info.height), key=f"cp_w_inputs_canvas_{name}")
            if st.button("Save painted mask", key="cp_w_inputs_save_paint", disabled=layer is None):
                _save_mask(client, name, mask_from_strokes(layer, (info.width, info.height)), image)
                st.rerun()
        with tab_upload:
            up = st.file_uploader("Mask image", type=["png", "jpg", "jpeg", "webp"], key="cp_w_inputs_mask_upload",
                                  help="White (or transparent) marks the area to repaint.")
            if st.button("Save uploaded mask", key="cp_w_inputs_save_upload", disabled=up is None):
                try:
                    mask_png = mask_from_image(up.getvalue(), (info.width, info.height))
                except E.ComfyPanelError as exc:
                    _notice("error", exc.user_message)
                else:
                    _save_mask(client, name, mask_png, image)
                st.rerun()
    with right:
        if mask_state and mask_state[0] == name:
            st.image(mask_state[2], caption="Masked area (tinted)", width="stretch")
            st.caption(f"Stored as {plain(mask_state[1].image_value)}")
        else:
            st.image(image, caption=plain(name), width="stretch")
