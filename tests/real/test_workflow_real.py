"""Converted reference workflows run on the real ComfyUI 0.3.75, with the server's own /object_info."""

from __future__ import annotations

import json

import pytest

from comfypanel import errors as E
from comfypanel import workflow as W
from comfypanel.jobs import follow
from tests.unit.test_workflow_convert import PAIRS, pair

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def live_object_info(real_server):
    from comfypanel.client import ComfyClient
    from comfypanel.connection import Connection

    return ComfyClient(Connection.local(real_server.url)).object_info()


@pytest.mark.parametrize("name", PAIRS)
def test_converted_pair_runs_like_the_frontends_prompt(name, client, listener, live_object_info):
    p = pair(name)
    graph = W.convert_ui(p["ui"], live_object_info)
    if p["api"] is not None:
        assert {k: v["inputs"] for k, v in graph.items()} == {k: v["inputs"] for k, v in p["api"].items()}
    # unique SaveImage prefixes so the server's cache cannot answer for an earlier test run
    for node in graph.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] += "_real"
    try:
        queued = client.queue_prompt(graph)
    except E.PromptRejected as exc:
        pytest.fail(f"{name}: the server refused the converted graph: {exc.user_message}")
    assert sorted({e.node_id for e in queued.node_errors}) == sorted(p.get("node_errors") or {})
    result = follow(client, queued.prompt_id, listener=listener, timeout=120)
    assert result.state == "succeeded", result.user_message


def test_ui_workflow_with_workflow_metadata_round_trips(client, listener, live_object_info, tmp_path):
    """A Save file converted and submitted with extra_pnginfo: the saved PNG carries it and loads back."""
    p = pair("a_simple_chain")
    graph = W.convert_ui(p["ui"], live_object_info)
    queued = client.queue_prompt(graph, workflow=p["ui"])
    result = follow(client, queued.prompt_id, listener=listener, timeout=60)
    saved = [f for f in result.files if f.type == "output"]
    assert saved
    again = W.load(client.view(saved[0]), saved[0].filename)
    assert again.format == "png-ui" and len(again.ui["nodes"]) == len(p["ui"]["nodes"])
    assert W.convert_ui(again.ui, live_object_info) == graph
