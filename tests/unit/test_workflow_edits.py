"""Edits, seeds, batches, grids and recipes on API graphs."""

from __future__ import annotations

import json
import random

import pytest

from comfypanel import errors as E
from comfypanel import workflow as W
from tests.helpers import recordings_dir

GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                               "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
}


def test_apply_edits_changes_only_what_was_edited():
    out = W.apply_edits(GRAPH, {"3.steps": 30, "6.text": "a red fox"})
    assert out["3"]["inputs"]["steps"] == 30 and out["6"]["inputs"]["text"] == "a red fox"
    changed = {(k, n) for k in GRAPH for n in GRAPH[k]["inputs"] if GRAPH[k]["inputs"][n] != out[k]["inputs"][n]}
    assert changed == {("3", "steps"), ("6", "text")}
    assert GRAPH["3"]["inputs"]["steps"] == 20  # the original is untouched


@pytest.mark.parametrize("edit, phrase", [({"9.steps": 1}, "no node 9"), ({"3.model": "x"}, "connected"),
                                          ({"steps": 3}, "does not name a parameter")])
def test_bad_edits_are_sentences(edit, phrase):
    with pytest.raises(E.InvalidInput, match=phrase):
        W.apply_edits(GRAPH, edit)


def test_seed_modes_applied_before_submit():
    rng = random.Random(1)
    g, used = W.apply_seed_modes(GRAPH, {"3.seed": "fixed"}, rng)
    assert used == {"3.seed": 5} and g["3"]["inputs"]["seed"] == 5
    g, used = W.apply_seed_modes(GRAPH, {"3.seed": "increment"}, rng)
    assert used == {"3.seed": 6}
    g, used = W.apply_seed_modes(GRAPH, {"3.seed": "decrement"}, rng)
    assert used == {"3.seed": 4}
    g, used = W.apply_seed_modes(GRAPH, {"3.seed": "randomize"}, rng)
    assert used["3.seed"] != 5 and g["3"]["inputs"]["seed"] == used["3.seed"]
    assert W.next_seed(0, "decrement") == W.SEED_MAX and W.next_seed(W.SEED_MAX, "increment") == 0
    with pytest.raises(E.InvalidInput):
        W.next_seed(1, "sideways")


def test_batch_follows_the_seed_policy():
    runs = W.batch(GRAPH, 3, {"3.seed": "increment"})
    assert [u["3.seed"] for _, u in runs] == [5, 6, 7]
    runs = W.batch(GRAPH, 2, {"3.seed": "fixed"})
    assert [u["3.seed"] for _, u in runs] == [5, 5]
    runs = W.batch(GRAPH, 3, {"3.seed": "randomize"}, random.Random(3))
    assert len({u["3.seed"] for _, u in runs}) == 3
    with pytest.raises(E.InvalidInput):
        W.batch(GRAPH, 0, {})


def test_xy_grid_labels_and_graphs():
    cells = W.grid(GRAPH, ("3.cfg", [4.0, 8.0]), ("3.steps", [10, 20, 30]))
    assert len(cells) == 6
    assert [c.label for c in cells[:2]] == ["cfg=4.0, steps=10", "cfg=8.0, steps=10"]
    assert cells[5].graph["3"]["inputs"]["cfg"] == 8.0 and cells[5].graph["3"]["inputs"]["steps"] == 30
    one = W.grid(GRAPH, ("3.cfg", [1, 2]))
    assert [c.label for c in one] == ["cfg=1", "cfg=2"] and one[0].y_value is None
    with pytest.raises(E.InvalidInput):
        W.grid(GRAPH, ("3.cfg", []))


def test_recipe_round_trip_reproduces_exactly():
    ui = json.loads((recordings_dir() / "workflows" / "empty_save.json").read_text())
    r = W.Recipe(source=ui, source_format="api", name="empty", edits={"1.width": 128}, seeds={}, batch_count=2)
    again = W.Recipe.from_json(r.to_json())
    assert again == r
    built = again.build()
    assert built["1"]["inputs"]["width"] == 128 and built == r.build()
    seeded = W.Recipe(source=GRAPH, seeds={"3.seed": 42}, seed_modes={"3.seed": "randomize"})
    assert seeded.build()["3"]["inputs"]["seed"] == 42  # re-run exactly: the seed used, not a new one
    fresh = seeded.with_new_seeds(random.Random(9))
    assert fresh.seeds["3.seed"] != 42
    with pytest.raises(E.InvalidInput):
        W.Recipe.from_json("{nope")


def test_recipe_from_ui_source_needs_object_info():
    from tests.unit.test_workflow_convert import pair as load_pair
    p = load_pair("a_simple_chain")
    oi = json.loads((recordings_dir() / "object_info.full.json").read_text())
    r = W.Recipe(source=p["ui"], source_format="ui", name="chain", edits={})
    assert {k: v["inputs"] for k, v in r.build(oi).items()} == {k: v["inputs"] for k, v in p["api"].items()}
