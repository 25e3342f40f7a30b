"""Inference: the in-process local model, the cloud client and the local cloud stand-in."""
