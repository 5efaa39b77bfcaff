"""From a loaded workflow and the values a person chose to the exact prompts that are sent.

The Generate page and the CLI share this: convert (UI → API with the server's ``/object_info``),
apply the chosen values, run pre-flight, apply the seed policy per run (batch ×N) or expand an XY
grid, and describe each submission as a ``Recipe`` that the ledger stores and re-run reproduces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from . import errors as E
from . import schema as S
from . import workflow as W

__all__ = ["Form", "Submission", "build_form", "submissions", "check_axis", "model_folders", "fetch_models"]


def model_folders(graph: Mapping[str, Any], schema: S.Schema) -> dict[str, list[Any]]:
    """The ``/models/{folder}`` keys this graph's model inputs use, each with its spec's own options."""
    out: dict[str, list[Any]] = {}
    for node in graph.values():
        spec = schema.node(node.get("class_type", ""))
        if spec is None:
            continue
        for name in node.get("inputs") or {}:
            inp = spec.input(name)
            if inp is not None and inp.model_folder:
                out.setdefault(inp.model_folder, list(inp.options))
    return out


def fetch_models(client: Any, graph: Mapping[str, Any], schema: S.Schema,
                 cache: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The server's file lists for the model folders ``graph`` uses, fetched once into ``cache``.

    A folder the server does not list (Comfy Cloud, an unknown key) falls back to the options in
    ``/object_info``.
    """
    models = {} if cache is None else cache
    for folder, options in model_folders(graph, schema).items():
        if folder in models:
            continue
        try:
            models[folder] = client.models(folder)
        except (E.NotFound, E.NotSupported):
            models[folder] = list(options)
    return models


@dataclass(frozen=True)
class Form:
    """What the page draws for one workflow on one server."""

    base: Mapping[str, Any] = field(repr=False)  # the converted API graph before the user's values
    graph: Mapping[str, Any] = field(repr=False)  # with the user's values
    params: S.ParameterSet = field(repr=False)
    problems: tuple[S.Problem, ...] = ()
    edits: Mapping[str, Any] = field(default_factory=dict)  # only the values that differ from the file
    report: W.ConversionReport | None = None

    @property
    def blocking(self) -> tuple[S.Problem, ...]:
        return tuple(p for p in self.problems if p.blocking)

    def problems_for(self, param_id: str) -> tuple[S.Problem, ...]:
        return tuple(p for p in self.problems if p.param_id == param_id)

    @property
    def general_problems(self) -> tuple[S.Problem, ...]:
        visible = set(self.params.ids)
        return tuple(p for p in self.problems if p.param_id is None or p.param_id not in visible)


def build_form(loaded: W.LoadedWorkflow, object_info: Mapping[str, Any], schema: S.Schema,
               values: Mapping[str, Any], models: Mapping[str, Sequence[str]] | None = None) -> Form:
    """Convert, apply ``values`` (unknown ids are ignored: they belong to another workflow), and
    check the result against the server.

    Raises:
        WorkflowError: the workflow cannot be converted (one sentence).
    """
    report = W.ConversionReport()
    base = W.to_api(loaded, object_info, report=report)
    base_params = S.discover(base, schema)
    edits = {}
    for pid, value in values.items():
        p = base_params.get(pid)
        if p is not None and p.value != value:
            edits[pid] = value
    graph = W.apply_edits(base, edits)
    params = S.discover(graph, schema)
    problems = tuple(S.preflight(graph, schema, models))
    return Form(base, graph, params, problems, edits, report)


@dataclass(frozen=True)
class Submission:
    """One prompt to send: the exact graph, the seeds it uses, and its recipe."""

    graph: Mapping[str, Any] = field(repr=False)
    recipe: W.Recipe = field(repr=False)
    seeds: Mapping[str, int] = field(default_factory=dict)
    label: str = ""  # "Run 2 of 4" or the grid cell label
    grid_x: Any = None  # this cell's X value (grids only)
    grid_y: Any = None


def submissions(loaded: W.LoadedWorkflow, form: Form, *, seed_modes: Mapping[str, str], count: int = 1,
                grid_x: tuple[str, Sequence[Any]] | None = None, grid_y: tuple[str, Sequence[Any]] | None = None,
                rng: random.Random | None = None) -> list[Submission]:
    """The prompts for one press of Generate: ×``count`` with the seed policy, or an XY grid.

    Seed modes apply **before** sending, so every recipe holds the seed actually used.
    """
    modes = {pid: m for pid, m in seed_modes.items() if pid in form.params}
    grid_spec = None
    if grid_x:
        for axis in (grid_x, grid_y):
            if axis:
                check_axis(form, axis[0], axis[1])
        grid_spec = {"x": [grid_x[0], list(grid_x[1])], "y": [grid_y[0], list(grid_y[1])] if grid_y else None}
        cells = W.grid(form.graph, grid_x, grid_y)
        graph0, seeds = W.apply_seed_modes(form.graph, modes, rng)
        out = []
        for cell in cells:
            g = W.apply_edits(cell.graph, seeds)  # one seed for the whole grid: only the axes vary
            edits = dict(form.edits)
            edits[grid_x[0]] = cell.x_value
            if grid_y:
                edits[grid_y[0]] = cell.y_value
            out.append(Submission(g, _recipe(loaded, edits, seeds, modes, 1, grid_spec, g), seeds, cell.label,
                                  cell.x_value, cell.y_value))
        return out
    runs = W.batch(form.graph, count, modes, rng)
    return [
        Submission(g, _recipe(loaded, form.edits, used, modes, count, None, g), used,
                   f"Run {i} of {count}" if count > 1 else "")
        for i, (g, used) in enumerate(runs, 1)
    ]


def check_axis(form: Form, param_id: str, values: Sequence[Any]) -> None:
    """Refuse an XY-grid axis the server would reject, before anything is sent.

    Raises:
        InvalidInput: the parameter is not in the workflow, or a value is out of range, of the wrong
        type or not one of the offered choices (one sentence naming the value).
    """
    param = form.params.get(param_id)
    if param is None:
        raise E.InvalidInput(f"The grid's parameter “{param_id}” is not in this workflow; choose another one.")
    for value in values:
        problem = S.check_value(param, value)
        if problem is not None:
            raise E.InvalidInput(f"The XY grid cannot run: {problem.message}")


def _recipe(loaded: W.LoadedWorkflow, edits: Mapping[str, Any], seeds: Mapping[str, int],
            modes: Mapping[str, str], count: int, grid_spec: Any, graph: Mapping[str, Any]) -> W.Recipe:
    return W.Recipe(source=loaded.source, source_format=loaded.format, name=loaded.name, edits=dict(edits),
                    seeds=dict(seeds), seed_modes=dict(modes), batch_count=count, grid=grid_spec, api=graph)
