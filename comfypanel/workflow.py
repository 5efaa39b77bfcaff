"""Workflows in, API prompts out: formats, UI→API conversion, edits, seeds, batches, recipes.

Whatever a colleague hands over — an API-format JSON (also wrapped as ``{"prompt": ...}``), the
normal "Save" JSON of the ComfyUI frontend, or a PNG/WebP/JPEG written by ComfyUI — ``load()``
recognises it, and ``to_api()`` turns it into the API prompt the official frontend would send
(``app.graphToPrompt()``), following the rules in ``shared/docs/ui-format.md``:

- widget values map to input names in ``/object_info`` order; the pseudo-values that do not
  serialise are skipped (``control_after_generate`` after seed-like INTs, ``control_filter_list``
  after a primitive's COMBO, the upload button after ``image_upload`` combos);
- links resolve through Reroute chains; PrimitiveNode values are inlined into every target;
- bypassed nodes (mode 4) pass a matching input through, muted nodes (mode 2) are dropped and the
  inputs that pointed at them are deleted from their consumers;
- Note / MarkdownNote and other frontend-only nodes never reach the API; groups are ignored;
- subgraphs are expanded with the frontend's id scheme (``"8:4"``, nested ``"11:11:7"``).

Anything else gets one plain sentence saying what the file is and what to export instead
(``WorkflowError``), never a traceback.
"""

from __future__ import annotations

import copy
import io
import json
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from .errors import InvalidInput

__all__ = [
    "WorkflowError",
    "LoadedWorkflow",
    "ConversionReport",
    "load",
    "load_json",
    "to_api",
    "convert_ui",
    "apply_edits",
    "SeedMode",
    "SEED_MODES",
    "next_seed",
    "apply_seed_modes",
    "batch",
    "GridCell",
    "grid",
    "Recipe",
    "MAX_WORKFLOW_BYTES",
]

MAX_WORKFLOW_BYTES = 50 * 1024 * 1024  # a workflow (or image carrying one) larger than this is refused

Format = Literal["api", "ui", "png-ui", "png-api"]

# Frontend-only node types: they exist in the editor and never reach the API.
VIRTUAL_TYPES = frozenset({
    "Reroute", "PrimitiveNode", "Note", "MarkdownNote",
    # popular frontend-only helpers from custom-node packs (they register as virtual nodes)
    "Label (rgthree)", "Fast Groups Muter (rgthree)", "Fast Groups Bypasser (rgthree)", "Bookmark (rgthree)",
})
MODE_NEVER = 2  # muted
MODE_BYPASS = 4
_CONTROL_VALUES = frozenset({"fixed", "randomize", "increment", "decrement"})
_WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20


class WorkflowError(InvalidInput):
    """The file cannot be used as a workflow; ``user_message`` says what it is and what to do."""


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedWorkflow:
    """A recognised workflow. ``api`` is set for API-format sources; ``ui`` for Save-format ones
    (convert with ``to_api``). From images the UI workflow is preferred, the API prompt kept too."""

    format: Format
    name: str
    api: Mapping[str, Any] | None = field(default=None, repr=False)
    ui: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def source(self) -> Mapping[str, Any]:
        """The workflow as given (UI when present): what the recipe stores and downloads offer."""
        return self.ui if self.ui is not None else (self.api or {})


def _name_of(filename: str | None) -> str:
    base = (filename or "workflow").replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"\.(json|png|webp|jpe?g)$", "", base, flags=re.I) or "workflow"


