"""The `comfypanel` command against the real server: status, run with --set, errors and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
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
    # caught by pre-flight, before anything is sent
    r = _cli("run", str(wf), "--server", real_server.url, "--set", "1.width=0", "--out", str(tmp_path))
    assert r.returncode == 2 and "must be at least 1" in r.stderr and "Traceback" not in r.stderr
    # refused by the server itself (LoadImage values are not checked against the list beforehand)
    inv = recordings_dir() / "workflows" / "invert_save.json"
    r = _cli("run", str(inv), "--server", real_server.url, "--set", "1.image=nope.png", "--out", str(tmp_path))
    assert r.returncode == 1 and "“nope.png” is not on the server" in r.stderr and "Traceback" not in r.stderr
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


def test_inspect_lists_simple_and_advanced(real_server):
    wf = recordings_dir() / "workflows" / "slow_blur.json"
    r = _cli("inspect", str(wf), "--server", real_server.url)
    assert r.returncode == 0, r.stderr
    assert "Advanced · " in r.stdout and "--set 2.blur_radius=" in r.stdout
    sd = Path(__file__).resolve().parents[1] / "data" / "workflows" / "sd15_txt2img.json"
    r = _cli("inspect", str(sd), "--server", real_server.url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "Simple" and any("[positive]" in ln for ln in lines) and any("[seed]" in ln for ln in lines)
    assert any(ln.startswith("error: ") and "checkpoints" in ln for ln in lines)  # no models on this server


def test_run_refuses_before_sending_when_preflight_fails(real_server, tmp_path):
    sd = Path(__file__).resolve().parents[1] / "data" / "workflows" / "sd15_txt2img.json"
    r = _cli("run", str(sd), "--server", real_server.url, "--set", "seed=42", "--set", "positive=a red fox",
             "--out", str(tmp_path))
    assert r.returncode == 2 and "error: " in r.stderr and "checkpoints" in r.stderr
    r = _cli("run", str(sd), "--server", real_server.url, "--set", "flavour=3", "--out", str(tmp_path))
    assert r.returncode == 2 and "no parameter called “flavour”" in r.stderr
