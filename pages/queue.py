"""Queue: what is running and waiting on the server."""

import streamlit as st

from components import connection_box, require_frame

require_frame()

st.title("Queue")
st.write(
    "Follow running and waiting jobs, and cancel or reorder them. This page is coming in a later "
    "release; the sidebar already shows how many jobs the server has."
)
connection_box.status_line()
