"""``/object_info`` → typed input specs; which inputs of a workflow a person should see; pre-flight.

Three jobs, all on **API-format** graphs (``{node_id: {"class_type", "inputs", "_meta": {"title"}}}``,
where an input value ``[source_node_id, output_index]`` is a link):

1. :class:`Schema` turns a server's ``/object_info`` into frozen :class:`NodeSpec` / :class:`InputSpec`
   objects. Classes are parsed lazily, on first use, so a 30 MB ``/object_info`` costs little more
   than its ``json.loads``. :class:`SchemaCache` keeps one :class:`Schema` per connection
   fingerprint (thread-safe, bounded LRU); the app holds one cache object.
2. :func:`discover` lists a workflow's editable values as :class:`Parameter` objects and splits
   them into a **simple** form (prompt, negative prompt, input images and masks, models, seed,
   steps, CFG, sampler, scheduler, denoise, size, batch) and an **advanced** section grouped by
   node. Simple parameters are found by their role in the graph (what feeds a sampler's
   ``positive`` input is the prompt, whatever the node id), not by node ids.
3. :func:`preflight` finds what the server would reject (unknown node types, missing model files,
   out-of-range numbers, values not offered, missing inputs, broken links) and says it in one plain
   sentence tied to the parameter's label, before anything is sent.

Title tags
----------
A workflow author can steer the form without code by adding tags to a node's title in ComfyUI
(right-click a node ▸ Title)::

    [simple]              every value of this node goes to the simple form
    [simple=a,b]          only the inputs a and b
    [advanced]            every value goes to the advanced section, even a prompt or a seed
    [advanced=a,b]        only a and b
    [hide]                none of the node's values are shown (they are still sent as they are)
    [hide=a,b]            only a and b are hidden
    [label=Text]          the label of the node's main value (its only value; otherwise its prompt,
                          image or model file; otherwise its first value)
    [label:input=Text]    the label of one input, e.g. ``[label:scale_by=Upscale factor]``

Tags are case-insensitive, can be combined (``Upscaler [advanced] [label:scale_by=Factor]``) and
are removed from every title the panel shows. A tag naming one input beats a tag for the whole
node; ``hide`` beats ``simple`` and ``advanced``; otherwise the last tag wins.

Labels
------
A value's label is, in order: its ``[label…]`` tag; the node's title when the author set one and
the node has a single value (a prompt node titled "Negative Prompt", a loader titled "Base
model"); a label for its role ("Prompt", "Seed", "CFG", "LoRA strength"…); the input's display
name; its cleaned input name ("start_at_step" → "Start at step"). Simple labels are made unique:
"Steps (Refiner)" uses the node's own title or the title of the sampler the value feeds, and
values without such a title are numbered ("LoRA 1", "LoRA 2").
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = [
    "KINDS",
    "WIDGET_KINDS",
    "SIMPLE_ROLES",
    "ROLE_ORDER",
    "InputSpec",
    "OutputSpec",
    "NodeSpec",
    "Schema",
    "SchemaCache",
    "Parameter",
    "ParameterSet",
    "Problem",
    "PROBLEM_KINDS",
    "clean_title",
    "discover",
    "preflight",
    "is_link",
]

KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "LINK")
WIDGET_KINDS = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = frozenset({"seed", "noise_seed"})

# ---------------------------------------------------------------------------------------------
# model folders
# ---------------------------------------------------------------------------------------------

# (class_type, input) → the /models/{folder} that lists its files. The standard loaders of 0.3.75.
_MODEL_FOLDERS: Mapping[tuple[str, str], str] = MappingProxyType({
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "config_name"): "configs",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLora", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): "checkpoints",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CreateHookLora", "lora_name"): "loras",
    ("CreateHookLoraModelOnly", "lora_name"): "loras",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name1"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name2"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name3"): "text_encoders",
    ("QuadrupleCLIPLoader", "clip_name4"): "text_encoders",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("DiffusersLoader", "model_path"): "diffusers",
    ("ModelPatchLoader", "name"): "model_patches",
})

# Input names that mean the same folder in any node (custom loaders reuse them).
_NAME_FOLDERS: Mapping[str, str] = MappingProxyType({
    "ckpt_name": "checkpoints",
    "lora_name": "loras",
    "vae_name": "vae",
    "unet_name": "diffusion_models",
    "control_net_name": "controlnet",
    "controlnet_name": "controlnet",
    "style_model_name": "style_models",
    "clip_vision_name": "clip_vision",
    "upscale_model_name": "upscale_models",
    "gligen_name": "gligen",
    "hypernetwork_name": "hypernetworks",
})

# Ordered guesses from words in a class or input name (first match wins).
_FOLDER_GUESSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), f) for p, f in (
        (r"clip_?vision", "clip_vision"),
        (r"latent_?upscale", "latent_upscale_models"),
        (r"upscale", "upscale_models"),
        (r"lora|lycoris", "loras"),
        (r"control_?net|t2i", "controlnet"),
        (r"ip_?adapter", "ipadapter"),
        (r"style_?model", "style_models"),
        (r"gligen", "gligen"),
        (r"hypernetwork", "hypernetworks"),
        (r"photomaker", "photomaker"),
        (r"embedding", "embeddings"),
        (r"vae_?approx|taesd", "vae_approx"),
        (r"vae", "vae"),
        (r"unet|diffusion_?model", "diffusion_models"),
        (r"diffusers", "diffusers"),
        (r"ckpt|checkpoint", "checkpoints"),
        (r"clip|text_?encoder|t5", "text_encoders"),
        (r"model_?patch", "model_patches"),
        (r"audio_?encoder", "audio_encoders"),
        (r"config", "configs"),
    )
)
_MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx", ".pt2")
_FILE_INPUT_NAME = re.compile(r"(^|_)(name|file|model|ckpt|path)\d*$")

# folder → how a sentence names its files ("the server has no LoRAs at all")
_FOLDER_WORDS: Mapping[str, str] = MappingProxyType({
    "checkpoints": "checkpoints",
    "loras": "LoRAs",
    "vae": "VAEs",
    "diffusion_models": "diffusion models",
    "text_encoders": "text encoders",
    "controlnet": "ControlNet models",
    "upscale_models": "upscale models",
    "latent_upscale_models": "latent upscale models",
    "clip_vision": "CLIP Vision models",
    "style_models": "style models",
    "embeddings": "embeddings",
    "hypernetworks": "hypernetworks",
    "configs": "model configs",
})


def _guess_folder(text: str) -> str | None:
    for pattern, folder in _FOLDER_GUESSES:
        if pattern.search(text):
            return folder
    return None


def _model_folder(class_type: str, name: str, category: str, options: tuple[Any, ...]) -> str | None:
    """The ``/models/{folder}`` whose files this COMBO lists, or None when it lists something else."""
    folder = _MODEL_FOLDERS.get((class_type, name)) or _NAME_FOLDERS.get(name)
    if folder:
        return folder
    loaderish = "loader" in category.lower() or "loader" in class_type.lower()
    looks_files = bool(options) and all(
        isinstance(o, str) and o.lower().endswith(_MODEL_EXTS) for o in options
    )
    if not (looks_files or (loaderish and _FILE_INPUT_NAME.search(name))):
        return None
    by_class = _guess_folder(class_type.lower())
    if by_class == "clip_vision":  # "clip_name" on a CLIP Vision loader is not a text encoder
        return by_class
    return _guess_folder(name.lower()) or by_class


# ---------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------

_KNOWN_OPTION_KEYS = frozenset({
    "default", "min", "max", "step", "round", "multiline", "dynamicPrompts", "options", "tooltip",
    "display_name", "control_after_generate", "image_upload", "video_upload", "audio_upload",
    "file_upload", "image_folder", "advanced", "forceInput", "multiselect", "display",
})
_UPLOAD_KEYS = (("image_upload", "image"), ("video_upload", "video"), ("audio_upload", "audio"),
                ("file_upload", "file"))
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class, as ``/object_info`` describes it.

    ``kind`` is INT, FLOAT, STRING, BOOLEAN, COMBO (a list of ``options``) or LINK (a socket such
    as MODEL, IMAGE or a custom type, named by ``link_type``). ``control_after_generate`` marks
    seed-like INTs (also inputs named seed / noise_seed). ``upload`` is "image", "video", "audio"
    or "file" for inputs with an upload button (LoadImage and friends; ``image_upload`` is the
    image case); their COMBO lists only the server's top-level files and other values (``sub/x.png``,
    ``x.png [output]``) are accepted. ``model_folder`` names the ``/models/{folder}`` listing a model
    COMBO's files. ``known`` is False for a spec guessed from a value because the class or input
    is not in ``/object_info``.
    """

    class_type: str
    name: str
    kind: str
    link_type: str | None = None
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    round: Any = None
    multiline: bool = False
    dynamic_prompts: bool = False
    options: tuple[Any, ...] = ()
    tooltip: str | None = None
    display_name: str | None = None
    required: bool = True
    hidden: bool = False
    control_after_generate: bool = False
    image_upload: bool = False
    upload: str | None = None
    image_folder: str | None = None
    model_folder: str | None = None
    advanced: bool = False
    force_input: bool = False
    multiselect: bool = False
    display: str | None = None
    known: bool = True
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False, hash=False, repr=False)

    @property
    def is_widget(self) -> bool:
        """A value typed into the node (not a socket, not a hidden server-filled input)."""
        return self.kind in WIDGET_KINDS and not self.hidden

    @property
    def seed_like(self) -> bool:
        return self.kind == "INT" and self.control_after_generate

    @property
    def is_model(self) -> bool:
        return self.kind == "COMBO" and self.model_folder is not None


