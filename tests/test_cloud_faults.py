"""Every cloud failure kind, injected by a real HTTP proxy in front of the real stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from playground.engine.cloud import CloudClient
from playground.engine.model_store import resolve_model
from playground.settings import Settings
from tests.conftest import MODEL_CACHE, free_port
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def proxy(standin: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(standin.standin_host, standin.standin_port) as running:
        yield running


def settings_via(base_url: str, **overrides: object) -> Settings:
    """Cloud settings that reach the stand-in's model through ``base_url``; fast, bounded retries."""
    values = {
        "model_cache_dir": MODEL_CACHE,
        "cloud_base_url": base_url,
        "cloud_model": resolve_model("bundled:smollm2", MODEL_CACHE),
        "cloud_timeout_s": 60.0,
        "cloud_max_retries": 2,
        "cloud_backoff_s": 0.01,
        "cloud_backoff_max_s": 0.05,
        "max_new_tokens": 12,
        **overrides,
    }
    return Settings(**values)


def call(proxy: FaultProxy, **overrides: object):
    return CloudClient(settings_via(proxy.base_url, **overrides)).generate(MESSAGES).wait()


def test_passing_through_the_proxy_gives_a_priced_answer(proxy: FaultProxy) -> None:
    result = call(proxy)
    assert result.ok and result.text and result.retries == 0
    assert result.base_url_host == f"127.0.0.1:{proxy.port}"
    assert result.tokens_in and result.tokens_out
    assert result.cost is not None and result.cost > 0 and result.price_version == "openai-2025-04"


@pytest.mark.parametrize(("fault", "kind"), [("429", "rate_limited"), ("500", "server_error"), ("503", "server_error")])
def test_transient_http_errors_are_retried_a_bounded_number_of_times(proxy: FaultProxy, fault: str, kind: str) -> None:
    proxy.default = fault
    result = call(proxy, cloud_max_retries=2)
    assert result.error_kind == kind and result.text == "" and result.retries == 2
    assert proxy.seen == [fault] * 3
    assert "injected failure" in result.error and result.surely_unbilled


def test_a_retry_that_succeeds_counts_the_failed_attempts(proxy: FaultProxy) -> None:
    proxy.inject("429", "503")
    result = call(proxy)
    assert result.ok and result.text and result.retries == 2
    assert proxy.seen == ["429", "503", "pass"]


def test_timeout_is_recorded_after_bounded_retries(proxy: FaultProxy) -> None:
    proxy.default = "timeout"
    result = call(proxy, cloud_max_retries=1, cloud_timeout_s=0.5)
    assert result.error_kind == "timeout" and result.retries == 1
    assert proxy.seen == ["timeout", "timeout"]
    assert not result.surely_unbilled  # a timed-out request may still be billed: the budget keeps it


@pytest.mark.parametrize("fault", ["malformed", "html"])
def test_malformed_responses_are_recorded_and_not_retried(proxy: FaultProxy, fault: str) -> None:
    proxy.default = fault
    result = call(proxy)
    assert result.error_kind == "malformed" and result.retries == 0
    assert proxy.seen == [fault]


def test_a_connection_cut_mid_answer_keeps_the_partial_text_and_is_not_retried(proxy: FaultProxy) -> None:
    proxy.inject("drop")
    result = call(proxy, max_new_tokens=24)
    assert result.error_kind == "connection" and result.retries == 0
    assert proxy.seen == ["drop"]


def test_connection_refused_is_retried_then_recorded() -> None:
    result = (
        CloudClient(settings_via(f"http://127.0.0.1:{free_port()}/v1", cloud_max_retries=1)).generate(MESSAGES).wait()
    )
    assert result.error_kind == "connection" and result.retries == 1 and result.text == ""


@pytest.mark.reliability
def test_retry_after_on_a_429_is_waited_before_the_next_attempt(proxy: FaultProxy) -> None:
    proxy.retry_after = "1"
    proxy.inject("429")
    result = call(proxy, cloud_backoff_max_s=2.0)  # the usual backoff would retry after 0.01 s
    assert result.ok and result.retries == 1 and proxy.seen == ["429", "pass"]
    assert proxy.seen_at[1] - proxy.seen_at[0] >= 1.0


@pytest.mark.reliability
def test_retry_after_longer_than_the_backoff_cap_is_not_retried_at_all(proxy: FaultProxy) -> None:
    proxy.retry_after = "120"
    proxy.default = "429"
    result = call(proxy, cloud_max_retries=3, cloud_backoff_max_s=2.0)
    assert result.error_kind == "rate_limited" and result.retries == 0 and proxy.seen == ["429"]
    assert result.surely_unbilled


@pytest.mark.reliability
def test_retry_after_as_an_http_date_is_understood(proxy: FaultProxy) -> None:
    import email.utils
    import time

    proxy.retry_after = email.utils.formatdate(time.time() + 3600, usegmt=True)
    proxy.inject("503")
    result = call(proxy, cloud_backoff_max_s=2.0)
    assert result.error_kind == "server_error" and proxy.seen == ["503"]


@pytest.mark.reliability
def test_the_cloud_coming_back_is_used_again(standin: Settings) -> None:
    """Server gone (refused), back (answers), gone again with pooled connections, back again."""
    port = free_port()
    client = CloudClient(settings_via(f"http://127.0.0.1:{port}/v1", cloud_max_retries=1))
    assert client.generate(MESSAGES).wait().error_kind == "connection"
    for _ in range(2):
        with FaultProxy(standin.standin_host, standin.standin_port, port=port):
            result = client.generate(MESSAGES).wait()
            assert result.ok and result.text
        gone = client.generate(MESSAGES).wait()
        assert gone.error_kind == "connection" and gone.surely_unbilled
