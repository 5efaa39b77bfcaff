"""The prompt engine shared by the ComfyUI and Comfy Cloud doubles.

It re-implements, from the observed behaviour of ComfyUI 0.3.75 (``shared/recordings``) and the
documented source semantics (``shared/docs/comfyui-api.md``), the parts an API client can see:

* ``validate_prompt``: the exact error envelopes of ``POST /prompt`` (node definitions come from the
  recorded ``object_info.full.json``);
* the execution order (ComfyUI's topological "dissolve" with its UX-friendly pick of output nodes
  first), the input-signature cache (an identical re-run is fully cached and re-sends the old
  ``executed`` payloads), ``progress_state`` bookkeeping, interrupts at node boundaries and progress
  steps;
* a handful of nodes emulated with Pillow (EmptyImage, LoadImage, ImageInvert, ImageScale,
  SaveImage, PreviewImage, SaveImageWebsocket, ImageUpscaleWithModel, GetImageSize, ...) so that
  saved files are real PNGs; any other known class runs as a no-op that yields placeholder outputs.

Nothing here is ComfyUI code: it is a behavioural model, kept deliberately small.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from PIL import Image, ImageOps, PngImagePlugin

# ---------------------------------------------------------------------------------------------
# small helpers


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_version(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
    )


def full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return module + "." + klass.__qualname__


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MODEL_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")

# (class_type, input) -> models folder whose listing fills the combo (the recorded server had none).
DYNAMIC_MODEL_INPUTS: dict[tuple[str, str], str] = {}
for _cls in ("CheckpointLoaderSimple", "unCLIPCheckpointLoader", "CheckpointLoader", "ImageOnlyCheckpointLoader",
             "CreateHookModelAsLora", "CreateHookModelAsLoraModelOnly"):
    DYNAMIC_MODEL_INPUTS[(_cls, "ckpt_name")] = "checkpoints"
for _cls in ("LoraLoader", "LoraLoaderModelOnly", "CreateHookLora", "CreateHookLoraModelOnly"):
    DYNAMIC_MODEL_INPUTS[(_cls, "lora_name")] = "loras"
for _cls in ("DualCLIPLoader", "TripleCLIPLoader", "QuadrupleCLIPLoader"):
    for _n in ("clip_name1", "clip_name2", "clip_name3", "clip_name4"):
        DYNAMIC_MODEL_INPUTS[(_cls, _n)] = "text_encoders"
DYNAMIC_MODEL_INPUTS.update({
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("LatentUpscaleModelLoader", "model_name"): "latent_upscale_models",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
    ("ModelPatchLoader", "name"): "model_patches",
})


# ---------------------------------------------------------------------------------------------
# validation (POST /prompt)


class NodeCatalog:
    """Node definitions in ``/object_info`` format plus the folders that custom validation needs."""

    def __init__(
        self,
        base: dict[str, Any],
        patch: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        image_exists: Callable[[str], bool] | None = None,
    ) -> None:
        self._base = base
        self._patch = patch
        self._image_exists = image_exists or (lambda name: False)
        self._memo: dict[str, dict[str, Any] | None] = {}

    def get(self, class_type: Any) -> dict[str, Any] | None:
        if not isinstance(class_type, str):
            return None
        if class_type not in self._memo:
            entry = self._base.get(class_type)
            if entry is not None and self._patch is not None:
                entry = self._patch(class_type, entry)
            self._memo[class_type] = entry
        return self._memo[class_type]

    def image_exists(self, name: str) -> bool:
        return self._image_exists(name)


def _input_info(node_def: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    inputs = node_def.get("input", {})
    for category in ("required", "optional", "hidden"):
        spec = inputs.get(category, {})
        if name in spec:
            value = spec[name]
            if isinstance(value, list):
                input_type = value[0] if value else None
                extra = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            else:
                input_type, extra = value, {}
            return input_type, category, extra
    return None, None, {}


def _valid_input_names(node_def: dict[str, Any]) -> list[str]:
    order = node_def.get("input_order") or {}
    names: list[str] = []
    for category in ("required", "optional"):
        for name in order.get(category) or list((node_def.get("input", {}).get(category) or {}).keys()):
            if name not in names:
                names.append(name)
    return names


def _types_compatible(received: Any, expected: Any) -> bool:
    if not received != expected:
        return True
    if received == "*" or expected == "*":
        return True
    if isinstance(expected, list) and (received == "COMBO" or isinstance(received, list)):
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & want)


# Nodes with a VALIDATE_INPUTS of their own: input name -> check returning True or a message.
def _custom_validators(catalog: NodeCatalog) -> dict[str, dict[str, Callable[[Any], Any]]]:
    def image_file(value: Any) -> Any:
        if not catalog.image_exists(str(value)):
            return f"Invalid image file: {value}"
        return True

    return {"LoadImage": {"image": image_file}, "LoadImageMask": {"image": image_file}}


def _validate_inputs(prompt: dict, unique_id: str, validated: dict, catalog: NodeCatalog, custom: dict) -> tuple:
    if unique_id in validated:
        return validated[unique_id]

    inputs = prompt[unique_id]["inputs"]
    class_type = prompt[unique_id]["class_type"]
    node_def = catalog.get(class_type)
    if node_def is None:  # pragma: no cover - validate_prompt checked every class first
        raise KeyError(class_type)

    errors: list[dict] = []
    valid = True
    validators = custom.get(class_type, {})

    for x in _valid_input_names(node_def):
        input_type, category, extra_info = _input_info(node_def, x)
        if x not in inputs:
            if category == "required":
                errors.append({
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": f"{x}",
                    "extra_info": {"input_name": x},
                })
            continue

        val = inputs[x]
        info = [input_type, extra_info]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append({
                    "type": "bad_linked_input",
                    "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    "details": f"{x}",
                    "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                })
                continue
            o_id = val[0]
            o_class_type = prompt[o_id]["class_type"]  # KeyError for a missing node, as on the real server
            source_def = catalog.get(o_class_type)
            returns = tuple(source_def.get("output", [])) if source_def else ()
            received_type = returns[val[1]]  # IndexError / TypeError for a bad slot
            if not _types_compatible(received_type, input_type):
                errors.append({
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                    "extra_info": {
                        "input_name": x,
                        "input_config": info,
                        "received_type": received_type,
                        "linked_node": val,
                    },
                })
                continue
            try:
                r = _validate_inputs(prompt, o_id, validated, catalog, custom)
                if r[0] is False:
                    valid = False
                    continue
            except Exception as ex:  # noqa: BLE001 - mirrors execution.validate_inputs
                typ, _, tb = sys.exc_info()
                valid = False
                validated[o_id] = (False, [{
                    "type": "exception_during_inner_validation",
                    "message": "Exception when validating inner node",
                    "details": str(ex),
                    "extra_info": {
                        "input_name": x,
                        "input_config": info,
                        "exception_message": str(ex),
                        "exception_type": full_type_name(typ),
                        "traceback": traceback.format_tb(tb),
                        "linked_node": val,
                    },
                }], o_id)
                continue
        else:
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[x] = val
                if input_type == "INT":
                    val = int(val)
                    inputs[x] = val
                if input_type == "FLOAT":
                    val = float(val)
                    inputs[x] = val
                if input_type == "STRING":
                    val = str(val)
                    inputs[x] = val
                if input_type == "BOOLEAN":
                    val = bool(val)
                    inputs[x] = val
            except Exception as ex:  # noqa: BLE001
                errors.append({
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {input_type} value",
                    "details": f"{x}, {val}, {ex}",
                    "extra_info": {
                        "input_name": x,
                        "input_config": info,
                        "received_value": val,
                        "exception_message": str(ex),
                    },
                })
                continue

            if x not in validators:
                if "min" in extra_info and val < extra_info["min"]:
                    errors.append({
                        "type": "value_smaller_than_min",
                        "message": "Value {} smaller than min of {}".format(val, extra_info["min"]),
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    })
                    continue
                if "max" in extra_info and val > extra_info["max"]:
                    errors.append({
                        "type": "value_bigger_than_max",
                        "message": "Value {} bigger than max of {}".format(val, extra_info["max"]),
                        "details": f"{x}",
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    })
                    continue
                if isinstance(input_type, list):
                    options = input_type
                    if val not in options:
                        input_config: Any = info
                        if len(options) > 20:
                            list_info = f"(list of length {len(options)})"
                            input_config = None
                        else:
                            list_info = str(options)
                        errors.append({
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{x}: '{val}' not in {list_info}",
                            "extra_info": {"input_name": x, "input_config": input_config, "received_value": val},
                        })
                        continue

    for x, check in validators.items():
        if x not in inputs or is_link(inputs[x]):
            continue
        result = check(inputs[x])
        if result is not True:
            details = f"{x}"
            if result is not False:
                details += f" - {result}"
            errors.append({
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": details,
                "extra_info": {"input_name": x},
            })

    ret = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
    validated[unique_id] = ret
    return ret


def validate_prompt(prompt: Any, partial_targets: list | None, catalog: NodeCatalog) -> tuple:
    """Returns ``(ok, error, good_outputs, node_errors)``; may raise like the real one (-> HTTP 500)."""
    outputs: list[str] = []
    for x in prompt:
        if "class_type" not in prompt[x]:
            return (False, {
                "type": "invalid_prompt",
                "message": "Cannot execute because a node is missing the class_type property.",
                "details": f"Node ID '#{x}'",
                "extra_info": {},
            }, [], {})
        class_type = prompt[x]["class_type"]
        node_def = catalog.get(class_type)
        if node_def is None:
            return (False, {
                "type": "invalid_prompt",
                "message": f"Cannot execute because node {class_type} does not exist.",
                "details": f"Node ID '#{x}'",
                "extra_info": {},
            }, [], {})
        if node_def.get("output_node") is True:
            if partial_targets is None or x in partial_targets:
                outputs.append(x)

    if not outputs:
        return (False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, [], {})

    custom = _custom_validators(catalog)
    good_outputs: list[str] = []
    errors: list[tuple[str, list]] = []
    node_errors: dict[str, dict] = {}
    validated: dict[str, tuple] = {}
    for o in outputs:
        try:
            m = _validate_inputs(prompt, o, validated, catalog, custom)
            valid, reasons = m[0], m[1]
        except Exception as ex:  # noqa: BLE001 - mirrors execution.validate_prompt
            typ, _, tb = sys.exc_info()
            valid = False
            reasons = [{
                "type": "exception_during_validation",
                "message": "Exception when validating node",
                "details": str(ex),
                "extra_info": {"exception_type": full_type_name(typ), "traceback": traceback.format_tb(tb)},
            }]
            validated[o] = (False, reasons, o)
        if valid is True:
            good_outputs.append(o)
            continue
        errors.append((o, reasons))
        for node_id, result in validated.items():
            if result[0] is not True and len(result[1]) > 0:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": result[1],
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(o)

    if not good_outputs:
        lines = [f"{e['message']}: {e['details']}" for _, reasons in errors for e in reasons]
        return (False, {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "\n".join(lines),
            "extra_info": {},
        }, [], node_errors)
    return (True, None, good_outputs, node_errors)


# ---------------------------------------------------------------------------------------------
# scripts (how long nodes take, which node fails)


@dataclass
class Script:
    """How the double runs matching prompts. See ``ComfyDouble.script`` for the meaning of each field."""

    match: Any = None
    per_node_delay: float = 0.0
    class_delays: dict[str, float] = field(default_factory=dict)
    node_delays: dict[str, float] = field(default_factory=dict)
    progress_steps: int | dict[str, int] | None = None
    preview_every_step: bool = False
    fail_at_node: str | None = None
    exception_type: str = "RuntimeError"
    exception_message: str = "Scripted failure"
    times: int | None = None
    # cloud only: extra time spent in the raw states before "executing"
    queue_delay: float = 0.0

    def matches(self, prompt_id: str, prompt: dict, extra_data: dict) -> bool:
        m = self.match
        if m is None:
            return True
        if isinstance(m, str):
            return m == prompt_id or m == extra_data.get("client_id")
        if callable(m):
            return bool(m(prompt))
        return False

    def delay_for(self, node_id: str, class_type: str) -> float:
        if node_id in self.node_delays:
            return float(self.node_delays[node_id])
        if class_type in self.class_delays:
            return float(self.class_delays[class_type])
        return float(self.per_node_delay)

    def steps_for(self, node_id: str, class_type: str, natural: int | None) -> int | None:
        ps = self.progress_steps
        if ps is None:
            return natural
        if isinstance(ps, dict):
            if node_id in ps:
                return int(ps[node_id])
            if class_type in ps:
                return int(ps[class_type])
            return natural
        return int(ps) if natural is not None else natural

    def fails_at(self, node_id: str, class_type: str) -> bool:
        return self.fail_at_node is not None and self.fail_at_node in (node_id, class_type)


DEFAULT_SCRIPT = Script()


class ScriptBook:
    """Registered scripts; the newest matching one wins. Thread-safe enough (list swaps under the GIL)."""

    def __init__(self) -> None:
        self._scripts: list[Script] = []

    def add(self, script: Script) -> Script:
        self._scripts = self._scripts + [script]
        return script

    def remove(self, script: Script) -> None:
        self._scripts = [s for s in self._scripts if s is not script]

    def clear(self) -> None:
        self._scripts = []

    def resolve(self, prompt_id: str, prompt: dict, extra_data: dict) -> Script:
        for script in reversed(self._scripts):
            if script.matches(prompt_id, prompt, extra_data):
                if script.times is not None:
                    script.times -= 1
                    if script.times <= 0:
                        self.remove(script)
                return script
        return DEFAULT_SCRIPT


# ---------------------------------------------------------------------------------------------
# execution order (ComfyUI's ExecutionList)


class ExecutionOrder:
    def __init__(self, prompt: dict, is_cached: Callable[[str], bool], is_output: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    source, socket_ = value[0], value[1]
                    if not self.is_cached(source):
                        stack.append(source)
                        links.append((source, socket_, unique_id))
        for source, socket_, target in links:
            if not self.is_cached(source):
                self.add_node(source)
                if target not in self.blocking[source]:
                    self.blocking[source][target] = {}
                    self.block_count[target] += 1
                self.blocking[source][target][socket_] = True

    def empty(self) -> bool:
        return not self.pending

    def next(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for n in ready:
            if self.is_output(n):
                return n
        for n in ready:
            if any(self.is_output(b) for b in self.blocking[n]):
                return n
        for n in ready:
            for b in self.blocking[n]:
                if any(self.is_output(b1) for b1 in self.blocking.get(b, {})):
                    return n
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]


# ---------------------------------------------------------------------------------------------
# node emulation


class NodeFailure(Exception):
    """A runtime failure that must surface as ``execution_error`` with this type name."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


