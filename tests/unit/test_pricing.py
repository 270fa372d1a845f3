"""Unit tests of shared.pricing: SPEC.md's table, snapshots, overrides, cached tokens, genai-prices."""

from __future__ import annotations

import logging
import socket
from decimal import Decimal
from typing import Any

import genai_prices
import pytest

from shared.pricing import SPEC_PRICES, PriceBook, spec_family
from shared.schemas import Cost, Usage


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def price(book: PriceBook, provider: str, model: str, p: int, c: int, cached: int = 0) -> Cost:
    cost = book.cost(provider, model, Usage(p, c, cached))
    assert cost is not None, model
    return cost


# -- SPEC.md ---------------------------------------------------------------------------------------


def test_spec_example_is_exact(book: PriceBook) -> None:
    cost = price(book, "openai", "gpt-4", 500, 750)
    assert cost.prompt_cost == 0.015
    assert cost.completion_cost == 0.045
    assert cost.total_cost == 0.060
    assert cost.to_api() == {
        "promptCost": 0.015,
        "completionCost": 0.045,
        "totalCost": 0.06,
        "currency": "USD",
    }


@pytest.mark.parametrize(
    ("provider", "model", "per_1k_in", "per_1k_out"),
    [
        ("openai", "gpt-4", 0.03, 0.06),
        ("openai", "gpt-4-turbo", 0.01, 0.03),
        ("anthropic", "claude-3-opus-20240229", 0.015, 0.075),
        ("anthropic", "claude-3-sonnet-20240229", 0.003, 0.015),
        ("anthropic", "claude-3-haiku-20240307", 0.00025, 0.00125),
        ("openai", "gpt-3.5-turbo", 0.0005, 0.0015),
    ],
)
def test_table_prices_per_1k(book: PriceBook, provider: str, model: str, per_1k_in: float, per_1k_out: float) -> None:
    one_k = price(book, provider, model, 1000, 1000)
    assert (one_k.prompt_cost, one_k.completion_cost) == (per_1k_in, per_1k_out)
    ten_k = price(book, provider, model, 10_000, 2_000)
    assert ten_k.prompt_cost == round(per_1k_in * 10, 10)
    assert ten_k.completion_cost == round(per_1k_out * 2, 10)
    assert ten_k.total_cost == round(per_1k_in * 10 + per_1k_out * 2, 10)
    assert ten_k.currency == "USD"


def test_small_amounts_are_not_lost_to_float(book: PriceBook) -> None:
    cost = price(book, "anthropic", "claude-3-haiku", 1, 3)
    assert cost.prompt_cost == 0.00000025
    assert cost.completion_cost == 0.00000375
    assert cost.total_cost == 0.000004


def test_zero_usage_costs_zero(book: PriceBook) -> None:
    assert price(book, "openai", "gpt-4", 0, 0).to_api()["totalCost"] == 0


# -- name variants ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4", "gpt-4"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-4-0314", "gpt-4"),
        ("GPT-4", "gpt-4"),
        (" gpt-4-0613 ", "gpt-4"),
        ("gpt-4-turbo", "gpt-4-turbo"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-4-turbo-preview", "gpt-4-turbo"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("gpt-4-0125-preview", "gpt-4-turbo"),
        ("gpt-3.5-turbo", "gpt-3.5-turbo"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("claude-3-opus", "claude-3-opus"),
        ("claude-3-opus-20240229", "claude-3-opus"),
        ("claude-3-opus-latest", "claude-3-opus"),
        ("claude-3-sonnet-20240229", "claude-3-sonnet"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
    ],
)
def test_snapshots_map_to_their_spec_family(book: PriceBook, model: str, family: str) -> None:
    assert spec_family(model) == family
    provider = "anthropic" if "claude" in model else "openai"
    rates = SPEC_PRICES[family]
    cost = price(book, provider, model, 1000, 1000)
    assert cost.prompt_cost == float(rates.input)
    assert cost.completion_cost == float(rates.output)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "gpt-4o-mini",
        "gpt-4-32k",
        "gpt-4-32k-0613",
        "gpt-4.1",
        "gpt-4-turbo-foo",
        "gpt-3.5-turbo-1106",
        "gpt-3.5-turbo-16k",
        "claude-3-5-sonnet-latest",
        "claude-3-5-haiku-20241022",
        "claude-3-sonnet-foo",
    ],
)
def test_lookalikes_are_not_spec_models(model: str) -> None:
    assert spec_family(model) is None


