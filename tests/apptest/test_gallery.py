"""The Gallery page: filters, pagination, selection and every action, against a ComfyDouble."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from comfypanel.ledger import Ledger
from comfypanel.types import FileRef
from comfypanel.workflow import Recipe
from components import session

from .conftest import ROOT

APP = ROOT / "streamlit_app.py"
W = session.gallery_widget

pytestmark = pytest.mark.timeout(120)

# Model-free and runnable by the double and the real server; RandomNoise is not on the output path
# (ComfyUI only runs what an output needs) but holds the seed the gallery re-draws.
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "gallery"}},
    "3": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
    "6": {"class_type": "PrimitiveString", "inputs": {"value": "a red fox"}},
}


def png(color=(200, 30, 30), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def ledger_here(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "panel-data" / "ledger.sqlite3")


def add_job(led: Ledger, pid: str, *, server_id: str, text: str = "a red fox", workflow: str = "txt2img",
            files=(), status="succeeded", created=None, seed: int = 5) -> None:
    api = {k: {**v, "inputs": dict(v["inputs"])} for k, v in GRAPH.items()}
    api["6"]["inputs"]["value"] = text
    api["3"]["inputs"]["noise_seed"] = seed
    recipe = Recipe(source=api, name=workflow, seeds={"3.noise_seed": seed}, api=api)
    led.record_submission(prompt_id=pid, recipe_json=recipe.to_json(), api=api, server_id=server_id,
                          user_label="tester", workflow_name=workflow,
                          params={"6.value": text, "3.noise_seed": seed, "1.width": 64}, _created_at=created)
    led.complete(pid, state=status, files=[FileRef(f) for f in files])


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=30)


def open_gallery(monkeypatch, double) -> AppTest:
    monkeypatch.setenv("COMFYUI_URL", double.url)
    at = app().run()
    at.switch_page("pages/gallery.py").run()
    assert not at.exception, at.exception
    return at


def server_of(double) -> str:
    from comfypanel.connection import Connection

    return Connection.local(double.url).server_id()


def unescape(text: str) -> str:
    """Undo ``components.text.plain``."""
    return re.sub(r"\\(.)", r"\1", text)


def texts(elements) -> list[str]:
    return [unescape(str(e.value)) for e in elements]


def captions(at) -> str:
    return "\n".join(str(c.value) for c in at.main.caption)


def card_ids(at) -> list[str]:
    return [c.key[len(W("sel_")):] for c in at.main.checkbox if c.key and c.key.startswith(W("sel_"))]


def test_empty_gallery_says_where_images_come_from(monkeypatch, comfy_double):
    at = open_gallery(monkeypatch, comfy_double)
    assert at.title[0].value == "Gallery"
    assert any("No jobs match" in i.value for i in at.main.info)
    # drawing the page never calls the server (sync is a button)
    before = len(comfy_double.requests)
    at.run()
    assert [r.path for r in comfy_double.requests[before:] if "history" in r.path or "view" in r.path] == []


def test_grid_thumbnails_pagination_and_filters(monkeypatch, tmp_path, comfy_double):
    sid = server_of(comfy_double)
    Path(comfy_double.output_dir, "fox.png").write_bytes(png())
    led = ledger_here(tmp_path)
    for n in range(50):
        add_job(led, f"job-{n:03d}", server_id=sid, text="a red fox" if n % 2 else "a blue whale",
                workflow="txt2img" if n < 40 else "upscale", files=["fox.png"] if n == 49 else (),
                created=1_700_000_000 + n * 60, status="failed" if n == 48 else "succeeded")
    at = open_gallery(monkeypatch, comfy_double)
    ids = card_ids(at)
    assert len(ids) == 48 and ids[0] == "job-049"  # newest first, one page of 48
    assert any("50 job(s), page 1 of 2" in c for c in captions(at).splitlines())
    assert len(at.main.get("image")) == 1  # the only job with a file: a server-side thumbnail (bytes)
    thumbs = list(Path(tmp_path, "panel-data", "thumbnails").rglob("*.webp"))
    assert len(thumbs) == 1
    # page 2 through the pagination widget, bound to ?page=
    at.session_state[session.W_GALLERY_PAGE] = 2
    at.run()
    assert card_ids(at) == ["job-001", "job-000"]
    # a URL with ?page=2 opens on page 2
    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    linked = app()
    linked.query_params["page"] = "2"
    linked.run()
    linked.switch_page("pages/gallery.py").run()
    assert card_ids(linked) == ["job-001", "job-000"]
    # text search over a parameter value
    at.text_input(key=W("text")).set_value("whale").run()
    ids = card_ids(at)
    assert len(ids) == 25 and all(int(i[-3:]) % 2 == 0 for i in ids)
    assert at.session_state[session.W_GALLERY_PAGE] == 1  # the page was clamped to the new count
    at.text_input(key=W("text")).set_value("").run()
    at.selectbox(key=W("workflow")).set_value("upscale").run()
    assert len(card_ids(at)) == 10
    at.multiselect(key=W("status")).set_value(["failed"]).run()
    assert card_ids(at) == ["job-048"]


def test_selection_zip_and_delete_with_confirmation(monkeypatch, tmp_path, comfy_double):
    sid = server_of(comfy_double)
    led = ledger_here(tmp_path)
    for n in range(3):
        add_job(led, f"job-{n}", server_id=sid, created=1_700_000_000 + n)
    at = open_gallery(monkeypatch, comfy_double)
    at.checkbox(key=W("sel_job-1")).check().run()
    at.checkbox(key=W("sel_job-2")).check().run()
    assert any("2 selected" in m.value for m in at.main.markdown)
    at.button(key=W("delete")).click().run()
    assert any("cannot delete files" in w.value for w in at.main.warning)
    at.button(key=W("delete_no")).click().run()
    assert not at.main.warning and led.count() == 3
    at.button(key=W("delete")).click().run()
    at.checkbox(key=W("delete_server")).check()
    at.button(key=W("delete_yes")).click().run()
    assert card_ids(at) == ["job-0"]
    assert led.count() == 1
    assert any("2 job(s) deleted" in s and "cannot delete them" in s for s in texts(at.main.success))
    assert any(r.method == "POST" and r.path.endswith("/history") for r in comfy_double.requests)
    # select the page, then clear
    at.button(key=W("select_page")).click().run()
    assert any("1 selected" in m.value for m in at.main.markdown)
    at.button(key=W("clear")).click().run()
    assert not any("selected" in m.value for m in at.main.markdown)


def test_detail_actions_favourite_tag_rerun_and_generate(monkeypatch, tmp_path, comfy_double):
    sid = server_of(comfy_double)
    Path(comfy_double.output_dir, "fox.png").write_bytes(png())
    led = ledger_here(tmp_path)
    add_job(led, "job-a", server_id=sid, files=["fox.png"], seed=1234, text="a *bold* :red[fox]")
    at = open_gallery(monkeypatch, comfy_double)
    at.button(key=W("open_job-a")).click().run()
    text = "\n".join(texts(at.main.markdown))
    assert "1234" in text and sid.split(":")[0] in text
    # favourite + filter favourites
    at.button(key=W("fav")).click().run()
    assert led.get("job-a").favourite
    # tags
    at.text_input(key=W("tag_job-a")).set_value("keeper").run()
    at.button(key=W("tag_add")).click().run()
    assert led.get("job-a").tags == ("keeper",)
    at.selectbox(key=W("tag")).set_value("keeper").run()
    assert card_ids(at) == ["job-a"]
    at.button(key=W("untag_0")).click().run()
    assert led.get("job-a").tags == ()
    # full image on demand, with its PNG metadata
    at.button(key=W("full_job-a/0")).click().run()
    assert len(at.main.get("image")) >= 2
    # re-run exactly: same graph, recorded in the ledger before sending
    at.button(key=W("rerun")).click().run()
    assert any("Submitted again exactly" in s for s in texts(at.main.success)), texts(at.main.error)
    comfy_double.wait_idle()
    jobs, total = led.search()
    assert total == 2
    new = next(j for j in jobs if j.prompt_id != "job-a")
    assert new.status == "queued" and new.api == led.get("job-a").api and new.params["3.noise_seed"] == 1234
    # re-run with a new seed
    at.button(key=W("rerun_seed")).click().run()
    jobs, total = led.search()
    newest = jobs[0]
    assert total == 3 and newest.api["3"]["inputs"]["noise_seed"] != 1234
    assert newest.params["3.noise_seed"] == newest.api["3"]["inputs"]["noise_seed"]
    # sync completes the re-runs from the server's history
    comfy_double.wait_idle()
    at.button(key=W("sync")).click().run()
    assert all(j.status == "succeeded" for j in led.search()[0])
    # open in Generate: the recipe goes to the Generate page's prefill key
    at.button(key=W("open_job-a")).click().run()
    at.button(key=W("generate")).click().run()
    assert at.title[0].value == "Generate"
    # (the Generate page reads and clears the key; until it does, the recipe waits there)
    assert not any("gallery" in str(e.value) for e in at.exception), at.exception
    if session.K_GEN_PREFILL in at.session_state and at.session_state[session.K_GEN_PREFILL] is not None:
        assert at.session_state[session.K_GEN_PREFILL].seeds == {"3.noise_seed": 1234}


def test_jobs_of_another_server_are_shown_without_fetching(monkeypatch, tmp_path, comfy_double):
    led = ledger_here(tmp_path)
    add_job(led, "elsewhere", server_id="local:http://10.0.0.9:8188", files=["x.png"])
    at = open_gallery(monkeypatch, comfy_double)
    at.selectbox(key=W("server")).set_value("local:http://10.0.0.9:8188").run()
    assert card_ids(at) == ["elsewhere"]
    assert not [r for r in comfy_double.requests if "/view" in r.path]
    at.button(key=W("open_elsewhere")).click().run()
    assert at.button(key=W("rerun")).disabled


def test_new_seed_replaces_a_label_keyed_seed():
    from components.gallery_data import _params_with_seeds

    assert _params_with_seeds({"Seed": 5, "Prompt": "fox"}, {"3.seed": 5}, {"3.seed": 9}) == {"Seed": 9, "Prompt": "fox"}
    assert _params_with_seeds({"3.seed": 5}, {"3.seed": 5}, {"3.seed": 9}) == {"3.seed": 9}
    assert _params_with_seeds({"Steps": 5}, {"3.seed": 5}, {"3.seed": 9}) == {"Steps": 5, "3.seed": 9}


def test_a_new_server_opens_on_its_own_empty_gallery_not_everyones(monkeypatch, tmp_path, comfy_double):
    led = ledger_here(tmp_path)
    add_job(led, "elsewhere", server_id="local:http://10.0.0.9:8188", files=["x.png"])
    at = open_gallery(monkeypatch, comfy_double)  # this server has made nothing yet
    assert card_ids(at) == []
    assert at.selectbox(key=W("server")).value != "All"
    at.selectbox(key=W("server")).set_value("All").run()  # the team gallery is one choice away
    assert card_ids(at) == ["elsewhere"]