@dataclass(frozen=True)
class OutputSpec:
    type: str
    name: str
    is_list: bool = False
    tooltip: str | None = None


@dataclass(frozen=True)
class NodeSpec:
    """A node class: its inputs in ``input_order`` (required, optional, hidden) and outputs."""

    class_type: str
    display_name: str
    category: str = ""
    description: str = ""
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    output_node: bool = False
    deprecated: bool = False
    experimental: bool = False
    api_node: bool = False
    python_module: str = ""
    _by_name: Mapping[str, InputSpec] = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", MappingProxyType({i.name: i for i in self.inputs}))

    def input(self, name: str) -> InputSpec | None:
        return self._by_name.get(name)

    @property
    def widgets(self) -> tuple[InputSpec, ...]:
        return tuple(i for i in self.inputs if i.is_widget)

    @property
    def output_types(self) -> tuple[str, ...]:
        return tuple(o.type for o in self.outputs)

    @property
    def is_custom(self) -> bool:
        return self.python_module.startswith("custom_nodes")


def _num(v: Any) -> int | float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _parse_input(class_type: str, category: str, name: str, raw: Any, section: str) -> InputSpec:
    if isinstance(raw, str):  # hidden inputs: "PROMPT" instead of ["PROMPT"]
        type_, opts = raw, {}
    elif isinstance(raw, (list, tuple)) and raw:
        type_ = raw[0]
        opts = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    else:
        type_, opts = "*", {}
    options: tuple[Any, ...] = ()
    link_type = None
    if isinstance(type_, (list, tuple)):  # old combo form [[...], {...}]
        kind, options = "COMBO", tuple(type_)
    elif type_ == "COMBO":  # v3 form ["COMBO", {"options": [...]}]
        kind = "COMBO"
        raw_opts = opts.get("options")
        options = tuple(raw_opts) if isinstance(raw_opts, (list, tuple)) else ()
    elif type_ in ("INT", "FLOAT", "STRING", "BOOLEAN"):
        kind = type_
    else:
        kind, link_type = "LINK", str(type_)
    upload = next((u for key, u in _UPLOAD_KEYS if opts.get(key)), None)
    default = opts.get("default")
    if default is None and kind == "COMBO" and options:
        default = options[0]  # what the frontend shows for a combo without a default
    cag = bool(opts.get("control_after_generate")) or (kind == "INT" and name in SEED_NAMES)
    extra = {k: v for k, v in opts.items() if k not in _KNOWN_OPTION_KEYS}
    return InputSpec(
        class_type=class_type,
        name=name,
        kind=kind,
        link_type=link_type,
        default=default,
        min=_num(opts.get("min")),
        max=_num(opts.get("max")),
        step=_num(opts.get("step")),
        round=opts.get("round"),
        multiline=bool(opts.get("multiline")),
        dynamic_prompts=bool(opts.get("dynamicPrompts")),
        options=options,
        tooltip=opts.get("tooltip") if isinstance(opts.get("tooltip"), str) else None,
        display_name=opts.get("display_name") if isinstance(opts.get("display_name"), str) else None,
        required=section == "required",
        hidden=section == "hidden",
        control_after_generate=cag and kind == "INT",
        image_upload=upload == "image",
        upload=upload if kind == "COMBO" else None,
        image_folder=(opts.get("image_folder") or "input") if upload else None,
        model_folder=_model_folder(class_type, name, category, options) if kind == "COMBO" and not upload else None,
        advanced=bool(opts.get("advanced")),
        force_input=bool(opts.get("forceInput")),
        multiselect=bool(opts.get("multiselect")),
        display=opts.get("display") if isinstance(opts.get("display"), str) else None,
        extra=MappingProxyType(extra) if extra else _EMPTY,
    )


def _parse_node(class_type: str, raw: Mapping[str, Any]) -> NodeSpec:
    """Never raises: a malformed class gives a NodeSpec with what could be read."""
    category = raw.get("category") if isinstance(raw.get("category"), str) else ""
    sections = raw.get("input") if isinstance(raw.get("input"), Mapping) else {}
    order = raw.get("input_order") if isinstance(raw.get("input_order"), Mapping) else {}
    inputs: list[InputSpec] = []
    for section in ("required", "optional", "hidden"):
        specs = sections.get(section)
        if not isinstance(specs, Mapping):
            continue
        names = [n for n in (order.get(section) or ()) if n in specs]
        seen = set(names)
        names += [n for n in specs if n not in seen]
        inputs.extend(_parse_input(class_type, category, n, specs[n], section) for n in names)
    out_types = raw.get("output") if isinstance(raw.get("output"), (list, tuple)) else ()
    out_names = raw.get("output_name") if isinstance(raw.get("output_name"), (list, tuple)) else ()
    out_lists = raw.get("output_is_list") if isinstance(raw.get("output_is_list"), (list, tuple)) else ()
    out_tips = raw.get("output_tooltips") if isinstance(raw.get("output_tooltips"), (list, tuple)) else ()
    outputs = []
    for i, t in enumerate(out_types):
        type_name = t if isinstance(t, str) else "COMBO"  # a list output is a combo's options
        name = out_names[i] if i < len(out_names) and isinstance(out_names[i], str) else type_name
        tip = out_tips[i] if i < len(out_tips) and isinstance(out_tips[i], str) else None
        outputs.append(OutputSpec(type_name, name, bool(out_lists[i]) if i < len(out_lists) else False, tip))
    display = raw.get("display_name")
    return NodeSpec(
        class_type=class_type,
        display_name=display if isinstance(display, str) and display else class_type,
        category=category,
        description=raw.get("description") if isinstance(raw.get("description"), str) else "",
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        output_node=bool(raw.get("output_node")),
        deprecated=bool(raw.get("deprecated")),
        experimental=bool(raw.get("experimental")),
        api_node=bool(raw.get("api_node")),
        python_module=raw.get("python_module") if isinstance(raw.get("python_module"), str) else "",
    )


