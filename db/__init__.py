"""Storage, the lowest layer: it imports nothing from ``feedback`` or ``playground``.

- ``models``: SQLAlchemy 2.0 typed models, the schema (kept in step with ``migrations/``)
- ``session``: engine and session per URL, ``in_transaction`` (retries a briefly unavailable
  database, then ``DatabaseUnavailable``; ``in_core_transaction`` the same on a bare Connection), ``begin_write`` (SQLite: ``BEGIN IMMEDIATE`` behind the
  process's other writers, first come, first served), the migration check
- ``vocabulary``: pane, arm and verdict names and the one pane<->arm mapping
- ``visibility``: what counts (consented, not hidden), read by every number, export and the router
- ``queries``, ``events``: events by code, creating and editing them
- ``analytics``: the live overview's aggregates; ``report``: the improvement report's queries
- ``merge``: copying one database's research rows into another
"""
