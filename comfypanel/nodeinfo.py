"""The node browser's view of ``/object_info``: search by name and category, inputs with types and
ranges, outputs. Plain data for tables (the form builder's typed specs live in ``schema.py``)."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["categories", "search", "input_rows", "output_rows"]


def _display(name: str, node: Mapping[str, Any]) -> str:
    return str(node.get("display_name") or name)


def categories(info: Mapping[str, Any]) -> list[str]:
    return sorted({str(n.get("category") or "") for n in info.values() if isinstance(n, Mapping)} - {""})


def search(info: Mapping[str, Any], text: str = "", category: str | None = None) -> list[tuple[str, str, str]]:
    """``(class name, display name, category)`` of matching nodes, sorted by display name.
    ``text`` matches class or display name (case-insensitive); ``category`` matches it or a subcategory."""
    needle = (text or "").strip().lower()
    out = []
    for name, node in info.items():
        if not isinstance(node, Mapping):
            continue
        cat = str(node.get("category") or "")
        if category and not (cat == category or cat.startswith(category + "/")):
            continue
        display = _display(name, node)
        if needle and needle not in name.lower() and needle not in display.lower():
            continue
        out.append((name, display, cat))
    return sorted(out, key=lambda r: (r[1].lower(), r[0]))


def _type_and_range(spec: Any) -> tuple[str, str, str]:
    """``(type, default, range or choices)`` of one input spec ``[type, {options}]``."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return ("?", "", "")
    kind, opts = spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if isinstance(kind, (list, tuple)):  # legacy combo: the choices themselves
        choices = [str(c) for c in kind]
        kind_text = "COMBO"
    elif kind == "COMBO":
        choices = [str(c) for c in opts.get("options") or ()]
        kind_text = "COMBO"
    else:
        choices = []
        kind_text = str(kind)
    default = opts.get("default")
    default_text = "" if default is None else str(default)
    if choices:
        shown = ", ".join(choices[:8]) + (f" … ({len(choices)} in all)" if len(choices) > 8 else "")
        return (kind_text, default_text, shown)
    bounds = []
    for key in ("min", "max", "step"):
        if isinstance(opts.get(key), (int, float)) and not isinstance(opts.get(key), bool):
            bounds.append(f"{key} {opts[key]:g}" if isinstance(opts[key], float) else f"{key} {opts[key]}")
    if opts.get("multiline"):
        bounds.append("multiline")
    if opts.get("image_upload"):
        bounds.append("upload")
    return (kind_text, default_text, ", ".join(bounds))


def input_rows(node: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    inputs = node.get("input") if isinstance(node.get("input"), Mapping) else {}
    for group in ("required", "optional"):
        specs = inputs.get(group) if isinstance(inputs.get(group), Mapping) else {}
        for name, spec in specs.items():
            kind, default, rng = _type_and_range(spec)
            tip = spec[1].get("tooltip", "") if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], Mapping) else ""
            rows.append({"input": str(name), "required": "yes" if group == "required" else "no", "type": kind,
                         "default": default, "range / choices": rng, "tooltip": str(tip or "")})
    return rows


def output_rows(node: Mapping[str, Any]) -> list[dict[str, str]]:
    types = list(node.get("output") or ())
    names = list(node.get("output_name") or ())
    is_list = list(node.get("output_is_list") or ())
    rows = []
    for i, kind in enumerate(types):
        rows.append({"output": str(names[i] if i < len(names) else kind), "type": str(kind),
                     "list": "yes" if i < len(is_list) and is_list[i] else "no"})
    return rows
