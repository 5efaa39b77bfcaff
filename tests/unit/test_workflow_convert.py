"""UI → API conversion against reference pairs recorded from the official frontend (1.32.9).

Each file in tests/data/ui_pairs/ holds what the frontend saved (``ui``), exported (``export``)
and submitted (``api``, from ``app.graphToPrompt()``) for one edge case; see its README. The
converter must produce the same nodes, class types and inputs from both the Save and the Export
file. tests/real/test_workflow_real.py runs the converted graphs on the real server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfypanel import workflow as W
from tests.helpers import recordings_dir

PAIRS_DIR = Path(__file__).resolve().parents[1] / "data" / "ui_pairs"
PAIRS = sorted(p.stem for p in PAIRS_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def object_info():
    return json.loads((recordings_dir() / "object_info.full.json").read_text())


def pair(name):
    return json.loads((PAIRS_DIR / f"{name}.json").read_text())


def _shape(graph):
    return {k: (v["class_type"], v["inputs"]) for k, v in graph.items()}


@pytest.mark.parametrize("name", [n for n in PAIRS if pair(n)["api"] is not None])
@pytest.mark.parametrize("source", ["ui", "export"])
def test_conversion_matches_the_frontend(name, source, object_info):
    p = pair(name)
    if p.get(source) is None:
        pytest.fail(f"{name} has no {source} file")
    got = W.convert_ui(p[source], object_info)
    assert _shape(got) == _shape(p["api"])
    assert {k: v["_meta"]["title"] for k, v in got.items()} == {k: v["_meta"]["title"] for k, v in p["api"].items()}


def test_enough_edge_cases_are_pinned():
    assert len([n for n in PAIRS if pair(n)["api"] is not None]) >= 12


def test_primitive_inside_subgraph_where_the_frontend_throws(object_info):
    # The official frontend cannot queue this one (graphToPrompt throws); the converter inlines the
    # primitive's value into the inner node instead of keeping the stale one.
    p = pair("w_primitive_inside_subgraph")
    assert p["api"] is None and p["frontend_error"]
    got = W.convert_ui(p["ui"], object_info)
    widths = [v["inputs"].get("width") for k, v in got.items() if v["class_type"] == "EmptyImage" and ":" in k]
    assert widths == [40]


def test_report_lists_what_was_dropped(object_info):
    rep = W.ConversionReport()
    W.convert_ui(pair("k_mute")["ui"], object_info, report=rep)
    assert rep.dropped_nodes and rep.removed_inputs
    rep = W.ConversionReport()
    ui = json.loads(json.dumps(pair("a_simple_chain")["ui"]))
    ui["nodes"][0]["type"] = "SomeCustomNodeWeDoNotHave"
    W.convert_ui(ui, object_info, report=rep)
    assert rep.unknown_classes == ["SomeCustomNodeWeDoNotHave"]


def test_everything_muted_is_a_plain_sentence(object_info):
    ui = json.loads(json.dumps(pair("a_simple_chain")["ui"]))
    for n in ui["nodes"]:
        n["mode"] = 2
    with pytest.raises(W.WorkflowError, match="Nothing in this workflow would run"):
        W.convert_ui(ui, object_info)


def test_reroute_loop_is_a_plain_sentence(object_info):
    ui = {"nodes": [
        {"id": 1, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}], "outputs": [{"type": "*", "links": [1]}]},
        {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}], "outputs": [{"type": "*", "links": [2, 3]}]},
        {"id": 3, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}], "outputs": []},
    ], "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 2, 0, 3, 0, "IMAGE"]]}
    with pytest.raises(W.WorkflowError, match="loop"):
        W.convert_ui(ui, object_info)
