"""Regenerate the UI→API reference pairs in ``tests/data/ui_pairs/`` from the official frontend.

Run by hand (not collected by pytest)::

    python tests/data/make_ui_pairs.py                 # all cases
    python tests/data/make_ui_pairs.py c_reroute m_subgraph_widget_and_link   # some cases
    python tests/data/make_ui_pairs.py --url http://127.0.0.1:8188 # reuse a running server

It starts a real ComfyUI 0.3.75 (``comfypanel.devserver``, frontend 1.32.9) on a throw-away data
folder, opens its frontend in headless Debian Chromium (Playwright for Python; never
``playwright install``), and for each case builds a graph with the frontend's own JavaScript
(``LiteGraph.createNode``, ``node.connect``, ``widget.value``, ``node.mode``, ``app.loadGraphData``,
the ``Comfy.Graph.ConvertToSubgraph`` command ...). It then records

- ``ui``: ``app.graph.serialize()``, taken *before* ``graphToPrompt()`` (which runs
  ``PrimitiveNode.applyToGraph`` and so would overwrite the stale values on a primitive's targets);
  this is what Save writes (the workflow store keeps ``clone(app.graph.serialize())``). For cases
  that load a hand-written file, ``ui`` is that file and ``ui_resaved`` is ``serialize()`` after
  loading it;
- ``export``: ``(await app.graphToPrompt()).workflow`` (what Workflow ▸ Export writes);
- ``api``: ``(await app.graphToPrompt()).output`` (what the frontend POSTs as ``prompt``);

submits ``api`` to the same server (``POST /api/prompt``), polls ``/api/history/{id}`` and records
``http_status``, ``node_errors``, ``error`` (400 answers), ``executed`` (ids of the nodes that have
outputs in the history entry), ``status`` and ``runs_ok`` (accepted with HTTP 200, no
``node_errors``, and the history entry says ``success``).

Objects are passed from the page as ``JSON.stringify`` text, so ``undefined`` properties are
dropped exactly as in a saved file. The only normalisation: random UUIDs (the workflow ``id``,
subgraph definition ids, subgraph input/output slot ids) are renamed consistently, in order of
first appearance, to ``uuid5`` values derived from the case name, so a regeneration gives no
noisy diff. Node and link ids stay as the frontend made them.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OUT_DIR = Path(__file__).resolve().parent / "ui_pairs"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
CLIENT_ID = "make-ui-pairs"
RUN_TIMEOUT_S = 120
UUID_NS = uuid.UUID("6f1c2b8e-3d4a-4c5b-9e7f-0a1b2c3d4e5f")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# ------------------------------------------------------------------------------------------------
# Helpers installed in the page as window.__uip (H in the case bodies).

HELPERS_JS = r"""
() => {
  const BLANK = {last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [],
                 config: {}, extra: {}, version: 0.4};
  const H = {
    settle: () => new Promise(r => requestAnimationFrame(() => setTimeout(r, 60))),
    async reset() {
      await app.loadGraphData(structuredClone(BLANK));
      app.canvas.deselectAll();
      await H.settle();
    },
    async load(json) {
      await app.loadGraphData(structuredClone(json));
      app.canvas.deselectAll();
      await H.settle();
    },
    add(type, pos = [0, 0], opts = {}) {
      const n = LiteGraph.createNode(type);
      if (!n) throw new Error('unknown node type ' + type);
      n.pos = [pos[0], pos[1]];
      app.graph.add(n);
      if (opts.title) n.title = opts.title;
      for (const [k, v] of Object.entries(opts.widgets || {})) H.set(n, k, v);
      if (opts.mode != null) n.mode = opts.mode;
      return n;
    },
    // `name` may be a widget index (a PrimitiveNode's value widget is named after its target).
    widget(n, name) {
      const w = typeof name === 'number' ? (n.widgets || [])[name]
                                         : (n.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(`node ${n.id} (${n.type}) has no widget ${name}: ` +
                              JSON.stringify((n.widgets || []).map(w => w.name)));
      return w;
    },
    // Like a user edit: set the value, then run the widget's callback.
    set(n, name, value) {
      const w = H.widget(n, name);
      w.value = value;
      w.callback?.(w.value, app.canvas, n, [0, 0], {});
      return w;
    },
    link(a, aSlot, b, bSlot) {
      const l = a.connect(aSlot, b, bSlot);
      if (!l) throw new Error(`could not connect ${a.id}.${aSlot} -> ${b.id}.${bSlot}`);
      return l;
    },
    select(items) {
      app.canvas.deselectAll();
      app.canvas.selectItems(items);
    },
    async command(id) {
      return await app.extensionManager.command.execute(id);
    },
    // Select `items`, run the frontend's "Convert Selection to Subgraph" and return the new node.
    async toSubgraph(items) {
      const graph = app.canvas.subgraph ?? app.canvas.graph;
      const before = new Set(graph.nodes.map(n => n.id));
      H.select(items);
      await H.command('Comfy.Graph.ConvertToSubgraph');
      await H.settle();
      const made = graph.nodes.filter(n => !before.has(n.id) && n.isSubgraphNode?.());
      if (made.length !== 1) throw new Error('convert to subgraph made ' + made.length + ' nodes');
      app.canvas.deselectAll();
      return made[0];
    },
    widgetNames(n) { return (n.widgets || []).map(w => w.name); },
    byId(id) { return app.graph.getNodeById(id); },
    // serialize() first (Save), then graphToPrompt() (API + Export).
    // Image previews load asynchronously and resize their node: wait for them (stable sizes).
    async imagesLoaded(timeoutMs = 5000) {
      const t0 = Date.now();
      const all = () => [...app.graph.nodes,
                         ...[...app.graph.subgraphs.values()].flatMap(sg => sg.nodes)];
      while (Date.now() - t0 < timeoutMs) {
        const pending = all().filter(n => n.type === 'LoadImage' &&
                                          !(n.imgs?.length && n.imgs.every(i => i.complete)));
        if (!pending.length) break;
        await new Promise(r => setTimeout(r, 50));
      }
      await H.settle();
      await H.settle();
    },
    async record(extra = {}) {
      await H.imagesLoaded();
      const ui = JSON.stringify(app.graph.serialize());
      let p;
      try {
        p = await app.graphToPrompt();
      } catch (err) {  // the frontend itself cannot convert this graph: record that
        return JSON.stringify({ui: JSON.parse(ui), export: null, api: null, ...extra,
                               frontend_error: String(err && err.stack || err).split('\n')
                                 .slice(0, 2).join('\n').replace(/https?:\/\/[^/]+/g, '')});
      }
      return JSON.stringify({ui: JSON.parse(ui), export: p.workflow, api: p.output, ...extra});
    },
  };
  window.__uip = H;
  return true;
}
"""


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    js: str  # body of an async function with H = window.__uip; must `return await H.record()`


CASES: list[Case] = []


def case(name: str, description: str, js: str) -> None:
    CASES.append(Case(name, " ".join(description.split()), js))


# ------------------------------------------------------------------------------------------------
# The cases. Each builds its graph from a blank one (H.reset()).

case("a_simple_chain", """
EmptyImage(64x48, colour) -> ImageBlur (custom title "My Blur", blur_radius 3, sigma 1.5) -> SaveImage
(filename_prefix "pairs_a"). Plain widget values, link inputs before widget sockets in inputs[], a
custom title (only _meta.title).""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 64, height: 48, color: 16711680}});
const b = H.add('ImageBlur', [320, 0], {title: 'My Blur', widgets: {blur_radius: 3, sigma: 1.5}});
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_a'}});
H.link(e, 0, b, 0); H.link(b, 0, s, 0);
return await H.record();
""")

case("b_widget_input_linked", """
Widget sockets fed by links: GetImageSize(LoadImage example.png).height -> EmptyImage.height (width
stays a widget, 111; height keeps a stale 222), and GetImageSize.width -> ImageScale.height. In the
Save file the links target EmptyImage slot 1 and ImageScale slot 3 (every widget has a socket); in
the Export file unconnected widget sockets are removed, so the same links target slots 0 and 1.
The API has [id, slot] pairs overriding the widget values.""", r"""
await H.reset();
const l = H.add('LoadImage', [0, 0], {widgets: {image: 'example.png'}});
const g = H.add('GetImageSize', [320, 0]);
const e = H.add('EmptyImage', [640, 0], {widgets: {width: 111, height: 222, color: 255}});
const sc = H.add('ImageScale', [960, 0], {widgets: {width: 33, height: 44}});
const s = H.add('SaveImage', [1280, 0], {widgets: {filename_prefix: 'pairs_b'}});
H.link(l, 0, g, 0);
H.link(g, 1, e, 'height'); H.link(g, 0, sc, 'height');
H.link(e, 0, sc, 0); H.link(sc, 0, s, 0);
return await H.record();
""")

case("c_reroute", """
EmptyImage -> Reroute -> ImageInvert -> SaveImage. The Reroute (a virtual node) is absent from the
API; ImageInvert's image points straight at EmptyImage.""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32}});
const r = H.add('Reroute', [320, 0]);
const i = H.add('ImageInvert', [480, 0]);
const s = H.add('SaveImage', [800, 0], {widgets: {filename_prefix: 'pairs_c'}});
H.link(e, 0, r, 0); H.link(r, 0, i, 0); H.link(i, 0, s, 0);
return await H.record();
""")

case("d_reroute_chain", """
LoadImage -> Reroute -> Reroute -> Reroute -> ImageBlur -> SaveImage, the last Reroute also feeding
a PreviewImage (one Reroute output with two links). All links are resolved through the chain to
LoadImage slot 0.""", r"""
await H.reset();
const l = H.add('LoadImage', [0, 0], {widgets: {image: 'example.png'}});
const r1 = H.add('Reroute', [320, 0]);
const r2 = H.add('Reroute', [440, 0]);
const r3 = H.add('Reroute', [560, 0]);
const b = H.add('ImageBlur', [700, 0], {widgets: {blur_radius: 2}});
const s = H.add('SaveImage', [1000, 0], {widgets: {filename_prefix: 'pairs_d'}});
const p = H.add('PreviewImage', [1000, 300]);
H.link(l, 0, r1, 0); H.link(r1, 0, r2, 0); H.link(r2, 0, r3, 0);
H.link(r3, 0, b, 0); H.link(r3, 0, p, 0); H.link(b, 0, s, 0);
return await H.record();
""")

case("e_reroute_dangling", """
Reroutes with no input: one feeds ImageInvert.image (a link-only input: the key is simply absent
from the API, the server reports the missing input in node_errors), another feeds EmptyImage.width
(a widget socket: the target's own widget value 40 is sent). A working EmptyImage -> SaveImage branch
keeps the prompt runnable.""", r"""
await H.reset();
const r1 = H.add('Reroute', [0, 0]);
const i = H.add('ImageInvert', [200, 0]);
const s1 = H.add('SaveImage', [500, 0], {widgets: {filename_prefix: 'pairs_e_broken'}});
H.link(r1, 0, i, 0); H.link(i, 0, s1, 0);
const r2 = H.add('Reroute', [0, 300]);
const e = H.add('EmptyImage', [200, 300], {widgets: {width: 40, height: 24}});
const s2 = H.add('SaveImage', [500, 300], {widgets: {filename_prefix: 'pairs_e_ok'}});
H.link(r2, 0, e, 'width'); H.link(e, 0, s2, 0);
return await H.record();
""")

case("f_primitive_multi_target", """
One PrimitiveNode (INT, value 96, control "fixed") feeding the width of two EmptyImage nodes whose
own width widgets hold stale values (300 and 500) in the Save file. The API inlines 96 into both;
the Export file (serialised after applyToGraph) already shows 96 on the targets. The primitive is
absent from the API.""", r"""
await H.reset();
const p = H.add('PrimitiveNode', [0, 0]);
const e1 = H.add('EmptyImage', [320, 0], {widgets: {height: 16}});
const e2 = H.add('EmptyImage', [320, 300], {widgets: {height: 24, color: 65280}});
const s1 = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_f1'}});
const s2 = H.add('SaveImage', [640, 300], {widgets: {filename_prefix: 'pairs_f2'}});
H.link(p, 0, e1, 'width'); H.link(p, 0, e2, 'width');
H.link(e1, 0, s1, 0); H.link(e2, 0, s2, 0);
await H.settle();
// Change the primitive without its callback (as an older or hand-edited file would have it),
// and leave stale values on the targets.
H.widget(p, 0).value = 96;
H.widget(e1, 'width').value = 300;
H.widget(e2, 'width').value = 500;
return await H.record();
""")

case("g_seed_control_after_generate", """
Seed-like INT widgets with control_after_generate on model-free nodes: ImageAddNoise seed 12345
"fixed", a second ImageAddNoise seed 67890 "randomize", a third fed by a PrimitiveNode (seed 424242,
"increment"; the target keeps its own control word, "randomize" by default, in its widgets_values),
and PrimitiveInt (a real backend node, value 7, "decrement") feeding ImageBlur.blur_radius.
widgets_values hold the control word right after each seed; the API skips it and sends the stored
seed unchanged (no randomisation in graphToPrompt); PrimitiveInt is sent as {"value": 7}.""", r"""
await H.reset();
const l = H.add('LoadImage', [0, 0], {widgets: {image: 'example.png'}});
const n1 = H.add('ImageAddNoise', [320, 0], {widgets: {seed: 12345, strength: 0.25}});
H.set(n1, 'control_after_generate', 'fixed');
const n2 = H.add('ImageAddNoise', [640, 0], {widgets: {seed: 67890, strength: 0.5}});
H.set(n2, 'control_after_generate', 'randomize');
const n3 = H.add('ImageAddNoise', [960, 0], {widgets: {strength: 0.1}});
const pn = H.add('PrimitiveNode', [960, 300]);
H.link(pn, 0, n3, 'seed');
await H.settle();
H.set(pn, 0, 424242);
H.set(pn, 'control_after_generate', 'increment');
const pi = H.add('PrimitiveInt', [960, 500], {widgets: {value: 7}});
H.set(pi, 'control_after_generate', 'decrement');
const b = H.add('ImageBlur', [1280, 0]);
const s = H.add('SaveImage', [1600, 0], {widgets: {filename_prefix: 'pairs_g'}});
H.link(l, 0, n1, 0); H.link(n1, 0, n2, 0); H.link(n2, 0, n3, 0); H.link(n3, 0, b, 0);
H.link(pi, 0, b, 'blur_radius'); H.link(b, 0, s, 0);
return await H.record();
""")

case("h_primitive_combo", """
A COMBO PrimitiveNode (value "bilinear", control_after_generate "fixed", control_filter_list "") feeding
ImageScale.upscale_method of two ImageScale nodes (stale "nearest-exact" on the targets). Only the
combo value reaches the API; the control and filter widgets are skipped.""", r"""
await H.reset();
const l = H.add('LoadImage', [0, 0], {widgets: {image: 'example.png'}});
const p = H.add('PrimitiveNode', [0, 300]);
const sc1 = H.add('ImageScale', [320, 0], {widgets: {width: 40, height: 30}});
const sc2 = H.add('ImageScale', [320, 300], {widgets: {width: 20, height: 20, crop: 'center'}});
const s1 = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_h1'}});
const s2 = H.add('SaveImage', [640, 300], {widgets: {filename_prefix: 'pairs_h2'}});
H.link(l, 0, sc1, 0); H.link(l, 0, sc2, 0);
H.link(p, 0, sc1, 'upscale_method'); H.link(p, 0, sc2, 'upscale_method');
H.link(sc1, 0, s1, 0); H.link(sc2, 0, s2, 0);
await H.settle();
H.widget(p, 0).value = 'bilinear';
H.widget(sc1, 'upscale_method').value = 'nearest-exact';
H.widget(sc2, 'upscale_method').value = 'nearest-exact';
return await H.record();
""")

case("i_bypass_middle", """
EmptyImage -> ImageInvert -> ImageBlur (mode 4, bypassed) -> SaveImage. ImageBlur is absent from the
API and SaveImage.images points at ImageInvert (output 0 passes input 0, same type).""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32, color: 8421504}});
const i = H.add('ImageInvert', [320, 0]);
const b = H.add('ImageBlur', [480, 0], {widgets: {blur_radius: 5}, mode: 4});
const s = H.add('SaveImage', [800, 0], {widgets: {filename_prefix: 'pairs_i'}});
H.link(e, 0, i, 0); H.link(i, 0, b, 0); H.link(b, 0, s, 0);
return await H.record();
""")

case("j_bypass_type_match", """
Bypass where the passed input is not the same slot: ImageUpscaleWithModel (bypassed; input 0 is
UPSCALE_MODEL) passes its input 1 `image` (LoadImage) to SaveImage; a bypassed ImageBlend passes
image1 (EmptyImage red) rather than image2 (LoadImage) to a PreviewImage. The UpscaleModelLoader
stays in the API although nothing consumes it.""", r"""
await H.reset();
const m = H.add('UpscaleModelLoader', [0, 0], {widgets: {model_name: 'tiny_compact_x1.safetensors'}});
const l = H.add('LoadImage', [0, 200], {widgets: {image: 'example.png'}});
const u = H.add('ImageUpscaleWithModel', [320, 0], {mode: 4});
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_j'}});
H.link(m, 0, u, 0); H.link(l, 0, u, 1); H.link(u, 0, s, 0);
const e = H.add('EmptyImage', [0, 600], {widgets: {width: 64, height: 64, color: 16711680}});
const bl = H.add('ImageBlend', [320, 600], {widgets: {blend_factor: 0.3, blend_mode: 'multiply'}, mode: 4});
const p = H.add('PreviewImage', [640, 600]);
H.link(e, 0, bl, 0); H.link(l, 0, bl, 1); H.link(bl, 0, p, 0);
return await H.record();
""")

case("k_mute", """
Muted (mode 2) nodes: EmptyImage -> ImageBlur (muted) -> ImageInvert -> SaveImage: ImageBlur is absent
and ImageInvert stays in the API with no `image` key (the server answers 200 with node_errors for
that branch and runs the rest); LoadImage -> ImageToMask -> MaskToImage -> SaveImage (muted output
node) is absent, its upstream nodes stay; EmptyImage -> PreviewImage still runs.""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32}});
const b = H.add('ImageBlur', [320, 0], {mode: 2});
const i = H.add('ImageInvert', [640, 0]);
const s = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_k_broken'}});
H.link(e, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, s, 0);
const l = H.add('LoadImage', [0, 300], {widgets: {image: 'example.png'}});
const tm = H.add('ImageToMask', [320, 300], {widgets: {channel: 'green'}});
const mi = H.add('MaskToImage', [640, 300]);
const s2 = H.add('SaveImage', [960, 300], {widgets: {filename_prefix: 'pairs_k_muted'}, mode: 2});
H.link(l, 0, tm, 0); H.link(tm, 0, mi, 0); H.link(mi, 0, s2, 0);
const e2 = H.add('EmptyImage', [0, 600], {widgets: {width: 16, height: 16}});
const p = H.add('PreviewImage', [320, 600]);
H.link(e2, 0, p, 0);
return await H.record();
""")

case("l_notes_and_group", """
A Note, a MarkdownNote and a group (LGraphGroup around the working nodes) next to
EmptyImage -> SaveImage: notes are virtual nodes (absent from the API, their text is in
widgets_values), groups are only in `groups`.""", r"""
await H.reset();
const e = H.add('EmptyImage', [20, 60], {widgets: {width: 24, height: 24}});
const s = H.add('SaveImage', [340, 60], {widgets: {filename_prefix: 'pairs_l'}});
H.link(e, 0, s, 0);
const n = H.add('Note', [0, 400]);
H.widget(n, H.widgetNames(n)[0]).value = 'a plain note';
const md = H.add('MarkdownNote', [400, 400]);
H.widget(md, H.widgetNames(md)[0]).value = '# a markdown note';
const grp = new LiteGraph.LGraphGroup('My group');
grp.pos = [0, 0]; grp.size = [700, 300];
app.graph.add(grp);
return await H.record();
""")

case("m_subgraph_widget_and_link", """
EmptyImage -> [ImageBlur + ImageInvert converted with Comfy.Graph.ConvertToSubgraph] -> SaveImage.
Subgraph input `image` is linked from outside; subgraph input `blur_radius` was created by a link from
a PrimitiveInt that was then deleted, so it is a widget on the instance (proxyWidgets ["-1",
"blur_radius"], value 4 in the instance's widgets_values); ImageBlur.sigma is promoted
(proxyWidgets [innerId, "sigma"]) and its value 2.5 lives in the inner node. Inner nodes get ids
"<instance>:<inner>".""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 48, height: 48, color: 16777215}});
const b = H.add('ImageBlur', [320, 0], {widgets: {sigma: 2.5}});
const i = H.add('ImageInvert', [640, 0]);
const s = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_m'}});
const pi = H.add('PrimitiveInt', [0, 300], {widgets: {value: 9}});
H.link(e, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, s, 0); H.link(pi, 0, b, 'blur_radius');
const sg = await H.toSubgraph([b, i]);
app.graph.remove(pi);
await H.settle();
H.set(sg, 'blur_radius', 4);
sg.properties.proxyWidgets = [...sg.properties.proxyWidgets, [String(b.id), 'sigma']];
await H.settle();
return await H.record();
""")

case("n_subgraph_instances", """
One subgraph definition (ImageBlur + ImageInvert, blur_radius exposed as an instance widget) used by
two instances: the converted node (blur_radius 2) and a second node created with
LiteGraph.createNode(<definition id>) (blur_radius 6), each fed by its own EmptyImage and saving
separately. Plus a third instance made with the canvas's Clone (LGraphCanvas.cloneNodes), which in
this frontend copies the definition under a new id. Inner ids are "<instance>:<inner>" with the same
inner ids under each instance.""", r"""
await H.reset();
const e1 = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32, color: 255}});
const b = H.add('ImageBlur', [320, 0]);
const i = H.add('ImageInvert', [640, 0]);
const s1 = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_n1'}});
const pi = H.add('PrimitiveInt', [0, 300], {widgets: {value: 3}});
H.link(e1, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, s1, 0); H.link(pi, 0, b, 'blur_radius');
const sg1 = await H.toSubgraph([b, i]);
app.graph.remove(pi);
await H.settle();
H.set(sg1, 'blur_radius', 2);
const sg2 = H.add(sg1.type, [400, 400]);
await H.settle();
H.set(sg2, 'blur_radius', 6);
const e2 = H.add('EmptyImage', [0, 400], {widgets: {width: 16, height: 16, color: 65280}});
const s2 = H.add('SaveImage', [960, 400], {widgets: {filename_prefix: 'pairs_n2'}});
H.link(e2, 0, sg2, 0); H.link(sg2, 0, s2, 0);
H.select([sg1]);
LGraphCanvas.active_canvas ??= app.canvas;  // set by the first pointer event in a real session
LGraphCanvas.cloneNodes([sg1]);
await H.settle();
const sg3 = app.graph.nodes.find(n => n.isSubgraphNode?.() && n !== sg1 && n !== sg2);
sg3.pos = [400, 800];
H.set(sg3, 'blur_radius', 8);
const e3 = H.add('EmptyImage', [0, 800], {widgets: {width: 24, height: 24}});
const s3 = H.add('SaveImage', [960, 800], {widgets: {filename_prefix: 'pairs_n3'}});
H.link(e3, 0, sg3, 0); H.link(sg3, 0, s3, 0);
app.canvas.deselectAll();
return await H.record();
""")

case("n_subgraph_nested", """
A subgraph inside a subgraph, both made with the convert command: EmptyImage -> ImageBlur ->
ImageInvert -> ImageScale -> SaveImage; first ImageBlur + ImageInvert become an inner subgraph node,
then that node + ImageScale become the outer one. definitions.subgraphs is a flat list holding
both definitions; API ids are "<outer>:<inner instance>:<node>" and "<outer>:<node>".""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 40, height: 40, color: 12632256}});
const b = H.add('ImageBlur', [320, 0], {widgets: {blur_radius: 3}});
const i = H.add('ImageInvert', [640, 0]);
const sc = H.add('ImageScale', [960, 0], {widgets: {width: 20, height: 10, upscale_method: 'area'}});
const s = H.add('SaveImage', [1280, 0], {widgets: {filename_prefix: 'pairs_n_nested'}});
H.link(e, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, sc, 0); H.link(sc, 0, s, 0);
const inner = await H.toSubgraph([b, i]);
const outer = await H.toSubgraph([inner, sc]);
return await H.record();
""")

case("o_loadimage_upload", """
LoadImage(example.png) -> ImageInvert -> SaveImage. LoadImage's widgets_values are ["example.png",
"image"]: the second is the upload button's value, which the API skips.""", r"""
await H.reset();
const l = H.add('LoadImage', [0, 0], {widgets: {image: 'example.png'}});
const i = H.add('ImageInvert', [320, 0]);
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_o'}});
H.link(l, 0, i, 0); H.link(i, 0, s, 0);
return await H.record();
""")

# An older (2024-style) file, written by hand: inputs[] lists only linked inputs and converted
# widgets (so target_slot indexes that short list), size is {"0": w, "1": h}, the converted widget
# carries widget.config, the PrimitiveNode's targets hold stale values, node ids have gaps and
# nodes[] is not sorted.
OLDER_FILE = {
    "last_node_id": 12,
    "last_link_id": 9,
    "nodes": [
        {"id": 12, "type": "SaveImage", "pos": [1300, 100], "size": {"0": 315, "1": 270},
         "flags": {}, "order": 5, "mode": 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 9}],
         "properties": {}, "widgets_values": ["pairs_p"]},
        {"id": 3, "type": "LoadImage", "pos": [50, 100], "size": {"0": 315, "1": 314},
         "flags": {}, "order": 0, "mode": 0,
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1], "shape": 3, "slot_index": 0},
                     {"name": "MASK", "type": "MASK", "links": [2], "shape": 3, "slot_index": 1}],
         "properties": {"Node name for S&R": "LoadImage"},
         "widgets_values": ["example.png", "image"]},
        {"id": 7, "type": "PrimitiveNode", "pos": [50, 500], "size": {"0": 210, "1": 82},
         "flags": {}, "order": 1, "mode": 0,
         "outputs": [{"name": "INT", "type": "INT", "links": [5], "slot_index": 0,
                      "widget": {"name": "width"}}],
         "title": "width", "properties": {"Run widget replace on values": False},
         "widgets_values": [72, "fixed"]},
        {"id": 5, "type": "JoinImageWithAlpha", "pos": [450, 100], "size": {"0": 210, "1": 46},
         "flags": {}, "order": 2, "mode": 0,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 1},
                    {"name": "alpha", "type": "MASK", "link": 2}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3], "shape": 3, "slot_index": 0}],
         "properties": {"Node name for S&R": "JoinImageWithAlpha"}},
        {"id": 9, "type": "ImageScale", "pos": [750, 100], "size": {"0": 315, "1": 130},
         "flags": {}, "order": 3, "mode": 0,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 3},
                    {"name": "width", "type": "INT", "link": 5,
                     "widget": {"name": "width", "config": ["INT", {"default": 512, "min": 0,
                                                                    "max": 16384, "step": 1}]}}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [8], "shape": 3, "slot_index": 0}],
         "properties": {"Node name for S&R": "ImageScale"},
         "widgets_values": ["bicubic", 512, 40, "disabled"]},
        {"id": 11, "type": "ImageBlur", "pos": [1000, 100], "size": {"0": 315, "1": 82},
         "flags": {}, "order": 4, "mode": 0,
         "inputs": [{"name": "image", "type": "IMAGE", "link": 8}],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [9], "shape": 3, "slot_index": 0}],
         "properties": {"Node name for S&R": "ImageBlur"},
         "widgets_values": [2, 0.8]},
    ],
    "links": [
        [1, 3, 0, 5, 0, "IMAGE"],
        [2, 3, 1, 5, 1, "MASK"],
        [3, 5, 0, 9, 0, "IMAGE"],
        [5, 7, 0, 9, 1, "INT"],
        [8, 9, 0, 11, 0, "IMAGE"],
        [9, 11, 0, 12, 0, "IMAGE"],
    ],
    "groups": [],
    "config": {},
    "extra": {"ds": {"scale": 1, "offset": {"0": 0, "1": 0}}},
    "version": 0.4,
}

case("p_older_file", """
A hand-written 2024-style file loaded with app.loadGraphData (`ui` is that file, `ui_resaved` is
serialize() after loading): inputs[] lists only linked inputs and the converted ImageScale.width
(link target_slot 1 = "width", not object_info's 2nd input "upscale_method"), size is
{"0": w, "1": h}, ids have gaps and nodes[] is unsorted, the PrimitiveNode (72) overrides the stale
512, LoadImage -> JoinImageWithAlpha uses the MASK output (slot 1).""", r"""
await H.load(OLDER_FILE);
return await H.record({ui_file: OLDER_FILE});
""".replace("OLDER_FILE", json.dumps(OLDER_FILE)))

# ---- extra cases --------------------------------------------------------------------------------

case("q_bypass_unresolvable", """
Bypasses whose pass-through finds nothing: a bypassed EmptyImage (no IMAGE input) feeding ImageInvert
-> the `image` key is absent; a bypassed ImageBlend with only image2 linked (input 0 has the right
type but no link, so nothing passes; image2 is NOT used) -> PreviewImage gets no `images`; a bypassed
PrimitiveInt feeding EmptyImage.width -> the link resolves to nothing, so EmptyImage's own (stale)
widget value 20 is sent. A working branch keeps the prompt runnable.""", r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 16, height: 16}, mode: 4});
const i = H.add('ImageInvert', [320, 0]);
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_q1'}});
H.link(e, 0, i, 0); H.link(i, 0, s, 0);
const l = H.add('LoadImage', [0, 300], {widgets: {image: 'example.png'}});
const bl = H.add('ImageBlend', [320, 300], {mode: 4});
const p = H.add('PreviewImage', [640, 300]);
H.link(l, 0, bl, 1); H.link(bl, 0, p, 0);
const pi = H.add('PrimitiveInt', [0, 600], {widgets: {value: 64}, mode: 4});
const e2 = H.add('EmptyImage', [320, 600], {widgets: {width: 20, height: 12}});
const s2 = H.add('SaveImage', [640, 600], {widgets: {filename_prefix: 'pairs_q2'}});
H.link(pi, 0, e2, 'width'); H.link(e2, 0, s2, 0);
return await H.record();
""")

