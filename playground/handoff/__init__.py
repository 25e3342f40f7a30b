"""Handoff: when the local model should pass the conversation to the cloud model.

- ``base``: what every policy shares (input, contract, ``PolicyUnavailable``)
- ``policies``: never / always / confidence, choosing the live policy, ``decide``
- ``self_handoff``: the model calls a tool; ``router``: a classifier trained from votes
- ``signals``: token statistics stored for replay; ``budget``: event budget and rate limit
"""
