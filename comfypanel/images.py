"""Images: safe open (pixel caps), thumbnails, PNG metadata, and a disk cache of thumbnails.

Everything here works on bytes fetched server-side (``client.view``): the browser never gets a
server URL. A file that is not an image, or that would need gigabytes to decode (a "decompression
bomb", e.g. a 30000×30000 PNG of a few kilobytes), is refused with one plain sentence.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput
from .types import FileRef

__all__ = [
    "ImageRefused",
    "MAX_PIXELS",
    "open_image",
    "thumbnail",
    "png_metadata",
    "ThumbnailCache",
]

# 64 megapixels: an 8K×8K render still opens; a 30000×30000 bomb does not.
MAX_PIXELS = 64_000_000


class ImageRefused(InvalidInput):
    """The bytes are not an image we can show safely."""


def open_image(data: bytes, *, max_pixels: int = MAX_PIXELS, name: str = "The file") -> Image.Image:
    """Open ``data`` lazily after checking its size (the header is read, no pixels are decoded).

    Raises:
        ImageRefused: not an image, or more than ``max_pixels`` pixels.
    """
    limit = f"more than the {max_pixels // 1_000_000} megapixels the panel opens; use a smaller image."
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (warning above ~89 Mpx, error above ~179 Mpx) fires in open()
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) // 1_000_000} megapixels" if pixels else "huge"
        raise ImageRefused(f"{name} is {size}, {limit}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageRefused(f"{name} is not an image the panel can read (PNG, JPEG, WebP, GIF, …).") from None
    w, h = img.size
    if w * h > max_pixels or w <= 0 or h <= 0:
        img.close()
        raise ImageRefused(f"{name} is {w}×{h} pixels, {limit}")
    return img


def _displayable(img: Image.Image) -> Image.Image:
    """A mode WebP can store: RGB or RGBA (CMYK, 16-bit, palette, float and greyscale converted)."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        img = img.convert("I")
        hi = max(1, img.getextrema()[1] or 1)
        scale = 255.0 / 65535.0 if hi > 255 else 1.0
        return img.point(lambda v: v * scale).convert("L").convert("RGB")
    if mode == "F":
        return img.convert("L").convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in img.info:
        return img.convert("RGBA")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, L, 1, HSV


def thumbnail(data: bytes, size: int = 256, *, quality: int = 80, max_pixels: int = MAX_PIXELS) -> bytes:
    """A WebP thumbnail fitting in ``size``×``size`` (first frame of an animation; EXIF rotation applied).

    Raises:
        ImageRefused: see :func:`open_image`.
    """
    img = open_image(data, max_pixels=max_pixels)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        try:
            img.load()
        except (OSError, ValueError, SyntaxError):
            raise ImageRefused("The image file is damaged and cannot be shown.") from None
        frame = ImageOps.exif_transpose(img) or img
        frame = _displayable(frame)
        frame.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        frame.save(out, format="WEBP", quality=quality, method=4)
        return out.getvalue()
    finally:
        img.close()


def png_metadata(data: bytes) -> dict[str, Any]:
    """Text chunks of a PNG (ComfyUI writes ``prompt`` and ``workflow`` as JSON); JSON parsed when it is.

    Never raises: an unreadable file has no metadata.
    """
    try:
        img = open_image(data)
    except ImageRefused:
        return {}
    out: dict[str, Any] = {}
    try:
        info = dict(getattr(img, "text", None) or {})
        for k, v in img.info.items():
            if isinstance(v, str):
                info.setdefault(k, v)
        for key, value in info.items():
            if not isinstance(value, str):
                continue
            try:
                out[str(key)] = json.loads(value) if value[:1] in "{[" else value
            except ValueError:
                out[str(key)] = value
    except Exception:  # a damaged chunk: what was read so far
        pass
    finally:
        img.close()
    return out


class ThumbnailCache:
    """WebP thumbnails on disk keyed by (server id, filename, subfolder, type, size).

    Writes are atomic (temp file + rename), so concurrent sessions and processes never see half a
    file. Holds no credentials: the server id is the address without any key.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @staticmethod
    def key(server_id: str, ref: FileRef, size: int) -> str:
        raw = json.dumps([server_id, ref.filename, ref.subfolder, ref.type, int(size)])
        return hashlib.sha256(raw.encode()).hexdigest()

    def path(self, server_id: str, ref: FileRef, size: int) -> Path:
        k = self.key(server_id, ref, size)
        return self.root / k[:2] / f"{k}.webp"

    def get(self, server_id: str, ref: FileRef, size: int = 256) -> bytes | None:
        try:
            return self.path(server_id, ref, size).read_bytes()
        except OSError:
            return None

    def put(self, server_id: str, ref: FileRef, size: int, data: bytes) -> None:
        target = self.path(server_id, ref, size)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def fetch(self, client: Any, server_id: str, ref: FileRef, size: int = 256) -> tuple[bytes, int | None]:
        """The cached thumbnail, or make it from the full bytes fetched with ``client.view``.

        Returns (webp bytes, size of the full file or ``None`` when served from the cache).
        Raises what ``client.view`` raises (``NotFound`` when the server no longer has the file)
        and :class:`ImageRefused`.
        """
        cached = self.get(server_id, ref, size)
        if cached is not None:
            return cached, None
        full = client.view(ref)
        thumb = thumbnail(full, size)
        self.put(server_id, ref, size, thumb)
        return thumb, len(full)

    def stats(self) -> Mapping[str, int]:
        files = list(self.root.rglob("*.webp")) if self.root.exists() else []
        return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