case("r_mute_feeding_widget", """
A muted (mode 2) PrimitiveInt feeding EmptyImage.width: the link resolves to the muted node's id,
which is not in the output, so the `width` key is deleted altogether (the widget value 20 is NOT
kept, unlike the bypass case) and the server rejects that branch. Also a muted node feeding a
bypassed node: LoadImage (muted) -> ImageBlur (bypassed) -> PreviewImage loses `images`. A working
branch keeps the prompt runnable.""", r"""
await H.reset();
const pi = H.add('PrimitiveInt', [0, 0], {widgets: {value: 64}, mode: 2});
const e = H.add('EmptyImage', [320, 0], {widgets: {width: 20, height: 12}});
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_r1'}});
H.link(pi, 0, e, 'width'); H.link(e, 0, s, 0);
const l = H.add('LoadImage', [0, 300], {widgets: {image: 'example.png'}, mode: 2});
const b = H.add('ImageBlur', [320, 300], {mode: 4});
const p = H.add('PreviewImage', [640, 300]);
H.link(l, 0, b, 0); H.link(b, 0, p, 0);
const e2 = H.add('EmptyImage', [0, 600], {widgets: {width: 8, height: 8}});
const s2 = H.add('SaveImage', [320, 600], {widgets: {filename_prefix: 'pairs_r2'}});
H.link(e2, 0, s2, 0);
return await H.record();
""")

