"""The Queue page in Chromium: live refresh while busy, cancel, interrupt with confirmation."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from components import session

from .test_journey import settle, shot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def wf(color: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def test_queue_journey(page: Page, start_panel, comfy_double):
    comfy_double.script(class_delays={"ImageBlur": 3.0}, progress_steps={"ImageBlur": 5})
    panel = start_panel(COMFYUI_URL=comfy_double.url)
    page.goto(panel.url)
    settle(page)
    ids = [requests.post(comfy_double.url + "/prompt", json={"prompt": wf(c)}).json()["prompt_id"]
           for c in (1, 2, 3, 4)]
    page.wait_for_timeout(1500)  # the session's monitor polls about once a second
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Queue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Queue")
    settle(page)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("Running", exact=True)).to_be_visible()
    expect(main.get_by_text("outside the panel").first).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text(re.compile(r"Queue: 1 running · [23] waiting"))).to_be_visible()
    shot(page, "queue-01-busy")

    # cancel the last pending job
    page.locator(f".st-key-{session.queue_widget('cancel_' + ids[3])} button").click()
    expect(main.get_by_text("The job was removed from the queue.")).to_be_visible()
    expect(main.get_by_text(re.compile(r"\bCancelled$")).first).to_be_visible()

    # without any click, the fragment follows the queue: the first job finishes
    expect(main.get_by_text(re.compile(r"\bSucceeded$")).first).to_be_visible(timeout=15_000)
    shot(page, "queue-02-first-done")

    # interrupt the running job through the confirmation dialog
    page.locator(f".st-key-{session.queue_widget('interrupt')} button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("next node boundary")
    shot(page, "queue-03-interrupt-dialog")
    dialog.get_by_role("button", name="Interrupt").click()
    expect(main.get_by_text(re.compile("Interrupt sent|already finished|no longer running"))).to_be_visible()
    expect(main.get_by_text(re.compile(r"\bInterrupted$")).first).to_be_visible(timeout=15_000)
    comfy_double.wait_idle(30)
    expect(main.get_by_text("Nothing is running.")).to_be_visible(timeout=15_000)
    shot(page, "queue-04-idle")
