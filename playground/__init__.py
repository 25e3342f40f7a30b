"""Streamlit pages and the inference engine: local model, cloud client, handoff policy."""
