"""Shared test helpers: where the recordings are, and how to read them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def recordings_dir() -> Path:
    """``shared/recordings`` beside the checkout (CI lays a copy there); ``COMFYPANEL_RECORDINGS`` overrides."""
    env = os.environ.get("COMFYPANEL_RECORDINGS")
    if env:
        return Path(env)
    for base in (REPO.parent, REPO.parent.parent):
        candidate = base / "shared" / "recordings"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/recordings not found beside the repository; set COMFYPANEL_RECORDINGS")


def recording(name: str) -> dict[str, Any]:
    """One ``http/NAME.json`` sample."""
    return json.loads((recordings_dir() / "http" / f"{name}.json").read_text())


def workflow(name: str) -> dict[str, Any]:
    """One model-free API-format workflow from ``recordings/workflows``."""
    return json.loads((recordings_dir() / "workflows" / f"{name}.json").read_text())


def ws_log(name: str) -> list[dict[str, Any]]:
    path = next((recordings_dir()).glob(f"{name}*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