def load(data: bytes, filename: str | None = None) -> LoadedWorkflow:
    """Recognise a workflow file (JSON of either format, or an image made by ComfyUI).

    Raises:
        WorkflowError: with one sentence on what the file is and what to export instead.
    """
    name = _name_of(filename)
    if not data:
        raise WorkflowError("The file is empty. Choose a workflow .json file or a PNG made by ComfyUI.")
    if len(data) > MAX_WORKFLOW_BYTES:
        raise WorkflowError(
            f"The file is larger than {MAX_WORKFLOW_BYTES // (1024 * 1024)} MB, far more than any workflow; "
            "choose the workflow .json file or a PNG made by ComfyUI."
        )
    head = data[:16]
    if head.startswith(b"\x89PNG") or head[:4] == b"RIFF" and data[8:12] == b"WEBP" or head.startswith(b"\xff\xd8\xff"):
        return _load_image(data, name)
    if head.startswith((b"GIF8", b"BM", b"II*\x00", b"MM\x00*")) or data[4:8] == b"ftyp":
        raise WorkflowError(
            "This image format cannot carry a ComfyUI workflow; use the PNG (or WebP) that ComfyUI saved, "
            "or the workflow .json file."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("utf-16") if head[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        except UnicodeDecodeError:
            text = ""
        if not text:
            raise WorkflowError(
                "This file is neither a workflow (.json) nor an image made by ComfyUI. Export the workflow "
                "from ComfyUI with “Save” or “Export (API)” and load that file."
            ) from None
    try:
        obj = json.loads(text)
    except RecursionError:
        raise WorkflowError("The workflow file is nested too deeply to be a ComfyUI workflow.") from None
    except ValueError as exc:
        stripped = text.strip()
        if stripped.startswith(("{", "[")):
            raise WorkflowError(
                "The workflow file is not valid JSON (it may be cut off or edited by hand; the problem is near "
                f"line {getattr(exc, 'lineno', '?')}). Export it again from ComfyUI."
            ) from None
        raise WorkflowError(
            "This file is not a workflow: it is not JSON. Export the workflow from ComfyUI with “Save” or "
            "“Export (API)”, or use a PNG that ComfyUI made."
        ) from None
    return load_json(obj, name)


def load_json(obj: Any, name: str = "workflow") -> LoadedWorkflow:
    """Recognise an already parsed JSON value. Raises ``WorkflowError``."""
    if isinstance(obj, list):
        raise WorkflowError(
            "This JSON file holds a list, not a ComfyUI workflow. Export the workflow from ComfyUI with “Save” "
            "or “Export (API)”."
        )
    if not isinstance(obj, dict):
        raise WorkflowError("This JSON file holds a single value, not a ComfyUI workflow.")
    if not obj:
        raise WorkflowError("The workflow is empty (the file holds {}). Export a workflow with nodes in it.")
    # wrapped API prompt: {"prompt": {...}} (the body of POST /prompt) or {"output": {...}}
    for key in ("prompt", "output"):
        if isinstance(obj.get(key), dict) and _looks_api(obj[key]):
            obj = obj[key]
            break
    if isinstance(obj.get("workflow"), dict) and _looks_ui(obj["workflow"]):
        obj = obj["workflow"]
    if _looks_ui(obj):
        nodes = obj.get("nodes")
        if not nodes:
            raise WorkflowError("The workflow has no nodes. Add nodes in ComfyUI, save it, and load it again.")
        return LoadedWorkflow("ui", name, ui=obj)
    if _looks_api(obj):
        return LoadedWorkflow("api", name, api=_normalise_api(obj))
    if "nodes" in obj and isinstance(obj.get("nodes"), list) and "links" not in obj:
        raise WorkflowError(
            "This looks like a workflow from another app (it has nodes but no ComfyUI links). Export the "
            "workflow from ComfyUI itself."
        )
    if any(isinstance(v, dict) and "inputs" in v and "class_type" not in v for v in obj.values()):
        raise WorkflowError(
            "This file looks like an API-format workflow, but a node has no class_type. Export it again "
            "with “Export (API)”."
        )
    if "last_node_id" in obj or "version" in obj and "extra" in obj:
        raise WorkflowError("The workflow has no nodes. Add nodes in ComfyUI, save it, and load it again.")
    raise WorkflowError(
        "This JSON file is not a ComfyUI workflow (it has neither nodes and links nor API-format nodes). "
        "Export the workflow from ComfyUI with “Save” or “Export (API)”."
    )


def _looks_ui(obj: Mapping[str, Any]) -> bool:
    return isinstance(obj.get("nodes"), list) and isinstance(obj.get("links"), (list, type(None))) and "links" in obj


def _looks_api(obj: Mapping[str, Any]) -> bool:
    return bool(obj) and all(
        isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in obj.values()
    )


def _normalise_api(obj: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node_id, node in obj.items():
        inputs = node.get("inputs")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise WorkflowError(f"Node {node_id} of the workflow has inputs that are not a table; export it again.")
        entry: dict[str, Any] = {"class_type": node["class_type"], "inputs": copy.deepcopy(inputs)}
        if isinstance(node.get("_meta"), dict):
            entry["_meta"] = copy.deepcopy(node["_meta"])
        out[str(node_id)] = entry
    return out


def _load_image(data: bytes, name: str) -> LoadedWorkflow:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))  # lazy: headers and text chunks only, no pixel decoding
        texts = dict(getattr(img, "text", None) or img.info or {})
        exif_texts = []
        try:
            exif = img.getexif()
            exif_texts = [v for v in exif.values() if isinstance(v, (str, bytes))]
            user_comment = exif.get_ifd(0x8769).get(0x9286)
            if user_comment:
                exif_texts.append(user_comment)
        except Exception:  # EXIF is optional; a broken block must not hide the PNG chunks
            pass
    except Image.DecompressionBombError:
        raise WorkflowError(
            "The image is far too large to open safely (it claims more pixels than any real output); load the "
            "workflow .json file instead."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise WorkflowError(
            "The image is damaged or not really an image, so no workflow can be read from it. Use the original "
            "file that ComfyUI saved."
        ) from None
    workflow = texts.get("workflow")
    prompt = texts.get("prompt")
    for raw in exif_texts:
        text = raw.decode("utf-8", "replace").lstrip("\x00") if isinstance(raw, bytes) else raw
        text = text.removeprefix("UNICODE\x00").removeprefix("ASCII\x00\x00\x00").strip("\x00")
        low = text[:12].lower()
        if low.startswith("workflow:") and workflow is None:
            workflow = text.split(":", 1)[1]
        elif low.startswith("prompt:") and prompt is None:
            prompt = text.split(":", 1)[1]
    ui_obj = _try_json(workflow)
    if isinstance(ui_obj, dict) and _looks_ui(ui_obj) and ui_obj.get("nodes"):
        api_obj = _try_json(prompt)
        api = _normalise_api(api_obj) if isinstance(api_obj, dict) and _looks_api(api_obj) else None
        return LoadedWorkflow("png-ui", name, api=api, ui=ui_obj)
    api_obj = _try_json(prompt)
    if isinstance(api_obj, dict) and _looks_api(api_obj):
        return LoadedWorkflow("png-api", name, api=_normalise_api(api_obj))
    if "parameters" in texts:
        raise WorkflowError(
            "This image was made by another app (Automatic1111 or Forge), not ComfyUI, so it has no ComfyUI "
            "workflow. Load a PNG made by ComfyUI or the workflow .json file."
        )
    raise WorkflowError(
        "This image has no ComfyUI workflow in it (it was not saved by ComfyUI, or the metadata was removed). "
        "Load the workflow .json file, or a PNG straight from ComfyUI's output folder."
    )


def _try_json(text: Any) -> Any:
    if not isinstance(text, (str, bytes)):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# ---------------------------------------------------------------------------------------------
# UI → API conversion
# ---------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What the conversion did besides copying: for pre-flight messages and the CLI."""

    unknown_classes: list[str] = field(default_factory=list)
    dropped_nodes: list[str] = field(default_factory=list)  # muted, bypassed, virtual
    removed_inputs: list[tuple[str, str]] = field(default_factory=list)  # (api node id, input name)


def to_api(loaded: LoadedWorkflow, object_info: Mapping[str, Any] | None = None,
           report: ConversionReport | None = None) -> dict[str, Any]:
    """The API prompt for a loaded workflow (UI sources need the server's ``/object_info``).

    Raises:
        WorkflowError: nothing of the workflow would run (no nodes left after conversion).
    """
    if loaded.ui is not None and object_info is not None:
        return convert_ui(loaded.ui, object_info, report=report)
    if loaded.api is not None:
        return copy.deepcopy(dict(loaded.api))
    raise WorkflowError("This workflow needs the server's node list to be converted; connect to a server first.")


class _Level:
    """One graph level: the top graph or one subgraph instance's definition."""

    def __init__(self, graph: Mapping[str, Any], prefix: str, parent: "_Level | None", instance: Mapping | None,
                 defs: Mapping[str, Mapping[str, Any]]):
        self.prefix = prefix
        self.parent = parent
        self.instance = instance  # the subgraph node in the parent level (None at the top)
        self.defs = defs
        self.graph = graph
        self.nodes: dict[int | str, Mapping[str, Any]] = {}
        nodes = graph.get("nodes")
        for n in nodes if isinstance(nodes, list) else ():
            # an id that is not a number or a string (a list, an object, true) is not ComfyUI's
            if isinstance(n, Mapping) and isinstance(n.get("id"), (int, str)) and not isinstance(n["id"], bool):
                self.nodes[_nid(n["id"])] = n
        self.links: dict[Any, tuple[Any, int, Any, int, str]] = {}
        links = graph.get("links")
        for link in links if isinstance(links, list) else ():
            parsed = _parse_link(link)
            if parsed is not None:
                self.links[parsed[0]] = parsed[1:]

    def api_id(self, node_id: Any) -> str:
        return f"{self.prefix}{node_id}"


def _nid(v: Any) -> Any:
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    return v


def _parse_link(link: Any) -> tuple | None:
    if isinstance(link, (list, tuple)) and len(link) >= 5:
        lid, o_id, o_slot, t_id, t_slot = link[:5]
        ltype = link[5] if len(link) > 5 else "*"
    elif isinstance(link, Mapping) and "id" in link:
        lid, o_id, o_slot = link.get("id"), link.get("origin_id"), link.get("origin_slot")
        t_id, t_slot, ltype = link.get("target_id"), link.get("target_slot"), link.get("type", "*")
    else:
        return None
    if not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in (lid, o_id, t_id)):
        return None  # ids must be hashable numbers or strings
    try:
        return (lid, _nid(o_id), int(o_slot), _nid(t_id), int(t_slot), ltype)
    except (TypeError, ValueError, OverflowError):
        return None


def _spec_list(object_info: Mapping[str, Any], class_type: str) -> list[tuple[str, Any]]:
    """Inputs of a class in widget order: required then optional, ``input_order`` when given."""
    info = object_info.get(class_type)
    if not isinstance(info, Mapping):
        return []
    inputs = info.get("input") or {}
    order = info.get("input_order") or {}
    out: list[tuple[str, Any]] = []
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        names = order.get(section) or list(specs)
        for name in names:
            if name in specs:
                out.append((name, specs[name]))
    return out


def _is_widget(spec: Any) -> tuple[bool, dict]:
    if not isinstance(spec, (list, tuple)) or not spec:
        return False, {}
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if opts.get("forceInput") or opts.get("rawLink"):
        return False, opts
    if isinstance(kind, list) or kind in _WIDGET_TYPES:
        return True, opts
    return False, opts


def _widget_values(node: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, Any]:
    """Map a node's ``widgets_values`` to input names, skipping values that do not serialise."""
    values = node.get("widgets_values")
    class_type = node.get("type")
    specs = _spec_list(object_info, class_type)
    if isinstance(values, Mapping):  # some nodes serialise widgets by name
        names = {n for n, _ in specs}
        return {k: v for k, v in values.items() if k in names}
    if not isinstance(values, list):
        return {}
    out: dict[str, Any] = {}
    i = 0
    for name, spec in specs:
        widget, opts = _is_widget(spec)
        if not widget:
            continue
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        seed_like = opts.get("control_after_generate") or (
            spec[0] == "INT" and name in ("seed", "noise_seed")) if isinstance(spec, (list, tuple)) else False
        if seed_like and i < len(values) and isinstance(values[i], str) and values[i] in _CONTROL_VALUES:
            i += 1  # control_after_generate: not sent
        if any(k.endswith("_upload") and v for k, v in opts.items()) and i < len(values):
            nxt = values[i]
            # the upload button widget stores its own name ("image", "upload", ...) or nothing
            if nxt is None or isinstance(nxt, str) and nxt in ("image", "upload", "video", "audio", "file", ""):
                i += 1
    return out


class _Converter:
    def __init__(self, ui: Mapping[str, Any], object_info: Mapping[str, Any], report: ConversionReport):
        self.object_info = object_info
        self.report = report
        defs: dict[str, Mapping[str, Any]] = {}
        definitions = ui.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, Mapping) else None
        for d in subgraphs if isinstance(subgraphs, list) else ():
            if isinstance(d, Mapping) and isinstance(d.get("id"), (str, int)) and d.get("id"):
                defs[str(d["id"])] = d
        self.defs = defs
        self.top = _Level(ui, "", None, None, defs)
        self.out: dict[str, Any] = {}

    # -- output resolution --------------------------------------------------------------------
    def resolve(self, level: _Level, node_id: Any, slot: int, depth: int = 0) -> tuple | None:
        """What feeds a link whose origin is (node_id, slot) in ``level``: ``("link", api_id, slot)``,
        ``("value", v)`` (a primitive), ``("dropped",)`` (a muted node: the consumer loses the input),
        ``("keep",)`` (an unlinked subgraph input: the inner widget keeps its value), or None
        (the chain dangles: a widget keeps its own value)."""
        if depth > 200:
            raise WorkflowError("The workflow's links form a loop through reroutes or subgraphs; fix it in ComfyUI.")
        if node_id == SUBGRAPH_INPUT_NODE and level.instance is not None:
            return self._from_subgraph_input(level, slot, depth)
        node = level.nodes.get(node_id)
        if node is None:
            return None
        ntype = node.get("type")
        mode = node.get("mode", 0)
        if ntype == "Reroute":
            link_id = _input_link(node, 0)
            return self._follow(level, link_id, depth) if link_id is not None else None
        if ntype == "PrimitiveNode":
            vals = node.get("widgets_values")
            if mode == MODE_NEVER:
                return ("dropped",)
            return ("value", vals[0]) if isinstance(vals, list) and vals else None
        if mode == MODE_NEVER:
            return ("dropped",)  # muted: consumers lose this input, even a widget socket
        if mode == MODE_BYPASS:
            return self._bypass(level, node, slot, depth)
        if str(ntype) in self.defs:
            return self._from_subgraph_output(level, node, slot, depth)
        if ntype in VIRTUAL_TYPES:
            return None
        return ("link", level.api_id(node_id), slot)

    def _follow(self, level: _Level, link_id: Any, depth: int) -> tuple | None:
        link = level.links.get(link_id)
        if link is None:
            return None
        o_id, o_slot = link[0], link[1]
        return self.resolve(level, o_id, o_slot, depth + 1)

    def _bypass(self, level: _Level, node: Mapping[str, Any], slot: int, depth: int) -> tuple | None:
        outputs = node.get("outputs") or []
        wanted = outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], Mapping) else None
        inputs = [i for i in node.get("inputs") or () if isinstance(i, Mapping)]
        chosen = None
        if slot < len(inputs) and _type_fits(inputs[slot].get("type"), wanted):
            chosen = inputs[slot]
        else:
            chosen = next((i for i in inputs if _type_fits(i.get("type"), wanted) and i.get("type") != "*"), None)
            if chosen is None:
                chosen = next((i for i in inputs if _type_fits(i.get("type"), wanted)), None)
        if chosen is None or chosen.get("link") is None:
            return None
        return self._follow(level, chosen["link"], depth)

    def _from_subgraph_output(self, level: _Level, node: Mapping[str, Any], slot: int, depth: int) -> tuple | None:
        inner = self._child(level, node)
        for link in inner.links.values():
            o_id, o_slot, t_id, t_slot, _t = link
            if t_id == SUBGRAPH_OUTPUT_NODE and t_slot == slot:
                return self.resolve(inner, o_id, o_slot, depth + 1)
        return None

    def _from_subgraph_input(self, level: _Level, slot: int, depth: int) -> tuple | None:
        instance = level.instance
        parent = level.parent
        assert instance is not None and parent is not None
        definition = self.defs.get(str(instance.get("type")), {})
        d_inputs = definition.get("inputs") or []
        name = d_inputs[slot].get("name") if slot < len(d_inputs) and isinstance(d_inputs[slot], Mapping) else None
        inst_inputs = [i for i in instance.get("inputs") or () if isinstance(i, Mapping)]
        match = next((i for i in inst_inputs if name is not None and i.get("name") == name), None)
        if match is None and slot < len(inst_inputs):
            match = inst_inputs[slot]
        if match is not None and match.get("link") is not None:
            return self._follow(parent, match["link"], depth)
        # not linked outside: the instance's own widget (proxyWidgets ["-1", name]) holds the value
        proxies = (instance.get("properties") or {}).get("proxyWidgets") or []
        values = instance.get("widgets_values") or []
        for j, proxy in enumerate(proxies):
            if isinstance(proxy, (list, tuple)) and len(proxy) == 2 and str(proxy[0]) == "-1" and proxy[1] == name:
                if isinstance(values, list) and j < len(values):
                    return ("value", values[j])
        if match is not None and isinstance(match.get("widget"), Mapping) and isinstance(values, list):
            # older saves: the instance's widgets_values follow its widget inputs in order
            widget_inputs = [i for i in inst_inputs if isinstance(i.get("widget"), Mapping)]
            k = widget_inputs.index(match)
            if k < len(values):
                return ("value", values[k])
        return ("keep",)  # nothing outside: the inner widget keeps its own value

    def _child(self, level: _Level, node: Mapping[str, Any]) -> _Level:
        definition = self.defs[str(node.get("type"))]
        return _Level(definition, f"{level.prefix}{node.get('id')}:", level, node, self.defs)

    # -- emission ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self._emit_level(self.top, 0)
        return self.out

    def _emit_level(self, level: _Level, depth: int) -> None:
        if depth > 32:
            raise WorkflowError("The workflow's subgraphs are nested too deeply (a subgraph may contain itself).")
        for node_id, node in sorted(level.nodes.items(), key=lambda kv: _sort_key(kv[0])):
            ntype = node.get("type")
            mode = node.get("mode", 0)
            if node_id in (SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE):
                continue
            if not isinstance(ntype, str) or not ntype:
                self.report.dropped_nodes.append(level.api_id(node_id))  # no node type: nothing to run
                continue
            if ntype in self.defs:
                if mode in (MODE_NEVER, MODE_BYPASS):
                    self.report.dropped_nodes.append(level.api_id(node_id))
                    continue
                self._emit_level(self._child(level, node), depth + 1)
                continue
            if ntype in VIRTUAL_TYPES or mode in (MODE_NEVER, MODE_BYPASS):
                self.report.dropped_nodes.append(level.api_id(node_id))
                continue
            self._emit_node(level, node_id, node)

    def _emit_node(self, level: _Level, node_id: Any, node: Mapping[str, Any]) -> None:
        ntype = node["type"]
        api_id = level.api_id(node_id)
        known = ntype in self.object_info
        if not known and ntype not in self.report.unknown_classes:
            self.report.unknown_classes.append(ntype)
        inputs: dict[str, Any] = _widget_values(node, self.object_info) if known else {}
        for inp in node.get("inputs") or ():
            if not isinstance(inp, Mapping):
                continue
            widget = inp.get("widget") if isinstance(inp.get("widget"), Mapping) else None
            name = (widget or {}).get("name") or inp.get("name")
            if not isinstance(name, str):
                continue
            link_id = inp.get("link")
            if link_id is None:
                continue
            link = level.links.get(link_id)
            if link is None:
                continue
            source = self.resolve(level, link[0], link[1])
            if source is None:
                # A link that leads nowhere (muted node, dangling reroute): a socket input is left
                # out (the server then rejects that branch); a widget socket keeps its own value.
                if widget is None:
                    inputs.pop(name, None)
                    self.report.removed_inputs.append((api_id, name))
                continue
            if source[0] == "dropped":
                inputs.pop(name, None)
                self.report.removed_inputs.append((api_id, name))
                continue
            if source[0] == "keep":
                continue
            if source[0] == "value":
                inputs[name] = source[1]
            else:
                inputs[name] = [source[1], source[2]]
        title = node.get("title")
        if not isinstance(title, str) or not title:
            info = self.object_info.get(ntype) or {}
            title = info.get("display_name") or ntype
        self.out[api_id] = {"inputs": inputs, "class_type": ntype, "_meta": {"title": title}}


