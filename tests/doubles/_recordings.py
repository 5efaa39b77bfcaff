"""Where the ComfyUI 0.3.75 recordings live, and the read-only data the doubles take from them."""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]


def recordings_dir() -> Path:
    """``shared/recordings`` beside the checkout; ``COMFYPANEL_RECORDINGS`` overrides."""
    env = os.environ.get("COMFYPANEL_RECORDINGS")
    if env:
        return Path(env)
    for base in (_REPO.parent, _REPO.parent.parent):
        candidate = base / "shared" / "recordings"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "shared/recordings not found beside the repository; set COMFYPANEL_RECORDINGS"
    )


@functools.lru_cache(maxsize=1)
def object_info_shared() -> dict[str, Any]:
    """The recorded ``GET /object_info`` (516 classes), parsed once per process.

    READ-ONLY: it is shared by every double in the process. Deep-copy a class entry before
    changing it (the doubles do, to put live file lists into combo inputs).
    """
    return json.loads((recordings_dir() / "object_info.full.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def _workflow_text(name: str) -> str:
    return (recordings_dir() / "workflows" / f"{name}.json").read_text(encoding="utf-8")


def workflow(name: str) -> dict[str, Any]:
    """A private copy of one recorded API-format workflow (``invert_save``, ``slow_blur``, ...)."""
    return copy.deepcopy(json.loads(_workflow_text(name)))


def ws_log(name: str) -> list[dict[str, Any]]:
    """One recorded WebSocket scenario (``ws-04`` -> ``ws-04-interrupt.jsonl``), one dict per line."""
    path = next(recordings_dir().glob(f"{name}*.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def recorded_types(log: list[dict[str, Any]], client: str) -> list[str]:
    """The message types one client received in a scenario (binary frames as ``bin<N>``)."""
    out = []
    for entry in log:
        if entry.get("client") != client:
            continue
        if entry["kind"] == "ws_text":
            out.append(entry["type"])
        elif entry["kind"] == "ws_binary":
            out.append(f"bin{entry['u32be_0_event_type']}")
    return out
