"""Inputs: images and masks the workflows use."""

import streamlit as st

from components import connection_box, require_frame

require_frame()

st.title("Inputs")
st.write(
    "Upload input images and paint masks for your workflows. This page is coming in a later release."
)
connection_box.status_line()
