"""Handoff: when the local model should pass the conversation to the cloud model."""
