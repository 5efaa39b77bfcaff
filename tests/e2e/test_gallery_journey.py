"""The Gallery in Chromium: sync imports runs made elsewhere, thumbnails and the full image are
served by the panel (never a ComfyUI URL), the page number lives in the URL."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import Page, expect

from components import session

from .test_journey import settle, shot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def wf(color: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 320, "height": 200, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "gallery_e2e"}},
    }


def test_gallery_journey(page: Page, start_panel, comfy_double):
    for color in (0xFF0000, 0x00AA00, 0x0000FF):
        requests.post(comfy_double.url + "/prompt", json={"prompt": wf(color)}).raise_for_status()
    comfy_double.wait_idle()
    panel = start_panel(COMFYUI_URL=comfy_double.url)
    page.goto(panel.url)
    settle(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Gallery").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Gallery")
    settle(page)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("No jobs match")).to_be_visible()
    main.get_by_role("button", name="Sync with server").click()
    settle(page)
    expect(main.get_by_text("3 run(s) imported from the server")).to_be_visible()
    expect(main.get_by_text("3 job(s), page 1 of 1, newest first")).to_be_visible()
    images = main.locator("[data-testid='stImage'] img")
    expect(images).to_have_count(3)
    for src in images.evaluate_all("els => els.map(e => e.src)"):
        assert src.startswith(panel.url) and comfy_double.url not in src
    shot(page, "gallery-01-grid")

    # search by a parameter value, then the detail view with the full image on demand
    search = main.get_by_label("Search prompts and every parameter value")
    search.fill(str(0x00AA00))
    search.press("Enter")
    settle(page)
    expect(main.get_by_text("1 job(s), page 1 of 1, newest first")).to_be_visible()
    page.locator(".st-key-cp_w_gallery_grid button", has_text="Details").first.click()
    settle(page)
    detail = page.locator(f".st-key-{session.gallery_widget('detail')}")
    expect(detail.get_by_text("made outside the panel")).to_be_visible()
    detail.get_by_role("button", name="Show full image").click()
    settle(page)
    expect(detail.get_by_role("button", name="Download", exact=True)).to_be_visible()
    for src in detail.locator("img").evaluate_all("els => els.map(e => e.src)"):
        assert comfy_double.url not in src
    shot(page, "gallery-02-detail")
    assert "page" not in page.url or "page=1" in page.url  # only the page number ever goes to the URL
    assert "key" not in page.url.lower() and "token" not in page.url.lower()
