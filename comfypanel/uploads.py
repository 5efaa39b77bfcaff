"""Checks and conversions for what a person uploads: input images and masks.

ComfyUI stores whatever bytes it is sent (a text file named .png passes its validation and fails
only at run time), so the panel checks real image content before uploading: the format by its
bytes, a pixel cap against decompression bombs, and the server's upload size limit.

Masks follow ComfyUI's convention: ``POST /upload/mask`` replaces the original's alpha with the
uploaded image's alpha, and LoadImage reads mask = 1 − alpha, so **painted pixels get alpha 0**.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidInput

__all__ = ["ImageInfo", "check_upload", "upload_name", "mask_from_strokes", "mask_from_image", "composite",
           "MAX_PIXELS"]

MAX_PIXELS = 64_000_000  # 8000×8000: far above any useful input image, far below a bomb
ACCEPTED = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str

    @property
    def mime(self) -> str:
        return ACCEPTED.get(self.format, "application/octet-stream")


def check_upload(data: bytes, *, max_bytes: int | None = None, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check that ``data`` is a real PNG, JPEG or WebP image the server can take.

    Raises:
        InvalidInput: one sentence saying what is wrong (not an image, damaged, too many pixels,
        larger than the server accepts, an unsupported format).
    """
    if not data:
        raise InvalidInput("The file is empty; choose an image.")
    if max_bytes and len(data) > max_bytes:
        raise InvalidInput(
            f"The image is {len(data) / 1_048_576:.1f} MB, more than the {max_bytes / 1_048_576:.0f} MB this "
            "server accepts; use a smaller or more compressed image."
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h), mode = img.format or "", img.size, img.mode
            if w * h > max_pixels:
                raise InvalidInput(
                    f"The image is {w}×{h} pixels, too large to process safely; scale it down below "
                    f"{max_pixels // 1_000_000} megapixels."
                )
            if fmt not in ACCEPTED:
                raise InvalidInput(f"{fmt or 'This'} images are not accepted; use PNG, JPEG or WebP.")
            img.verify()  # reads the whole file: a truncated or corrupt image fails here
    except InvalidInput:
        raise
    except Image.DecompressionBombError:
        raise InvalidInput("The image claims far more pixels than a real picture; it was not uploaded.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidInput(
            "This file is not an image (or it is damaged), even if its name ends in .png or .jpg; choose "
            "another file."
        ) from None
    return ImageInfo(fmt, w, h, mode)


_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|webp)$", re.IGNORECASE)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]+')


def upload_name(name: str | None, info: ImageInfo | None = None, *, max_chars: int = 120) -> str:
    """The file name to upload under: what the person's file is called, made safe for the server.

    ComfyUI refuses names that leave its input folder (400) and cannot store names its file system
    rejects, and LoadImage only lists files with an image extension. So: the last path part only
    (no ``../``, no folders, either slash), no control or Windows-reserved characters, no leading
    dots, at most ``max_chars`` characters (the extension kept), an image extension matching
    ``info`` when it has none; letters of any script stay as they are (NFC-normalised).
    """
    text = unicodedata.normalize("NFC", str(name or ""))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE.sub("_", text).strip().rstrip(". ")
    suffix_match = _IMAGE_SUFFIX.search(text)
    if suffix_match:
        stem, suffix = text[: suffix_match.start()], text[suffix_match.start():]
    else:
        stem, suffix = text, _EXTENSIONS.get(info.format if info else "", ".png")
    stem = stem.strip().lstrip(".").rstrip(". ")[: max(1, max_chars - len(suffix))].rstrip(". ") or "image"
    return stem + suffix


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    return img


def mask_from_strokes(strokes_rgba: Image.Image, size: tuple[int, int]) -> bytes:
    """A mask PNG from a painted layer (anything painted = masked), resized to the image.

    Painted pixels become alpha 0 (ComfyUI: masked), everything else alpha 255.
    """
    layer = strokes_rgba.convert("RGBA").resize(size, Image.Resampling.NEAREST)
    painted = layer.getchannel("A").point(lambda a: 255 if a > 0 else 0)
    alpha = ImageOps.invert(painted)
    out = Image.new("RGBA", size, (0, 0, 0, 255))
    out.putalpha(alpha)
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return buf.getvalue()


def mask_from_image(data: bytes, size: tuple[int, int]) -> bytes:
    """A mask PNG from an uploaded mask image: white (or transparent) = masked.

    Accepts a black-and-white picture (white marks the area) or an RGBA image whose transparent
    pixels mark it; scaled to ``size``.

    Raises:
        InvalidInput: not an image.
    """
    check_upload(data)
    img = _open(data)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
        masked = ImageOps.invert(alpha.point(lambda a: 255 if a > 127 else 0))
    elif img.mode.startswith("I"):
        # 16-bit greyscale: Pillow's convert("L") clips at 255, which would mark almost every pixel;
        # compare against the middle of the 16-bit range instead.
        masked = img.convert("I").point(lambda v: v / 257).convert("L").point(lambda v: 255 if v > 127 else 0)
    elif img.mode == "F":
        masked = img.point(lambda v: v * 255).convert("L").point(lambda v: 255 if v > 127 else 0)
    else:
        masked = img.convert("L").point(lambda v: 255 if v > 127 else 0)
    masked = masked.resize(size, Image.Resampling.NEAREST)
    out = Image.new("RGBA", size, (0, 0, 0, 255))
    out.putalpha(ImageOps.invert(masked))
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return buf.getvalue()


def composite(image: bytes, mask_png: bytes, tint: tuple[int, int, int] = (220, 40, 60)) -> bytes:
    """The image with its masked area tinted, to show what will be repainted.

    Raises:
        InvalidInput: the image or the mask is not an image (or too large to open safely).
    """
    from .images import _displayable

    check_upload(image, max_pixels=10**9)  # the pages show the same images; Pillow's own cap still applies
    check_upload(mask_png, max_pixels=10**9)
    try:
        base = _displayable(_open(image)).convert("RGBA")  # 16-bit and CMYK keep their look
        mask = Image.open(io.BytesIO(mask_png)).convert("RGBA").getchannel("A").resize(base.size)
    except (OSError, ValueError, SyntaxError):
        raise InvalidInput("The image or its mask is damaged, so the masked area cannot be shown.") from None
    overlay = Image.new("RGBA", base.size, tint + (0,))
    overlay.putalpha(ImageOps.invert(mask).point(lambda v: 140 if v > 0 else 0))
    out = Image.alpha_composite(base, overlay)
    buf = io.BytesIO()
    out.convert("RGB").save(buf, "PNG")
    return buf.getvalue()