def _sort_key(node_id: Any) -> tuple:
    return (0, node_id, "") if isinstance(node_id, int) else (1, 0, str(node_id))


def _input_link(node: Mapping[str, Any], index: int) -> Any:
    inputs = node.get("inputs") or []
    if index < len(inputs) and isinstance(inputs[index], Mapping):
        return inputs[index].get("link")
    return None


def _type_fits(have: Any, want: Any) -> bool:
    if want is None or have is None:
        return True
    if have == "*" or want == "*":
        return True
    have_set = set(str(have).split(","))
    want_set = set(str(want).split(","))
    return bool(have_set & want_set)


def convert_ui(ui: Mapping[str, Any], object_info: Mapping[str, Any], *,
               report: ConversionReport | None = None) -> dict[str, Any]:
    """Convert a "Save" workflow to the API prompt ``app.graphToPrompt()`` would send.

    Raises:
        WorkflowError: the graph has loops through reroutes/subgraphs, or nothing would run.
    """
    rep = report if report is not None else ConversionReport()
    try:
        out = _Converter(ui, object_info, rep).run()
    except (TypeError, AttributeError, KeyError, IndexError, ValueError):
        # A hand-edited or foreign file whose nodes or links do not have the shapes ComfyUI saves
        # (a number where a list belongs, a link to a slot that is not there, ...).
        raise WorkflowError(
            "The workflow file is damaged: some nodes or links are not what ComfyUI saves. Open it in "
            "ComfyUI, save it again and load the new file."
        ) from None
    except RecursionError:
        raise WorkflowError(
            "The workflow's links form a loop through reroutes or subgraphs; fix it in ComfyUI."
        ) from None
    if not out and not any(isinstance(n, Mapping) and isinstance(n.get("type"), str) and n.get("type")
                           and isinstance(n.get("id"), (int, str)) and not isinstance(n.get("id"), bool)
                           for n in (ui.get("nodes") if isinstance(ui.get("nodes"), list) else ())):
        raise WorkflowError(
            "The workflow's nodes are damaged (none has a usable id and node type). Export the workflow from "
            "ComfyUI again and load the new file."
        )
    if not out:
        raise WorkflowError(
            "Nothing in this workflow would run: every node is muted, bypassed or a note. Enable some nodes "
            "in ComfyUI and save it again."
        )
    return out


