"""Browser journeys on the Generate and Inputs pages against the REAL ComfyUI 0.3.75 (CPU).

A first-time user: upload a colleague's "Save"-format workflow, change a value, Generate, see the
image (its pixels are checked); paint a mask over an input image (the stored file's alpha is
checked); start a slow run and cancel it. Screenshots of each state go to artifacts/screenshots/.
"""

from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image

from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.types import FileRef
from tests.e2e.conftest import SCREENSHOTS
from tests.helpers import workflow
from tests.unit.test_workflow_convert import pair

pytestmark = pytest.mark.e2e


def _open(page, url):
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_selector("[data-test-script-state='notRunning']", state="attached", timeout=60_000)
    page.get_by_text("Connected").first.wait_for(timeout=30_000)


def _settle(page):
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-test-script-state='notRunning']", state="attached", timeout=60_000)


def _upload_workflow(page, path):
    page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(path))
    _settle(page)


def test_save_file_to_checked_pixels(start_panel, page, real_server, tmp_path):
    panel = start_panel(COMFYUI_URL=real_server.url)
    _open(page, panel.url)
    page.screenshot(path=str(SCREENSHOTS / "generate-1-empty.png"))
    ui = pair("a_simple_chain")["ui"]
    path = tmp_path / "colleague-blur.json"
    path.write_text(json.dumps(ui))
    _upload_workflow(page, path)
    page.get_by_text("A “Save” workflow, converted").wait_for()
    page.get_by_text("Advanced (").click()
    width = page.get_by_label("Width", exact=True)
    width.fill("40")  # the file says 64
    width.press("Enter")
    _settle(page)
    page.screenshot(path=str(SCREENSHOTS / "generate-2-form.png"), full_page=True)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("Finished: 1 file").wait_for(timeout=90_000)
    _settle(page)
    page.screenshot(path=str(SCREENSHOTS / "generate-3-result.png"), full_page=True)
    img = page.locator("[data-testid='stImage'] img").last
    src = img.get_attribute("src")
    data = page.request.get(panel.url + src if src.startswith("/") else src).body()
    out = Image.open(io.BytesIO(data)).convert("RGB")
    assert out.size == (40, 48)  # the edited width was sent
    pixel = out.getpixel((20, 20))
    assert all(abs(a - b) <= 2 for a, b in zip(pixel, (255, 0, 0))), pixel  # the file's colour, blurred
    assert page.get_by_role("button", name="Download").count() >= 1


def test_paint_a_mask_and_check_the_stored_alpha(start_panel, page, real_server):
    panel = start_panel(COMFYUI_URL=real_server.url)
    _open(page, panel.url)
    page.get_by_role("link", name="Inputs").click()
    _settle(page)
    page.get_by_role("button", name="Open").first.click()
    _settle(page)
    canvas_frame = page.locator("canvas.upper-canvas").first
    canvas_frame.wait_for(timeout=30_000)
    canvas_frame.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = canvas_frame.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    for i in range(12):
        page.mouse.move(box["x"] + box["width"] * (0.2 + 0.03 * i), box["y"] + box["height"] * 0.4, steps=2)
    page.mouse.up()
    _settle(page)
    page.screenshot(path=str(SCREENSHOTS / "inputs-painting.png"), full_page=True)
    save = page.get_by_role("button", name="Save painted mask")
    deadline = time.monotonic() + 20
    while save.is_disabled() and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    save.click()
    page.get_by_text("Stored as clipspace/example_mask.png").wait_for(timeout=30_000)  # stays on the page
    page.screenshot(path=str(SCREENSHOTS / "inputs-mask.png"), full_page=True)
    client = ComfyClient(Connection.local(real_server.url))
    stored = Image.open(io.BytesIO(client.view(FileRef("example_mask.png", "clipspace", "input")))).convert("RGBA")
    assert stored.getchannel("A").getextrema() == (0, 255)  # painted = alpha 0 (masked), the rest untouched


def test_cancel_a_slow_run(start_panel, page, real_server, tmp_path):
    panel = start_panel(COMFYUI_URL=real_server.url)
    _open(page, panel.url)
    slow = workflow("slow_blur")
    slow["2"]["inputs"]["sigma"] = 9.5 - (time.time() % 1)  # not cached by an earlier run
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(slow))
    _upload_workflow(page, path)
    page.get_by_role("button", name="Generate").click()
    page.get_by_role("button", name="Cancel").wait_for(timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "generate-4-running.png"), full_page=True)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("The job was stopped before it finished.", exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "generate-5-cancelled.png"), full_page=True)


def test_phone_width_example_journey(start_panel, browser, real_server):
    """A phone-width screen: load a bundled example and generate; the form and result fit."""
    panel = start_panel(COMFYUI_URL=real_server.url)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(panel.url)
        page.wait_for_selector("[data-testid='stApp']")
        _settle(page)
        page.get_by_role("tab", name="Examples").click()
        page.get_by_role("button", name="Load example").click()
        _settle(page)
        page.get_by_text("Invert a photo").first.wait_for()
        page.get_by_role("button", name="Generate").click()
        page.get_by_text("Finished: 1 file").wait_for(timeout=90_000)
        _settle(page)
        page.screenshot(path=str(SCREENSHOTS / "generate-phone.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways on a phone ({width}px)"
    finally:
        context.close()
