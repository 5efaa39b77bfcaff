"""Gallery: every image made through the panel, searchable, re-runnable."""

import streamlit as st

from components import connection_box, gallery_views, require_frame

require_frame()

st.title("Gallery")
connection_box.status_line()
gallery_views.notice()
query = gallery_views.filters()
gallery_views.detail()
gallery_views.bulk_bar()
gallery_views.grid(query)