case("s_native_reroutes", """
Litegraph-native reroute points (not Reroute nodes): two chained reroutes made with
graph.createReroute on the link EmptyImage -> ImageInvert (extra.reroutes with parentId,
extra.linkExtensions), plus a floating reroute with a floating link (`floatingLinks`, target -1),
as left when a link through a reroute is dropped; that one is injected into the serialised graph and
loaded back with app.loadGraphData (createReroute + disconnectInput did not produce one from
script). The API is the same as without any of them.""",
r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 24, height: 24}});
const i = H.add('ImageInvert', [600, 0]);
const s = H.add('SaveImage', [900, 0], {widgets: {filename_prefix: 'pairs_s'}});
const l1 = H.link(e, 0, i, 0); H.link(i, 0, s, 0);
const r1 = app.graph.createReroute([300, 100], l1);
const r2 = app.graph.createReroute([450, 100], r1);
await H.settle();
const data = JSON.parse(JSON.stringify(app.graph.serialize()));
data.extra.reroutes.push({id: 3, pos: [300, 400], linkIds: [], floating: {slotType: 'output'}});
data.floatingLinks = [{id: 1, origin_id: e.id, origin_slot: 0, target_id: -1, target_slot: -1,
                       type: 'IMAGE', parentId: 3}];
await H.load(data);
return await H.record();
""")

case("t_subgraph_bypass_shared", """
Bypass on a subgraph instance with the frontend's own command (select it, then
Comfy.Canvas.ToggleSelectedNodes.Bypass): it sets the instance's mode AND every inner node's mode
in the definition to 4. A second instance of the same definition (LiteGraph.createNode(<definition
id>)) stays mode 0 but its inner nodes are now bypassed too (shared definition), so BOTH pass their
`image` input through: each SaveImage points at its own EmptyImage and no inner node is in the API.""",
r"""
await H.reset();
const e1 = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32, color: 255}});
const b = H.add('ImageBlur', [320, 0], {widgets: {blur_radius: 4}});
const i = H.add('ImageInvert', [640, 0]);
const s1 = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_t1'}});
H.link(e1, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, s1, 0);
const sg1 = await H.toSubgraph([b, i]);
const sg2 = H.add(sg1.type, [400, 400]);
const e2 = H.add('EmptyImage', [0, 400], {widgets: {width: 16, height: 16}});
const s2 = H.add('SaveImage', [960, 400], {widgets: {filename_prefix: 'pairs_t2'}});
H.link(e2, 0, sg2, 0); H.link(sg2, 0, s2, 0);
await H.settle();
H.select([sg1]);
await H.command('Comfy.Canvas.ToggleSelectedNodes.Bypass');
app.canvas.deselectAll();
return await H.record({modes: {[sg1.id]: sg1.mode, [sg2.id]: sg2.mode,
                               inner: sg1.subgraph.nodes.map(n => [n.id, n.mode])}});
