"""Thumbnails and safe opening: bombs refused, odd modes and animations handled, disk cache."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.errors import NotFound
from comfypanel.images import ImageRefused, ThumbnailCache, open_image, png_metadata, thumbnail
from comfypanel.types import FileRef


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def bomb_png(w: int = 30000, h: int = 30000) -> bytes:
    """A tiny PNG whose header claims w×h pixels (the data is never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def webp_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "WEBP"
    return img.size


@pytest.mark.parametrize("w,h,shown", [(30000, 30000, "900 megapixels"), (10000, 10000, "10000×10000 pixels"),
                                        (9000, 7200, "9000×7200 pixels")])
def test_a_decompression_bomb_is_refused_with_a_sentence(w, h, shown):
    data = bomb_png(w, h)
    assert len(data) < 200
    with pytest.raises(ImageRefused) as info:
        thumbnail(data)
    msg = str(info.value)
    assert shown in msg and "64 megapixels the panel opens" in msg and "\n" not in msg


def test_not_an_image_is_refused():
    with pytest.raises(ImageRefused, match="not an image"):
        thumbnail(b"hello, I am a text file named .png")
    with pytest.raises(ImageRefused):
        open_image(b"")


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("I;16", "PNG"), ("P", "PNG"),
                                      ("LA", "PNG"), ("L", "PNG"), ("1", "PNG"), ("F", "TIFF"), ("RGBA", "PNG")])
def test_odd_modes_make_a_thumbnail(mode, fmt):
    img = Image.new(mode, (600, 300))
    if mode == "I;16":
        raw = bytes(range(256)) * (600 * 300 * 2 // 256)
        img = Image.frombytes("I;16", (600, 300), raw + b"\0" * (600 * 300 * 2 - len(raw)))
    assert webp_size(thumbnail(encode(img, fmt))) == (256, 128)


def test_sixteen_bit_keeps_its_contrast():
    img = Image.new("I;16", (64, 64))
    img.paste(65535, (0, 0, 32, 64))
    thumb = Image.open(io.BytesIO(thumbnail(encode(img), size=64))).convert("L")
    assert thumb.getpixel((5, 5)) > 200 and thumb.getpixel((60, 5)) < 50


def test_animated_gif_and_webp_use_the_first_frame():
    frames = [Image.new("RGB", (100, 50), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("GIF", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        thumb = Image.open(io.BytesIO(thumbnail(data, size=50))).convert("RGB")
        r, g, b = thumb.getpixel((10, 10))
        assert r > 200 and b < 60, fmt


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°
    assert webp_size(thumbnail(encode(img, "JPEG", exif=exif), size=100)) == (50, 100)


def test_png_metadata_reads_comfyui_chunks():
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "EmptyImage"}}))
    info.add_text("Comment", "hello")
    meta = png_metadata(encode(Image.new("RGB", (4, 4)), pnginfo=info))
    assert meta["prompt"] == {"1": {"class_type": "EmptyImage"}} and meta["Comment"] == "hello"
    assert png_metadata(b"junk") == {} and png_metadata(bomb_png()) == {}


def test_disk_cache_fetches_once_per_key(comfy_double, tmp_path):
    (tmp_path / "x").mkdir()
    with open(f"{comfy_double.output_dir}/cat.png", "wb") as f:
        f.write(encode(Image.new("RGB", (512, 512), (9, 9, 9))))
    client = ComfyClient(Connection.local(comfy_double.url))
    cache = ThumbnailCache(tmp_path / "thumbs")
    ref = FileRef("cat.png")
    thumb, size = cache.fetch(client, "local:a", ref)
    assert size is not None and size > len(thumb) and webp_size(thumb) == (256, 256)
    views = len([r for r in comfy_double.requests if r.path.endswith("/view")])
    again, size2 = cache.fetch(client, "local:a", ref)
    assert again == thumb and size2 is None
    assert len([r for r in comfy_double.requests if r.path.endswith("/view")]) == views
    assert cache.get("local:b", ref) is None and cache.get("local:a", ref, 128) is None  # keyed by server and size
    assert not list((tmp_path / "thumbs").rglob("*.tmp"))
    with pytest.raises(NotFound):
        cache.fetch(client, "local:a", FileRef("gone.png"))
    client.close()
