"""The real tier: a real ComfyUI 0.3.75 on CPU, installed (cached) and started by comfypanel.devserver.

The session-wide ``real_server`` fixture lives in tests/conftest.py (the browser tier uses it
too). One server per test session, with its own data folder (input/output/temp/user), so runs never see
each other's files. Tests must not depend on durations, only on event order and counts.
"""

from __future__ import annotations

import pytest

from comfypanel.client import ComfyClient
from comfypanel.connection import Connection


@pytest.fixture
def client(real_server):
    c = ComfyClient(Connection.local(real_server.url))
    yield c
    c.close()


@pytest.fixture
def listener(client):
    lst = client.listener()
    lst.start()
    assert lst.wait_connected(10), "the WebSocket did not connect"
    yield lst
    lst.stop()


@pytest.fixture
def idle(client):
    """Make sure nothing is running or pending before a queue test, and caches are empty."""
    client.clear_queue()
    client.interrupt()
    client.free(unload_models=False, free_memory=True)
    return client