class Schema:
    """The node classes one server offers, parsed on first use.

    Build it with :meth:`from_object_info`; it keeps a shallow copy of the top level, so do not
    mutate the nested class entries afterwards. Safe to share between threads.
    """

    __slots__ = ("_raw", "_parsed")

    def __init__(self, object_info: Mapping[str, Any]) -> None:
        self._raw: dict[str, Mapping[str, Any]] = {
            k: v for k, v in object_info.items() if isinstance(k, str) and isinstance(v, Mapping)
        }
        self._parsed: dict[str, NodeSpec] = {}

    @classmethod
    def from_object_info(cls, object_info: Mapping[str, Any]) -> "Schema":
        """Raises TypeError when ``object_info`` is not a mapping."""
        if not isinstance(object_info, Mapping):
            raise TypeError("object_info must be a mapping of class names to node definitions")
        return cls(object_info)

    def node(self, class_type: str) -> NodeSpec | None:
        spec = self._parsed.get(class_type)
        if spec is None:
            raw = self._raw.get(class_type) if isinstance(class_type, str) else None
            if raw is None:
                return None
            # setdefault: two threads parsing the same class keep one (equal) result
            spec = self._parsed.setdefault(class_type, _parse_node(class_type, raw))
        return spec

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._raw

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def nodes(self) -> Iterator[NodeSpec]:
        """Every class, parsed (for a node browser; discovery never needs this)."""
        for name in self._raw:
            spec = self.node(name)
            if spec is not None:
                yield spec

    def raw(self, class_type: str) -> Mapping[str, Any] | None:
        return self._raw.get(class_type)

    def updated(self, partial: Mapping[str, Any]) -> "Schema":
        """A new Schema with the classes in ``partial`` (``/object_info/{class}``) replaced."""
        new = Schema(self._raw)
        for k, v in partial.items():
            if isinstance(k, str) and isinstance(v, Mapping) and v:
                new._raw[k] = v
        new._parsed.update({k: s for k, s in self._parsed.items() if k not in partial})
        return new


class SchemaCache:
    """Schemas per connection fingerprint: bounded LRU, thread-safe, one load per fingerprint.

    Concurrent ``get`` calls for the same fingerprint run the loader once; the others wait for it.
    A loader that raises caches nothing (the exception reaches its caller; waiting callers then try
    their own loader).
    """

    def __init__(self, maxsize: int = 8) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Schema] = OrderedDict()
        self._loading: dict[str, threading.Event] = {}

    def get(self, fingerprint: str, loader: Callable[[], Mapping[str, Any] | Schema]) -> Schema:
        """The cached Schema for ``fingerprint``, else ``loader()`` (an object_info dict or a Schema).

        Raises whatever ``loader`` raises.
        """
        while True:
            with self._lock:
                schema = self._entries.get(fingerprint)
                if schema is not None:
                    self._entries.move_to_end(fingerprint)
                    return schema
                event = self._loading.get(fingerprint)
                if event is None:
                    event = self._loading[fingerprint] = threading.Event()
                    leader = True
                else:
                    leader = False
            if not leader:
                event.wait()
                continue  # the leader's result is cached now, or it failed and we try ourselves
            try:
                loaded = loader()
                schema = loaded if isinstance(loaded, Schema) else Schema.from_object_info(loaded)
                with self._lock:
                    self._entries[fingerprint] = schema
                    self._entries.move_to_end(fingerprint)
                    while len(self._entries) > self.maxsize:
                        self._entries.popitem(last=False)
                return schema
            finally:
                with self._lock:
                    self._loading.pop(fingerprint, None)
                event.set()

    def peek(self, fingerprint: str) -> Schema | None:
        with self._lock:
            return self._entries.get(fingerprint)

    def put(self, fingerprint: str, schema: Schema) -> None:
        with self._lock:
            self._entries[fingerprint] = schema
            self._entries.move_to_end(fingerprint)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def invalidate(self, fingerprint: str | None = None) -> None:
        """Forget one fingerprint's schema (after installing nodes or models), or all of them."""
        with self._lock:
            if fingerprint is None:
                self._entries.clear()
            else:
                self._entries.pop(fingerprint, None)

    def __contains__(self, fingerprint: object) -> bool:
        with self._lock:
            return fingerprint in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# ---------------------------------------------------------------------------------------------
# graph helpers
# ---------------------------------------------------------------------------------------------


def is_link(value: Any) -> bool:
    """``[source_node_id, output_index]``: a 2-list of a str (or int) id and an int index."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _id_key(node_id: str) -> tuple:
    """Numeric order for ids like "3", "10", "8:4" (subgraph paths); non-numbers after numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in str(node_id).split(":"))


_TAG = re.compile(
    r"\[\s*(simple|advanced|hide|label)\s*(?::\s*([^\]=\s]+)\s*)?(?:=\s*([^\]]*?)\s*)?\]", re.IGNORECASE
)


@dataclass(frozen=True)
class _Tags:
    title: str  # displayed title, tags removed ("" when none)
    node_mode: str | None = None  # simple | advanced | None
    hide_all: bool = False
    input_modes: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # name → simple | advanced | hide
    label: str | None = None
    input_labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def mode_for(self, name: str) -> str | None:
        if self.input_modes.get(name) == "hide" or self.hide_all:
            return "hide"
        return self.input_modes.get(name) or self.node_mode


def _split_csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _parse_tags(title: Any) -> _Tags:
    if not isinstance(title, str) or "[" not in title:
        return _Tags(title.strip() if isinstance(title, str) else "")
    node_mode = None
    hide_all = False
    input_modes: dict[str, str] = {}
    label = None
    input_labels: dict[str, str] = {}
    for m in _TAG.finditer(title):
        tag, target, value = m.group(1).lower(), m.group(2), m.group(3)
        if tag == "label":
            if value:
                if target:
                    input_labels[target] = value
                else:
                    label = value
            continue
        names = _split_csv(value) if value else ([target] if target else [])
        if names:
            for n in names:
                if input_modes.get(n) != "hide":
                    input_modes[n] = tag
        elif tag == "hide":
            hide_all = True
        else:
            node_mode = tag
    clean = re.sub(r"\s{2,}", " ", _TAG.sub(" ", title)).strip()
    return _Tags(clean, node_mode, hide_all, MappingProxyType(input_modes), label, MappingProxyType(input_labels))


def clean_title(title: str | None) -> str:
    """A node title as the panel shows it: title tags removed, whitespace tidied."""
    return _parse_tags(title).title


