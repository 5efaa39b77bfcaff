"""The job ledger: API, migrations, crash safety, concurrency, search speed, reconciliation."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from comfypanel import ledger as L
from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from comfypanel.ledger import Ledger, reconcile
from comfypanel.types import FileRef
from comfypanel.workflow import Recipe

ROOT = Path(__file__).resolve().parents[2]

API = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ledger"}},
    "6": {"class_type": "PrimitiveString", "inputs": {"value": "a red fox in the snow"}},
}


def submit(led: Ledger, pid: str, *, text="a red fox in the snow", server="local:http://a", **kw) -> None:
    api = {k: {**v, "inputs": dict(v["inputs"])} for k, v in API.items()}
    api["6"]["inputs"]["value"] = text
    led.record_submission(prompt_id=pid, recipe_json=Recipe(source=api, api=api).to_json(), api=api,
                          server_id=server, user_label=kw.pop("user", "alice"),
                          workflow_name=kw.pop("workflow", "wf"), params={"6.value": text, "1.width": 32}, **kw)


# -- the API ------------------------------------------------------------------------------------------------
def test_location_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COMFYPANEL_LEDGER", str(tmp_path / "x" / "j.db"))
    assert L.ledger_path() == tmp_path / "x" / "j.db"
    monkeypatch.delenv("COMFYPANEL_LEDGER")
    monkeypatch.setenv("COMFYPANEL_DATA_DIR", str(tmp_path / "d"))
    assert L.ledger_path() == tmp_path / "d" / "ledger.sqlite3"
    monkeypatch.delenv("COMFYPANEL_DATA_DIR")
    assert L.ledger_path().name == "ledger.sqlite3" and "comfypanel" in str(L.ledger_path())
    led = Ledger(tmp_path / "x" / "j.db")
    with sqlite3.connect(led.path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_lifecycle_and_record(tmp_path):
    led = Ledger(tmp_path / "l.db")
    submit(led, "p1", batch_id="b1", grid_label="cfg=7")
    rec = led.get("p1")
    assert rec.status == "submitting" and rec.files == () and rec.batch_id == "b1" and rec.grid_label == "cfg=7"
    led.mark_queued("p1", 7)
    assert led.get("p1").status == "queued" and led.get("p1").number == 7
    files = [FileRef("a.png", "sub", "output", "2"), FileRef("b.png", node_id="2")]
    led.complete("p1", state="succeeded", files=files, duration_s=2.5, sizes=[123])
    rec = led.get("p1")
    assert rec.status == "succeeded" and rec.files == tuple(files) and rec.duration_s == 2.5
    assert [o.size for o in rec.outputs] == [123, None] and rec.completed_at >= rec.created_at
    assert rec.params == {"6.value": "a red fox in the snow", "1.width": 32} and rec.api["1"]["inputs"]["width"] == 32
    assert Recipe.from_json(rec.recipe_json).api == rec.api
    led.mark_queued("p1")  # a late "queued" never overwrites an ending
    assert led.get("p1").status == "succeeded"
    submit(led, "p2")
    led.mark_rejected("p2", "KSampler: steps must be at least 1")
    assert led.get("p2").status == "rejected" and "steps" in led.get("p2").error
    with pytest.raises(ValueError):
        led.complete("p2", state="queued", files=())
    assert led.get("nope") is None


def test_search_filters_tags_favourites_delete(tmp_path):
    led = Ledger(tmp_path / "l.db")
    submit(led, "a", text="a red fox", workflow="txt2img", _created_at=1000.0)
    submit(led, "b", text="a blue whale", workflow="txt2img", server="local:http://b", _created_at=2000.0)
    submit(led, "c", text="red_sunset 42", workflow="upscale", user="bob", _created_at=3000.0)
    led.complete("a", state="succeeded", files=[FileRef("a.png")])
    led.complete("b", state="failed", files=(), error="boom")
    ids = lambda **kw: [r.prompt_id for r in led.search(**kw)[0]]  # noqa: E731
    assert ids() == ["c", "b", "a"]  # newest first
    assert ids(text="red") == ["c", "a"] and ids(text="fox red") == ["a"] and ids(text="whale") == ["b"]
    assert ids(text="42") == ["c"] and ids(text="sunset") == ["c"] and ids(text="gira") == []
    assert ids(text="wf-that-is-not") == []
    assert ids(status="failed") == ["b"] and ids(status=["succeeded", "failed"]) == ["b", "a"]
    assert ids(since=1500, until=2500) == ["b"]
    assert ids(workflow="upscale") == ["c"] and ids(server_id="local:http://b") == ["b"]
    assert ids(user_label="bob") == ["c"]
    led.set_favourite("a", True)
    led.add_tag("a", "keeper")
    led.add_tag("c", "keeper")
    led.add_tag("a", "  two   words ")
    assert ids(favourite=True) == ["a"] and ids(favourite=False) == ["c", "b"]
    assert ids(tag="keeper") == ["c", "a"] and led.get("a").tags == ("keeper", "two words")
    led.remove_tag("a", "keeper")
    assert ids(tag="keeper") == ["c"]
    assert led.all_tags() == ["keeper", "two words"] and led.workflows() == ["txt2img", "upscale"]
    page, total = led.search(limit=2, offset=1)
    assert [r.prompt_id for r in page] == ["b", "a"] and total == 3
    assert led.delete(["a", "b", "zzz"]) == 2
    assert ids() == ["c"] and ids(text="fox") == [] and led.check() == "ok"


def test_like_fallback_without_fts(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "_fts_available", lambda: False)
    led = Ledger(tmp_path / "l.db")
    assert not led.fts
    submit(led, "a", text="100% red_fox")
    submit(led, "b", text="blue whale")
    assert [r.prompt_id for r in led.search(text="red_f")[0]] == ["a"]
    assert [r.prompt_id for r in led.search(text="100%")[0]] == ["a"]
    assert led.search(text="10_%")[1] == 0


def test_migration_from_v1_keeps_rows_and_indexes_them(tmp_path):
    path = tmp_path / "old.db"
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    c.execute("INSERT INTO schema_version VALUES (1)")
    L._m1(c, True)
    c.execute("INSERT INTO jobs (prompt_id, status, created_at, updated_at, server_id, search_text) "
              "VALUES ('old', 'succeeded', 1, 1, 'local:x', 'an old heron')")
    c.execute("INSERT INTO outputs (prompt_id, idx, filename) VALUES ('old', 0, 'h.png')")
    c.close()
    led = Ledger(path)
    assert led.schema_version() == L.SCHEMA_VERSION == 2
    rec = led.get("old")
    assert rec.files == (FileRef("h.png"),) and rec.outputs[0].missing is False
    assert [r.prompt_id for r in led.search(text="heron")[0]] == ["old"]
    led.mark_missing("old", FileRef("h.png"))
    assert led.get("old").outputs[0].missing
    Ledger(path)  # opening again migrates nothing


def test_a_newer_schema_is_refused_with_a_sentence(tmp_path):
    path = tmp_path / "new.db"
    Ledger(path)
    with sqlite3.connect(path) as c:
        c.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="newer Comfy Panel"):
        Ledger(path)


# -- crash safety and concurrency ---------------------------------------------------------------------
_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from comfypanel.ledger import Ledger
    from comfypanel.types import FileRef
    led = Ledger({path!r})
    print("ready", flush=True)
    n = 0
    while True:
        pid = f"{{sys.argv[1]}}-{{n}}"
        led.record_submission(prompt_id=pid, recipe_json="{{}}", api={{}}, server_id="s", user_label="u",
                              workflow_name="w", params={{"k": "v" * 2000}})
        led.complete(pid, state="succeeded", files=[FileRef(f"{{pid}}-{{i}}.png") for i in range(20)])
        n += 1
""")


