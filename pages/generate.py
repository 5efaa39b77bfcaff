"""Generate: from a workflow file to images, through a friendly form."""

import streamlit as st

from components import connection_box, generate, require_frame

require_frame()

st.title("Generate")
connection_box.status_line()
generate.render()
