"""The Admin page in Chromium: read-only first, unlock, a confirmed action, the Manager, the audit
trail. Screenshots: artifacts/screenshots/admin-*.png."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from comfypanel import admin as gate
from comfypanel.audit import AuditLog
from tests.doubles.manager import ManagerDouble

from .test_journey import settle, shot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PASSWORD = "e2e admin password"


@pytest.fixture
def manager_double():
    with ManagerDouble(flavour="v4", legacy_ui=True) as double:  # the legacy UI: model list, git URL
        yield double


def test_admin_journey(page: Page, start_panel, manager_double, tmp_path):
    # start_panel points --secrets.files at tmp_path/no-secrets.toml: give it an admin password
    (tmp_path / "no-secrets.toml").write_text(
        f'[comfyui.admin]\npassword_hash = "{gate.hash_password(PASSWORD, n=2**10)}"\n')
    panel = start_panel(COMFYUI_URL=manager_double.url)
    page.goto(panel.url + "/admin")
    settle(page)
    main = page.get_by_test_id("stMain")
    expect(page.get_by_role("heading", level=1)).to_have_text("Admin")
    expect(main.get_by_text("Read-only")).to_be_visible()
    expect(main.get_by_role("button", name="Clear queue")).to_be_disabled()
    shot(page, "admin-00-read-only")

    # wrong, then right
    field = main.get_by_label("Admin password", exact=True).and_(page.get_by_test_id("stTextInputField"))
    field.fill("not it")
    main.get_by_role("button", name="Unlock").click()
    settle(page)
    expect(main.get_by_text("Wrong password. 4 tries left before a pause.")).to_be_visible()
    main.get_by_label("Admin password", exact=True).and_(page.get_by_test_id("stTextInputField")).fill(PASSWORD)
    main.get_by_role("button", name="Unlock").click()
    settle(page)
    expect(main.get_by_text("Admin", exact=True).first).to_be_visible()

    # a confirmed action
    main.get_by_role("button", name="Unload models").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Unload every model")
    shot(page, "admin-01-confirm")
    dialog.get_by_role("button", name="Unload models").click()
    settle(page)
    expect(main.get_by_text("The server unloaded its models.")).to_be_visible()
    # the live chart: a session poller feeds a run_every fragment (no HTTP in the fragment)
    expect(main.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=15_000)
    shot(page, "admin-02-system")

    # the Manager: detect, install from the registry id
    main.get_by_test_id("stButtonGroup").get_by_text("Manager", exact=True).click()
    settle(page)
    expect(main.get_by_text("ComfyUI-Manager 4 (pip package), legacy UI V4.3")).to_be_visible()
    main.get_by_label("Registry id", exact=True).and_(page.get_by_test_id("stTextInputField")).fill("comfyui-impact-pack")
    main.get_by_label("Registry id", exact=True).and_(page.get_by_test_id("stTextInputField")).press("Enter")
    settle(page)
    main.get_by_role("button", name="Install", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Install", exact=True).click()
    settle(page)
    expect(main.get_by_text("“comfyui-impact-pack” was installed. Restart the server")).to_be_visible()
    shot(page, "admin-03-manager")

    # a model from the Manager's model list: search, pick, confirm; the task table follows it
    main.get_by_text("Install a model from the Manager's model list").click()
    search = main.get_by_label("Search the model list", exact=True).and_(page.get_by_test_id("stTextInputField"))
    search.fill("taef1")
    search.press("Enter")
    settle(page)
    expect(main.get_by_text("1 of 3 models")).to_be_visible()
    main.get_by_role("button", name="Install model", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Download the model “TAEF1 Decoder” (4.71MB) from github.com")
    dialog.get_by_role("button", name="Install model", exact=True).click()
    settle(page)
    expect(main.get_by_text("The model “TAEF1 Decoder” was downloaded into models/vae_approx.")).to_be_visible()
    expect(main.get_by_text("Tasks started from this browser")).to_be_visible()
    assert "taef1_decoder.pth" in manager_double.models_installed
    shot(page, "admin-03b-manager-model")

    # the audit trail
    main.get_by_test_id("stButtonGroup").get_by_text("Audit", exact=True).click()
    settle(page)
    expect(main.get_by_role("button", name="Download CSV")).to_be_enabled()
    shot(page, "admin-04-audit")
    rows = AuditLog(tmp_path / "panel-data" / "audit.sqlite3").query()
    assert [(r.action, r.result) for r in rows] == [
        ("manager_install_model", "ok"), ("manager_install", "ok"), ("free_memory", "ok"), ("admin_unlock", "ok"), ("admin_unlock", "refused")]
