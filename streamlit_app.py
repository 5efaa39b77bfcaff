"""Comfy Panel: a browser control panel for ComfyUI and Comfy Cloud.

Run with ``streamlit run streamlit_app.py``. This file is the frame around every page: page
config, the sidebar connection box (drawn here so it exists on every page), then the page.
"""

import streamlit as st

from components import connection_box, queue_view

st.set_page_config(page_title="Comfy Panel", page_icon=":material/tune:", layout="wide")

PAGES = [
    st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:", default=True),
    st.Page("pages/inputs.py", title="Inputs", icon=":material/upload_file:"),
    st.Page("pages/queue.py", title="Queue", icon=":material/format_list_numbered:"),
    st.Page("pages/gallery.py", title="Gallery", icon=":material/photo_library:"),
    st.Page("pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
]

page = st.navigation(PAGES)
connection_box.render()
queue_view.sidebar_badge()  # queue counts on every page (reads the session's monitor, no HTTP)
page.run()
