"""mechinterp-edu app: `make run` (or `streamlit run app.py`) serves every page at localhost:8501.

Pages: / (home: course map, progress, device), /lesson-1 ... /lesson-5, /exercises, /classroom.
"""
import streamlit as st

from mechinterp_edu.app.navigation import navigation

# Each page sets its own layout (classroom mode is wide); set it once per run, there.
st.set_page_config(page_title="mechinterp-edu", page_icon=":material/neurology:")
navigation().run()
