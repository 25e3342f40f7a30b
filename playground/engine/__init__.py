"""Inference engines behind one answer-stream contract (``contract``): the local model in process
(``local``: transformers, ``llamacpp``; both on ``batching``'s worker loop) or behind a server
(``served``), the cloud client (``cloud``), which engine to load (``engines``), sampling, the model
store and the local cloud stand-in.
"""
