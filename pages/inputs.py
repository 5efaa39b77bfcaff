"""Inputs: the server's input images, uploads, and masks."""

import streamlit as st

from components import inputs, require_frame

require_frame()

st.title("Inputs")
inputs.render()
