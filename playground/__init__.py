"""The top layer: Streamlit pages, inference and the operator CLI, on top of ``feedback`` and ``db``.

- ``app``, ``views/``: the pages (thin: they call services and render); ``attendee_session``,
  ``turn_runner``, ``organizer_access``, ``auth``, ``event_link``, ``untrusted``: what the pages call
- ``comparison``: one side-by-side turn, both arms driven through ``engine/contract.py``; ``recording``:
  the turn's records; ``engine/``: local engines, cloud client, stand-in
- ``handoff/``: handoff policies, router, budget and rate limits
- ``settings``: the one settings object; ``runtime``: process-wide services; ``i18n`` + ``locales/``
- ``cli/``: the ``handoff`` command
"""
