"""Gallery: every image made through the panel."""

import streamlit as st

from components import connection_box, require_frame

require_frame()

st.title("Gallery")
st.write(
    "Browse every image made through the panel, search by any parameter and run it again. This "
    "page is coming in a later release."
)
connection_box.status_line()