class _Graph:
    """Read-only view of an API graph with its specs resolved once."""

    def __init__(self, graph: Mapping[str, Any], schema: Schema) -> None:
        if not isinstance(graph, Mapping):
            graph = {}
        self.graph = graph
        self.schema = schema
        self.nodes: dict[str, Mapping[str, Any]] = {}
        self.specs: dict[str, NodeSpec | None] = {}
        self.tags: dict[str, _Tags] = {}
        for nid, node in graph.items():
            if not isinstance(node, Mapping):
                continue
            nid = str(nid)
            self.nodes[nid] = node
            ct = node.get("class_type")
            self.specs[nid] = schema.node(ct) if isinstance(ct, str) else None
            meta = node.get("_meta")
            self.tags[nid] = _parse_tags(meta.get("title") if isinstance(meta, Mapping) else None)
        self.order = sorted(self.nodes, key=_id_key)

    def inputs(self, nid: str) -> Mapping[str, Any]:
        inputs = self.nodes.get(nid, {}).get("inputs")
        return inputs if isinstance(inputs, Mapping) else {}

    def link(self, nid: str, name: str) -> tuple[str, int] | None:
        value = self.inputs(nid).get(name)
        return (str(value[0]), value[1]) if is_link(value) else None

    def custom_title(self, nid: str) -> str | None:
        """The title the author gave the node (tags removed), None when it is the default one."""
        title = self.tags[nid].title
        if not title:
            return None
        spec = self.specs.get(nid)
        ct = self.nodes[nid].get("class_type")
        if title == ct or (spec is not None and title == spec.display_name):
            return None
        return title

    def display(self, nid: str) -> str:
        """The node's title as shown: the author's title, else the class display name."""
        title = self.tags.get(nid, _Tags("")).title
        if title:
            return title
        spec = self.specs.get(nid)
        if spec is not None:
            return spec.display_name
        ct = self.nodes.get(nid, {}).get("class_type")
        return ct if isinstance(ct, str) and ct else f"Node {nid}"


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------

# Roles in the order the simple form shows them. Roles on one line share a rank, so a LoRA's file
# and strength stay together (then ordered by node id and input order).
ROLE_ORDER: tuple[tuple[str, ...], ...] = (
    ("positive",), ("negative",), ("image",), ("mask",), ("video",), ("audio",),
    ("checkpoint",), ("unet",), ("clip",), ("vae",), ("lora", "lora_strength"),
    ("controlnet", "controlnet_strength"),
    ("upscale_model", "clip_vision", "style_model", "model"),
    ("seed",), ("steps",), ("cfg",), ("guidance",), ("sampler",), ("scheduler",), ("denoise",),
    ("width",), ("height",), ("batch_size",),
)
_ROLE_RANK: Mapping[str, int] = MappingProxyType({r: i for i, rs in enumerate(ROLE_ORDER) for r in rs})
SIMPLE_ROLES = frozenset(_ROLE_RANK)

_ROLE_LABELS: Mapping[str, str] = MappingProxyType({
    "positive": "Prompt", "negative": "Negative prompt", "image": "Image", "mask": "Mask",
    "video": "Video", "audio": "Audio", "checkpoint": "Checkpoint", "unet": "Diffusion model",
    "clip": "Text encoder", "vae": "VAE", "lora": "LoRA", "lora_strength": "LoRA strength",
    "lora_clip_strength": "LoRA CLIP strength", "controlnet": "ControlNet model",
    "controlnet_strength": "ControlNet strength", "upscale_model": "Upscale model",
    "clip_vision": "CLIP Vision model", "style_model": "Style model", "model": "Model", "seed": "Seed",
    "steps": "Steps", "cfg": "CFG", "guidance": "Guidance", "sampler": "Sampler",
    "scheduler": "Scheduler", "denoise": "Denoise", "width": "Width", "height": "Height",
    "batch_size": "Batch size",
})
_FOLDER_ROLES: Mapping[str, str] = MappingProxyType({
    "checkpoints": "checkpoint", "diffusion_models": "unet", "text_encoders": "clip", "vae": "vae",
    "loras": "lora", "controlnet": "controlnet", "upscale_models": "upscale_model",
    "clip_vision": "clip_vision", "style_models": "style_model",
})
_NAME_LABELS: Mapping[str, str] = MappingProxyType({
    "cfg": "CFG", "steps": "Steps", "seed": "Seed", "noise_seed": "Seed", "sampler_name": "Sampler",
    "scheduler": "Scheduler", "denoise": "Denoise", "ckpt_name": "Checkpoint", "lora_name": "LoRA",
    "vae_name": "VAE", "unet_name": "Diffusion model", "control_net_name": "ControlNet model",
    "strength_model": "Model strength", "strength_clip": "CLIP strength", "batch_size": "Batch size",
    "filename_prefix": "File name prefix", "weight_dtype": "Weight type", "text": "Text",
    "stop_at_clip_layer": "Stop at CLIP layer", "add_noise": "Add noise",
    "return_with_leftover_noise": "Return with leftover noise", "upscale_method": "Upscale method",
    "grow_mask_by": "Grow mask by", "ascore": "Aesthetic score", "t5xxl": "T5-XXL",
    "clip_l": "CLIP-L", "clip_g": "CLIP-G", "text_g": "Text (G)", "text_l": "Text (L)",
})
# Suffix for an encoder with several prompt boxes ("Prompt (T5-XXL)").
_PROMPT_SUFFIX: Mapping[str, str] = MappingProxyType({
    "text_g": "G", "text_l": "L", "clip_l": "CLIP-L", "clip_g": "CLIP-G", "t5xxl": "T5-XXL",
})
_WORDS: Mapping[str, str] = MappingProxyType({
    "cfg": "CFG", "vae": "VAE", "clip": "CLIP", "lora": "LoRA", "unet": "UNet", "ckpt": "checkpoint",
    "id": "ID", "sd": "SD", "sdxl": "SDXL", "ip": "IP", "rgb": "RGB", "rgba": "RGBA", "fps": "FPS",
    "url": "URL", "t5xxl": "T5-XXL", "dtype": "type", "controlnet": "ControlNet", "llm": "LLM",
})

_SAMPLER_WIDGETS: Mapping[str, str] = MappingProxyType({
    "seed": "seed", "noise_seed": "seed", "steps": "steps", "cfg": "cfg", "sampler_name": "sampler",
    "scheduler": "scheduler", "denoise": "denoise",
})
# What a sampler's linked inputs carry, by socket type.
_UPSTREAM_WIDGETS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "NOISE": MappingProxyType({"noise_seed": "seed", "seed": "seed"}),
    "SAMPLER": MappingProxyType({"sampler_name": "sampler"}),
    "SIGMAS": MappingProxyType({"steps": "steps", "scheduler": "scheduler", "denoise": "denoise"}),
    "GUIDER": MappingProxyType({"cfg": "cfg"}),
})
_LATENT_SOURCE_WIDGETS: Mapping[str, str] = MappingProxyType(
    {"width": "width", "height": "height", "batch_size": "batch_size"}
)
# Conditioning that goes no further: the text above it does not reach the sampler.
_CONDITIONING_STOPS = frozenset({"ConditioningZeroOut"})
_PRIMARY_ROLES = frozenset({"positive", "negative", "image", "mask", "video", "audio", "checkpoint",
                            "unet", "clip", "vae", "lora", "controlnet", "upscale_model",
                            "clip_vision", "style_model", "model"})


@dataclass(frozen=True)
class Parameter:
    """One editable value of a workflow: ``id`` is ``"<node_id>.<input>"``."""

    id: str
    node_id: str
    input_name: str
    label: str
    spec: InputSpec
    value: Any
    group: str  # "simple" | "advanced" | "hidden"
    role: str | None
    node_title: str | None  # the node's title without tags, None when the graph has none
    node_group_label: str  # heading of its advanced group: node title, else class display name
    tooltip: str | None = None


