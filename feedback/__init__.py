"""Capture, statistics, export and reports: plain Python on top of ``db``, importable without Streamlit.

Nothing here imports ``playground``: settings arrive as arguments, and errors a person can cause
carry a message key (``feedback.errors``) that the page translates.

- ``capture``: participants, conversations, turns and their limits; ``votes``: votes and ratings
- ``errors``: refusals with message keys; ``records``: what a turn produced, handed in by ``playground``
- ``moderation``: comment feed, hiding and unhiding
- ``stats``: pure statistics (win rates, CIs, Bradley-Terry, agreement); ``replay``: thresholds replayed
- ``export/``: researcher exports, one module per format; ``report/``: the improvement report
- ``pricing``: the versioned cloud price table; ``language``, ``redaction``, ``style``: text facts
- ``demo_data``: seeded demo events with votes
- ``cpus``: the CPUs this process may use (the exports' workers here, the engines in ``playground``)
"""
