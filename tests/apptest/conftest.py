"""AppTest fixtures: a clean environment and the st.navigation code path.

The servers to connect to are the shared doubles (``comfy_double``, ``make_comfy_double``,
``cloud_double`` from ``tests/doubles/fixtures.py``, loaded by ``tests/conftest.py``).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `components` and `comfypanel` live at the repository root
    sys.path.insert(0, str(ROOT))

_OPERATOR_ENV = (
    "COMFYUI_URL", "COMFYUI_TOKEN", "COMFY_CLOUD_API_KEY", "COMFY_CLOUD_URL", "COMFY_PARTNER_API_KEY",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_operator_env(monkeypatch, tmp_path):
    """No operator default from the machine running the tests: no env, no secrets file, and a
    default address where nothing listens."""
    for name in _OPERATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    # The built-in default is http://127.0.0.1:8188: a developer's real ComfyUI may listen there.
    monkeypatch.setenv("COMFYUI_URL", f"http://127.0.0.1:{free_port()}")
    # Streamlit looks for .streamlit/secrets.toml under the working directory.
    monkeypatch.chdir(tmp_path)
    # The admin audit log: never the developer's own user data directory.
    monkeypatch.setenv("COMFYPANEL_DATA_DIR", str(tmp_path / "panel-data"))


@pytest.fixture(autouse=True)
def navigation_not_legacy_pages(monkeypatch):
    """Keep AppTest on the ``st.navigation`` path.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run and re-detects it from
    the ``pages/`` folder, so from the second run on it would run the requested page file on its
    own (Streamlit's v1 multipage mode) instead of ``streamlit_app.py``. In a real server the
    app's ``st.navigation`` call switches that mode off for good.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def closed_url() -> str:
    """An address where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(autouse=True)
def end_session_resources():
    """End the AppTest "browser session" after each test, as the runtime does on disconnect.

    Every AppTest shares the session id ``"test session id"``, so session-scoped resources (the
    WebSocket listener, the queue monitor's thread) would otherwise outlive the test and keep
    polling a double that has been stopped.
    """
    yield
    from streamlit.runtime.caching.cache_resource_api import clear_session_cache

    clear_session_cache("test session id")


# -- shared by the page tests ---------------------------------------------------------------------------
APP = ROOT / "streamlit_app.py"


def connect(at, **fields: str):
    """Fill the connection box (mode first: it decides which fields exist) and press Connect."""
    from components import session

    if "mode" in fields:
        at.segmented_control(key=session.widget_key("mode")).set_value(fields.pop("mode")).run()
    for name, value in fields.items():
        at.text_input(key=session.widget_key(name)).set_value(value)
    at.button(key=session.W_CONNECT).click().run()
    assert not at.exception, at.exception
    return at


def client_of(at):
    from components import session

    return at.session_state[session.K_CLIENT]


@pytest.fixture
def app(comfy_double, monkeypatch):
    """The app, started against the ComfyUI double (the Generate page is the first page)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("COMFYUI_URL", comfy_double.url)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    assert not at.exception
    return at
