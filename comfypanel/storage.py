"""Where the panel keeps its own files (ledger, audit log, hold queue, thumbnails)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

__all__ = ["data_dir"]


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$COMFYPANEL_DATA_DIR``, else the platform's user data directory for ``comfypanel``."""
    env = os.environ if env is None else env
    base = (env.get("COMFYPANEL_DATA_DIR") or "").strip()
    if not base:
        import platformdirs

        base = platformdirs.user_data_dir("comfypanel", appauthor=False)
    return Path(base).expanduser()