@dataclass(frozen=True)
class ParameterSet:
    """What :func:`discover` found: ``simple`` in role order, ``advanced`` in node order,
    ``hidden`` (tagged ``[hide]``; still sent as they are).

    Iteration, ``len`` and ``ids`` cover the visible parameters (simple, then advanced);
    ``in``, ``get`` and ``[]`` find any parameter, hidden ones too.
    """

    simple: tuple[Parameter, ...] = ()
    advanced: tuple[Parameter, ...] = ()
    hidden: tuple[Parameter, ...] = ()
    _by_id: Mapping[str, Parameter] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", MappingProxyType(
            {p.id: p for p in (*self.simple, *self.advanced, *self.hidden)}
        ))

    def __iter__(self) -> Iterator[Parameter]:
        """Visible parameters: simple, then advanced."""
        yield from self.simple
        yield from self.advanced

    def __len__(self) -> int:
        return len(self.simple) + len(self.advanced)

    def __contains__(self, param_id: object) -> bool:
        return param_id in self._by_id

    def __getitem__(self, param_id: str) -> Parameter:
        return self._by_id[param_id]

    def get(self, param_id: str) -> Parameter | None:
        return self._by_id.get(param_id)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self)

    def by_role(self, role: str) -> tuple[Parameter, ...]:
        return tuple(p for p in self if p.role == role)

    @property
    def seeds(self) -> tuple[Parameter, ...]:
        """Visible seed-like values (for the seed mode controls)."""
        return tuple(p for p in self if p.spec.seed_like)

    def groups(self) -> tuple[tuple[str, tuple[Parameter, ...]], ...]:
        """The advanced parameters grouped by node: ``((group label, params), ...)`` in node order."""
        out: list[tuple[str, list[Parameter]]] = []
        last = None
        for p in self.advanced:
            if p.node_id != last:
                out.append((p.node_group_label, []))
                last = p.node_id
            out[-1][1].append(p)
        return tuple((label, tuple(ps)) for label, ps in out)


def _clean_name(name: str) -> str:
    if name in _NAME_LABELS:
        return _NAME_LABELS[name]
    words = [w for w in re.split(r"[_\s]+", name) if w]
    if not words:
        return name
    out = [_WORDS.get(w.lower(), w) for w in words]
    first = out[0]
    out[0] = first[:1].upper() + first[1:]
    return " ".join(out)


def _inferred_spec(class_type: str, name: str, value: Any) -> InputSpec | None:
    if isinstance(value, bool):
        kind = "BOOLEAN"
    elif isinstance(value, int):
        kind = "INT"
    elif isinstance(value, float):
        kind = "FLOAT"
    elif isinstance(value, str):
        kind = "STRING"
    else:
        return None
    return InputSpec(class_type=class_type, name=name, kind=kind, required=False, known=False,
                     control_after_generate=kind == "INT" and name in SEED_NAMES)


def _kinds_match(wanted: str | None, have: str) -> bool:
    """Can a value of kind ``have`` stand for an input of kind ``wanted``? (INT for FLOAT, text for a combo)"""
    if wanted is None or wanted == have:
        return True
    return (wanted, have) in {("FLOAT", "INT"), ("COMBO", "STRING")}


class _Roles:
    """Finds roles by walking the graph upstream from every sampler."""

    def __init__(self, g: _Graph) -> None:
        self.g = g
        self.roles: dict[tuple[str, str], str] = {}
        self.context: dict[tuple[str, str], str] = {}  # param → the sampler it was found from
        self.demoted: set[tuple[str, str]] = set()

    # -- assignment ---------------------------------------------------------------------------

    def assign(self, nid: str, name: str, role: str, ctx: str | None, depth: int = 0,
               kind: str | None = None) -> None:
        key = (nid, name)
        if key in self.roles or depth > 4:
            return
        if kind is None:  # the kind the role was found on: a value fed from elsewhere must match it
            own = self.g.specs.get(nid)
            own_input = own.input(name) if own is not None else None
            kind = own_input.kind if own_input is not None else None
        value = self.g.inputs(nid).get(name)
        if is_link(value):  # fed by a primitive-like node: its single value takes the role
            src = str(value[0])
            spec = self.g.specs.get(src)
            if spec is None:
                return
            inputs = self.g.inputs(src)
            present = [i for i in spec.widgets if i.name in inputs and not is_link(inputs[i.name])]
            if len(present) == 1:
                if _kinds_match(kind, present[0].kind):
                    self.assign(src, present[0].name, role, ctx, depth + 1, kind)
            elif not present:
                linked = [i for i in spec.inputs if is_link(inputs.get(i.name))]
                if len(linked) == 1 and (linked[0].kind == "LINK" or _kinds_match(kind, linked[0].kind)):
                    self.assign(src, linked[0].name, role, ctx, depth + 1, kind)
            return
        if name not in self.g.inputs(nid):
            return
        self.roles[key] = role
        if ctx is not None:
            self.context[key] = ctx

    def assign_named(self, nid: str, table: Mapping[str, str], ctx: str | None) -> None:
        spec = self.g.specs.get(nid)
        if spec is None:
            return
        for inp in spec.inputs:
            role = table.get(inp.name)
            if role and inp.kind in WIDGET_KINDS and not inp.hidden:
                self.assign(nid, inp.name, role, ctx)

    # -- samplers -----------------------------------------------------------------------------

    @staticmethod
    def is_sampler(spec: NodeSpec) -> bool:
        outs = spec.output_types
        if "LATENT" not in outs:
            return False
        links = {i.link_type for i in spec.inputs if i.kind == "LINK"}
        if "LATENT" not in links:
            return False
        conditioned = "GUIDER" in links or any(
            i.kind == "LINK" and i.link_type == "CONDITIONING" and i.name in ("positive", "negative")
            for i in spec.inputs
        )
        driven = bool(links & {"NOISE", "SAMPLER", "SIGMAS", "GUIDER"}) or any(
            i.name in _SAMPLER_WIDGETS for i in spec.inputs
        )
        return conditioned and driven

    def run(self) -> None:
        g = self.g
        for nid in g.order:
            spec = g.specs.get(nid)
            if spec is not None and self.is_sampler(spec):
                self.sampler(nid, spec)
        self.generic()

    def sampler(self, nid: str, spec: NodeSpec) -> None:
        self.assign_named(nid, _SAMPLER_WIDGETS, nid)
        add_noise = self.g.inputs(nid).get("add_noise")
        if add_noise is False or add_noise == "disable":  # its seed is not used
            for name in ("seed", "noise_seed"):
                self.demoted.add((nid, name))
        self.conditioning_inputs(nid, spec, nid)
        for inp in spec.inputs:
            if inp.kind != "LINK":
                continue
            link = self.g.link(nid, inp.name)
            if link is None:
                continue
            if inp.link_type == "LATENT":
                self.latent(link[0], nid, set())
            elif inp.link_type in _UPSTREAM_WIDGETS:
                self.upstream(link[0], inp.link_type, nid, set())

    def conditioning_inputs(self, nid: str, spec: NodeSpec, ctx: str) -> None:
        for inp in spec.inputs:
            if inp.kind == "LINK" and inp.link_type == "CONDITIONING":
                link = self.g.link(nid, inp.name)
                if link is not None:
                    polarity = "negative" if "negative" in inp.name.lower() else "positive"
                    self.conditioning(link[0], link[1], polarity, ctx, set())

    def upstream(self, nid: str, link_type: str, ctx: str, seen: set[str]) -> None:
        """NOISE / SAMPLER / SIGMAS / GUIDER sources, through pass-through nodes of that type."""
        if nid in seen:
            return
        seen.add(nid)
        spec = self.g.specs.get(nid)
        if spec is None:
            return
        self.assign_named(nid, _UPSTREAM_WIDGETS[link_type], ctx)
        if link_type == "GUIDER":
            self.conditioning_inputs(nid, spec, ctx)
        for inp in spec.inputs:
            if inp.kind == "LINK" and inp.link_type == link_type:
                link = self.g.link(nid, inp.name)
                if link is not None:
                    self.upstream(link[0], link_type, ctx, seen)

    def conditioning(self, nid: str, out_index: int, polarity: str, ctx: str, seen: set) -> None:
        if (nid, out_index) in seen:
            return
        seen.add((nid, out_index))
        spec = self.g.specs.get(nid)
        if spec is None or spec.class_type in _CONDITIONING_STOPS:
            return
        encoder = any(i.kind == "LINK" and i.link_type == "CLIP" for i in spec.inputs)
        for inp in spec.inputs:
            if inp.hidden:
                continue
            if inp.kind == "STRING" and (encoder or inp.multiline):
                self.assign(nid, inp.name, polarity, ctx)
            elif inp.kind == "FLOAT" and inp.name == "guidance":
                self.assign(nid, inp.name, "guidance", ctx)
        out_name = spec.outputs[out_index].name.lower() if 0 <= out_index < len(spec.outputs) else ""
        conds = [i for i in spec.inputs if i.kind == "LINK" and i.link_type == "CONDITIONING"]
        same = [i for i in conds if i.name.lower() == out_name]
        for inp in same or conds:  # ControlNetApplyAdvanced: output "negative" ← input "negative"
            link = self.g.link(nid, inp.name)
            if link is not None:
                self.conditioning(link[0], link[1], polarity, ctx, seen)

    def latent(self, nid: str, ctx: str, seen: set[str]) -> None:
        if nid in seen:
            return
        seen.add(nid)
        spec = self.g.specs.get(nid)
        if spec is None or self.is_sampler(spec):  # hires fix: the first sampler is its own root
            return
        latents = [i for i in spec.inputs if i.kind == "LINK" and i.link_type == "LATENT"]
        if not latents:  # the source: EmptyLatentImage and relatives
            self.assign_named(nid, _LATENT_SOURCE_WIDGETS, ctx)
            return
        for inp in latents:
            link = self.g.link(nid, inp.name)
            if link is not None:
                self.latent(link[0], ctx, seen)

    # -- roles that do not depend on the graph ----------------------------------------------------

    def generic(self) -> None:
        g = self.g
        for nid in g.order:
            spec = g.specs.get(nid)
            if spec is None:
                continue
            lora = any(i.model_folder == "loras" for i in spec.inputs)
            controlnet = any(i.kind == "LINK" and i.link_type == "CONTROL_NET" for i in spec.inputs)
            mask_only = bool(spec.outputs) and all(o.type == "MASK" for o in spec.outputs)
            for inp in spec.widgets:
                role = None
                if inp.upload:
                    role = "mask" if mask_only and inp.upload == "image" else (
                        inp.upload if inp.upload in ("image", "video", "audio") else None)
                elif inp.model_folder:
                    role = None if inp.model_folder == "configs" else _FOLDER_ROLES.get(inp.model_folder, "model")
                elif inp.seed_like and "seed" in inp.name.lower():
                    role = "seed"
                elif lora and inp.name in ("strength_model", "strength"):
                    role = "lora_strength"
                elif lora and inp.name == "strength_clip":
                    role = "lora_clip_strength"
                elif controlnet and inp.name == "strength":
                    role = "controlnet_strength"
                if role:
                    self.assign(nid, inp.name, role, None)


