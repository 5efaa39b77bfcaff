"""Bundled model-free example workflows: they run on any ComfyUI, even one without models, so a
first-time user sees the whole journey work before loading their own workflow."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from ..workflow import LoadedWorkflow, load

__all__ = ["Example", "EXAMPLES", "load_example"]


@dataclass(frozen=True)
class Example:
    key: str
    title: str
    description: str


EXAMPLES: tuple[Example, ...] = (
    Example("invert_photo", "Invert a photo", "Loads a photo and inverts its colours. Uses no model."),
    Example("soft_focus", "Soft focus", "Blurs a photo softly and sharpens the edges a little. Uses no model."),
    Example("colour_swatch", "Colour swatch", "Makes a plain image of one colour, any size. Uses no model."),
)


def load_example(key: str) -> LoadedWorkflow:
    """The example as a loaded workflow (API format)."""
    if key not in {e.key for e in EXAMPLES}:
        raise KeyError(key)
    data = resources.files(__package__).joinpath(f"{key}.json").read_bytes()
    title = next(e.title for e in EXAMPLES if e.key == key)
    return load(data, f"{title}.json")
