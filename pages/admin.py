"""Admin: server health now; queue control, models and custom nodes later."""

import streamlit as st

from components import connection_box, require_frame

require_frame()

st.title("Admin")
st.write(
    "Server health is below. Queue control, models and custom nodes (ComfyUI-Manager) are coming "
    "in a later release."
)
connection_box.status_line()
connection_box.server_details()