def test_a_process_killed_mid_write_leaves_a_consistent_db(tmp_path):
    path = tmp_path / "crash.db"
    Ledger(path)
    script = _WRITER.format(root=str(ROOT), path=str(path))
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, f"r{round_}"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.1 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    led = Ledger(path)
    assert led.check() == "ok"
    jobs, total = led.search(limit=100_000)
    assert total > 0
    # every job is either only submitted or complete with all of its 20 outputs: never half
    for job in jobs:
        assert (job.status, len(job.outputs)) in (("submitting", 0), ("succeeded", 20))
    submit(led, "after-crash")
    assert led.get("after-crash") is not None


def _process_writer(path: str, tag: str, n: int) -> None:
    led = Ledger(path)
    for i in range(n):
        submit(led, f"{tag}-{i}")
        led.complete(f"{tag}-{i}", state="succeeded", files=[FileRef(f"{tag}-{i}.png")])


def test_concurrent_writers_threads_and_processes(tmp_path):
    path = str(tmp_path / "conc.db")
    led = Ledger(path)
    errors: list[BaseException] = []

    def thread_writer(tag: str) -> None:
        try:
            for i in range(40):
                submit(led, f"{tag}-{i}")
                led.mark_queued(f"{tag}-{i}", i)
                led.add_tag(f"{tag}-{i}", "t")
                led.complete(f"{tag}-{i}", state="succeeded", files=[FileRef(f"{tag}-{i}.png")])
                led.search(text="fox", limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(path, f"p{i}", 40)) for i in range(2)]
    for p in procs:
        p.start()
    threads = [threading.Thread(target=thread_writer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert not errors, errors
    assert led.count() == 6 * 40 and led.search(status="succeeded")[1] == 240
    assert led.search(tag="t")[1] == 160 and led.check() == "ok"


def test_search_over_10k_jobs_is_fast(tmp_path):
    led = Ledger(tmp_path / "big.db")
    words = ["fox", "whale", "heron", "castle", "forest", "neon", "city", "portrait", "sunset", "robot"]
    with led._write() as c:
        for i in range(10_000):
            text = f"a {words[i % 10]} and a {words[(i * 7) % 10]} seed {i}"
            c.execute("INSERT INTO jobs (prompt_id, status, created_at, updated_at, server_id, search_text) "
                      "VALUES (?, 'succeeded', ?, ?, 's', ?)", (f"j{i}", i, i, text))
    led.search(text="warm")
    t0 = time.perf_counter()
    page, total = led.search(text="heron forest")
    took = time.perf_counter() - t0
    assert total == 1000 and len(page) == 48 and page[0].prompt_id == "j9992"
    assert took < 0.2, took


# -- reconciliation against the double --------------------------------------------------------------------
def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def linked(comfy_double, tmp_path):
    client = ComfyClient(Connection.local(comfy_double.url))
    yield Ledger(tmp_path / "r.db"), client, Connection.local(comfy_double.url).server_id()
    client.close()


def run(client, graph=API) -> str:
    q = client.queue_prompt(graph)
    return q.prompt_id


def test_reconcile_imports_external_runs_with_parameters(comfy_double, linked):
    led, client, sid = linked
    pid = run(client)
    comfy_double.wait_idle()
    report = reconcile(led, client, sid)
    assert report.imported == [pid]
    rec = led.get(pid)
    assert rec.external and rec.status == "succeeded" and rec.server_id == sid and len(rec.files) == 1
    assert rec.params["1.width"] == 32 and rec.params["6.value"] == "a red fox in the snow"
    assert Recipe.from_json(rec.recipe_json).build() == rec.api
    assert [r.prompt_id for r in led.search(text="snow")[0]] == [pid]
    assert reconcile(led, client, sid).imported == []  # once only


def test_reconcile_without_object_info_keeps_raw_inputs(comfy_double, linked, monkeypatch):
    led, client, sid = linked
    pid = run(client)
    comfy_double.wait_idle()
    from comfypanel import errors as E

    def no_info(*a, **k):
        raise E.NotSupported("no object_info")

    monkeypatch.setattr(client, "object_info", no_info)
    reconcile(led, client, sid)
    assert led.get(pid).params["1.color"] == 255 and "2.images" not in led.get(pid).params


def test_reconcile_completes_finished_and_marks_forgotten_jobs_lost(comfy_double, linked):
    led, client, sid = linked
    # finished while nobody watched: completed from history
    submit(led, "will-finish", server=sid)
    client.queue_prompt(API, prompt_id="will-finish")
    led.mark_queued("will-finish", 1)
    comfy_double.wait_idle()
    # queued, then the server restarted: history and queue are empty
    submit(led, "forgotten", server=sid)
    led.mark_queued("forgotten", 2)
    submit(led, "just-sending", server=sid)  # within the grace period: may be on its way
    submit(led, "other-server", server="local:http://elsewhere")
    led.mark_queued("other-server", 1)
    report = reconcile(led, client, sid)
    assert report.completed == ["will-finish"] and report.lost == ["forgotten"]
    assert led.get("will-finish").status == "succeeded" and len(led.get("will-finish").files) == 1
    assert led.get("forgotten").status == "lost" and "no longer knows" in led.get("forgotten").error
    assert led.get("just-sending").status == "submitting" and led.get("other-server").status == "queued"
    # after a restart the finished job stays in the ledger with its files
    comfy_double.restart()
    report = reconcile(led, client, sid)
    assert report.imported == [] and led.get("will-finish").status == "succeeded"
    assert report.missing_files == 0 and report.checked_files >= 1


def test_reconcile_marks_files_gone_from_the_server(comfy_double, linked):
    led, client, sid = linked
    pid = run(client)
    comfy_double.wait_idle()
    reconcile(led, client, sid)
    ref = led.get(pid).files[0]
    os.remove(os.path.join(comfy_double.output_dir, ref.subfolder, ref.filename))
    report = reconcile(led, client, sid)
    assert report.missing_files == 1 and led.get(pid).outputs[0].missing
    Path(comfy_double.output_dir, ref.subfolder, ref.filename).write_bytes(png_bytes())
    reconcile(led, client, sid)
    assert not led.get(pid).outputs[0].missing


def test_cloud_runs_are_imported_and_thumbnailed_through_signed_urls(cloud_double, tmp_path):
    from comfypanel.images import ThumbnailCache

    conn = Connection.cloud("test-key", cloud_double.url)
    client = ComfyClient(conn)
    try:
        pid = client.queue_prompt(API).prompt_id
        cloud_double.wait_idle()
        led = Ledger(tmp_path / "c.db")
        report = reconcile(led, client, conn.server_id())
        assert pid in report.imported
        rec = led.get(pid)
        assert rec.status == "succeeded" and rec.files and "test-key" not in rec.recipe_json
        thumb, size = ThumbnailCache(tmp_path / "t").fetch(client, conn.server_id(), rec.files[0])
        assert thumb[:4] == b"RIFF" and size
        assert "test-key" not in conn.server_id()
    finally:
        client.close()


def test_export_zip_fetches_files_server_side_and_lists_the_missing(comfy_double, linked):
    import zipfile

    led, client, sid = linked
    pid = run(client)
    comfy_double.wait_idle()
    reconcile(led, client, sid)
    submit(led, "elsewhere", server="local:http://other")
    led.complete("elsewhere", state="succeeded", files=[FileRef("far.png")])
    data = L.export_zip(client, [led.get(pid), led.get("elsewhere")], sid)
    z = zipfile.ZipFile(io.BytesIO(data))
    names = z.namelist()
    ref = led.get(pid).files[0]
    assert f"{pid[:8]}/{ref.filename}" in names and f"{pid[:8]}/recipe.json" in names
    assert z.read(f"{pid[:8]}/{ref.filename}") == client.view(ref)
    assert "elsewher/far.png" in z.read("missing.txt").decode()
