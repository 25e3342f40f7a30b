"""The local model fails mid-service (out of memory in a prefill, an error in a decoding step): the
request concerned fails with a message, the other sessions' requests go on, the engine recovers.

Faults are injected into the real model with a forward pre-hook (no mock): it raises
``torch.OutOfMemoryError`` for any prefill that contains the poison text, and a ``RuntimeError``
for the next decoding steps while ``decode_failures`` is above zero.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from streamlit.testing.v1 import AppTest

from playground import runtime
from playground.engine.contract import Generation
from playground.engine.local import LocalEngine
from playground.i18n import Translator
from playground.settings import Settings, get_settings
from tests.conftest import MODEL_CACHE, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
POISON = "Zqxjvk poisoned prompt"


class ModelFaults:
    def __init__(self, engine: LocalEngine) -> None:
        self.poison = engine.tokenizer.encode(POISON, add_special_tokens=False)
        self.decode_failures = 0
        self.injected: list[str] = []
        self.lock = threading.Lock()

    def _poisoned(self, row: list[int]) -> bool:
        n = len(self.poison)
        return any(row[i : i + n] == self.poison for i in range(len(row) - n + 1))

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None:
            return
        if ids.shape[1] > 1 and any(self._poisoned(row) for row in ids.tolist()):
            self.injected.append("oom")
            raise torch.OutOfMemoryError("injected: out of memory while prefilling a huge prompt")
        with self.lock:
            if ids.shape[1] == 1 and self.decode_failures > 0:
                self.decode_failures -= 1
                self.injected.append("decode")
                raise RuntimeError("injected: a kernel failed in the middle of decoding")


@contextmanager
def faults_in(engine: LocalEngine) -> Iterator[ModelFaults]:
    faults = ModelFaults(engine)
    handle = engine.model.register_forward_pre_hook(faults, with_kwargs=True)
    try:
        yield faults
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    engine = LocalEngine(Settings(model_cache_dir=MODEL_CACHE, local_dtype="float32", max_new_tokens=12))
    yield engine
    engine.close()


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def finishes(generation: Generation) -> bool:
    result = generation.wait(timeout=300)
    return bool(result.text) and result.finish_reason in ("stop", "length")


def test_out_of_memory_in_a_prefill_fails_only_the_request_that_caused_it(engine: LocalEngine) -> None:
    with faults_in(engine) as faults:
        running = engine.generate(chat("Count from one to fifty."), max_new_tokens=48, temperature=0.0)
        assert next(iter(running))  # another session's answer is streaming
        healthy = [engine.generate(chat(f"Name a colour number {i}."), temperature=0.0) for i in range(3)]
        poisoned = engine.generate(chat(POISON))  # arrives with the healthy ones: one prefill for all four
        with pytest.raises(torch.OutOfMemoryError):
            poisoned.wait(timeout=300)
        with pytest.raises(torch.OutOfMemoryError):
            list(poisoned)  # a streaming reader gets the error too, not a hang
        assert all(finishes(g) for g in healthy)
        assert finishes(running)
        assert "oom" in faults.injected
    assert finishes(engine.generate(chat("Say hi.")))  # and the engine serves on


def test_an_error_in_a_decoding_step_fails_that_batch_and_the_engine_recovers(engine: LocalEngine) -> None:
    with faults_in(engine) as faults:
        first = engine.generate(chat("Tell me about owls."), max_new_tokens=24)
        next(iter(first))
        faults.decode_failures = 1
        with pytest.raises(RuntimeError, match="injected"):
            first.wait(timeout=300)
        after = [engine.generate(chat(f"Name an animal number {i}.")) for i in range(3)]
        assert all(finishes(g) for g in after)
        assert faults.injected == ["decode"]


def test_the_attendee_page_says_the_turn_failed_and_the_next_prompt_works(app_env: Settings) -> None:
    from tests.test_attendee_page import NEVER, add_event

    code = add_event(app_env, threshold=NEVER)
    at = AppTest.from_file(str(ROOT / "playground" / "views" / "attendee.py"), default_timeout=300)
    at.query_params["event"] = code
    at.run()
    at.button(key="consent_accept").click().run()
    with faults_in(runtime.local_engine(get_settings())):
        at.chat_input(key="prompt").set_value(POISON).run()
        assert not at.exception
        assert [e.value for e in at.error] == [Translator("en")("pane.turn_failed")]  # a message, no traceback
        at.chat_input(key="prompt").set_value("Say hello.").run()
        assert not at.exception and not at.error
        assert at.button(key="save_feedback")  # the answers are there, feedback can be given
