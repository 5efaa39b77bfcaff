"""Shared test helpers: where the recordings are, and how to read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.doubles._recordings import recordings_dir, workflow, ws_log

__all__ = ["REPO", "recording", "recordings_dir", "workflow", "ws_log"]

REPO = Path(__file__).resolve().parents[1]


def recording(name: str) -> dict[str, Any]:
    """One ``http/NAME.json`` sample."""
    return json.loads((recordings_dir() / "http" / f"{name}.json").read_text())
