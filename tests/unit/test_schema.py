"""comfypanel.schema against the real /object_info of ComfyUI 0.3.75 and realistic API workflows.

The recorded server had no model files, so its model COMBOs are empty; tests that need a server
with models inject options into a deep copy of the recording.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from pathlib import Path

import pytest

from comfypanel.schema import (
    InputSpec,
    Parameter,
    ParameterSet,
    Problem,
    Schema,
    SchemaCache,
    clean_title,
    discover,
    is_link,
    preflight,
)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "tests" / "data" / "workflows"


def _recordings() -> Path:
    for cand in (ROOT.parent / "shared" / "recordings", Path("/work/shared/recordings")):
        if (cand / "object_info.full.json").is_file():
            return cand
    raise FileNotFoundError("shared/recordings/object_info.full.json")


@pytest.fixture(scope="module")
def object_info() -> dict:
    return json.loads((_recordings() / "object_info.full.json").read_text())


@pytest.fixture(scope="module")
def schema(object_info) -> Schema:
    return Schema.from_object_info(object_info)


def _inject(object_info: dict, class_type: str, name: str, options: list[str]) -> None:
    """Give a recorded COMBO the options a server with models would list (both combo forms)."""
    for section in ("required", "optional"):
        spec = object_info[class_type]["input"].get(section, {}).get(name)
        if spec is None:
            continue
        if spec[0] == "COMBO":
            spec[1]["options"] = list(options)
        else:
            spec[0] = list(options)
        return
    raise KeyError(f"{class_type}.{name}")


SERVER_MODELS = {
    "checkpoints": ["v1-5-pruned-emaonly-fp16.safetensors", "dreamshaper_8.safetensors", "sd-v1-5-inpainting.ckpt",
                    "realisticVisionV60B1_v51HyperVAE.safetensors", "SDXL/sd_xl_base_1.0.safetensors",
                    "sd_xl_refiner_1.0.safetensors"],
    "loras": ["add_detail.safetensors", "film_grain_style.safetensors"],
    "vae": ["ae.safetensors"],
    "text_encoders": ["t5xxl_fp16.safetensors", "clip_l.safetensors"],
    "diffusion_models": ["flux1-dev.safetensors"],
    "controlnet": ["control_v11p_sd15_canny_fp16.safetensors"],
}


@pytest.fixture(scope="module")
def stocked_info(object_info) -> dict:
    """The recording as a server with a few models would answer it."""
    info = copy.deepcopy(object_info)
    _inject(info, "CheckpointLoaderSimple", "ckpt_name", SERVER_MODELS["checkpoints"])
    _inject(info, "LoraLoader", "lora_name", SERVER_MODELS["loras"])
    _inject(info, "VAELoader", "vae_name", SERVER_MODELS["vae"] + ["pixel_space"])
    _inject(info, "DualCLIPLoader", "clip_name1", SERVER_MODELS["text_encoders"])
    _inject(info, "DualCLIPLoader", "clip_name2", SERVER_MODELS["text_encoders"])
    _inject(info, "UNETLoader", "unet_name", SERVER_MODELS["diffusion_models"])
    _inject(info, "ControlNetLoader", "control_net_name", SERVER_MODELS["controlnet"])
    _inject(info, "UpscaleModelLoader", "model_name", ["4x-UltraSharp.pth"])
    return info


@pytest.fixture(scope="module")
def stocked(stocked_info) -> Schema:
    return Schema.from_object_info(stocked_info)


def wf(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def simple_roles(ps: ParameterSet) -> list[tuple[str, str | None]]:
    return [(p.id, p.role) for p in ps.simple]


def labels(ps: ParameterSet) -> dict[str, str]:
    return {p.id: p.label for p in ps}


def node(ct: str, title: str | None = None, **inputs) -> dict:
    out = {"class_type": ct, "inputs": inputs}
    if title is not None:
        out["_meta"] = {"title": title}
    return out


# ---------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------


def test_schema_knows_the_recorded_classes(schema):
    assert len(schema) == 516
    assert "KSampler" in schema and "NoSuchNode" not in schema
    assert schema.node("NoSuchNode") is None
    assert schema.node("KSampler") is schema.node("KSampler")  # parsed once


def test_ksampler_inputs_in_input_order_with_numbers(schema):
    ks = schema.node("KSampler")
    assert [i.name for i in ks.inputs] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                           "positive", "negative", "latent_image", "denoise"]
    seed, steps, cfg = ks.input("seed"), ks.input("steps"), ks.input("cfg")
    assert (seed.kind, seed.min, seed.max, seed.control_after_generate, seed.seed_like) == (
        "INT", 0, 18446744073709551615, True, True)
    assert (steps.kind, steps.default, steps.min, steps.max, steps.seed_like) == ("INT", 20, 1, 10000, False)
    assert (cfg.kind, cfg.default, cfg.step, cfg.round) == ("FLOAT", 8.0, 0.1, 0.01)
    assert cfg.tooltip.startswith("The Classifier-Free Guidance scale")
    model = ks.input("model")
    assert (model.kind, model.link_type, model.is_widget, model.required) == ("LINK", "MODEL", False, True)
    assert ks.display_name == "KSampler" and ks.category == "sampling"
    assert [(o.type, o.name, o.is_list) for o in ks.outputs] == [("LATENT", "LATENT", False)]


def test_combo_in_old_and_v3_forms(schema):
    old = schema.node("KSampler").input("sampler_name")
    v3 = schema.node("KSamplerSelect").input("sampler_name")
    assert old.kind == v3.kind == "COMBO"
    assert isinstance(old.options, tuple) and "euler" in old.options and "dpmpp_2m" in old.options
    assert v3.options == old.options
    assert old.default == "euler"  # first option when the server gives no default
    assert schema.node("ImageStitch").input("direction").default == "right"


def test_strings_booleans_and_flags(schema):
    text = schema.node("CLIPTextEncode").input("text")
    assert (text.kind, text.multiline, text.dynamic_prompts) == ("STRING", True, True)
    assert schema.node("ImageStitch").input("match_image_size").kind == "BOOLEAN"
    device = schema.node("DualCLIPLoader").input("device")
    assert (device.required, device.advanced, device.options) == (False, True, ("default", "cpu"))
    color = schema.node("EmptyImage").input("color")
    assert color.display == "color"


def test_hidden_inputs_are_not_widgets(schema):
    save = schema.node("SaveImage")
    prompt = save.input("prompt")
    assert (prompt.hidden, prompt.kind, prompt.link_type, prompt.is_widget) == (True, "LINK", "PROMPT", False)
    assert save.output_node is True and save.outputs == ()
    assert [i.name for i in save.widgets] == ["filename_prefix"]


def test_upload_inputs(schema):
    li = schema.node("LoadImage").input("image")
    assert (li.kind, li.image_upload, li.upload, li.image_folder, li.model_folder) == (
        "COMBO", True, "image", "input", None)
    out = schema.node("LoadImageOutput")
    assert out.input("image").image_folder == "output" and out.input("image").image_upload
    assert out.experimental is True
    assert out.input("image").extra["remote"]["route"] == "/internal/files/output"
    assert schema.node("LoadImageMask").input("image").image_upload
    video = schema.node("LoadVideo").input("file")
    assert (video.upload, video.image_upload) == ("video", False)


@pytest.mark.parametrize("class_type,name,folder", [
    ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
    ("VAELoader", "vae_name", "vae"),
    ("LoraLoader", "lora_name", "loras"),
    ("LoraLoaderModelOnly", "lora_name", "loras"),
    ("UNETLoader", "unet_name", "diffusion_models"),
    ("CLIPLoader", "clip_name", "text_encoders"),
    ("DualCLIPLoader", "clip_name1", "text_encoders"),
    ("DualCLIPLoader", "clip_name2", "text_encoders"),
    ("QuadrupleCLIPLoader", "clip_name4", "text_encoders"),
    ("ControlNetLoader", "control_net_name", "controlnet"),
    ("DiffControlNetLoader", "control_net_name", "controlnet"),
    ("UpscaleModelLoader", "model_name", "upscale_models"),
    ("CLIPVisionLoader", "clip_name", "clip_vision"),
    ("StyleModelLoader", "style_model_name", "style_models"),
    ("CheckpointLoader", "config_name", "configs"),
    ("ImageOnlyCheckpointLoader", "ckpt_name", "checkpoints"),
    ("CreateHookLora", "lora_name", "loras"),
])
def test_model_folders_of_standard_loaders(schema, class_type, name, folder):
    spec = schema.node(class_type).input(name)
    assert spec.model_folder == folder and spec.is_model


@pytest.mark.parametrize("class_type,name", [
    ("UNETLoader", "weight_dtype"), ("CLIPLoader", "type"), ("DualCLIPLoader", "device"),
    ("KSampler", "sampler_name"), ("GeminiNode", "model"), ("LoadImage", "image"),
])
def test_other_combos_are_not_model_lists(schema, class_type, name):
    assert schema.node(class_type).input(name).model_folder is None


def test_model_folders_are_derived_for_custom_loaders():
    info = {
        "IPAdapterModelLoader": {"input": {"required": {"ipadapter_file": [["ip-adapter_sd15.safetensors"]]}},
                                 "category": "ipadapter/loaders", "output": ["IPADAPTER"]},
        "Some Lora Stack": {"input": {"required": {"lora_name": [["None", "a.safetensors"]],
                                                   "mode": [["simple", "advanced"]]}},
                            "category": "stacks", "output": ["LORA_STACK"]},
        "FaceDetectorPicker": {"input": {"required": {"detector": [["bbox/face_yolov8m.pt", "segm/person.pt"]]}},
                               "category": "detectors", "output": ["DETECTOR"]},
        "WanVideoVAELoader": {"input": {"required": {"model_name": ["COMBO", {"options": []}]}},
                              "category": "WanVideoWrapper", "output": ["WANVAE"]},
    }
    s = Schema.from_object_info(info)
    assert s.node("IPAdapterModelLoader").input("ipadapter_file").model_folder == "ipadapter"
    assert s.node("Some Lora Stack").input("lora_name").model_folder == "loras"
    assert s.node("Some Lora Stack").input("mode").model_folder is None
    # file-like options but no recognisable folder: not pretended
    assert s.node("FaceDetectorPicker").input("detector").model_folder is None
    assert s.node("WanVideoVAELoader").input("model_name").model_folder == "vae"


def test_node_metadata_and_display_name_fallback(schema):
    fg = schema.node("FluxGuidance")
    assert fg.display_name == "FluxGuidance"  # the server sends display_name null
    assert (fg.deprecated, fg.experimental, fg.api_node) == (False, False, False)
    cn = schema.node("ControlNetApplyAdvanced")
    assert [(o.type, o.name) for o in cn.outputs] == [("CONDITIONING", "positive"), ("CONDITIONING", "negative")]
    assert [i.name for i in cn.inputs][-1] == "vae" and cn.input("vae").required is False
    assert schema.node("CheckpointLoaderSimple").outputs[2].tooltip.startswith("The VAE model")
    assert schema.node("SamplerCustomAdvanced").outputs[1].name == "denoised_output"


def test_seed_names_are_seed_like_without_the_flag():
    s = Schema.from_object_info({"X": {"input": {"required": {
        "seed": ["INT", {"default": 0}], "noise_seed": ["INT", {}], "count": ["INT", {}],
        "seed_text": ["STRING", {}]}}, "output": []}})
    x = s.node("X")
    assert [i.name for i in x.inputs if i.seed_like] == ["seed", "noise_seed"]


def test_malformed_classes_do_not_raise():
    s = Schema.from_object_info({
        "Weird": {"input": {"required": {"a": [], "b": "INT", "c": [None], "d": ["COMBO", {"options": "x"}]},
                            "optional": None}, "output": "IMAGE", "display_name": None},
        "NotADict": ["x"],
    })
    w = s.node("Weird")
    assert w.display_name == "Weird" and w.outputs == ()
    assert {i.name: i.kind for i in w.inputs} == {"a": "LINK", "b": "INT", "c": "LINK", "d": "COMBO"}
    assert "NotADict" not in s and s.node("NotADict") is None
    with pytest.raises(TypeError):
        Schema.from_object_info(["not", "a", "dict"])  # type: ignore[arg-type]


def test_updated_replaces_single_classes(schema, object_info):
    fresh = copy.deepcopy({"LoadImage": object_info["LoadImage"]})
    fresh["LoadImage"]["input"]["required"]["image"][0] = ["example.png", "new.png"]
    s2 = schema.updated(fresh)
    assert s2.node("LoadImage").input("image").options == ("example.png", "new.png")
    assert schema.node("LoadImage").input("image").options == ("example.png",)
    assert s2.node("KSampler") == schema.node("KSampler") and len(s2) == len(schema)


def test_every_recorded_class_parses(schema):
    specs = list(schema.nodes())
    assert len(specs) == 516
    kinds = {i.kind for s in specs for i in s.inputs}
    assert kinds == {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "LINK"}


def test_specs_are_frozen(schema):
    spec = schema.node("KSampler").input("steps")
    with pytest.raises(AttributeError):
        spec.min = 0  # type: ignore[misc]
    assert hash(spec) == hash(schema.node("KSampler").input("steps"))


# ---------------------------------------------------------------------------------------------
# SchemaCache
# ---------------------------------------------------------------------------------------------


def test_cache_loads_once_per_fingerprint(object_info):
    cache = SchemaCache(maxsize=4)
    calls = []

    def loader():
        calls.append(1)
        return object_info

    a = cache.get("fp-a", loader)
    assert cache.get("fp-a", loader) is a and len(calls) == 1
    b = cache.get("fp-b", loader)
    assert b is not a and len(calls) == 2
    assert "fp-a" in cache and len(cache) == 2
    cache.invalidate("fp-a")
    assert "fp-a" not in cache and cache.get("fp-a", loader) is not a and len(calls) == 3
    cache.invalidate()
    assert len(cache) == 0


def test_cache_is_a_bounded_lru():
    cache = SchemaCache(maxsize=2)
    cache.get("a", dict)
    cache.get("b", dict)
    cache.get("a", dict)  # a is now the most recent
    cache.get("c", dict)  # evicts b
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    with pytest.raises(ValueError):
        SchemaCache(maxsize=0)


def test_cache_accepts_a_schema_and_does_not_cache_failures(schema):
    cache = SchemaCache()
    assert cache.get("s", lambda: schema) is schema

    def boom():
        raise ConnectionError("server away")

    with pytest.raises(ConnectionError):
        cache.get("x", boom)
    assert "x" not in cache
    assert cache.get("x", dict) is not None


def test_cache_is_thread_safe_and_loads_once_under_contention(object_info):
    cache = SchemaCache(maxsize=3)
    calls: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(16)
    results: dict[int, tuple[str, Schema]] = {}
    errors: list[BaseException] = []

    def loader_for(fp):
        def load():
            with lock:
                calls[fp] = calls.get(fp, 0) + 1
            time.sleep(0.02)  # a slow /object_info
            return object_info
        return load

    def worker(i):
        try:
            start.wait()
            fp = f"fp{i % 2}"
            results[i] = (fp, cache.get(fp, loader_for(fp)))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert calls == {"fp0": 1, "fp1": 1}
    by_fp: dict[str, set[int]] = {}
    for fp, s in results.values():
        by_fp.setdefault(fp, set()).add(id(s))
    assert all(len(ids) == 1 for ids in by_fp.values()) and len(by_fp) == 2

    # churn: many fingerprints from many threads never exceed the bound nor raise
    def churn(seed):
        rng = random.Random(seed)
        for _ in range(200):
            cache.get(f"k{rng.randrange(10)}", dict)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(cache) <= 3


# ---------------------------------------------------------------------------------------------
# discovery on realistic workflows
# ---------------------------------------------------------------------------------------------

SAMPLER_3 = [("3.seed", "seed"), ("3.steps", "steps"), ("3.cfg", "cfg"), ("3.sampler_name", "sampler"),
             ("3.scheduler", "scheduler"), ("3.denoise", "denoise")]
LATENT_5 = [("5.width", "width"), ("5.height", "height"), ("5.batch_size", "batch_size")]


def test_sd15_txt2img(schema):
    ps = discover(wf("sd15_txt2img"), schema)
    assert simple_roles(ps) == [("6.text", "positive"), ("7.text", "negative"), ("4.ckpt_name", "checkpoint"),
                                *SAMPLER_3, *LATENT_5]
    assert labels(ps) | {} == {
        "6.text": "Prompt", "7.text": "Negative Prompt", "4.ckpt_name": "Checkpoint", "3.seed": "Seed",
        "3.steps": "Steps", "3.cfg": "CFG", "3.sampler_name": "Sampler", "3.scheduler": "Scheduler",
        "3.denoise": "Denoise", "5.width": "Width", "5.height": "Height", "5.batch_size": "Batch size",
        "9.filename_prefix": "File name prefix",
    }
    assert [p.id for p in ps.advanced] == ["9.filename_prefix"]
    assert ps["3.steps"].value == 20 and ps["3.steps"].spec.min == 1
    assert ps["6.text"].node_title == "CLIP Text Encode (Prompt)"
    assert ps["3.seed"].tooltip == "The random seed used for creating the noise."
    assert [p.id for p in ps.seeds] == ["3.seed"]


def test_sd15_img2img_size_comes_from_the_image_not_a_resize_node(schema):
    ps = discover(wf("sd15_img2img"), schema)
    assert simple_roles(ps) == [("6.text", "positive"), ("7.text", "negative"), ("10.image", "image"),
                                ("4.ckpt_name", "checkpoint"), *SAMPLER_3]
    assert ps["10.image"].label == "Input photo" and ps["10.image"].spec.image_upload
    assert ps["3.denoise"].value == 0.6
    assert ps.groups() == (
        ("Save Image", (ps["9.filename_prefix"],)),
        ("Resize input", (ps["11.upscale_method"], ps["11.width"], ps["11.height"], ps["11.crop"])),
    )


def test_sd15_inpaint_has_image_and_mask(schema):
    ps = discover(wf("sd15_inpaint"), schema)
    assert simple_roles(ps) == [("6.text", "positive"), ("7.text", "negative"), ("10.image", "image"),
                                ("11.image", "mask"), ("4.ckpt_name", "checkpoint"), *SAMPLER_3]
    # a titled node labels its only simple value even when it has advanced ones
    assert (ps["11.image"].label, ps["4.ckpt_name"].label, ps["10.image"].label) == (
        "Area to repaint", "Inpainting model", "Image")
    assert [p.id for p in ps.advanced] == ["9.filename_prefix", "11.channel", "12.grow_mask_by"]
    assert ps["11.channel"].node_group_label == "Area to repaint"


def test_sdxl_base_refiner(schema):
    ps = discover(wf("sdxl_base_refiner"), schema)
    assert simple_roles(ps) == [
        ("6.text", "positive"), ("15.text", "positive"), ("7.text", "negative"), ("16.text", "negative"),
        ("4.ckpt_name", "checkpoint"), ("12.ckpt_name", "checkpoint"),
        ("10.noise_seed", "seed"),  # the refiner adds no noise: its seed is advanced
        ("10.steps", "steps"), ("11.steps", "steps"), ("10.cfg", "cfg"), ("11.cfg", "cfg"),
        ("10.sampler_name", "sampler"), ("11.sampler_name", "sampler"),
        ("10.scheduler", "scheduler"), ("11.scheduler", "scheduler"), *LATENT_5,
    ]
    lab = labels(ps)
    assert [lab[i] for i in ("6.text", "15.text", "7.text", "16.text")] == [
        "Prompt (Base)", "Prompt (Refiner)", "Negative prompt (Base)", "Negative prompt (Refiner)"]
    assert [lab[i] for i in ("4.ckpt_name", "12.ckpt_name", "10.noise_seed", "10.steps", "11.steps")] == [
        "Base model", "Refiner model", "Seed", "Steps (Base)", "Steps (Refiner)"]
    assert len(set(p.label for p in ps.simple)) == len(ps.simple)
    groups = dict(ps.groups())
    assert [p.input_name for p in groups["Refiner"]] == [
        "add_noise", "noise_seed", "start_at_step", "end_at_step", "return_with_leftover_noise"]
    assert groups["Refiner"][1].role == "seed" and groups["Refiner"][1].group == "advanced"
    # two untitled nodes of one class get distinct group headings
    assert [p.input_name for p in groups["CLIPTextEncodeSDXLRefiner #15"]] == ["ascore", "width", "height"]
    assert "CLIPTextEncodeSDXLRefiner #16" in groups
    assert list(groups) == ["Base", "Refiner", "CLIPTextEncodeSDXLRefiner #15", "CLIPTextEncodeSDXLRefiner #16",
                            "Save Image"]


def test_flux_dev(schema):
    ps = discover(wf("flux_dev"), schema)
    assert simple_roles(ps) == [
        ("6.text", "positive"), ("12.unet_name", "unet"), ("11.clip_name1", "clip"), ("11.clip_name2", "clip"),
        ("10.vae_name", "vae"), ("25.noise_seed", "seed"), ("17.steps", "steps"), ("26.guidance", "guidance"),
        ("16.sampler_name", "sampler"), ("17.scheduler", "scheduler"), ("17.denoise", "denoise"),
        ("27.width", "width"), ("27.height", "height"), ("27.batch_size", "batch_size"),
    ]
    lab = labels(ps)
    assert lab["6.text"] == "CLIP Text Encode (Positive Prompt)"  # the author's title
    assert [lab[i] for i in ("12.unet_name", "11.clip_name1", "11.clip_name2", "10.vae_name", "25.noise_seed",
                             "26.guidance")] == [
        "Diffusion model", "Text encoder 1", "Text encoder 2", "VAE", "Seed", "Guidance"]
    # ModelSamplingFlux has width/height too, but they do not size the latent
    assert [p.id for p in ps.advanced] == ["9.filename_prefix", "11.type", "11.device", "12.weight_dtype",
                                           "30.max_shift", "30.base_shift", "30.width", "30.height"]
    assert ps.get("13.noise") is None  # links are never parameters


def test_lora_stack(schema):
    ps = discover(wf("lora_stack"), schema)
    assert simple_roles(ps) == [
        ("6.text", "positive"), ("7.text", "negative"), ("4.ckpt_name", "checkpoint"),
        ("10.lora_name", "lora"), ("10.strength_model", "lora_strength"),
        ("11.lora_name", "lora"), ("11.strength_model", "lora_strength"), *SAMPLER_3, *LATENT_5,
    ]
    lab = labels(ps)
    assert [lab[i] for i in ("10.lora_name", "10.strength_model", "11.lora_name", "11.strength_model")] == [
        "LoRA", "LoRA strength", "LoRA (Style LoRA)", "LoRA strength (Style LoRA)"]
    assert [(p.id, p.role) for p in ps.advanced] == [
        ("9.filename_prefix", None), ("10.strength_clip", "lora_clip_strength"),
        ("11.strength_clip", "lora_clip_strength"), ("12.stop_at_clip_layer", None)]
    assert dict(ps.groups())["CLIP Set Last Layer"][0].label == "Stop at CLIP layer"


def test_controlnet(schema):
    ps = discover(wf("controlnet"), schema)
    assert simple_roles(ps) == [
        ("6.text", "positive"), ("7.text", "negative"), ("10.image", "image"), ("4.ckpt_name", "checkpoint"),
        ("12.control_net_name", "controlnet"), ("14.strength", "controlnet_strength"), *SAMPLER_3, *LATENT_5,
    ]
    lab = labels(ps)
    assert [lab[i] for i in ("6.text", "7.text", "10.image", "12.control_net_name", "14.strength")] == [
        "Positive", "Negative", "Reference image", "ControlNet model", "ControlNet strength"]
    assert [p.id for p in ps.advanced] == ["9.filename_prefix", "11.low_threshold", "11.high_threshold",
                                           "14.start_percent", "14.end_percent"]


def test_two_untitled_loras_are_numbered(schema):
    g = wf("lora_stack")
    g["11"]["_meta"]["title"] = "Load LoRA"
    lab = labels(discover(g, schema))
    assert [lab[i] for i in ("10.lora_name", "11.lora_name", "10.strength_model", "11.strength_model")] == [
        "LoRA 1", "LoRA 2", "LoRA strength 1", "LoRA strength 2"]


def test_discovery_does_not_depend_on_node_ids_or_key_order(schema):
    g = wf("sd15_txt2img")
    ids = {"3": "31", "4": "2", "5": "17", "6": "100", "7": "8", "8": "5", "9": "6"}

    def remap(v):
        return [ids[v[0]], v[1]] if is_link(v) else v

    moved = {ids[k]: {**n, "inputs": {name: remap(v) for name, v in n["inputs"].items()}} for k, n in g.items()}
    shuffled = dict(random.Random(1).sample(list(moved.items()), len(moved)))
    ps = discover(shuffled, schema)
    assert simple_roles(ps) == [("100.text", "positive"), ("8.text", "negative"), ("2.ckpt_name", "checkpoint"),
                                *[(f"31.{i.split('.')[1]}", r) for i, r in SAMPLER_3],
                                *[(f"17.{i.split('.')[1]}", r) for i, r in LATENT_5]]
    assert discover(shuffled, schema) == ps


@pytest.mark.parametrize("name", ["sd15_txt2img", "sd15_img2img", "sd15_inpaint", "sdxl_base_refiner",
                                  "flux_dev", "lora_stack", "controlnet"])
def test_fixtures_are_valid_api_graphs(schema, stocked, name):
    g = wf(name)
    for nid, n in g.items():
        assert n["class_type"] in schema, (nid, n["class_type"])
        assert isinstance(n["_meta"]["title"], str)
    expected = [("missing_model", "4", "4.ckpt_name")] if name == "sdxl_base_refiner" else []  # see below
    assert kinds(preflight(g, stocked, SERVER_MODELS)) == expected
    ps = discover(g, schema)
    assert all(p.value == g[p.node_id]["inputs"][p.input_name] for p in ps)
    assert all(p.group == "simple" for p in ps.simple) and all(p.group == "advanced" for p in ps.advanced)


# ---------------------------------------------------------------------------------------------
# graph roles beyond the fixtures
# ---------------------------------------------------------------------------------------------


def _base(**overrides) -> dict:
    g = wf("sd15_txt2img")
    g.update(overrides)
    return g


def test_prompts_through_combine_and_zero_out(schema):
    g = _base()
    g["20"] = node("CLIPTextEncode", "Style", text="oil painting", clip=["4", 1])
    g["21"] = node("ConditioningCombine", conditioning_1=["6", 0], conditioning_2=["20", 0])
    g["22"] = node("ConditioningZeroOut", conditioning=["6", 0])
    g["3"]["inputs"]["positive"] = ["21", 0]
    g["3"]["inputs"]["negative"] = ["22", 0]  # the negative is the zeroed positive
    ps = discover(g, schema)
    assert [(p.id, p.role, p.label) for p in ps.simple[:2]] == [
        ("6.text", "positive", "Prompt"), ("20.text", "positive", "Style")]
    assert ps["7.text"].role is None and ps["7.text"].group == "advanced"  # not connected any more


def test_cfg_guider_and_sdxl_encoder(schema):
    g = wf("flux_dev")
    g["22"] = node("CFGGuider", model=["30", 0], positive=["26", 0], negative=["40", 0], cfg=1.5)
    g["40"] = node("CLIPTextEncodeSDXL", clip=["11", 0], width=1024, height=1024, crop_w=0, crop_h=0,
                   target_width=1024, target_height=1024, text_g="blurry", text_l="blurry, jpeg")
    ps = discover(g, schema)
    roles = dict(simple_roles(ps))
    assert roles["22.cfg"] == "cfg" and roles["40.text_g"] == roles["40.text_l"] == "negative"
    assert (ps["40.text_g"].label, ps["40.text_l"].label) == ("Negative prompt (G)", "Negative prompt (L)")
    assert ps["40.width"].group == "advanced"


def test_values_fed_by_primitive_nodes_take_the_role(schema):
    g = _base()
    g["30"] = node("PrimitiveInt", "Quality", value=30)
    g["31"] = node("PrimitiveStringMultiline", value="a castle in the clouds")
    g["3"]["inputs"]["steps"] = ["30", 0]
    g["6"]["inputs"]["text"] = ["31", 0]
    ps = discover(g, schema)
    assert (ps["30.value"].role, ps["30.value"].label, ps["30.value"].group) == ("steps", "Quality", "simple")
    assert (ps["31.value"].role, ps["31.value"].label) == ("positive", "Prompt")
    assert "3.steps" not in ps and "6.text" not in ps
    assert [p.id for p in ps.simple][:2] == ["31.value", "7.text"]


def test_a_linked_value_passes_its_role_only_to_a_value_of_the_same_kind():
    info = {
        "Captioner": {"input": {"required": {"image": ["IMAGE"], "max_tokens": ["INT", {"default": 64}]}},
                      "output": ["STRING"]},
        "Encoder": {"input": {"required": {"clip": ["CLIP"], "text": ["STRING", {"multiline": True}]}},
                    "output": ["CONDITIONING"]},
        "Sampler": {"input": {"required": {"positive": ["CONDITIONING"], "latent": ["LATENT"],
                                           "steps": ["INT", {"default": 20}]}}, "output": ["LATENT"]},
    }
    g = {"1": node("Captioner", image=["9", 0], max_tokens=64), "2": node("Encoder", clip=["9", 1], text=["1", 0]),
         "3": node("Sampler", positive=["2", 0], latent=["9", 2], steps=20)}
    ps = discover(g, Schema.from_object_info(info))
    assert ps["1.max_tokens"].role is None and ps["3.steps"].role == "steps"


def test_hires_fix_second_pass(schema):
    g = _base()
    g["10"] = node("LatentUpscale", upscale_method="nearest-exact", width=1024, height=1024, crop="disabled",
                   samples=["3", 0])
    g["11"] = node("KSampler", "Hires pass", seed=1, steps=12, cfg=8, sampler_name="euler", scheduler="normal",
                   denoise=0.5, model=["4", 0], positive=["6", 0], negative=["7", 0], latent_image=["10", 0])
    g["8"]["inputs"]["samples"] = ["11", 0]
    ps = discover(g, schema)
    assert ps["10.width"].group == "advanced" and ps["5.width"].role == "width"
    assert (ps["3.steps"].label, ps["11.steps"].label) == ("Steps", "Steps (Hires pass)")
    assert ps["11.denoise"].role == "denoise"


def test_unknown_classes_are_advanced_with_guessed_specs(schema):
    g = _base()
    g["50"] = node("FaceDetailer (Impact)", guide_size=384, noise_mask=True, ratio=0.5, name="x", img=["8", 0],
                   opts={"a": 1})
    ps = discover(g, schema)
    group = dict(ps.groups())["FaceDetailer (Impact)"]
    assert [(p.input_name, p.spec.kind, p.spec.known) for p in group] == [
        ("guide_size", "INT", False), ("noise_mask", "BOOLEAN", False), ("ratio", "FLOAT", False),
        ("name", "STRING", False)]


def test_stale_and_odd_inputs_do_not_break_discovery(schema):
    g = _base()
    g["3"]["inputs"]["old_widget"] = 5  # an input the class no longer has
    g["99"] = "not a node"
    g["98"] = {"inputs": {}}  # no class_type
    ps = discover(g, schema)
    assert "3.old_widget" not in ps and len(ps.simple) == 12


# ---------------------------------------------------------------------------------------------
# title tags
# ---------------------------------------------------------------------------------------------


def test_clean_title():
    assert clean_title("Upscaler [advanced] [label:scale_by=Factor]") == "Upscaler"
    assert clean_title("[HIDE]  My  node ") == "My node"
    assert clean_title("No tags (here)") == "No tags (here)"
    assert clean_title(None) == ""


def test_tags_move_hide_and_label(schema):
    g = _base()
    g["9"]["_meta"]["title"] = "Save Image [simple] [label=File name]"
    g["3"]["_meta"]["title"] = "KSampler [advanced=cfg,denoise] [hide=scheduler] [label:steps=Quality]"
    g["5"]["_meta"]["title"] = "[advanced] Size"
    g["7"]["_meta"]["title"] = "Negative [hide]"
    ps = discover(g, schema)
    assert simple_roles(ps) == [("6.text", "positive"), ("4.ckpt_name", "checkpoint"), ("3.seed", "seed"),
                                ("3.steps", "steps"), ("3.sampler_name", "sampler"), ("9.filename_prefix", None)]
    assert ps["9.filename_prefix"].label == "File name" and ps["3.steps"].label == "Quality"
    assert [p.id for p in ps.hidden] == ["3.scheduler", "7.text"]
    assert [p.id for p in ps.advanced] == ["3.cfg", "3.denoise", "5.width", "5.height", "5.batch_size"]
    assert ps["5.width"].node_group_label == "Size" and ps["5.width"].node_title == "Size"
    assert ps["3.cfg"].node_group_label == "KSampler"
    assert "7.text" in ps and ps.get("7.text").group == "hidden" and "7.text" not in ps.ids


def test_label_tag_names_the_main_value(schema):
    g = wf("sd15_inpaint")
    g["11"]["_meta"]["title"] = "Mask [label=Paint the area to change]"
    g["3"]["_meta"]["title"] = "KSampler [label=Randomness]"  # no prompt/image/model: first value
    ps = discover(g, schema)
    assert ps["11.image"].label == "Paint the area to change" and ps["11.channel"].label == "Channel"
    assert ps["3.seed"].label == "Randomness"


# ---------------------------------------------------------------------------------------------
# pre-flight
# ---------------------------------------------------------------------------------------------


def kinds(problems: list[Problem]) -> list[tuple[str, str | None, str | None]]:
    return [(p.kind, p.node_id, p.param_id) for p in problems]


def test_clean_workflows_pass_with_models(stocked):
    for name in ("sd15_txt2img", "sd15_img2img", "sd15_inpaint", "flux_dev", "lora_stack", "controlnet"):
        assert preflight(wf(name), stocked, SERVER_MODELS) == [], name
        assert preflight(wf(name), stocked) == [], name  # the spec lists are enough too


def test_missing_model_with_and_without_a_server_list(schema, stocked):
    g = wf("sd15_txt2img")
    g["4"]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"
    [p] = preflight(g, stocked, {"checkpoints": ["a.safetensors", "b.safetensors"]})
    assert (p.kind, p.param_id, p.node_id) == ("missing_model", "4.ckpt_name", "4")
    assert p.message == ("“Checkpoint” needs sd_xl_base_1.0.safetensors in checkpoints; the server has: "
                         "a.safetensors, b.safetensors.")
    [p] = preflight(g, schema)  # the recorded server: no models at all
    assert p.message == ("“Checkpoint” needs sd_xl_base_1.0.safetensors in checkpoints; "
                         "the server has no checkpoints at all.")
    [p] = preflight(g, schema, {"checkpoints": []})
    assert p.message.endswith("the server has no checkpoints at all.")


def test_missing_model_suggests_the_servers_spelling(stocked):
    g = wf("sdxl_base_refiner")
    [p] = preflight(g, stocked, SERVER_MODELS)  # the base model lives in a subfolder on this server
    assert (p.kind, p.param_id, p.suggestion) == ("missing_model", "4.ckpt_name", "SDXL/sd_xl_base_1.0.safetensors")
    assert p.message == ("“Base model” needs sd_xl_base_1.0.safetensors in checkpoints; the server has it as "
                         "SDXL/sd_xl_base_1.0.safetensors.")
    g["4"]["inputs"]["ckpt_name"] = "SDXL\\sd_xl_base_1.0.safetensors"  # saved on Windows
    [p] = preflight(g, stocked, SERVER_MODELS)
    assert p.suggestion == "SDXL/sd_xl_base_1.0.safetensors" and "folder separators" in p.message


def test_model_lists_from_models_and_object_info_both_count(stocked):
    g = wf("flux_dev")
    g["10"]["inputs"]["vae_name"] = "pixel_space"  # offered by VAELoader, never a file in /models/vae
    assert preflight(g, stocked, SERVER_MODELS) == []
    g["11"]["inputs"]["clip_name2"] = "clip_l_new.safetensors"  # just downloaded: /models knows it
    assert preflight(g, stocked, {**SERVER_MODELS, "text_encoders": ["clip_l_new.safetensors"]}) == []


def test_unknown_classes_are_one_problem(schema):
    g = _base()
    g["50"] = node("FaceDetailer", image=["8", 0], guide_size=384)
    g["51"] = node("UltimateSDUpscale", image=["50", 0])
    g["52"] = node("FaceDetailer", image=["51", 0])
    problems = preflight(g, schema)
    assert problems[0] == Problem(
        None, None, "missing_node",
        "This workflow needs custom nodes that this server does not have: FaceDetailer, UltimateSDUpscale. "
        "Install them (for example with ComfyUI-Manager) or use another workflow.")
    assert [p.kind for p in problems].count("missing_node") == 1


def test_out_of_range_and_wrong_type(stocked):
    g = wf("sd15_txt2img")
    g["3"]["inputs"].update(steps=0, cfg=250.0, denoise="lots")
    g["5"]["inputs"].update(width="wide", height=512.5, batch_size=8)
    msgs = {p.param_id: (p.kind, p.message) for p in preflight(g, stocked)}
    assert msgs == {
        "3.steps": ("out_of_range", "“Steps” is 0, but it must be at least 1."),
        "3.cfg": ("out_of_range", "“CFG” is 250, but it must be at most 100."),
        "3.denoise": ("wrong_type", "“Denoise” needs a number."),
        "5.width": ("wrong_type", "“Width” needs a whole number."),
        "5.height": ("wrong_type", "“Height” needs a whole number."),
    }


def test_values_the_server_converts_are_accepted(stocked):
    g = wf("sd15_txt2img")
    g["3"]["inputs"].update(steps=20.0, cfg=7, seed="42")
    assert preflight(g, stocked) == []


def test_advanced_values_name_their_node(stocked):
    g = wf("controlnet")
    g["14"]["inputs"]["end_percent"] = 1.5
    [p] = preflight(g, stocked)
    assert p.message == "“End percent” in “Apply ControlNet” is 1.5, but it must be at most 1."


def test_combo_not_offered(stocked):
    g = wf("sd15_txt2img")
    g["3"]["inputs"]["sampler_name"] = "magic"
    [p] = preflight(g, stocked)
    assert (p.kind, p.param_id) == ("not_in_list", "3.sampler_name")
    assert p.message == "“Sampler” is “magic”, which this server does not offer."


def test_upload_combos_are_not_checked_against_their_list(stocked):
    for value in ("lighthouse_photo.png", "panel/tests/sub.png", "out.png [output]", "clipspace/x.png [input]"):
        g = wf("sd15_img2img")
        g["10"]["inputs"]["image"] = value
        assert preflight(g, stocked) == [], value


def test_missing_inputs(stocked):
    g = wf("sd15_txt2img")
    del g["3"]["inputs"]["steps"]
    del g["8"]["inputs"]["vae"]
    del g["9"]["inputs"]["filename_prefix"]
    assert [(p.kind, p.param_id, p.message) for p in preflight(g, stocked)] == [
        # an absent value is in no form, so its node is named
        ("missing_input", "3.steps", "“Steps” in “KSampler” has no value; set one, or export the workflow again "
                                     "from ComfyUI."),
        ("missing_input", None, "“VAE Decode” (node 8) needs something connected to its “vae” input (VAE); "
                                "connect it in ComfyUI and export the workflow again."),
        ("missing_input", "9.filename_prefix", "“File name prefix” in “Save Image” has no value; set one, or "
                                               "export the workflow again from ComfyUI."),
    ]
    g = wf("flux_dev")
    del g["11"]["inputs"]["device"]  # optional: fine
    assert preflight(g, stocked) == []


def test_bad_links(stocked):
    g = wf("sd15_txt2img")
    g["8"]["inputs"]["vae"] = ["99", 0]
    g["3"]["inputs"]["model"] = ["4", 5]
    g["9"]["inputs"]["images"] = ["5", 0]  # a LATENT into IMAGE
    assert [(p.kind, p.node_id, p.message) for p in preflight(g, stocked)] == [
        ("bad_link", "3", "“KSampler” (node 3) takes its “model” input from output 6 of “Load Checkpoint” "
                          "(node 4), which has only 3 outputs."),
        ("bad_link", "8", "“VAE Decode” (node 8) takes its “vae” input from node 99, which is not in this workflow."),
        ("wrong_type", "9", "“Save Image” (node 9) gets LATENT from “Empty Latent Image” (node 5) for its “images” "
                            "input, but it needs IMAGE."),
    ]


def test_typed_in_value_for_a_socket_and_linked_widgets(stocked):
    g = wf("sd15_txt2img")
    g["3"]["inputs"]["model"] = "v1-5.safetensors"
    g["30"] = node("PrimitiveInt", value=25)
    g["31"] = node("PrimitiveFloat", value=7.0)
    g["3"]["inputs"]["steps"] = ["30", 0]  # INT into INT: fine
    g["5"]["inputs"]["width"] = ["31", 0]  # FLOAT into INT: rejected by the server
    assert [(p.kind, p.node_id, p.param_id) for p in preflight(g, stocked)] == [
        ("wrong_type", "3", None), ("wrong_type", "5", "5.width")]


def test_problems_in_a_dropped_branch_do_not_block(stocked):
    g = wf("sd15_txt2img")
    g["20"] = node("ImageInvert", "Inverted")  # its "image" input came from a muted node
    g["21"] = node("SaveImage", images=["20", 0], filename_prefix="inverted")
    [p] = preflight(g, stocked)
    assert (p.kind, p.node_id, p.blocking) == ("missing_input", "20", False)  # Save Image 9 still runs
    g["3"]["inputs"]["steps"] = 0  # now the main output is broken too: nothing can run
    assert [(p.kind, p.node_id, p.blocking) for p in preflight(g, stocked)] == [
        ("out_of_range", "3", True), ("missing_input", "20", True)]
    g["30"] = node("NoSuchNode")  # unknown classes always stop the whole prompt
    assert all(p.blocking for p in preflight(g, stocked))


def test_no_output_node(stocked):
    g = wf("sd15_txt2img")
    del g["9"]
    [p] = preflight(g, stocked)
    assert p.kind == "no_output" and "no output node" in p.message


def test_preflight_never_raises_on_odd_graphs(schema):
    g = {"1": node("KSampler", steps=None), "2": "x", "3": {"inputs": []}, "4": node("SaveImage", images=[1, 2, 3])}
    problems = preflight(g, schema)
    assert {p.kind for p in problems} >= {"missing_input", "missing_node"}
    assert all(isinstance(p.message, str) and p.message.endswith(".") for p in problems)


def test_parameter_and_problem_are_frozen(schema):
    ps = discover(wf("sd15_txt2img"), schema)
    with pytest.raises(AttributeError):
        ps.simple[0].value = "x"  # type: ignore[misc]
    assert isinstance(ps.simple[0], Parameter) and isinstance(ps.simple[0].spec, InputSpec)
