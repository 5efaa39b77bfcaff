"""Streamlit glue between the pages and the ``comfypanel`` core.

``session`` is the one module that owns ``st.session_state`` keys; ``connection_box`` draws the
sidebar connection box and the connection status; ``text`` shows server strings as plain text.
"""

from __future__ import annotations

import streamlit as st


def require_frame() -> None:
    """Call first in every page file: rerun through ``streamlit_app.py`` if it was skipped.

    With a ``pages/`` folder beside the entry script, Streamlit's legacy multipage mode decides the
    very first run of a fresh server process. A deep link such as ``/queue`` then runs
    ``pages/queue.py`` on its own: no sidebar connection box, Streamlit's automatic page list. The
    entry script's ``st.navigation`` switches that mode off for good, but only once it runs, so
    switch it off here and run again (same page, now inside the frame).
    """
    from streamlit.runtime.pages_manager import PagesManager  # no public switch for this

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
