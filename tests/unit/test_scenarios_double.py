"""The shared scenarios (tests/scenarios.py) against the ComfyUI double."""

from __future__ import annotations

import pytest

from comfypanel.client import ComfyClient
from comfypanel.connection import Connection
from tests.scenarios import SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_scenario_on_double(comfy_double, scenario):
    comfy_double.script(class_delays={"ImageBlur": 0.3})  # slow enough to queue behind, like the real blur
    client = ComfyClient(Connection.local(comfy_double.url))
    listener = client.listener()
    listener.start()
    try:
        assert listener.wait_connected(5)
        scenario(client, listener)
    finally:
        listener.stop()
        client.close()