def _main_input(params: list[tuple[InputSpec, str | None]]) -> str | None:
    """The input a node-wide ``[label=…]`` names: only value, else first primary role, else first."""
    if not params:
        return None
    if len(params) == 1:
        return params[0][0].name
    for spec, role in params:
        if role in _PRIMARY_ROLES:
            return spec.name
    return params[0][0].name


def discover(graph: Mapping[str, Any], schema: Schema) -> ParameterSet:
    """The editable values of an API graph, split into simple and advanced. Never raises on odd graphs.

    Only inputs holding a value (not a link) are parameters. Inputs whose class is unknown to the
    server are listed as advanced with a spec guessed from the value (``spec.known`` is False);
    values of inputs the class no longer has are left out.
    """
    g = _Graph(graph, schema)
    finder = _Roles(g)
    finder.run()
    roles = finder.roles

    # 1. collect (spec, role) per node, in input order
    per_node: dict[str, list[tuple[InputSpec, str | None]]] = {}
    for nid in g.order:
        node = g.nodes[nid]
        inputs = g.inputs(nid)
        spec = g.specs.get(nid)
        items: list[tuple[InputSpec, str | None]] = []
        if spec is not None:
            for inp in spec.inputs:
                if inp.is_widget and inp.name in inputs and not is_link(inputs[inp.name]):
                    items.append((inp, roles.get((nid, inp.name))))
        else:
            ct = node.get("class_type") if isinstance(node.get("class_type"), str) else ""
            for name, value in inputs.items():
                if not is_link(value):
                    inferred = _inferred_spec(ct, str(name), value)
                    if inferred is not None:
                        items.append((inferred, None))
        if items:
            per_node[nid] = items

    # 2. group labels (unique across nodes)
    group_labels = {nid: g.display(nid) for nid in per_node}
    counts: dict[str, int] = {}
    for label in group_labels.values():
        counts[label] = counts.get(label, 0) + 1
    group_labels = {nid: (f"{lab} #{nid}" if counts[lab] > 1 else lab) for nid, lab in group_labels.items()}

    # 3. parameters with group and base label
    params: list[Parameter] = []
    context: dict[str, str] = {}
    for nid, items in per_node.items():
        tags = g.tags[nid]
        custom = g.custom_title(nid)
        main = _main_input(items)
        prompt_boxes: dict[str, int] = {}
        for inp, role in items:
            if role in ("positive", "negative"):
                prompt_boxes[role] = prompt_boxes.get(role, 0) + 1
        groups: list[str] = []
        for inp, role in items:
            mode = tags.mode_for(inp.name)
            if mode == "hide":
                groups.append("hidden")
            elif mode in ("simple", "advanced"):
                groups.append(mode)
            elif role in SIMPLE_ROLES and (nid, inp.name) not in finder.demoted:
                groups.append("simple")
            else:
                groups.append("advanced")
        # the author's title labels the node's only value, or its only simple prompt/image/model value
        titled = None
        if custom:
            if len(items) == 1:
                titled = items[0][0].name
            else:
                simple_here = [(inp, role) for (inp, role), grp in zip(items, groups) if grp == "simple"]
                if len(simple_here) == 1 and simple_here[0][1] in _PRIMARY_ROLES:
                    titled = simple_here[0][0].name
        for (inp, role), group in zip(items, groups):
            key = (nid, inp.name)
            label = tags.input_labels.get(inp.name) or (tags.label if inp.name == main else None)
            if label is None and inp.name == titled:
                label = custom
            if label is None and role in _ROLE_LABELS:
                label = _ROLE_LABELS[role]
                if role in ("positive", "negative") and prompt_boxes.get(role, 0) > 1:
                    label += f" ({_PROMPT_SUFFIX.get(inp.name) or _clean_name(inp.name)})"
                elif role != "seed" and (m := re.search(r"(\d+)$", inp.name)):
                    label += f" {m.group(1)}"  # clip_name1 → "Text encoder 1"
            if label is None:
                label = inp.display_name or _clean_name(inp.name)
            pid = f"{nid}.{inp.name}"
            if key in finder.context:
                context[pid] = finder.context[key]
            params.append(Parameter(
                id=pid, node_id=nid, input_name=inp.name, label=label, spec=inp,
                value=g.inputs(nid).get(inp.name), group=group, role=role,
                node_title=tags.title or None, node_group_label=group_labels[nid], tooltip=inp.tooltip,
            ))

    # 4. order
    input_pos = {p.id: i for i, p in enumerate(params)}  # already node order, then input order
    simple = sorted((p for p in params if p.group == "simple"),
                    key=lambda p: (_ROLE_RANK.get(p.role or "", len(ROLE_ORDER)), _id_key(p.node_id),
                                   input_pos[p.id]))
    advanced = [p for p in params if p.group == "advanced"]
    hidden = [p for p in params if p.group == "hidden"]
    simple = _unique_labels(simple, g, context)
    return ParameterSet(tuple(simple), tuple(advanced), tuple(hidden))