# ---------------------------------------------------------------------------------------------
# edits, seeds, batches, grids
# ---------------------------------------------------------------------------------------------


def _split_param(param_id: str) -> tuple[str, str]:
    node_id, sep, name = param_id.rpartition(".")
    if not sep or not node_id or not name:
        raise InvalidInput(f"“{param_id}” does not name a parameter (expected NODE_ID.INPUT).")
    return node_id, name


def apply_edits(graph: Mapping[str, Any], edits: Mapping[str, Any]) -> dict[str, Any]:
    """A new API graph with ``edits`` (``{"<node_id>.<input>": value}``) applied; nothing else changes.

    Raises:
        InvalidInput: an edit names a node or input that does not exist, or a linked input.
    """
    out = copy.deepcopy(dict(graph))
    for param_id, value in edits.items():
        node_id, name = _split_param(param_id)
        node = out.get(node_id)
        if not isinstance(node, dict):
            raise InvalidInput(f"The workflow has no node {node_id} (from “{param_id}”).")
        inputs = node.setdefault("inputs", {})
        if isinstance(inputs.get(name), list):
            raise InvalidInput(f"“{param_id}” is connected to another node, so it cannot be set to a value.")
        inputs[name] = copy.deepcopy(value)
    return out


SeedMode = Literal["fixed", "randomize", "increment", "decrement"]
SEED_MODES: tuple[str, ...] = ("fixed", "randomize", "increment", "decrement")
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def next_seed(current: int, mode: str, rng: random.Random | None = None, *, low: int = 0,
              high: int = SEED_MAX) -> int:
    """The seed to use for the next run under ``mode`` (ComfyUI's control_after_generate semantics)."""
    if mode == "fixed":
        return current
    if mode == "randomize":
        return (rng or random.SystemRandom()).randint(low, min(high, 1125899906842624))
    if mode == "increment":
        return current + 1 if current + 1 <= high else low
    if mode == "decrement":
        return current - 1 if current - 1 >= low else high
    raise InvalidInput(f"Unknown seed mode “{mode}”; use fixed, randomize, increment or decrement.")


