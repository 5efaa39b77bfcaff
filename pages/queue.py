"""Queue: what is running, waiting and held, what just finished, and control over it."""

import streamlit as st

from components import connection_box, queue_view, require_frame

require_frame()

st.title("Queue")
connection_box.status_line()
queue_view.render()
