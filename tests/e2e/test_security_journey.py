"""Security suite (issue 8) in Chromium: a whole Cloud journey leaves the key nowhere the browser or
the logs can see, and server-provided strings carrying HTML / Markdown / JS render as inert text.

Screenshots: artifacts/screenshots/security-*.png.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from comfypanel import admin as gate
from tests.doubles.cloud import CloudDouble

from .conftest import free_port
from .test_journey import expect_connected, settle, shot

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

KEY = "ck-E2E-SECRET-5e1f0c3b9a7d2468"  # distinctive: any occurrence is a leak
PASSWORD = "e2e security password"

WF = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 4321},
          "_meta": {"title": "Canvas"}},
    "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0},
          "_meta": {"title": "Blur"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "secjourney"},
          "_meta": {"title": "Save"}},
}


def _nav(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    settle(page)


def _upload(page: Page, path: Path) -> None:
    page.locator("[data-testid='stFileUploader'] input[type='file']").first.set_input_files(str(path))
    settle(page)


def _generate(page: Page, expect_text: str) -> None:
    page.get_by_test_id("stMain").get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text(expect_text).first.wait_for(timeout=90_000)
    settle(page)


# =========================================================================== the key goes nowhere
@pytest.fixture
def cloud_double():
    """A Cloud account with the test's own key (the storage double records any request carrying it)."""
    with CloudDouble(api_key=KEY) as double:
        yield double


