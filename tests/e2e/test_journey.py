"""One user journey through the real app in Chromium: connected sidebar, all pages, a bad address."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from components import session

from .conftest import ROOT, SCREENSHOTS, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PAGES = ["Generate", "Inputs", "Queue", "Gallery", "Admin"]


def settle(page: Page) -> None:
    """Wait until the script run triggered by the last action has finished."""
    page.wait_for_selector("[data-test-script-state='notRunning']", state="attached")
    page.wait_for_timeout(300)  # let the last deltas paint before looking / screenshotting
    page.wait_for_selector("[data-test-script-state='notRunning']", state="attached")


def status_card(page: Page):
    return page.locator(f".st-key-{session.STATUS_CARD}")


def expect_connected(page: Page) -> None:
    expect(status_card(page)).to_contain_text("Connected")
    expect(status_card(page)).not_to_contain_text("Not connected")


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_journey(page: Page, start_panel, comfy_url):
    panel = start_panel(COMFYUI_URL=comfy_url)
    page.goto(panel.url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(page.get_by_role("heading", level=1)).to_have_text("Generate")
    settle(page)

    # connected on first load, with the server's version
    expect_connected(page)
    expect(sidebar.get_by_test_id("stMetricValue").first).to_have_text("0.3.75")
    expect(sidebar.get_by_text(comfy_url, exact=True)).to_be_visible()
    expect(page.get_by_text(f"Connected to Local ComfyUI at {comfy_url}")).to_be_visible()
    shot(page, "00-first-load")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))

    # every page, through the sidebar navigation; the connection stays
    nav = page.get_by_test_id("stSidebarNav")
    for n, title in enumerate(PAGES, 1):
        nav.get_by_role("link", name=title).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(title)
        settle(page)
        expect_connected(page)
        shot(page, f"{n:02d}-{title.lower()}")
    expect(page.get_by_test_id("stMain").get_by_text("PyTorch", exact=True)).to_be_visible()  # Admin: server details

    # a wrong address: one plain sentence, the typed value stays
    bad = f"http://127.0.0.1:{free_port()}"
    sidebar.get_by_text("Connection settings").click()
    address = sidebar.get_by_label("Server address", exact=True)
    address.fill(bad)
    address.press("Enter")
    settle(page)
    sidebar.get_by_role("button", name=re.compile("Connect")).click()
    alert = sidebar.get_by_test_id("stAlert")
    expect(alert).to_contain_text(f"Cannot reach the server at {bad}")
    settle(page)
    expect(status_card(page)).to_contain_text("Not connected")
    expect(sidebar.get_by_label("Server address", exact=True)).to_have_value(bad)
    assert alert.count() == 1
    body = page.inner_text("body")
    assert "Traceback" not in body
    expect(page.get_by_test_id("stMain").get_by_text("Not connected.")).to_be_visible()
    shot(page, "06-wrong-address")

    # and back to a working server, pressing Connect straight after typing (no Enter)
    address = sidebar.get_by_label("Server address", exact=True)
    address.fill(comfy_url)
    sidebar.get_by_role("button", name=re.compile("Connect")).click()
    expect_connected(page)
    settle(page)
    expect(sidebar.get_by_test_id("stAlert")).to_have_count(0)


def test_deep_link_on_a_fresh_server(page: Page, start_panel, comfy_url):
    """The very first request of a new server process opens a page URL directly."""
    panel = start_panel(COMFYUI_URL=comfy_url)
    page.goto(panel.url + "/queue")
    expect(page.get_by_role("heading", level=1)).to_have_text("Queue")
    settle(page)
    expect_connected(page)
    nav = page.get_by_test_id("stSidebarNav")
    expect(nav.get_by_role("link")).to_have_count(len(PAGES))


def test_operator_cloud_key_never_reaches_the_browser(page: Page, start_panel, cloud_double):
    key = cloud_double.api_key
    panel = start_panel(COMFY_CLOUD_API_KEY=key, COMFY_CLOUD_URL=cloud_double.url)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(
        payload if isinstance(payload, str) else payload.decode("latin-1"))))
    page.goto(panel.url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Generate")
    settle(page)
    expect_connected(page)
    card = status_card(page)
    expect(card).to_contain_text("Comfy Cloud")
    expect(card).to_contain_text("Using the operator's key")
    expect(card).to_contain_text("NVIDIA L40S")
    page.get_by_test_id("stSidebar").get_by_text("Connection settings").click()
    settle(page)
    expect(page.get_by_test_id("stSidebar").get_by_label("API key", exact=True)).to_have_value("")
    shot(page, "07-cloud-operator-key")
    assert key not in page.content()
    assert key not in page.url
    assert frames and not any(key in frame for frame in frames)