def apply_seed_modes(graph: Mapping[str, Any], modes: Mapping[str, str], rng: random.Random | None = None
                     ) -> tuple[dict[str, Any], dict[str, int]]:
    """Apply each seed parameter's mode **before** submitting; returns the graph and the seeds used."""
    used: dict[str, int] = {}
    for param_id, mode in modes.items():
        node_id, name = _split_param(param_id)
        current = (graph.get(node_id) or {}).get("inputs", {}).get(name)
        if isinstance(current, list):
            continue  # linked: the seed comes from another node
        if not isinstance(current, int) or isinstance(current, bool):
            current = 0
        used[param_id] = next_seed(current, mode, rng)
    return apply_edits(graph, used), used


def batch(graph: Mapping[str, Any], count: int, modes: Mapping[str, str], rng: random.Random | None = None
          ) -> list[tuple[dict[str, Any], dict[str, int]]]:
    """``count`` graphs for "run ×N": the seed policy is applied before each run in turn.

    With ``fixed`` every run has the same seed (the server's cache then answers repeats); with
    ``increment`` the runs get seed, seed+1, …
    """
    if count < 1 or count > 1000:
        raise InvalidInput("Choose between 1 and 1000 runs.")
    runs = []
    current = dict(graph)
    for i in range(count):
        if i == 0:
            first_modes = {p: ("fixed" if m in ("increment", "decrement") else m) for p, m in modes.items()}
            current, used = apply_seed_modes(current, first_modes, rng)
        else:
            current, used = apply_seed_modes(current, modes, rng)
        runs.append((current, used))
    return runs


