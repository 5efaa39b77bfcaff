"""E2E fixtures: the panel under ``streamlit run`` against a ComfyUI double, and Debian's Chromium.

Never ``playwright install``: the browser is the system's ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_OPERATOR_ENV = (
    "COMFYUI_URL", "COMFYUI_TOKEN", "COMFY_CLOUD_API_KEY", "COMFY_CLOUD_URL", "COMFY_PARTNER_API_KEY",
)

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PanelServer:
    """``streamlit run streamlit_app.py`` in a subprocess on a free port."""

    def __init__(self, env_extra: dict[str, str], log_path: Path, secrets_file: Path,
                 launcher: tuple[str, ...] = (sys.executable, "-m", "streamlit")) -> None:
        """``launcher``: what runs ``run streamlit_app.py`` (the load benchmark uses its own wrapper)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _OPERATOR_ENV}
        env.update(env_extra)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [
                *launcher, "run", "streamlit_app.py",
                "--server.port", str(self.port),
                "--server.address", "127.0.0.1",
                "--server.headless", "true",
                "--server.fileWatcherType", "none",
                "--browser.gatherUsageStats", "false",
                # Not the developer's .streamlit/secrets.toml: the operator default comes from env.
                "--secrets.files", str(secrets_file),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {self._log.name}")
            try:
                if requests.get(self.url + "/_stcore/health", timeout=2).text.strip() == "ok":
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"streamlit did not become healthy within {timeout}s; see {self._log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_panel(tmp_path):
    """Start the panel with extra environment variables; stopped at the end of the test."""
    started: list[PanelServer] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def start(**env: str) -> PanelServer:
        env.setdefault("COMFYPANEL_DATA_DIR", str(tmp_path / "panel-data"))  # the audit log
        server = PanelServer(env, tmp_path / f"streamlit-{len(started)}.log", tmp_path / "no-secrets.toml")
        started.append(server)
        server.wait_healthy()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


@pytest.fixture
def comfy_url(comfy_double):
    """The address of a ComfyDouble (ComfyUI 0.3.75) for the panel to connect to."""
    return comfy_double.url
