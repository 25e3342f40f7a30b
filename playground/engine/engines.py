"""Which engine runs the local model, chosen by ``HANDOFF_LOCAL_ENGINE``.

- ``transformers`` (default): in process, any Hugging Face model, CPU or GPU (``local.py``);
- ``llamacpp``: in process through llama-cpp-python on a GGUF, the fast one on a CPU (``llamacpp.py``);
- ``openai``: an OpenAI-compatible server with per-token log-probs, vLLM on a GPU or llama.cpp's
  server on a CPU (``served.py``).

Every engine is a ``contract.LocalModelEngine``: ``generate(messages, *, max_new_tokens, temperature,
top_p, repetition_penalty, no_repeat_ngram_size, seed, tools)`` (each defaults to the settings'
``Decoding``) returns the same ``AnswerStream`` as the cloud's, and it says who it is
(``kind``, ``model_name``, ``model_revision``, ``dtype``, ``base_url_host``) and whether its tokens
carry log-probs (``gives_logprobs``).
"""

from __future__ import annotations

from playground.engine.contract import LocalModelEngine
from playground.settings import Settings


def engine_key(settings: Settings) -> tuple[str, ...]:
    """Settings that make a different engine: one loaded engine per key and process."""
    if settings.local_engine == "openai":
        return ("openai", settings.local_base_url, settings.served_model_name)
    if settings.local_engine == "llamacpp":
        return ("llamacpp", settings.local_model, str(settings.llamacpp_n_ctx), str(settings.max_batch_size))
    return ("transformers", settings.local_model, settings.local_device, settings.local_dtype)


def load_engine(settings: Settings) -> LocalModelEngine:
    """Load (not yet warm up) the configured engine; raises a message a person can act on when it can't."""
    if settings.local_engine == "llamacpp":
        from playground.engine.llamacpp import LlamaCppEngine

        return LlamaCppEngine(settings)
    if settings.local_engine == "openai":
        from playground.engine.served import ServedEngine

        return ServedEngine(settings)
    from playground.engine.local import LocalEngine

    return LocalEngine(settings)