def test_gpt_4o_is_not_priced_as_gpt_4(book: PriceBook) -> None:
    gpt4o = price(book, "openai", "gpt-4o", 1000, 1000)
    gpt4 = price(book, "openai", "gpt-4", 1000, 1000)
    assert gpt4o.prompt_cost < gpt4.prompt_cost
    assert gpt4o.completion_cost < gpt4.completion_cost


def test_older_gpt_35_snapshot_is_not_given_the_0125_price(book: PriceBook) -> None:
    cost = price(book, "openai", "gpt-3.5-turbo-1106", 1000, 1000)
    assert cost.prompt_cost != 0.0005  # $1/MTok in genai-prices


# -- genai-prices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-2024-08-06"),
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4-32k"),
        ("anthropic", "claude-3-5-sonnet-latest"),
        ("anthropic", "claude-3-5-haiku-20241022"),
    ],
)
def test_library_models_get_the_library_price(book: PriceBook, provider: str, model: str) -> None:
    usage = Usage(prompt_tokens=12_345, completion_tokens=678, cached_prompt_tokens=2_000)
    cost = book.cost(provider, model, usage)
    assert cost is not None and cost.total_cost > 0
    assert book.knows(provider, model)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=12_345, cache_read_tokens=2_000, output_tokens=678),
        model,
        provider_id=provider,
    )
    assert Decimal(str(cost.prompt_cost)) == round(expected.input_price, 10)
    assert Decimal(str(cost.completion_cost)) == round(expected.output_price, 10)


def test_gpt_4o_price(book: PriceBook) -> None:
    # genai-prices: $2.50 / $10 per MTok
    cost = price(book, "openai", "gpt-4o", 1000, 1000)
    assert (cost.prompt_cost, cost.completion_cost) == (0.0025, 0.01)


def test_tiered_library_model_is_priced_by_the_library(book: PriceBook) -> None:
    model = "claude-sonnet-4-5"
    if not book.knows("anthropic", model):
        pytest.skip("this genai-prices release has no tiered Sonnet 4.5")
    for prompt in (10_000, 300_000):  # either side of the 200K-token tier
        cost = price(book, "anthropic", model, prompt, 1000, 5000)
        expected = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=prompt, cache_read_tokens=5000, output_tokens=1000),
            model,
            provider_id="anthropic",
        )
        assert Decimal(str(cost.prompt_cost)) == round(expected.input_price, 10)
        assert Decimal(str(cost.completion_cost)) == round(expected.output_price, 10)


