"""The `comfypanel` command against the real server: status, run with --set, errors and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import recordings_dir

pytestmark = pytest.mark.real


def _cli(*args, env_extra=None):
    import os

    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "comfypanel.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_status(real_server):
    r = _cli("status", "--server", real_server.url)
    assert r.returncode == 0, r.stderr
    assert "ComfyUI:  0.3.75" in r.stdout and "Queue:" in r.stdout


def test_run_writes_every_output_with_set(real_server, tmp_path):
    wf = recordings_dir() / "workflows" / "empty_save.json"
    r = _cli("run", str(wf), "--server", real_server.url, "--set", "1.width=40", "--set", "1.height=24",
             "--set", "2.filename_prefix=cli_test", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 2
    assert Image.open(io.BytesIO(files[0].read_bytes())).size == (40, 24)
    assert "succeeded" in r.stderr or "Finished" in r.stderr


def test_run_refusals_and_exit_codes(real_server, tmp_path):
    wf = recordings_dir() / "workflows" / "empty_save.json"
    r = _cli("run", str(wf), "--server", real_server.url, "--set", "1.width=wide", "--out", str(tmp_path))
    assert r.returncode == 2 and "whole number" in r.stderr
    r = _cli("run", str(wf), "--server", real_server.url, "--set", "1.width=0", "--out", str(tmp_path))
    assert r.returncode == 1 and "must be at least 1" in r.stderr and "Traceback" not in r.stderr
    empty = tmp_path / "ui.json"
    empty.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    r = _cli("run", str(empty), "--server", real_server.url, "--out", str(tmp_path))
    assert r.returncode == 2 and "no nodes" in r.stderr
    r = _cli("run", str(tmp_path / "missing.json"), "--server", real_server.url, "--out", str(tmp_path))
    assert r.returncode == 2 and "There is no file" in r.stderr
    r = _cli("status", "--server", "http://127.0.0.1:9")
    assert r.returncode == 3 and "Cannot reach the server at http://127.0.0.1:9" in r.stderr


def _pair_file(tmp_path, name):
    from tests.unit.test_workflow_convert import pair

    p = pair(name)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(p["ui"]))
    return path, p


def test_convert_prints_what_the_frontend_would_send(real_server, tmp_path):
    path, p = _pair_file(tmp_path, "m_subgraph_widget_and_link")
    r = _cli("convert", str(path), "--server", real_server.url)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert {k: v["inputs"] for k, v in got.items()} == {k: v["inputs"] for k, v in p["api"].items()}
    api_file = recordings_dir() / "workflows" / "empty_save.json"
    r = _cli("convert", str(api_file))  # API files need no server and come back unchanged
    assert r.returncode == 0 and json.loads(r.stdout) == {
        k: {kk: vv for kk, vv in v.items()} for k, v in json.loads(api_file.read_text()).items()}


def test_run_a_save_file_and_set_by_title(real_server, tmp_path):
    path, p = _pair_file(tmp_path, "a_simple_chain")
    r = _cli("run", str(path), "--server", real_server.url, "--set", "My Blur.blur_radius=2",
             "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "out").iterdir())
