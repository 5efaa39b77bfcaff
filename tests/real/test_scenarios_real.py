"""The shared scenarios (tests/scenarios.py) against the real ComfyUI 0.3.75."""

from __future__ import annotations

import pytest

from tests.scenarios import SCENARIOS

pytestmark = pytest.mark.real


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_scenario_on_real_server(client, listener, scenario):
    scenario(client, listener)
