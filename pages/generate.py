"""Generate: workflow in, friendly form, images out."""

import streamlit as st

from components import connection_box, require_frame

require_frame()

st.title("Generate")
st.write(
    "Drop in a workflow, fill in a simple form and press Generate to watch it run and get the "
    "images. This page is coming in a later release."
)
connection_box.status_line()
