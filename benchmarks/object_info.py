"""How long /object_info → Schema → parameters → pre-flight takes, against the targets.

Measured from the response bytes (``json.loads`` included, as the app pays it after each fetch):

  (a) the recorded ComfyUI 0.3.75 /object_info (516 classes, ~0.5 MB) and the largest realistic
      workflow: all seven fixtures of tests/data/workflows merged into one graph
      (``json.loads`` + ``Schema.from_object_info`` + ``discover`` + ``preflight``); target ≤ 0.3 s;
  (b) the same with a synthetic ~30 MB /object_info: the recording plus thousands of generated
      custom-node classes with long combo lists, and the workflow extended with 50 of those custom
      nodes (so their big classes really get parsed); target ≤ 2 s;
  (c) the second lookup through ``SchemaCache`` (what every rerun of a page pays).

Each figure is the median of ``--repeat`` runs. For information it also prints the cost of parsing
every class eagerly (a node browser would pay it once; discovery never does).

Usage:  python benchmarks/object_info.py [--repeat N] [--size-mb 30] [--recordings DIR] [--json PATH]
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfypanel.schema import Schema, SchemaCache, discover, is_link, preflight  # noqa: E402

from benchmarks._report import record, write_json  # noqa: E402

TARGET_RECORDED = 0.3
TARGET_SYNTHETIC = 2.0
WORKFLOWS = ROOT / "tests" / "data" / "workflows"


def _default_recordings() -> Path:
    for cand in (ROOT.parent / "shared" / "recordings", Path("/work/shared/recordings")):
        if (cand / "object_info.full.json").is_file():
            return cand
    raise SystemExit("object_info.full.json not found; pass --recordings DIR")


def merged_workflow() -> dict[str, Any]:
    """Every fixture in one graph, node ids shifted by 100 per fixture (links follow)."""
    graph: dict[str, Any] = {}
    for k, path in enumerate(sorted(WORKFLOWS.glob("*.json")), 1):
        wf = json.loads(path.read_text())

        def shift(nid: Any, k: int = k) -> str:
            return str(k * 100 + int(nid))

        for nid, node in wf.items():
            inputs = {n: ([shift(v[0]), v[1]] if is_link(v) else v) for n, v in node["inputs"].items()}
            graph[shift(nid)] = {**node, "inputs": inputs}
    return graph


def synthetic_object_info(recorded: dict[str, Any], size_mb: float, seed: int = 7) -> dict[str, Any]:
    """The recording plus generated custom-node classes until the JSON is about ``size_mb``."""
    rng = random.Random(seed)
    info = dict(recorded)
    target = size_mb * 1024 * 1024
    size = len(json.dumps(recorded))
    i = 0
    while size < target:
        pack = f"ComfyUI-SyntheticPack{i // 40:03d}"
        name = f"SynthNode{i:05d}"
        n_opts = rng.choice((40, 80, 150, 300))
        combo = [f"{pack.lower()}/variant_{j:04d}_{rng.choice(('fp16', 'bf16', 'fp8'))}_pruned.safetensors"
                 for j in range(n_opts)]
        styles = [f"style preset {j}: {rng.choice(('cinematic', 'anime', 'photo', 'ink'))} look"
                  for j in range(n_opts // 2)]
        node = {
            "input": {
                "required": {
                    "image": ["IMAGE"],
                    "model": ["MODEL", {"tooltip": "The model to patch."}],
                    "model_name": [combo, {"tooltip": "Which weights to load."}],
                    "style": ["COMBO", {"options": styles, "default": styles[0]}],
                    "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}],
                    "steps": ["INT", {"default": 20, "min": 1, "max": 1000}],
                    "seed": ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "control_after_generate": True}],
                    "prompt": ["STRING", {"multiline": True, "default": ""}],
                },
                "optional": {"mask": ["MASK"], "enabled": ["BOOLEAN", {"default": True}]},
                "hidden": {"unique_id": "UNIQUE_ID"},
            },
            "input_order": {"required": ["image", "model", "model_name", "style", "strength", "steps", "seed",
                                         "prompt"], "optional": ["mask", "enabled"], "hidden": ["unique_id"]},
            "output": ["IMAGE", "MODEL"],
            "output_is_list": [False, False],
            "output_name": ["IMAGE", "MODEL"],
            "name": name,
            "display_name": f"Synthetic node {i}",
            "description": "A generated custom node for the /object_info size benchmark. " * 3,
            "python_module": f"custom_nodes.{pack}",
            "category": f"{pack}/loaders",
            "output_node": False,
        }
        info[name] = node
        size += len(json.dumps({name: node}))
        i += 1
    return info


def add_custom_nodes(graph: dict[str, Any], info: dict[str, Any], count: int) -> dict[str, Any]:
    """The workflow plus ``count`` synthetic custom nodes chained after the first VAE Decode."""
    graph = dict(graph)
    names = [k for k in info if k.startswith("SynthNode")]
    names = names[:: max(1, len(names) // count)][:count]
    decode = next(nid for nid, n in sorted(graph.items()) if n["class_type"] == "VAEDecode")
    ckpt = next(nid for nid, n in sorted(graph.items()) if n["class_type"] == "CheckpointLoaderSimple")
    src = [decode, 0]
    for j, cls in enumerate(names):
        opts = info[cls]["input"]["required"]["model_name"][0]
        nid = str(9000 + j)
        graph[nid] = {"class_type": cls, "_meta": {"title": info[cls]["display_name"]}, "inputs": {
            "image": src, "model": [ckpt, 0], "model_name": opts[j % len(opts)],
            "style": info[cls]["input"]["required"]["style"][1]["options"][0], "strength": 0.8, "steps": 20,
            "seed": j, "prompt": "more detail", "enabled": True}}
        src = [nid, 0]
    graph["9999"] = {"class_type": "SaveImage", "_meta": {"title": "Save Image"},
                     "inputs": {"images": src, "filename_prefix": "synthetic"}}
    return graph


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def pipeline(raw: bytes, graph: dict[str, Any]) -> tuple[int, int, int]:
    schema = Schema.from_object_info(json.loads(raw))
    params = discover(graph, schema)
    problems = preflight(graph, schema)
    return len(params.simple), len(params.advanced), len(problems)


def split_times(raw: bytes, graph: dict[str, Any], repeat: int) -> dict[str, float]:
    t_json, info = median_time(lambda: json.loads(raw), repeat)
    t_schema, schema = median_time(lambda: Schema.from_object_info(info), repeat)
    # discovery on a fresh schema each time, so the lazy class parsing is counted
    t_disc, _ = median_time(lambda: discover(graph, Schema.from_object_info(info)), repeat)
    t_disc -= t_schema
    t_pre, _ = median_time(lambda: preflight(graph, schema), repeat)
    t_all, _ = median_time(lambda: list(Schema.from_object_info(info).nodes()), max(1, repeat // 2))
    return {"json.loads": t_json, "Schema.from_object_info": t_schema, "discover (+ lazy parse)": t_disc,
            "preflight": t_pre, "(info) parse every class": t_all}


def verdict(value: float, target: float) -> str:
    return f"{value * 1000:9.1f} ms  target ≤ {target * 1000:.0f} ms  {'PASS' if value <= target else 'FAIL'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure (median)")
    ap.add_argument("--size-mb", type=float, default=30.0, help="size of the synthetic /object_info")
    ap.add_argument("--recordings", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here (for run_all.py)")
    args = ap.parse_args(argv)

    rec_dir = args.recordings or _default_recordings()
    raw_rec = (rec_dir / "object_info.full.json").read_bytes()
    recorded = json.loads(raw_rec)
    graph = merged_workflow()

    print(f"Python {platform.python_version()} on {platform.machine()} ({platform.system()}), "
          f"median of {args.repeat} runs")
    ok = True

    # (a) recorded
    t_a, counts = median_time(lambda: pipeline(raw_rec, graph), args.repeat)
    print(f"\n(a) recorded /object_info: {len(raw_rec) / 1e6:.2f} MB, {len(recorded)} classes; workflow "
          f"{len(graph)} nodes (all fixtures merged) → {counts[0]} simple, {counts[1]} advanced, "
          f"{counts[2]} problems")
    print(f"    bytes → Schema → discover → preflight {verdict(t_a, TARGET_RECORDED)}")
    ok &= t_a <= TARGET_RECORDED
    for name, t in split_times(raw_rec, graph, args.repeat).items():
        print(f"      {name:<28}{t * 1000:9.2f} ms")

    # (b) synthetic
    t0 = time.perf_counter()
    synth = synthetic_object_info(recorded, args.size_mb)
    raw_syn = json.dumps(synth).encode()
    big_graph = add_custom_nodes(graph, synth, 50)
    print(f"\n(b) synthetic /object_info: {len(raw_syn) / 1e6:.1f} MB, {len(synth)} classes (built in "
          f"{time.perf_counter() - t0:.1f} s); workflow {len(big_graph)} nodes (+50 custom)")
    t_b, counts = median_time(lambda: pipeline(raw_syn, big_graph), args.repeat)
    print(f"    → {counts[0]} simple, {counts[1]} advanced, {counts[2]} problems")
    print(f"    bytes → Schema → discover → preflight {verdict(t_b, TARGET_SYNTHETIC)}")
    ok &= t_b <= TARGET_SYNTHETIC
    for name, t in split_times(raw_syn, big_graph, args.repeat).items():
        print(f"      {name:<28}{t * 1000:9.2f} ms")

    # (c) cached second lookup
    cache = SchemaCache(maxsize=4)
    cache.get("fp-synthetic", lambda: json.loads(raw_syn))
    n = 10_000
    t0 = time.perf_counter()
    for _ in range(n):
        cache.get("fp-synthetic", dict)
    t_c = (time.perf_counter() - t0) / n
    print(f"\n(c) SchemaCache second lookup: {t_c * 1e6:.2f} µs per get (mean of {n})")
    schema = cache.get("fp-synthetic", dict)
    t_d, _ = median_time(lambda: (discover(big_graph, schema), preflight(big_graph, schema)), args.repeat)
    print(f"    discover + preflight on the cached schema: {t_d * 1000:.2f} ms")

    print("\nPASS" if ok else "\nFAIL")
    write_json(args.json, [
        record(f"(a) recorded /object_info {len(raw_rec) / 1e6:.1f} MB → Schema → discover → preflight",
               round(t_a * 1000, 1), "ms", target=f"≤ {TARGET_RECORDED * 1000:.0f} ms", ok=t_a <= TARGET_RECORDED,
               ratio=round(t_a / TARGET_RECORDED, 3)),
        record(f"(b) synthetic /object_info {len(raw_syn) / 1e6:.0f} MB → Schema → discover → preflight",
               round(t_b * 1000, 1), "ms", target=f"≤ {TARGET_SYNTHETIC * 1000:.0f} ms", ok=t_b <= TARGET_SYNTHETIC,
               ratio=round(t_b / TARGET_SYNTHETIC, 3)),
        record("(c) SchemaCache second lookup", round(t_c * 1e6, 2), "µs"),
        record("(c) discover + preflight on the cached schema", round(t_d * 1000, 2), "ms"),
    ])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
