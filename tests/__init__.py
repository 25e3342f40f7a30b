"""pytest on real parts: SQLite and PostgreSQL, the bundled model, the stand-in server, AppTest, Playwright.

``factories`` builds events and turn records; ``organizer_data`` writes small known rounds through
capture; ``handoff_helpers`` drives comparisons; ``db_outage`` / ``faultproxy`` break services.
"""
