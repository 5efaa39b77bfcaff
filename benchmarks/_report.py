"""The ``--json PATH`` output shared by every benchmark script (read by ``benchmarks/run_all.py``).

One record per measured figure::

    {"metric": "median per-pair ratio panel/floor", "target": "≤ 1.10", "measured": 1.04,
     "unit": "×", "ratio": 1.04, "pass": true}

``ratio`` is the side-by-side ratio when the figure is one (None otherwise); ``pass`` is None for a
figure printed for information only (no target).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(metric: str, measured: float | int | None, unit: str = "", *, target: str | None = None,
           ok: bool | None = None, ratio: float | None = None) -> dict[str, Any]:
    return {"metric": metric, "target": target, "measured": measured, "unit": unit, "ratio": ratio,
            "pass": ok}


def write_json(path: str | Path | None, records: list[dict[str, Any]]) -> None:
    if not path:
        return
    Path(path).write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
