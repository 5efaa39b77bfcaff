"""comfypanel.devserver against the real ComfyUI 0.3.75 it installs (first run: 1-3 min install)."""

from __future__ import annotations

import pytest
import requests

from comfypanel import devserver

pytestmark = pytest.mark.real

TIMEOUT = 10  # seconds per request; a loopback CPU server answers these in milliseconds


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    devserver.ensure_installed()
    with devserver.start(data_dir=tmp_path_factory.mktemp("comfy-data")) as srv:
        yield srv


def test_install_marker_matches_recipe():
    devserver.ensure_installed()
    assert devserver.is_installed()
    marker = devserver.install_dir() / ".installed"
    assert marker.read_text().strip() == devserver.RECIPE_VERSION


def test_system_stats_reports_0_3_75(server):
    r = requests.get(f"{server.url}/system_stats", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["system"]["comfyui_version"] == "0.3.75"
    assert server.is_running()


def test_tiny_upscale_models_are_listed(server):
    r = requests.get(f"{server.url}/models/upscale_models", timeout=TIMEOUT)
    assert r.status_code == 200
    assert {"tiny_compact_x1.safetensors", "tiny_compact_x1_fast.safetensors"} <= set(r.json())


def test_upload_lands_in_data_dir(server):
    r = requests.post(
        f"{server.url}/upload/image",
        files={"image": ("devserver-test.png", _png_bytes(), "image/png")},
        data={"overwrite": "true"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "devserver-test.png"
    assert (server.data_dir / "input" / "devserver-test.png").is_file()
    # The cached install is shared by every session: nothing of ours may land there.
    assert not (devserver.comfyui_dir() / "input" / "devserver-test.png").exists()
    assert (server.data_dir / "input" / "example.png").is_file()


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "orange").save(buf, format="PNG")
    return buf.getvalue()
