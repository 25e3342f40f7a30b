"""The local open-weight model, loaded once per process and shared by every session.

One worker thread per loaded model decodes the requests of all sessions together: a padded batch
(left padding, an attention mask and explicit positions) over one batched ``DynamicCache``. New
requests are prefilled between decode steps and their cache rows merged into the running batch, so
nobody waits for the batch to drain; finished or stopped rows leave at the next step. Callers on
any thread get a ``Generation`` handle that streams text deltas. Per-token log-probabilities and
entropies come from the logits of the decoding step itself; no second forward pass is made.

Why our own batching rather than transformers' continuous batching (``generate_batch``): it keeps
per-request streaming, log-probs and entropies from the decoding step, per-request sampling and
seeds, and ``stop()`` in one small loop we control, with memory bounded by two settings instead of a
paged-cache sizing. The throughput comparison is measured by ``bench/batching_choice.py`` (figures
in ``bench/README.md``).

Memory is bounded by ``max_batch_size`` rows and ``max_batch_tokens`` cache positions
(rows x padded width); a request that could push the batch past either waits its turn in arrival
order, so later requests never overtake it and nobody starves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from playground.engine.batching import BatchingEngine, Row
from playground.engine.device import resolve_dtype
from playground.engine.model_store import bundled_revision, resolve_model
from playground.settings import BUNDLED_MODEL, BUNDLED_MODEL_NAME, Settings

Message = dict[str, str]


@dataclass
class _Row(Row):
    """A request in the padded batch, with the offsets of its incremental detokenisation."""

    prefix_offset: int = 0
    read_offset: int = 0


class LocalEngine(BatchingEngine):
    """One loaded model plus the worker thread that decodes for all sessions together."""

    kind = "transformers"
    gives_logprobs = True  # from the decoding step's own logits, over the full vocabulary
    row_type = _Row

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        started = time.perf_counter()
        path = resolve_model(settings.local_model, settings.model_cache_dir)
        choice = resolve_dtype(settings.local_dtype, settings.local_device)
        self.dtype, self.dtype_reason = choice.dtype, choice.reason
        self.device = torch.device(settings.local_device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype))
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - started
        self.model_name, self.model_revision = _describe(settings.local_model, self.model)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        self.max_batch_size = settings.max_batch_size
        self.max_batch_tokens = self.context_limit = settings.max_batch_tokens
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self._next = torch.zeros((0,), dtype=torch.long, device=self.device)
        self._start_worker("local-engine")

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The chat template's tokens; ``tools`` (JSON schemas) as ``apply_chat_template`` takes them."""
        return self.tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]

    # worker
    def _fits(self, row: Row, joining: list[Row]) -> bool:
        rows = len(self._running) + len(joining) + 1
        width = max(other.reserved for other in (*self._running, *joining, row))
        return rows <= self.max_batch_size and rows * width <= self.max_batch_tokens

    def _prefill(self, joining: list[_Row]) -> None:
        length = max(len(row.prompt_ids) for row in joining)
        ids = torch.full((len(joining), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), length), dtype=torch.long)
        for i, row in enumerate(joining):
            ids[i, length - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            mask[i, length - len(row.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache(config=self.model.config)
        try:
            logits = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
        except Exception as error:  # noqa: BLE001 - the running batch is intact; only these fail
            if len(joining) > 1:  # one request's failure (out of memory on a long prompt) is not the others'
                del cache
                for row in joining:
                    self._prefill([row])
                return
            joining[0].generation._finish(None, error)
            return
        try:
            self._merge(joining, cache, mask)
        except BaseException as error:  # noqa: BLE001 - rows not yet in the batch must not wait forever
            merged = {id(row) for row in self._running}
            for row in joining:
                if id(row) not in merged:
                    row.generation._finish(None, error)
            raise
        tokens = self._take(joining, logits)
        self._next = torch.cat([self._next, torch.tensor(tokens, dtype=torch.long, device=self.device)])

    def _merge(self, joining: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append the new rows' cache to the batch's, left-padding whichever is shorter."""
        if self._cache is None or not self._running:
            self._cache, self._mask, self._running = cache, mask, list(joining)
            self._next = self._next[:0]
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width, -2), _pad_left(new.keys, width, -2)])
            old.values = torch.cat([_pad_left(old.values, width, -2), _pad_left(new.values, width, -2)])
        self._mask = torch.cat([_pad_left(self._mask, width, -1), _pad_left(mask, width, -1)])
        self._running.extend(joining)

    def _step(self) -> None:
        """One decode step for every row: one token each."""
        ones = torch.ones((len(self._running), 1), dtype=torch.long, device=self.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = torch.cat([self._mask, ones], dim=-1)
        logits = self.model(
            input_ids=self._next[:, None],
            attention_mask=self._mask,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        ).logits[:, -1]
        self._next = torch.tensor(self._take(self._running, logits), dtype=torch.long, device=self.device)

    def _is_end(self, token: int) -> bool:
        return token in self.eos_ids

    def _delta(self, row: _Row) -> str:  # type: ignore[override]
        """The newly readable text, holding back half a multi-byte character (TGI's scheme)."""
        decode = self.tokenizer.decode
        before = decode(row.token_ids[row.prefix_offset : row.read_offset], skip_special_tokens=True)
        after = decode(row.token_ids[row.prefix_offset :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            row.prefix_offset, row.read_offset = row.read_offset, len(row.token_ids)
            return after[len(before) :]
        return ""

    def _final_text(self, row: Row) -> str:
        return self.tokenizer.decode(row.token_ids, skip_special_tokens=True)

    def _remove(self, keep: list[int]) -> None:
        """Drop finished rows from the batch, then the cache columns no row attends to any more."""
        if not keep:
            self._reset()
            return
        index = torch.tensor(keep, device=self.device)
        self._running = [self._running[i] for i in keep]
        self._mask, self._next = self._mask[index], self._next[index]
        self._cache.batch_select_indices(index)
        used = int(self._mask.any(0).long().argmax())  # first column some row still attends to
        if used:
            self._mask = self._mask[:, used:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[..., used:, :], layer.values[..., used:, :]

    def _reset(self) -> None:
        self._running, self._cache = [], None
        self._mask = self._mask[:0, :0]
        self._next = self._next[:0]


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _describe(configured: str, model: Any) -> tuple[str, str | None]:
    if configured == BUNDLED_MODEL:
        return BUNDLED_MODEL_NAME, bundled_revision()
    return configured, getattr(model.config, "_commit_hash", None)