""")

case("t_subgraph_mute", """
Mute on a subgraph instance with Comfy.Canvas.ToggleSelectedNodes.Mute: the instance and its inner
nodes get mode 2; no inner node is in the API and the SaveImage after it loses `images` (the server
rejects that branch with node_errors, HTTP 200). A plain EmptyImage -> SaveImage branch still runs.""",
r"""
await H.reset();
const e1 = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32}});
const b = H.add('ImageBlur', [320, 0]);
const i = H.add('ImageInvert', [640, 0]);
const s1 = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_t3'}});
H.link(e1, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, s1, 0);
const sg = await H.toSubgraph([b, i]);
const e2 = H.add('EmptyImage', [0, 400], {widgets: {width: 8, height: 8}});
const s2 = H.add('SaveImage', [320, 400], {widgets: {filename_prefix: 'pairs_t4'}});
H.link(e2, 0, s2, 0);
H.select([sg]);
await H.command('Comfy.Canvas.ToggleSelectedNodes.Mute');
app.canvas.deselectAll();
return await H.record({modes: {[sg.id]: sg.mode, inner: sg.subgraph.nodes.map(n => [n.id, n.mode])}});
""")

case("u_combo_value_not_listed", """
Combo values outside /object_info's list are passed as they are: LoadImage's image is
"example.png [input]" (the annotated form the server's loaders accept) and ImageScale's crop keeps
a listed value. The frontend does not validate or rewrite them.""", r"""
await H.reset();
const l = H.add('LoadImage', [0, 0]);
H.widget(l, 'image').value = 'example.png [input]';
const sc = H.add('ImageScale', [320, 0], {widgets: {width: 30, height: 20}});
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_u'}});
H.link(l, 0, sc, 0); H.link(sc, 0, s, 0);
return await H.record();
""")

case("v_subgraph_output_fanout", """
A subgraph with two outputs (made by converting LoadImage + ImageToMask + MaskToImage, whose IMAGE
and MASK-derived IMAGE both leave the selection) feeding JoinImageWithAlpha and a SaveImage: output
slot n of the instance resolves to the inner node feeding subgraph output n; a subgraph input used by
two inner nodes; a SaveImage inside a subgraph (its filename_prefix auto-promoted to the instance).""",
r"""
await H.reset();
const l = H.add('LoadImage', [0, 0], {widgets: {image: 'example.png'}});
const tm = H.add('ImageToMask', [320, 0], {widgets: {channel: 'red'}});
const mi = H.add('MaskToImage', [640, 0]);
const inv = H.add('ImageInvert', [640, 200]);
const sIn = H.add('SaveImage', [960, 400], {widgets: {filename_prefix: 'pairs_v_inner'}});
const j = H.add('JoinImageWithAlpha', [960, 0]);
const s = H.add('SaveImage', [1280, 0], {widgets: {filename_prefix: 'pairs_v'}});
const s2 = H.add('SaveImage', [1280, 300], {widgets: {filename_prefix: 'pairs_v2'}});
H.link(l, 0, tm, 0); H.link(tm, 0, mi, 0); H.link(l, 0, inv, 0); H.link(inv, 0, sIn, 0);
H.link(inv, 0, j, 0); H.link(tm, 0, j, 1); H.link(j, 0, s, 0); H.link(mi, 0, s2, 0);
const sg = await H.toSubgraph([tm, mi, inv, sIn]);
return await H.record();
""")

case("w_primitive_inside_subgraph", """
A PrimitiveNode inside a subgraph: PrimitiveNode -> EmptyImage.width, both converted into a subgraph
(ImageBlur -> SaveImage outside), then the inner primitive set to 40 without its callback (inner
EmptyImage keeps a stale 100). The frontend's own graphToPrompt() THROWS here
(PrimitiveNode.applyToGraph looks the link up in app.graph.links, the root graph's, and gets
undefined), so the official UI cannot queue this workflow: `api` and `export` are null and
`frontend_error` has the message. A converter may do better (inline 40 into "<instance>:<EmptyImage>").""",
r"""
await H.reset();
const p = H.add('PrimitiveNode', [0, 0]);
const e = H.add('EmptyImage', [320, 0], {widgets: {width: 100, height: 20}});
const b = H.add('ImageBlur', [640, 0]);
const s = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_w'}});
H.link(p, 0, e, 'width'); H.link(e, 0, b, 0); H.link(b, 0, s, 0);
await H.settle();
const sg = await H.toSubgraph([p, e]);
const inner = sg.subgraph.nodes;
H.widget(inner.find(n => n.type === 'PrimitiveNode'), 0).value = 40;
H.widget(inner.find(n => n.type === 'EmptyImage'), 'width').value = 100;
return await H.record();
""")

case("x_primitive_into_subgraph_widget", """
A root-level PrimitiveNode linked to a subgraph instance's widget input (blur_radius, exposed from the
inner ImageBlur). The primitive's value 5 was set without its callback, so the instance's widget
and the inner ImageBlur both hold a stale 2 in the Save file. Through the subgraph input the link
resolves to the virtual primitive, i.e. to nothing, so the API takes the inner widget's value,
which graphToPrompt's applyToGraph has just overwritten (instance widget -> inner widget) with 5.""",
r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32}});
const b = H.add('ImageBlur', [320, 0], {widgets: {blur_radius: 2}});
const s = H.add('SaveImage', [640, 0], {widgets: {filename_prefix: 'pairs_x'}});
const pi = H.add('PrimitiveInt', [0, 300], {widgets: {value: 3}});
H.link(e, 0, b, 0); H.link(b, 0, s, 0); H.link(pi, 0, b, 'blur_radius');
const sg = await H.toSubgraph([b]);
app.graph.remove(pi);
await H.settle();
H.set(sg, 'blur_radius', 2);
const p = H.add('PrimitiveNode', [0, 300]);
H.link(p, 0, sg, 'blur_radius');
await H.settle();
H.widget(p, 0).value = 5;
return await H.record();
""")

case("y_subgraph_input_unlinked", """
Two instances of one definition (ImageBlur + ImageInvert; inputs `image` and widget `blur_radius`):
the converted one is fed normally; the second (LiteGraph.createNode(<definition id>)) has no outer
link on `image`, so the inner ImageBlur gets no `image` key (node_errors, HTTP 200) while its
blur_radius comes from that instance's own widget (7).""",
r"""
await H.reset();
const e = H.add('EmptyImage', [0, 0], {widgets: {width: 32, height: 32}});
const b = H.add('ImageBlur', [320, 0]);
const i = H.add('ImageInvert', [640, 0]);
const s = H.add('SaveImage', [960, 0], {widgets: {filename_prefix: 'pairs_y1'}});
const pi = H.add('PrimitiveInt', [0, 300], {widgets: {value: 3}});
H.link(e, 0, b, 0); H.link(b, 0, i, 0); H.link(i, 0, s, 0); H.link(pi, 0, b, 'blur_radius');
const sg1 = await H.toSubgraph([b, i]);
app.graph.remove(pi);
await H.settle();
H.set(sg1, 'blur_radius', 2);
const sg2 = H.add(sg1.type, [400, 400]);
await H.settle();
H.set(sg2, 'blur_radius', 7);
const s2 = H.add('SaveImage', [960, 400], {widgets: {filename_prefix: 'pairs_y2'}});
H.link(sg2, 0, s2, 0);
return await H.record();
""")

