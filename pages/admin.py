"""Admin: is the server healthy, what is installed, what changed and who did it."""

import streamlit as st

from components import admin_gate, admin_sections, connection_box, require_frame, session

require_frame()

st.title("Admin")
connection_box.status_line()
admin = admin_gate.render_gate()
client = session.client()
if client is not None:
    admin_gate.run_confirmed(admin_sections.handlers(client))
admin_gate.show_notice()

section = st.segmented_control("Section", admin_sections.SECTIONS, default="System", required=True,
                               key=session.W_ADMIN_SECTION, label_visibility="collapsed")
if section == "Audit":
    admin_sections.audit(admin)
elif client is None or not session.is_connected():
    st.caption("Connect to a server to see its health, models, nodes and custom nodes.")
elif section == "System":
    admin_sections.system(client, admin)
elif section == "Models":
    admin_sections.models(client)
elif section == "Nodes":
    admin_sections.nodes(client)
elif section == "Manager":
    admin_sections.manager(client, admin)