class Interrupted(Exception):
    pass


@dataclass
class Token:
    """Placeholder value for outputs the double does not model (MODEL, CLIP, LATENT, ...)."""

    kind: str
    source: str

    def __str__(self) -> str:
        return f"<{self.kind} from node {self.source}>"


def _color(value: int) -> tuple[int, int, int]:
    value = int(value)
    return ((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)


def _as_images(value: Any) -> list[Image.Image]:
    if isinstance(value, list) and value and all(isinstance(v, Image.Image) for v in value):
        return value
    return [Image.new("RGB", (64, 64))]


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    if isinstance(value, list) and value and isinstance(value[0], Image.Image):
        w, h = value[0].size
        return f"<batch of {len(value)} {value[0].mode} images {w}x{h}>"
    return str(value)


@dataclass
class NodeContext:
    """What a running node may use: its identity, folders and the progress/text channels."""

    node_id: str
    class_type: str
    prompt: dict
    extra_data: dict
    steps: int | None
    delay: float
    preview_every_step: bool
    dirs: dict[str, str]
    models_dir: Callable[[str], str]
    progress: Callable[..., Awaitable[None]]
    text: Callable[[str], Awaitable[None]]
    check_interrupt: Callable[[], None]
    rng: random.Random

    async def work(self, natural_steps: int | None = None, previews: list[Image.Image] | None = None,
                   zero_based: bool = False) -> None:
        """Spend the scripted time, reporting ``steps`` progress ticks (each checks the interrupt flag)."""
        steps = self.steps if self.steps is not None else natural_steps
        if not steps:
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            return
        per_step = self.delay / steps if self.delay > 0 else 0.0
        for i in range(steps):
            if per_step:
                await asyncio.sleep(per_step)
            else:
                await asyncio.sleep(0)
            preview = None
            if previews is not None and i < len(previews):
                preview = previews[i]
            elif self.preview_every_step:
                preview = Image.new("RGB", (64, 64), (128, 128, 128))
            value = i if zero_based else i + 1
            await self.progress(value, steps, preview)


def _save_images(ctx: NodeContext, images: list[Image.Image], filename_prefix: str, kind: str,
                 compress_level: int) -> list[dict]:
    base_dir = ctx.dirs[kind]
    normalized = os.path.normpath(filename_prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    full_folder = os.path.join(base_dir, subfolder)
    if os.path.commonpath((base_dir, os.path.abspath(full_folder))) != base_dir:
        raise NodeFailure(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(full_folder)}\n         output_dir: {base_dir}"
            f"\n         commonpath: {os.path.commonpath((base_dir, os.path.abspath(full_folder)))}",
        )
    os.makedirs(full_folder, exist_ok=True)
    counter = 1
    prefix_len = len(filename)
    for existing in os.listdir(full_folder):
        prefix = existing[: prefix_len + 1]
        try:
            digits = int(existing[prefix_len + 1:].split("_")[0])
        except ValueError:
            digits = 0
        if prefix[:-1] == filename and prefix[-1:] == "_":
            counter = max(counter, digits + 1)
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    results = []
    for batch_number, image in enumerate(images):
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        image.save(os.path.join(full_folder, name), pnginfo=info, compress_level=compress_level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


def _resolve_input_file(ctx: NodeContext, name: str) -> str:
    kind = "input"
    for tag in ("input", "output", "temp"):
        suffix = f" [{tag}]"
        if name.endswith(suffix):
            name, kind = name[: -len(suffix)], tag
            break
    return os.path.join(ctx.dirs[kind], name)


async def _run_node(ctx: NodeContext, inputs: dict, node_def: dict) -> tuple[tuple, dict | None]:
    """Emulate one node. Returns (outputs tuple, ui dict or None)."""
    cls = ctx.class_type
    if cls == "EmptyImage":
        await ctx.work()
        w, h, n = int(inputs["width"]), int(inputs["height"]), int(inputs["batch_size"])
        image = Image.new("RGB", (w, h), _color(inputs.get("color", 0)))
        return ([image] * n,), None
    if cls in ("LoadImage", "LoadImageMask"):
        await ctx.work()
        path = _resolve_input_file(ctx, str(inputs["image"]))
        try:
            with Image.open(path) as img:
                img.load()
                bands = img.getbands()
                rgb = img.convert("RGB")
                if "A" in bands:
                    mask = ImageOps.invert(img.getchannel("A"))
                else:
                    mask = Image.new("L", (64, 64), 0)
        except FileNotFoundError as exc:
            raise NodeFailure("FileNotFoundError", f"[Errno 2] No such file or directory: '{path}'") from exc
        except Exception as exc:  # noqa: BLE001 - PIL raises UnidentifiedImageError for non-images
            raise NodeFailure("PIL.UnidentifiedImageError", f"cannot identify image file '{path}'") from exc
        if cls == "LoadImageMask":
            return ([mask],), None
        return ([rgb], [mask]), None
    if cls == "ImageInvert":
        await ctx.work()
        return ([ImageOps.invert(i.convert("RGB")) for i in _as_images(inputs["image"])],), None
    if cls in ("ImageBlur", "ImageSharpen", "ImageQuantize"):
        await ctx.work()
        return (_as_images(inputs["image"]),), None
    if cls == "ImageScale":
        await ctx.work()
        images = _as_images(inputs["image"])
        w, h = int(inputs.get("width", 0)), int(inputs.get("height", 0))
        out = []
        for img in images:
            ow, oh = img.size
            if w == 0 and h == 0:
                tw, th = ow, oh
            elif w == 0:
                tw, th = max(1, round(ow * h / oh)), h
            elif h == 0:
                tw, th = w, max(1, round(oh * w / ow))
            else:
                tw, th = w, h
            out.append(img.resize((tw, th), Image.NEAREST))
        return (out,), None
    if cls == "UpscaleModelLoader":
        await ctx.work()
        name = str(inputs["model_name"])
        if not os.path.isfile(os.path.join(ctx.models_dir("upscale_models"), name)):
            raise NodeFailure("FileNotFoundError", f"Model in folder 'upscale_models' with filename '{name}' not found.")
        return (Token("UPSCALE_MODEL", ctx.node_id),), None
    if cls == "ImageUpscaleWithModel":
        images = _as_images(inputs["image"])
        tiles = sum(math.ceil(i.size[1] / 480) * math.ceil(i.size[0] / 480) for i in images)
        await ctx.work(natural_steps=tiles)
        return (images,), None
    if cls == "GetImageSize":
        await ctx.work()
        images = _as_images(inputs["image"])
        w, h = images[0].size
        await ctx.text(f"width: {w}, height: {h}\n batch size: {len(images)}")
        return (w, h, len(images)), None
    if cls == "ImageBlend":
        await ctx.work()
        a, b = _as_images(inputs["image1"]), _as_images(inputs["image2"])
        if len(a) != len(b):
            raise NodeFailure(
                "RuntimeError",
                f"The size of tensor a ({len(a)}) must match the size of tensor b ({len(b)}) at non-singleton dimension 0",
            )
        factor = float(inputs.get("blend_factor", 0.5))
        out = [Image.blend(x.convert("RGB"), y.convert("RGB").resize(x.size), factor) for x, y in zip(a, b)]
        return (out,), None
    if cls == "MaskToImage":
        await ctx.work()
        return ([m.convert("RGB") for m in _as_images(inputs["mask"])],), None
    if cls == "ImageToMask":
        await ctx.work()
        index = {"red": 0, "green": 1, "blue": 2, "alpha": 3}.get(str(inputs.get("channel")), 0)
        out = []
        for img in _as_images(inputs["image"]):
            bands = img.split()
            out.append(bands[index] if index < len(bands) else Image.new("L", img.size, 255))
        return (out,), None
    if cls == "JoinImageWithAlpha":
        await ctx.work()
        images, masks = _as_images(inputs["image"]), _as_images(inputs["alpha"])
        out = []
        for i, img in enumerate(images):
            mask = masks[min(i, len(masks) - 1)].convert("L").resize(img.size)
            rgba = img.convert("RGBA")
            rgba.putalpha(ImageOps.invert(mask))
            out.append(rgba)
        return (out,), None
    if cls == "SaveImage":
        await ctx.work()
        results = _save_images(ctx, _as_images(inputs["images"]), str(inputs.get("filename_prefix", "ComfyUI")), "output", 4)
        return (), {"images": results}
    if cls == "PreviewImage":
        await ctx.work()
        prefix = "ComfyUI_temp_" + "".join(ctx.rng.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        results = _save_images(ctx, _as_images(inputs["images"]), prefix, "temp", 1)
        return (), {"images": results}
    if cls == "SaveImageWebsocket":
        images = _as_images(inputs["images"])
        await ctx.work(natural_steps=len(images), previews=images, zero_based=True)
        return (), None
    # Anything else: spend the scripted time and hand out placeholders of the declared types.
    natural = int(inputs["steps"]) if cls in ("KSampler", "KSamplerAdvanced") and "steps" in inputs else None
    await ctx.work(natural_steps=natural)
    outputs = []
    for kind in node_def.get("output", []):
        if kind == "IMAGE":
            outputs.append([Image.new("RGB", (64, 64))])
        elif kind == "MASK":
            outputs.append([Image.new("L", (64, 64))])
        elif kind == "INT":
            outputs.append(0)
        elif kind == "FLOAT":
            outputs.append(0.0)
        elif kind == "STRING":
            outputs.append("")
        elif kind == "BOOLEAN":
            outputs.append(False)
        else:
            outputs.append(Token(str(kind), ctx.node_id))
    return tuple(outputs), None


# ---------------------------------------------------------------------------------------------
# the executor


@dataclass
class CacheEntry:
    outputs: tuple
    ui: dict | None
    meta: dict | None


class NodeCache:
    """ComfyUI's CLASSIC cache: keyed by input signature, trimmed to the nodes of the latest prompt."""

    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}

    def clear(self) -> None:
        self.entries.clear()


def compute_signatures(prompt: dict, catalog: NodeCatalog, is_changed: Callable[[str, dict], Any]) -> dict[str, str]:
    memo: dict[str, str] = {}

    def sig(node_id: str, depth: int = 0) -> str:
        if node_id in memo:
            return memo[node_id]
        if depth > 500:
            raise RecursionError("dependency cycle")
        node = prompt[node_id]
        node_def = catalog.get(node["class_type"]) or {}
        parts: list[Any] = [node["class_type"], is_changed(node_id, node)]
        if "UNIQUE_ID" in (node_def.get("input", {}).get("hidden") or {}).values():
            parts.append(node_id)
        for name in sorted(node.get("inputs", {})):
            value = node["inputs"][name]
            if is_link(value) and value[0] in prompt:
                parts.append([name, "ANCESTOR", sig(value[0], depth + 1), value[1]])
            else:
                parts.append([name, value])
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        memo[node_id] = digest
        return digest

    return {node_id: sig(node_id) for node_id in prompt}


class Messenger:
    """How a run talks to sockets; each double provides one. ``lifecycle`` carries execution_start,
    execution_cached, executing, executed, execution_success and execution_error (ComfyUI sends them
    only to the submitting client); ``interrupted`` carries execution_interrupted (broadcast when the
    prompt has no client); ``progress`` carries progress_state."""

    async def lifecycle(self, event: str, data: dict) -> None:
        raise NotImplementedError

    async def interrupted(self, event: str, data: dict) -> None:
        raise NotImplementedError

    async def progress(self, event: str, data: dict) -> None:
        raise NotImplementedError

    async def progress_with_preview(self, progress: dict, image: Image.Image | None, metadata: dict) -> None:
        raise NotImplementedError

    async def text_frame(self, node_id: str, text: str) -> None:
        raise NotImplementedError

    def on_executing(self, node_id: str | None) -> None:
        """The node now running (None at the end); used for the reconnect replay."""


@dataclass
class RunResult:
    status_str: str
    completed: bool
    messages: list
    outputs: dict
    meta: dict
    outcome: str  # success | error | interrupted
    error: dict | None = None


class PromptRun:
    """Executes one queued prompt the way ComfyUI's PromptExecutor does, emitting the same messages."""

    def __init__(
        self,
        *,
        prompt_id: str,
        prompt: dict,
        extra_data: dict,
        outputs_to_execute: list[str],
        catalog: NodeCatalog,
        cache: NodeCache,
        messenger: Messenger,
        script: Script,
        dirs: dict[str, str],
        models_dir: Callable[[str], str],
        interrupt_flag: Callable[[], bool],
        is_changed: Callable[[str, dict], Any],
        rng: random.Random,
    ) -> None:
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra_data = extra_data
        self.outputs_to_execute = list(outputs_to_execute)
        self.catalog = catalog
        self.cache = cache
        self.out = messenger
        self.script = script
        self.dirs = dirs
        self.models_dir = models_dir
        self.interrupt_flag = interrupt_flag
        self.is_changed = is_changed
        self.rng = rng
        self.client_id = extra_data.get("client_id")
        self.messages: list = []
        self.registry: dict[str, dict] = {}

    async def _add_message(self, event: str, data: dict, broadcast: bool) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if broadcast:
            await self.out.interrupted(event, data)
        else:
            await self.out.lifecycle(event, data)

    async def _send_progress_state(self) -> None:
        nodes = {}
        for node_id, state in self.registry.items():
            if state["state"] == "pending":
                continue
            nodes[node_id] = {
                "value": state["value"],
                "max": state["max"],
                "state": state["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
        await self.out.progress("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})

    def _entry(self, node_id: str) -> dict:
        if node_id not in self.registry:
            self.registry[node_id] = {"state": "pending", "value": 0, "max": 1}
        return self.registry[node_id]

    async def _start_progress(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="running", value=0.0, max=1.0)
        await self._send_progress_state()

    async def _finish_progress(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])
        await self._send_progress_state()

    def _check_interrupt(self) -> None:
        if self.interrupt_flag():
            raise Interrupted()

    async def run(self) -> RunResult:
        await self._add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        try:
            signatures = compute_signatures(self.prompt, self.catalog, self.is_changed)
        except RecursionError:
            signatures = {n: f"cycle-{n}-{self.rng.random()}" for n in self.prompt}
        wanted = set(signatures.values())
        for key in [k for k in self.cache.entries if k not in wanted]:
            del self.cache.entries[key]

        def cached(node_id: str) -> CacheEntry | None:
            return self.cache.entries.get(signatures.get(node_id, ""))

        cached_nodes = [n for n in self.prompt if cached(n) is not None]
        await self._add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": self.prompt_id}, broadcast=False)

        def is_output(node_id: str) -> bool:
            node_def = self.catalog.get(self.prompt[node_id]["class_type"]) or {}
            return node_def.get("output_node") is True

        order = ExecutionOrder(self.prompt, lambda n: cached(n) is not None, is_output)
        for node_id in self.outputs_to_execute:
            order.add_node(node_id)

        executed: list[str] = []
        current_outputs = list(self.prompt.keys())
        outcome = "success"
        error_payload = None
        while not order.empty():
            node_id = order.next()
            if node_id is None:
                cycle = list(order.pending)
                error_payload = {
                    "prompt_id": self.prompt_id, "node_id": cycle[0],
                    "node_type": self.prompt[cycle[0]]["class_type"], "executed": list(executed),
                    "exception_message": "Dependency cycle detected", "exception_type": "graph.DependencyCycleError",
                    "traceback": [], "current_inputs": [], "current_outputs": current_outputs,
                }
                await self._add_message("execution_error", error_payload, broadcast=False)
                outcome = "error"
                break
            node = self.prompt[node_id]
            class_type = node["class_type"]
            entry = cached(node_id)
            if entry is not None:
                await self.out.lifecycle("executed", {
                    "node": node_id, "display_node": node_id,
                    "output": entry.ui, "prompt_id": self.prompt_id,
                })
                await self._finish_progress(node_id)
                order.complete(node_id)
                continue

            await self._start_progress(node_id)
            inputs: dict[str, Any] = {}
            for name, value in node.get("inputs", {}).items():
                if is_link(value):
                    source = cached(value[0])
                    inputs[name] = source.outputs[int(value[1])] if source and int(value[1]) < len(source.outputs) else None
                else:
                    inputs[name] = value
            self.out.on_executing(node_id)
            await self.out.lifecycle("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})

            node_def = self.catalog.get(class_type) or {}
            ctx = NodeContext(
                node_id=node_id,
                class_type=class_type,
                prompt=self.prompt,
                extra_data=self.extra_data,
                steps=self.script.steps_for(node_id, class_type, None),
                delay=self.script.delay_for(node_id, class_type),
                preview_every_step=self.script.preview_every_step,
                dirs=self.dirs,
                models_dir=self.models_dir,
                progress=self._make_progress(node_id),
                text=self._make_text(node_id),
                check_interrupt=self._check_interrupt,
                rng=self.rng,
            )
            if self.script.progress_steps is not None and not isinstance(self.script.progress_steps, dict):
                # an int overrides the natural step count of nodes that report progress
                ctx.steps = None
                ctx = _with_step_override(ctx, int(self.script.progress_steps))
            try:
                self._check_interrupt()  # before_node_execution()
                if self.script.fails_at(node_id, class_type):
                    await ctx.work()
                    raise NodeFailure(self.script.exception_type, self.script.exception_message)
                outputs, ui = await _run_node(ctx, inputs, node_def)
            except Interrupted:
                await self._add_message("execution_interrupted", {
                    "prompt_id": self.prompt_id, "node_id": node_id,
                    "node_type": class_type, "executed": list(executed),
                }, broadcast=True)
                outcome = "interrupted"
                break
            except Exception as exc:  # noqa: BLE001 - every node failure becomes execution_error
                if isinstance(exc, NodeFailure):
                    exception_type = exc.exception_type
                else:
                    exception_type = full_type_name(type(exc))
                tb = traceback.format_tb(exc.__traceback__)
                error_payload = {
                    "prompt_id": self.prompt_id,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(executed),
                    "exception_message": "{}\n{}".format(exc, ""),
                    "exception_type": exception_type,
                    "traceback": tb,
                    "current_inputs": {k: [_describe(v)] for k, v in inputs.items()},
                    "current_outputs": current_outputs,
                }
                await self._add_message("execution_error", error_payload, broadcast=False)
                outcome = "error"
                break
            meta = None
            if ui:
                meta = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
                await self.out.lifecycle("executed", {
                    "node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id,
                })
            self.cache.entries[signatures[node_id]] = CacheEntry(outputs=outputs, ui=ui or None, meta=meta)
            await self._finish_progress(node_id)
            executed.append(node_id)
            order.complete(node_id)
        else:
            await self._add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)

        self.out.on_executing(None)
        ui_outputs: dict[str, Any] = {}
        meta_outputs: dict[str, Any] = {}
        for node_id in self.prompt:
            entry = cached(node_id)
            if entry is not None and entry.ui:
                ui_outputs[node_id] = entry.ui
                meta_outputs[node_id] = entry.meta or {
                    "node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id,
                }
        success = outcome == "success"
        return RunResult(
            status_str="success" if success else "error",
            completed=success,
            messages=self.messages,
            outputs=ui_outputs,
            meta=meta_outputs,
            outcome=outcome,
            error=error_payload,
        )

    def _make_progress(self, node_id: str):
        async def progress(value: Any, total: Any, preview: Image.Image | None = None) -> None:
            self._check_interrupt()  # ComfyUI's progress hook checks the flag first
            entry = self._entry(node_id)
            entry.update(state="running", value=value, max=total)
            await self._send_progress_state()
            data = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
            metadata = {
                "node_id": node_id, "prompt_id": self.prompt_id, "display_node_id": node_id,
                "parent_node_id": None, "real_node_id": node_id,
            }
            await self.out.progress_with_preview(data, preview, metadata)

        return progress

    def _make_text(self, node_id: str):
        async def text(message: str) -> None:
            await self.out.text_frame(node_id, message)

        return text


def _with_step_override(ctx: NodeContext, steps: int) -> NodeContext:
    """Make nodes that naturally report progress use ``steps`` ticks instead."""
    original = ctx.work

    async def work(natural_steps: int | None = None, previews: list | None = None, zero_based: bool = False) -> None:
        if natural_steps is not None and previews is None:
            natural_steps = steps
        await original(natural_steps=natural_steps, previews=previews, zero_based=zero_based)

    ctx.work = work  # type: ignore[method-assign]
    return ctx


# ---------------------------------------------------------------------------------------------
# binary frames


def png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def preview_frame_type1(image: Image.Image) -> bytes:
    """[u32 1][u32 2=PNG][png]"""
    return (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + png_bytes(image)


def preview_frame_type4(image: Image.Image, metadata: dict) -> bytes:
    """[u32 4][u32 json_len][json][png]"""
    meta = dict(metadata)
    meta["image_type"] = "image/png"
    encoded = json.dumps(meta).encode("utf-8")
    return (4).to_bytes(4, "big") + len(encoded).to_bytes(4, "big") + encoded + png_bytes(image)


def text_frame(node_id: str, text: str) -> bytes:
    """[u32 3][u32 node_id_len][node_id][text]"""
    node = str(node_id).encode("utf-8")
    return (3).to_bytes(4, "big") + len(node).to_bytes(4, "big") + node + text.encode("utf-8")


def list_model_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    found = []
    for root, _dirs, files in os.walk(folder, followlinks=True):
        for name in files:
            if name.lower().endswith(MODEL_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def write_fake_safetensors(path: str, metadata: dict[str, str] | None) -> None:
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    encoded = json.dumps(header).encode("utf-8")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(len(encoded).to_bytes(8, "little") + encoded)


def read_safetensors_metadata(path: str) -> dict | None:
    try:
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if length <= 0 or length > 1024 * 1024:
                return None
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict) or "__metadata__" not in header:
        return None
    return header["__metadata__"]


def iter_images(names: Iterable[str]) -> list[str]:
    return [n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
