"""Comfy Panel core: plain Python, no Streamlit.

The pieces a page or a script needs::

    from comfypanel import Connection, ComfyClient, submit_and_wait
"""

from .client import Capabilities, ComfyClient, new_prompt_id
from .connection import CLOUD_URL, DEFAULT_LOCAL_URL, Connection
from .errors import ComfyPanelError
from .jobs import JobProgress, JobResult, follow, submit_and_wait
from .types import FileRef, HistoryEntry, JobStatus, QueueItem, QueueState, SystemStats

__all__ = [
    "CLOUD_URL",
    "DEFAULT_LOCAL_URL",
    "Capabilities",
    "ComfyClient",
    "ComfyPanelError",
    "Connection",
    "FileRef",
    "HistoryEntry",
    "JobProgress",
    "JobResult",
    "JobStatus",
    "QueueItem",
    "QueueState",
    "SystemStats",
    "follow",
    "new_prompt_id",
    "submit_and_wait",
]
__version__ = "0.1.0"
