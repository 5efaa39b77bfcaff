"""Inputs: the server's input images, uploads, and masks."""

import streamlit as st

from components import connection_box, inputs, require_frame

require_frame()

st.title("Inputs")
connection_box.status_line()
inputs.render()