def _unique_labels(params: list[Parameter], g: _Graph, context: Mapping[str, str]) -> list[Parameter]:
    """"Steps (Refiner)": own custom title, else the feeding sampler's; untitled ones are numbered."""
    by_label: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        by_label.setdefault(p.label, []).append(i)
    labels = [p.label for p in params]
    for label, idxs in by_label.items():
        if len(idxs) < 2:
            continue
        plain = []
        for i in idxs:
            p = params[i]
            suffix = g.custom_title(p.node_id)
            if suffix == label:
                suffix = None
            if suffix is None and p.id in context:
                suffix = g.custom_title(context[p.id])
            if suffix:
                labels[i] = f"{label} ({suffix})"
            else:
                plain.append(i)
        if len(plain) > 1:
            for n, i in enumerate(plain, 1):
                labels[i] = f"{label} {n}"
    seen: dict[str, int] = {}
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
    out = []
    for p, lab in zip(params, labels):
        if seen[lab] > 1:
            lab = f"{lab} (#{p.node_id})"
        out.append(p if lab == p.label else _replace_label(p, lab))
    return out


def _replace_label(p: Parameter, label: str) -> Parameter:
    return Parameter(p.id, p.node_id, p.input_name, label, p.spec, p.value, p.group, p.role,
                     p.node_title, p.node_group_label, p.tooltip)


# ---------------------------------------------------------------------------------------------
# pre-flight
# ---------------------------------------------------------------------------------------------

PROBLEM_KINDS = ("missing_node", "missing_model", "out_of_range", "not_in_list", "missing_input",
                 "wrong_type", "bad_link", "no_output", "cycle")


@dataclass(frozen=True)
class Problem:
    """Something the server would reject, in one plain sentence (``message``).

    ``param_id`` names the value to fix when there is one (also for a value that is absent);
    ``suggestion`` is a value that would fix it when one is obvious (the server's spelling of a
    model file written with Windows separators or in another subfolder). ``blocking`` is False
    when at least one output of the workflow is still valid: the server then runs those outputs
    and silently drops the branch with the problem (HTTP 200 with ``node_errors``).
    """

    param_id: str | None
    node_id: str | None
    kind: str
    message: str
    suggestion: Any = None
    blocking: bool = True


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return format(v, ".6g")
    return str(v)


def _names(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", and {len(items) - limit} more" if len(items) > limit else "")


def _fits(received: Any, wanted: Any) -> bool:
    """ComfyUI's validate_node_input (non-strict): equal, a wildcard, or overlapping unions."""
    if received == wanted or not isinstance(received, str) or not isinstance(wanted, str):
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if not (isinstance(v, float) and math.isnan(v)) else None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return None if math.isnan(f) else f
    return None


def preflight(graph: Mapping[str, Any], schema: Schema,
              models: Mapping[str, Sequence[str]] | None = None) -> list[Problem]:
    """What the server would reject, before sending. Empty list: nothing found.

    ``models`` maps ``/models/{folder}`` names to their file lists; when given, model COMBOs are
    checked against it (as well as against ``/object_info``'s own list). Upload COMBOs (LoadImage)
    are not checked against their list, as the server does not either. Nodes of unknown classes are
    reported once, together, and not checked further. Never raises.
    """
    g = _Graph(graph, schema)
    params = discover(graph, schema)
    problems: list[Problem] = []

    # unknown classes, all in one sentence
    unknown: list[str] = []
    for nid in g.order:
        ct = g.nodes[nid].get("class_type")
        if not isinstance(ct, str) or not ct:
            problems.append(Problem(None, nid, "missing_node",
                                    f"Node {nid} in this workflow has no node type, so the server cannot run "
                                    "it; export the workflow again with “Export (API)”."))
        elif g.specs.get(nid) is None and ct not in unknown:
            unknown.append(ct)
    if unknown:
        problems.insert(0, Problem(None, None, "missing_node",
                                   "This workflow needs custom nodes that this server does not have: "
                                   f"{', '.join(sorted(unknown))}. Install them (for example with "
                                   "ComfyUI-Manager) or use another workflow."))

    def ref(nid: str, inp: InputSpec) -> str:
        p = params.get(f"{nid}.{inp.name}")
        if p is not None and p.group == "simple":
            return f"“{p.label}”"
        label = p.label if p is not None else (inp.display_name or _clean_name(inp.name))
        return f"“{label}” in “{g.display(nid)}”"

    def node_ref(nid: str) -> str:
        return f"“{g.display(nid)}” (node {nid})"

    for nid in g.order:
        spec = g.specs.get(nid)
        if spec is None:
            continue
        inputs = g.inputs(nid)
        for inp in spec.inputs:
            if inp.hidden:
                continue
            pid = f"{nid}.{inp.name}" if inp.kind in WIDGET_KINDS else None
            value = inputs.get(inp.name)
            if value is None:
                if not inp.required:
                    continue
                if inp.kind in WIDGET_KINDS and not inp.force_input:
                    msg = f"{ref(nid, inp)} has no value; set one, or export the workflow again from ComfyUI."
                else:
                    msg = (f"{node_ref(nid)} needs something connected to its “{inp.name}” input "
                           f"({inp.link_type or inp.kind}); connect it in ComfyUI and export the workflow again.")
                problems.append(Problem(pid, nid, "missing_input", msg))
                continue
            if is_link(value):
                problems.extend(_check_link(g, nid, inp, pid, value, node_ref))
                continue
            if inp.kind == "LINK":
                problems.append(Problem(None, nid, "wrong_type",
                                        f"{node_ref(nid)} needs its “{inp.name}” input connected to a node that "
                                        f"gives {inp.link_type}, not a typed-in value."))
                continue
            problem = _check_value(inp, value, ref(nid, inp), pid, nid, models)
            if problem is not None:
                problems.append(problem)

    for cycle in _cycles(g):
        # The server accepts a loop and fails at run time ("Dependency cycle detected"): say it now.
        refs = [node_ref(n) for n in cycle[:4]] + (["others"] if len(cycle) > 4 else [])
        names = refs[0] if len(refs) == 1 else ", ".join(refs[:-1]) + " and " + refs[-1]
        if len(cycle) == 1:
            msg = (f"{names} takes its own output as an input; a node cannot feed itself, so fix that "
                   "connection in ComfyUI and export the workflow again.")
        else:
            msg = (f"{names} feed each other in a loop; a workflow cannot feed a node its own output, so fix "
                   "the connections in ComfyUI and export the workflow again.")
        problems.append(Problem(None, cycle[0], "cycle", msg))

    if not unknown and g.nodes and not any(s is not None and s.output_node for s in g.specs.values()):
        problems.append(Problem(None, None, "no_output",
                                "This workflow has no output node (such as Save Image), so the server would "
                                "not run it; add one in ComfyUI and export the workflow again."))
    if problems and all(p.kind not in ("missing_node", "no_output", "cycle") for p in problems):
        bad = {p.node_id for p in problems}
        outputs = [o for o in g.order if (spec := g.specs.get(o)) is not None and spec.output_node]
        if any(not (_ancestors(g, o) & bad) for o in outputs):
            problems = [dataclasses.replace(p, blocking=False) for p in problems]
    return problems