# ------------------------------------------------------------------------------------------------
# Running


def _http_json(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": raw.decode(errors="replace")}


def run_on_server(base_url: str, api: dict) -> dict:
    status, answer = _http_json("POST", f"{base_url}/api/prompt",
                                {"prompt": api, "client_id": CLIENT_ID})
    result: dict = {"http_status": status, "node_errors": answer.get("node_errors") or {},
                    "error": answer.get("error"), "status": None, "executed": [], "runs_ok": False}
    if status != 200:
        return result
    prompt_id = answer["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        _, hist = _http_json("GET", f"{base_url}/api/history/{urllib.parse.quote(prompt_id)}")
        entry = hist.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            st = entry.get("status", {})
            if st.get("status_str") in ("success", "error"):
                result["status"] = st.get("status_str")
                result["executed"] = sorted(entry.get("outputs", {}), key=_id_key)
                if st.get("status_str") == "error":
                    result["error"] = [
                        {k: m[1].get(k) for k in ("node_id", "node_type", "exception_type",
                                                  "exception_message")}
                        for m in st.get("messages", []) if m and m[0] == "execution_error"]
                break
        time.sleep(0.2)
    else:
        result["status"] = "timeout"
    result["runs_ok"] = status == 200 and not result["node_errors"] and result["status"] == "success"
    return result


def _id_key(node_id: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in node_id.split(":")]


def normalise_uuids(case_name: str, text: str) -> str:
    mapping: dict[str, str] = {}

    def repl(m: re.Match) -> str:
        old = m.group(0)
        if old not in mapping:
            mapping[old] = str(uuid.uuid5(UUID_NS, f"{case_name}:{len(mapping)}"))
        return mapping[old]

    return UUID_RE.sub(repl, text)


def _route_loopback_only(route) -> None:
    host = urllib.parse.urlsplit(route.request.url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def generate(base_url: str, cases: list[Case], out_dir: Path) -> list[dict]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("Debian's chromium is needed (apt-get install chromium)")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.route("**/*", _route_loopback_only)
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(base_url + "/")
            # Ready: node definitions registered, the command store and the canvas set up. (On a
            # fresh user dir the default workflow may not be loaded, so don't wait for nodes.)
            page.wait_for_function(
                "() => window.app?.graph && window.app.canvas && window.LiteGraph"
                " && LiteGraph.registered_node_types['EmptyImage']"
                " && LiteGraph.registered_node_types['PrimitiveNode']"
                " && LiteGraph.registered_node_types['Reroute']"
                " && window.app.extensionManager?.command?.commands"
                "      ?.some(c => c.id === 'Comfy.Graph.ConvertToSubgraph')",
                timeout=90_000,
            )
            page.wait_for_timeout(2000)  # let the startup workflow load finish before resetting
            frontend = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
            page.evaluate(HELPERS_JS)
            for c in cases:
                page_errors.clear()
                raw = page.evaluate(f"async () => {{ const H = window.__uip;\n{c.js}\n}}")
                text = normalise_uuids(c.name, raw)
                rec = json.loads(text)
                pair: dict = {"case": c.name, "description": c.description,
                              "frontend_version": frontend}
                if "ui_file" in rec:  # a hand-written file loaded with loadGraphData
                    pair["ui"] = rec.pop("ui_file")
                    pair["ui_resaved"] = rec.pop("ui")
                else:
                    pair["ui"] = rec.pop("ui")
                pair["export"] = rec.pop("export")
                pair["api"] = rec.pop("api")
                pair.update(rec)  # case-specific extras (e.g. observed modes)
                if pair["api"] is not None:
                    pair.update(run_on_server(base_url, pair["api"]))
                else:
                    pair.update({"http_status": None, "node_errors": {}, "error": None,
                                 "status": None, "executed": [], "runs_ok": False})
                if page_errors:
                    pair["page_errors"] = list(page_errors)
                path = out_dir / f"{c.name}.json"
                path.write_text(json.dumps(pair, indent=1, ensure_ascii=False) + "\n",
                                encoding="utf-8")
                summary.append(pair)
                print(f"{c.name:32s} runs_ok={pair['runs_ok']!s:5s} http={pair['http_status']} "
                      f"api={sorted(pair['api'] or [], key=_id_key)} "
                      f"node_errors={sorted(pair['node_errors'])}", flush=True)
        finally:
            browser.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    ap.add_argument("--url", help="use this running ComfyUI 0.3.75 instead of starting one")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    known = {c.name: c for c in CASES}
    unknown = [n for n in args.cases if n not in known]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {list(known)}")
    cases = [known[n] for n in args.cases] if args.cases else CASES
    if not args.cases and args.out.is_dir():  # a full run: drop pairs of cases that are gone
        for stale in args.out.glob("*.json"):
            if stale.stem not in known:
                stale.unlink()
    if args.url:
        generate(args.url.rstrip("/"), cases, args.out)
        return 0
    from comfypanel import devserver

    devserver.ensure_installed()
    with tempfile.TemporaryDirectory(prefix="ui-pairs-") as tmp:
        server = devserver.start(data_dir=tmp)
        try:
            generate(server.url, cases, args.out)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