def test_no_network_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("pricing must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = PriceBook()
    for provider, model in [
        ("openai", "gpt-4o"),
        ("openai", "o1"),
        ("anthropic", "claude-3-5-sonnet-latest"),
        ("anthropic", "claude-sonnet-4-5"),
        ("openai", "no-such-model"),
    ]:
        fresh.cost(provider, model, Usage(100, 100, 10))


# -- overrides -------------------------------------------------------------------------------------


def test_override_beats_spec_table() -> None:
    book = PriceBook({"gpt-4": {"input": 0.02, "output": 0.04}})
    cost = price(book, "openai", "gpt-4", 1000, 1000)
    assert (cost.prompt_cost, cost.completion_cost) == (0.02, 0.04)


def test_family_override_covers_snapshots_and_exact_name_wins() -> None:
    book = PriceBook(
        {
            "gpt-4": {"input": 0.02, "output": 0.04},
            "gpt-4-0314": {"input": 0.05, "output": 0.07},
        }
    )
    assert price(book, "openai", "gpt-4-0613", 1000, 0).prompt_cost == 0.02
    assert price(book, "openai", "gpt-4-0314", 1000, 0).prompt_cost == 0.05
    # GPT-4 Turbo is another family: untouched
    assert price(book, "openai", "gpt-4-turbo-preview", 1000, 0).prompt_cost == 0.01


def test_override_beats_library_and_covers_its_aliases() -> None:
    book = PriceBook({"GPT-4o": {"input": 0.001, "output": 0.002}})
    for model in ("gpt-4o", "gpt-4o-2024-08-06"):
        cost = price(book, "openai", model, 1000, 1000)
        assert (cost.prompt_cost, cost.completion_cost) == (0.001, 0.002)


def test_override_prices_an_unknown_model(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook({"my-finetune": {"input": "0.1", "output": 0.2}})
    with caplog.at_level(logging.WARNING, logger="shared.pricing"):
        cost = price(book, "openai", "my-finetune", 500, 250)
    assert (cost.prompt_cost, cost.completion_cost, cost.total_cost) == (
        0.05,
        0.05,
        0.1,
    )
    assert not caplog.records


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"m": {"input": 0.1}}, ValueError),
        ({"m": {"input": 0.1, "output": 0.1, "prompt": 0.1}}, ValueError),
        ({"m": {"input": -1, "output": 0.1}}, ValueError),
        ({"m": {"input": float("nan"), "output": 0.1}}, ValueError),
        ({"m": {"input": "cheap", "output": 0.1}}, ValueError),
        ({"m": {"input": True, "output": 0.1}}, TypeError),
        ({"m": 0.1}, TypeError),
    ],
)
def test_bad_overrides_fail_at_startup(overrides: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        PriceBook(overrides)


# -- unknown models --------------------------------------------------------------------------------


def test_unknown_model_costs_none_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = PriceBook()
    assert not book.knows("openai", "gpt-nonexistent-9")
    with caplog.at_level(logging.WARNING, logger="shared.pricing"):
        for _ in range(5):
            assert book.cost("openai", "gpt-nonexistent-9", Usage(10, 10)) is None
        assert book.cost("anthropic", "claude-nonexistent", Usage(10, 10)) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "gpt-nonexistent-9" in warnings[0].getMessage()
    assert "claude-nonexistent" in warnings[1].getMessage()


def test_unknown_provider_costs_none(book: PriceBook) -> None:
    assert book.cost("no-such-provider", "some-model", Usage(10, 10)) is None


# -- cached prompt tokens --------------------------------------------------------------------------


def test_openai_cached_tokens_use_library_cache_read_price(book: PriceBook) -> None:
    # gpt-4o: $2.50/MTok input, $1.25/MTok cache read; 600 fresh + 400 cached
    cost = price(book, "openai", "gpt-4o", 1000, 0, cached=400)
    assert cost.prompt_cost == 0.002


def test_anthropic_cached_tokens_cost_a_tenth(book: PriceBook) -> None:
    # Claude 3 Opus: $0.015/1K input, cache reads $0.0015/1K
    cost = price(book, "anthropic", "claude-3-opus-20240229", 1000, 0, cached=1000)
    assert cost.prompt_cost == 0.0015
    mixed = price(book, "anthropic", "claude-3-opus-20240229", 2000, 0, cached=1000)
    assert mixed.prompt_cost == 0.0165


def test_cached_tokens_without_a_known_rate_pay_the_input_price(
    book: PriceBook,
) -> None:
    assert price(book, "openai", "gpt-4", 500, 750, cached=300).prompt_cost == 0.015


def test_override_cached_input_is_used() -> None:
    book = PriceBook({"gpt-4": {"input": 0.03, "output": 0.06, "cached_input": 0.015}})
    assert price(book, "openai", "gpt-4", 1000, 0, cached=500).prompt_cost == 0.0225


def test_override_without_cached_input_keeps_library_cache_rate() -> None:
    book = PriceBook({"claude-3-haiku": {"input": 0.0002, "output": 0.001}})
    # Haiku cache reads: $0.03/MTok in genai-prices
    cost = price(book, "anthropic", "claude-3-haiku-20240307", 1000, 0, cached=1000)
    assert cost.prompt_cost == 0.00003


def test_cached_count_above_prompt_is_clamped(book: PriceBook) -> None:
    cost = price(book, "anthropic", "claude-3-opus", 100, 0, cached=500)
    assert cost.prompt_cost == 0.00015


# -- prompt-cache writes ---------------------------------------------------------------------------


def test_anthropic_cache_writes_use_the_library_write_price(book: PriceBook) -> None:
    # Claude 3.5 Sonnet: $3/MTok input, $3.75/MTok cache write, $0.30/MTok cache read
    usage = Usage(prompt_tokens=3000, completion_tokens=0, cached_prompt_tokens=1000, cache_write_tokens=1000)
    cost = book.cost("anthropic", "claude-3-5-sonnet-20241022", usage)
    assert cost is not None
    assert cost.prompt_cost == pytest.approx((1000 * 3 + 1000 * 0.3 + 1000 * 3.75) / 1e6)


def test_cache_writes_without_a_library_price_cost_a_quarter_more() -> None:
    book = PriceBook({"claude-custom": {"input": 0.004, "output": 0.02}})
    cost = book.cost("anthropic", "claude-custom", Usage(prompt_tokens=1000, cache_write_tokens=1000))
    assert cost is not None and cost.prompt_cost == pytest.approx(0.005)


def test_spec_model_cache_writes_use_the_library_write_price(book: PriceBook) -> None:
    # Claude 3 Haiku (SPEC's $0.00025/1K input): genai-prices' $0.30/MTok write
    cost = book.cost("anthropic", "claude-3-haiku-20240307", Usage(prompt_tokens=1000, cache_write_tokens=1000))
    assert cost is not None and cost.prompt_cost == pytest.approx(0.0003)