def test_cloud_key_journey_leaves_no_trace(page: Page, start_panel, cloud_double, tmp_path):
    """Connect with a Cloud key typed by the user, generate, look at Queue, Gallery and Admin (unlocked):
    no request URL, no page HTML, no frame the server sends, no cookie or storage, no server log line and
    no file in the panel's data folder holds the key."""
    (tmp_path / "no-secrets.toml").write_text(
        f'[comfyui]\nurl = "http://127.0.0.1:{free_port()}"\n'
        f'[comfyui.admin]\npassword_hash = "{gate.hash_password(PASSWORD, n=2**10)}"\n')
    panel = start_panel(STREAMLIT_LOGGER_LEVEL="debug")

    urls: list[str] = []
    received: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    def on_socket(ws) -> None:
        urls.append(ws.url)  # WebSocket URLs fire no "request" event
        ws.on("framereceived", lambda payload: received.append(
            payload if isinstance(payload, str) else payload.decode("latin-1")))

    page.on("websocket", on_socket)
    consoles: list[str] = []
    page.on("console", lambda m: consoles.append(m.text))
    htmls: dict[str, str] = {}

    page.goto(panel.url)
    settle(page)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stButtonGroup").get_by_text("Cloud", exact=True).click()
    settle(page)
    sidebar.get_by_label("Cloud address", exact=True).fill(cloud_double.url)
    sidebar.get_by_label("API key", exact=True).fill(KEY)
    sidebar.get_by_role("button", name=re.compile("Connect")).click()
    expect_connected(page)
    settle(page)
    expect(sidebar).to_contain_text("Comfy Cloud")
    htmls["sidebar-connected"] = page.content()

    # Generate: a model-free workflow, run to the end (WS with token=, polling, 302 to storage)
    path = tmp_path / "security-workflow.json"
    path.write_text(json.dumps(WF))
    _upload(page, path)
    _generate(page, "Finished: 1 file")
    expect(page.get_by_test_id("stMain").get_by_test_id("stImage").first).to_be_visible()
    htmls["generate"] = page.content()
    shot(page, "security-01-cloud-generate")

    for title in ("Queue", "Gallery"):
        _nav(page, title)
        htmls[title.lower()] = page.content()
    expect(page.get_by_test_id("stMain").get_by_test_id("stImage").first).to_be_visible()  # a thumbnail
    shot(page, "security-02-cloud-gallery")

    _nav(page, "Admin")
    main = page.get_by_test_id("stMain")
    main.get_by_label("Admin password", exact=True).and_(page.get_by_test_id("stTextInputField")).fill(PASSWORD)
    main.get_by_role("button", name="Unlock").click()
    settle(page)
    expect(main.get_by_text("Unlocked with the admin password")).to_be_visible()
    for section in ("System", "Models", "Audit"):
        main.get_by_test_id("stButtonGroup").get_by_text(section, exact=True).click()
        settle(page)
        htmls[f"admin-{section.lower()}"] = page.content()
    shot(page, "security-03-cloud-admin")

    # back on Generate with the connection box open: the key field is a password field, never echoed
    _nav(page, "Generate")
    sidebar.get_by_text("Connection settings").click()
    settle(page)
    htmls["generate-again"] = page.content()
    storage = page.evaluate("() => JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
    panel.stop()  # flush the server's log

    # the controls: the journey really happened and was really recorded
    assert len(htmls) == 8 and all(len(h) > 1000 for h in htmls.values())
    assert any("/_stcore/stream" in u for u in urls) and received
    server_log = Path(tmp_path / "streamlit-0.log").read_text(errors="replace")
    assert "Runtime state:" in server_log and server_log.count("\n") > 100  # Streamlit's debug log was on
    posts = [r for r in cloud_double.requests if r.method == "POST" and r.path == "/api/prompt"]
    assert len(posts) == 1 and posts[0].headers.get("X-API-Key") == KEY
    assert cloud_double.storage.requests and not cloud_double.storage.violations

    leaks = {name: True for name, html in htmls.items() if KEY in html}
    assert leaks == {}, f"the key is in the HTML of {sorted(leaks)}"
    assert not [u for u in urls if KEY in u]
    assert KEY not in page.url
    assert not [f for f in received if KEY in f], "the server sent the key to the browser"
    assert KEY not in storage
    assert not [c for c in consoles if KEY in c]
    assert KEY not in server_log
    data_files = [p for p in (tmp_path / "panel-data").rglob("*") if p.is_file()]
    assert data_files  # the ledger, the audit log, thumbnails
    assert not [p.name for p in data_files if KEY.encode() in p.read_bytes()]


# =========================================================================== inert strings
P_IMG = "<img src=x onerror=window.__pwned=1>"
P_SCRIPT = "<script>window.__pwned=1</script>"
P_BOLD = "**bold**"
P_LINK = "[link](http://evil)"
P_JS_LINK = "[click](javascript:window.__pwned=1)"
TITLES = {"1": P_IMG, "2": P_SCRIPT, "3": P_LINK}
FILE_PREFIX = f"{P_BOLD}{P_JS_LINK}{P_IMG}"  # no "/" (a file name); the server adds _00001_.png
MODELS = [f"{P_IMG}.safetensors", f"{P_BOLD}.safetensors", f"{P_JS_LINK}.safetensors"]
INPUTS = [f"{P_IMG}.png", f"{P_BOLD}{P_JS_LINK}.png"]
ERROR = f"{P_SCRIPT} {P_IMG} {P_BOLD} {P_LINK}"

_PROBE = """() => {
  const attr = (el, a) => (el.getAttribute(a) || '');
  return {
    pwned: typeof window.__pwned,
    imgs: [...document.querySelectorAll('img')].filter(i => attr(i, 'src') === 'x' || attr(i, 'onerror')).length,
    links: [...document.querySelectorAll('a')].filter(a => /evil|javascript:/i.test(attr(a, 'href'))).length,
    scripts: [...document.querySelectorAll('script')].filter(s => s.textContent.includes('__pwned')).length,
    handlers: [...document.querySelectorAll('[onerror],[onload],[onclick]')].length,
    bold: [...document.querySelectorAll('strong, b')].filter(b => b.textContent.trim() === 'bold').length,
  };
}"""


def assert_inert(page: Page, where: str) -> None:
    found = page.evaluate(_PROBE)
    assert found == {"pwned": "undefined", "imgs": 0, "links": 0, "scripts": 0, "handlers": 0, "bold": 0}, (
        where, found)


def assert_literal(page: Page, text: str) -> None:
    """The payload is on the page as the characters the server sent (no backslashes, nothing eaten)."""
    expect(page.get_by_text(text, exact=False).filter(visible=True).first).to_be_visible()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (30, 160, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_server_strings_render_as_inert_text(page: Page, start_panel, make_comfy_double, tmp_path):
    double = make_comfy_double()
    for name in MODELS:
        double.add_model("checkpoints", name)
    for name in INPUTS:
        Path(double.input_dir, name).write_bytes(_png())
    panel = start_panel(COMFYUI_URL=double.url)
    page.goto(panel.url)
    settle(page)
    expect_connected(page)
    main = page.get_by_test_id("stMain")

    # Generate: node titles (author text) in the form and the live status, an output file name
    wf = json.loads(json.dumps(WF))
    for nid, title in TITLES.items():
        wf[nid]["_meta"]["title"] = title
    wf["3"]["inputs"]["filename_prefix"] = FILE_PREFIX
    path = tmp_path / "payload-workflow.json"
    path.write_text(json.dumps(wf))
    _upload(page, path)
    main.get_by_text("Advanced (").first.click()  # every parameter, grouped under its node's title
    settle(page)
    for title in TITLES.values():
        assert_literal(page, title)
    assert_inert(page, "generate: form")

    # a failure whose message carries every payload (scripted once: the re-run then succeeds, the
    # failed node not being cached)
    double.script(fail_at_node="2", exception_message=ERROR, times=1)
    main.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_text(ERROR).filter(visible=True).first).to_be_visible(timeout=90_000)
    settle(page)
    assert_inert(page, "generate: failed")

    # ... and a success whose output file name carries them
    _generate(page, "Finished: 1 file")
    assert_literal(page, FILE_PREFIX + "_00001_.png")
    assert_inert(page, "generate: finished")
    shot(page, "security-04-inert-generate")

    # Queue: the finished list names the failure
    _nav(page, "Queue")
    assert_literal(page, P_SCRIPT)
    assert_inert(page, "queue")

    # Inputs: the server's input file names
    _nav(page, "Inputs")
    for name in INPUTS:
        assert_literal(page, name)
    assert_inert(page, "inputs")
    shot(page, "security-05-inert-inputs")

    # Gallery: the job's detail lists the output file name
    _nav(page, "Gallery")
    main.get_by_role("button", name="Details", exact=True).first.click()  # the successful run (newest first)
    settle(page)
    assert_literal(page, FILE_PREFIX)
    assert_inert(page, "gallery")

    # Admin: model names (the metadata picker lists them as options)
    _nav(page, "Admin")
    main.get_by_test_id("stButtonGroup").get_by_text("Models", exact=True).click()
    settle(page)
    folder = main.get_by_role("combobox", name="Folder")
    folder.click()
    folder.press_sequentially("checkpoints")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    settle(page)
    expect(folder).to_have_value("checkpoints")
    # the file table (its accessible cells are DOM text) and the metadata picker show the names literally
    grid_cells = page.locator("[data-testid^='glide-cell-']")
    for name in MODELS:  # the grid draws after the script run: wait for its cells
        expect(grid_cells.filter(has_text=name).first).to_be_attached()
    cells = grid_cells.all_text_contents()
    assert set(MODELS) <= set(cells), cells
    picker = main.get_by_role("combobox", name="Metadata of")
    assert picker.input_value() in MODELS
    assert_inert(page, "admin: models")
    shot(page, "security-06-inert-models")
