"""Capture, statistics, export and reports: plain Python, importable without Streamlit."""
