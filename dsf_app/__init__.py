"""The Streamlit app's helpers: session state, model loading, background jobs, figures.

Pages (``app.py``, ``pages/*.py``) only lay out widgets; everything they compute goes through
``dsf_core`` and the helpers here, which can be tested without a browser.
"""
