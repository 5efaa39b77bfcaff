"""Generate: from a workflow file to images, through a friendly form."""

import streamlit as st

from components import generate, require_frame

require_frame()

st.title("Generate")
generate.render()