@dataclass(frozen=True)
class GridCell:
    x_value: Any
    y_value: Any
    label: str
    graph: Mapping[str, Any] = field(repr=False)


def grid(graph: Mapping[str, Any], x: tuple[str, Sequence[Any]], y: tuple[str, Sequence[Any]] | None = None
         ) -> list[GridCell]:
    """An XY grid: one graph per (x, y) combination, row by row (y outer), each labelled."""
    x_param, x_values = x
    if not x_values:
        raise InvalidInput("Give at least one value for the grid's X parameter.")
    y_param, y_values = y if y else (None, [None])
    if y and not y_values:
        raise InvalidInput("Give at least one value for the grid's Y parameter.")
    if len(x_values) * len(y_values) > 400:
        raise InvalidInput("A grid can have at most 400 cells; use fewer values.")
    cells = []
    for yv in y_values:
        for xv in x_values:
            edits = {x_param: xv}
            if y_param is not None:
                edits[y_param] = yv
            label = f"{x_param.split('.', 1)[-1]}={xv}" + (f", {y_param.split('.', 1)[-1]}={yv}" if y_param else "")
            cells.append(GridCell(xv, yv, label, apply_edits(graph, edits)))
    return cells


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """Everything needed to reproduce a submission exactly (stored by the ledger)."""

    source: Mapping[str, Any] = field(repr=False)  # the workflow as given (UI or API)
    source_format: str = "api"  # api | ui | png-ui | png-api
    name: str = "workflow"
    edits: Mapping[str, Any] = field(default_factory=dict)  # values the user chose ("node.input" -> value)
    seeds: Mapping[str, int] = field(default_factory=dict)  # seeds actually used (after modes)
    seed_modes: Mapping[str, str] = field(default_factory=dict)
    batch_count: int = 1
    grid: Mapping[str, Any] | None = None  # {"x": [param, values], "y": [param, values] | None}
    api: Mapping[str, Any] | None = field(default=None, repr=False)  # the exact prompt sent

    def build(self, object_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The API graph this recipe describes: source → (conversion) → edits → the seeds used.

        Re-running with it reproduces the original submission exactly (same seeds)."""
        if self.api is not None:
            return copy.deepcopy(dict(self.api))
        loaded = load_json(copy.deepcopy(dict(self.source)), self.name)
        graph = to_api(loaded, object_info)
        graph = apply_edits(graph, self.edits)
        return apply_edits(graph, dict(self.seeds))

    def with_new_seeds(self, rng: random.Random | None = None) -> "Recipe":
        """The same recipe with every seed re-drawn (for "re-run with a new seed")."""
        seeds = {p: next_seed(v, "randomize", rng) for p, v in self.seeds.items()}
        api = apply_edits(self.api, seeds) if self.api is not None else None
        return Recipe(self.source, self.source_format, self.name, dict(self.edits), seeds, dict(self.seed_modes),
                      self.batch_count, self.grid, api)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            data = json.loads(text)
            return cls(**data)
        except (ValueError, TypeError):
            raise InvalidInput("The stored recipe is damaged and cannot be re-run.") from None


def iter_links(graph: Mapping[str, Any]) -> Iterable[tuple[str, str, str, int]]:
    """(node_id, input_name, source_node_id, source_slot) for every link of an API graph."""
    for node_id, node in graph.items():
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                yield node_id, name, str(value[0]), value[1]