def _cycles(g: _Graph, limit: int = 3) -> list[list[str]]:
    """Loops of links in the graph (each a list of node ids in id order), at most ``limit``."""
    deps = {n: sorted({str(v[0]) for v in g.inputs(n).values() if is_link(v) and str(v[0]) in g.nodes},
                      key=_id_key) for n in g.order}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for root in g.order:
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(deps[root])]
        state[root] = 1
        while stack and len(found) < limit:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                loop = path[path.index(nxt):]
                key = frozenset(loop)
                if key not in seen:
                    seen.add(key)
                    found.append(sorted(loop, key=_id_key))
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps[nxt]))
        if len(found) >= limit:
            break
    return found


def _ancestors(g: _Graph, nid: str) -> set[str]:
    """``nid`` and every node it depends on through links (what the server validates for an output)."""
    seen = {nid}
    stack = [nid]
    while stack:
        for value in g.inputs(stack.pop()).values():
            if is_link(value):
                src = str(value[0])
                if src in g.nodes and src not in seen:
                    seen.add(src)
                    stack.append(src)
    return seen


def _check_link(g: _Graph, nid: str, inp: InputSpec, pid: str | None, value: Any,
                node_ref: Callable[[str], str]) -> list[Problem]:
    src, index = str(value[0]), value[1]
    if src not in g.nodes:
        return [Problem(pid, nid, "bad_link",
                        f"{node_ref(nid)} takes its “{inp.name}” input from node {src}, "
                        "which is not in this workflow.")]
    src_spec = g.specs.get(src)
    if src_spec is None:
        return []  # already reported as a missing node
    if not 0 <= index < len(src_spec.outputs):
        n = len(src_spec.outputs)
        has = "no outputs" if n == 0 else ("only 1 output" if n == 1 else f"only {n} outputs")
        return [Problem(pid, nid, "bad_link",
                        f"{node_ref(nid)} takes its “{inp.name}” input from output {index + 1} of "
                        f"{node_ref(src)}, which has {has}.")]
    if inp.kind == "COMBO":
        return []  # a combo fed by a primitive: types are lists on both sides; the server decides
    wanted = inp.link_type if inp.kind == "LINK" else inp.kind
    received = src_spec.outputs[index].type
    if not _fits(received, wanted):
        return [Problem(pid, nid, "wrong_type",
                        f"{node_ref(nid)} gets {received} from {node_ref(src)} for its “{inp.name}” input, "
                        f"but it needs {wanted}.")]
    return []


def _check_value(inp: InputSpec, value: Any, ref: str, pid: str | None, nid: str,
                 models: Mapping[str, Sequence[str]] | None) -> Problem | None:
    kind = inp.kind
    if kind == "INT":
        n = _as_int(value)
        if n is None:
            return Problem(pid, nid, "wrong_type", f"{ref} needs a whole number.")
        return _check_range(inp, n, value, ref, pid, nid)
    if kind == "FLOAT":
        f = _as_float(value)
        if f is None:
            return Problem(pid, nid, "wrong_type", f"{ref} needs a number.")
        return _check_range(inp, f, value, ref, pid, nid)
    if kind == "BOOLEAN":
        if not isinstance(value, bool) and value not in (0, 1):
            return Problem(pid, nid, "wrong_type", f"{ref} needs to be on or off (true or false).")
        return None
    if kind == "STRING":
        if isinstance(value, (dict, list, tuple)):
            return Problem(pid, nid, "wrong_type", f"{ref} needs text.")
        return None
    if kind != "COMBO" or inp.upload or "remote" in inp.extra or (inp.multiselect and isinstance(value, list)):
        # uploads: LoadImage accepts sub/x.png and "x.png [output]" (its own check);
        # remote combos: the frontend fetches the list from a route, /object_info has none
        return None
    if not isinstance(value, (str, int, float)):
        return Problem(pid, nid, "wrong_type", f"{ref} needs one of the offered choices.")
    if value in inp.options:
        return None
    if inp.is_model or (isinstance(value, str) and value.lower().endswith(_MODEL_EXTS)):
        return _check_model(inp, value, ref, pid, nid, models)
    return Problem(pid, nid, "not_in_list", f"{ref} is “{value}”, which this server does not offer.")


def check_value(param: Parameter, value: Any, models: Mapping[str, Sequence[str]] | None = None) -> Problem | None:
    """What the server would say about ``value`` for ``param`` (range, type, offered choices), or None.

    For values typed in somewhere else than the form (an XY grid's axis, ``--set``)."""
    return _check_value(param.spec, value, f"“{param.label}”", param.id, param.node_id, models)


def _check_range(inp: InputSpec, n: float, value: Any, ref: str, pid: str | None, nid: str) -> Problem | None:
    if inp.min is not None and n < inp.min:
        return Problem(pid, nid, "out_of_range", f"{ref} is {_fmt(value)}, but it must be at least {_fmt(inp.min)}.")
    if inp.max is not None and n > inp.max:
        return Problem(pid, nid, "out_of_range", f"{ref} is {_fmt(value)}, but it must be at most {_fmt(inp.max)}.")
    return None


def _check_model(inp: InputSpec, value: Any, ref: str, pid: str | None, nid: str,
                 models: Mapping[str, Sequence[str]] | None) -> Problem | None:
    folder = inp.model_folder
    listed = list(models[folder]) if models is not None and folder and folder in models else None
    if listed is not None and value in listed:
        return None
    have = listed if listed is not None else [o for o in inp.options if isinstance(o, str)]
    text = str(value)
    # the same file spelt differently: Windows separators, or another subfolder
    norm = text.replace("\\", "/")
    base = norm.rsplit("/", 1)[-1]
    same = next((h for h in have if h.replace("\\", "/") == norm), None)
    where = f" in {folder}" if folder else ""
    if same is not None:
        return Problem(pid, nid, "missing_model",
                       f"{ref} is {text}, written with other folder separators; this server calls it {same}.",
                       suggestion=same)
    moved = [h for h in have if h.replace("\\", "/").rsplit("/", 1)[-1] == base]
    if len(moved) == 1:
        return Problem(pid, nid, "missing_model",
                       f"{ref} needs {text}{where}; the server has it as {moved[0]}.", suggestion=moved[0])
    if have:
        tail = f"the server has: {_names(have)}."
    else:
        words = _FOLDER_WORDS.get(folder or "") or (folder or "model").replace("_", " ") + " files"
        tail = f"the server has no {words} at all."
    return Problem(pid, nid, "missing_model", f"{ref} needs {text}{where}; {tail}")
