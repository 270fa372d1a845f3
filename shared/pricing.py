"""What a request cost: SPEC.md's price table, operator overrides, and genai-prices' bundled data for the rest.

Precedence for a (provider, model):

1. an operator override, keyed by the model name as sent, or by its canonical name (the SPEC family
   such as ``gpt-4`` for ``gpt-4-0613``, or genai-prices' model id such as ``gpt-4o`` for
   ``gpt-4o-2024-08-06``);
2. SPEC.md's table (plus Claude 3 Haiku and GPT-3.5 Turbo), matched on the family name and its
   dated snapshots only: ``gpt-4-32k``, ``gpt-4o``, ``gpt-4.1``, ``claude-3-5-sonnet`` are *not* SPEC models;
3. genai-prices' data, which ships inside the package (``genai_prices/data.py``). This module never
   starts ``genai_prices.UpdatePrices``, the library's only network code, so the data read is the
   bundled snapshot (unless something else in the process installs a fetched one).

Anything else costs ``None`` and is logged once per model, never guessed.

Cached prompt tokens (``Usage.cached_prompt_tokens``, part of ``prompt_tokens``) are priced at the
override's ``cached_input`` if given, else genai-prices' cache-read price for the model, else the input price.
Prompt-cache writes (``Usage.cache_write_tokens``, Anthropic's ``cache_creation_input_tokens``, also part of
``prompt_tokens``) at genai-prices' cache-write price, else 1.25 times the input price (Anthropic's 5-minute
cache). Reasoning tokens are part of ``completion_tokens``, billed as output as OpenAI bills them.

The lookup is resolved once per (provider, model) and kept in a bounded table; for flat prices (almost
every model) a request then costs a few Decimal multiplications. Models whose library price is tiered by
prompt size or changes on a date are priced by genai-prices on each request (slower than a table look-up).

Third-party internals touched (genai-prices 0.2.x; pinned in pyproject.toml, checked by
tests/unit/test_plumbing_internals.py): `genai_prices.data_snapshot.get_snapshot` and
`find_provider_by_id`, outside that module's `__all__`, and the snapshot's `providers`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Final, get_args

import genai_prices
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot
from genai_prices.types import ModelInfo, ModelPrice
from genai_prices.types import Provider as LibraryProvider

from shared.schemas import Cost, Usage
from shared.settings import ProviderName

__all__ = ["SPEC_PRICES", "PriceBook", "PriceValue", "Rates", "catalogue_models", "spec_family"]

logger = logging.getLogger(__name__)

PriceValue = float | str | Decimal
"""USD per 1K tokens in an override; int is accepted as a float, numeric strings as written."""

_THOUSAND: Final = Decimal(1000)
_PER_MTOK_TO_PER_1K: Final = Decimal(1000)
_PLACES: Final = Decimal("1E-10")
_MAX_ENTRIES: Final = 4096
_OVERRIDE_KEYS: Final = frozenset({"input", "output", "cached_input"})
# what Anthropic bills a 5-minute prompt-cache write, relative to the input price, where genai-prices
# has no cache-write price of the model (OpenAI writes its cache for free and reports no writes)
CACHE_WRITE_FACTOR: Final = Decimal("1.25")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per 1K tokens. ``cached_input`` None means cached prompt tokens pay ``input``;
    ``cache_write`` None means prompt-cache writes pay ``input`` times ``CACHE_WRITE_FACTOR``."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None


def _rates(input_: str, output: str) -> Rates:
    return Rates(Decimal(input_), Decimal(output))


# SPEC.md "Pricing (per 1K tokens)", plus Claude 3 Haiku and GPT-3.5 Turbo (0125 pricing).
SPEC_PRICES: Final[Mapping[str, Rates]] = {
    "gpt-4": _rates("0.03", "0.06"),
    "gpt-4-turbo": _rates("0.01", "0.03"),
    "gpt-3.5-turbo": _rates("0.0005", "0.0015"),
    "claude-3-opus": _rates("0.015", "0.075"),
    "claude-3-sonnet": _rates("0.003", "0.015"),
    "claude-3-haiku": _rates("0.00025", "0.00125"),
}

# Names (already lower-cased) that are a SPEC family or one of its snapshots. Deliberately narrow:
# gpt-4-32k*, gpt-4o*, gpt-4.1*, gpt-4-vision-preview, older gpt-3.5-turbo snapshots (-0613, -1106,
# -16k, -instruct, which cost more) and claude-3-5-*/claude-3-7-* fall through to genai-prices.
_SPEC_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"gpt-4(-\d{4})?"), "gpt-4"),
    (re.compile(r"gpt-4-turbo(-preview|-\d{4}-\d{2}-\d{2})?"), "gpt-4-turbo"),
    (re.compile(r"gpt-4-(1106|0125)-preview"), "gpt-4-turbo"),
    (re.compile(r"gpt-3\.5-turbo(-0125)?"), "gpt-3.5-turbo"),
    (re.compile(r"claude-3-opus(-\d{8}|-latest)?"), "claude-3-opus"),
    (re.compile(r"claude-3-sonnet(-\d{8})?"), "claude-3-sonnet"),
    (re.compile(r"claude-3-haiku(-\d{8})?"), "claude-3-haiku"),
)


@lru_cache(maxsize=1)
def catalogue_models() -> frozenset[str]:
    """Every model name the price tables know by exact spelling (SPEC's families and genai-prices'
    bundled models of the gateway's providers): a finite catalogue, unlike the names `PriceBook`
    prices (patterns such as ``gpt-4-0613`` match without end)."""
    names = set(SPEC_PRICES)
    for provider in get_snapshot().providers:
        if provider.id in get_args(ProviderName):
            names.update(model.id for model in provider.models)
    return frozenset(names)


def spec_family(model: str) -> str | None:
    """The SPEC_PRICES key ``model`` belongs to, if any (``gpt-4-0613`` -> ``gpt-4``)."""
    name = model.strip().lower()
    for pattern, family in _SPEC_PATTERNS:
        if pattern.fullmatch(name):
            return family
    return None


@dataclass(frozen=True, slots=True)
class _LibraryPriced:
    """A model whose genai-prices price is not flat (tiered or dated): priced by the library per request."""

    provider: LibraryProvider
    model: ModelInfo


_Entry = Rates | _LibraryPriced | None


def _to_decimal(model: str, key: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise TypeError(f"price override for {model!r}: {key} must be a number, got {value!r}")
    try:
        out = Decimal(str(value).strip())
    except ArithmeticError as exc:
        raise ValueError(f"price override for {model!r}: {key}={value!r} is not a number") from exc
    if not out.is_finite() or out < 0:
        raise ValueError(f"price override for {model!r}: {key}={value!r} must be finite and >= 0")
    return out


def _parse_overrides(
    overrides: Mapping[str, Mapping[str, PriceValue]] | None,
) -> dict[str, Rates]:
    parsed: dict[str, Rates] = {}
    for model, spec in (overrides or {}).items():
        if not isinstance(spec, Mapping):
            raise TypeError(f"price override for {model!r} must be an object, got {spec!r}")
        unknown = set(spec) - _OVERRIDE_KEYS
        missing = {"input", "output"} - set(spec)
        if unknown or missing:
            raise ValueError(
                f"price override for {model!r}: needs 'input' and 'output' (per 1K tokens) and optionally "
                f"'cached_input'; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        cached = spec.get("cached_input")
        parsed[model.strip().lower()] = Rates(
            input=_to_decimal(model, "input", spec["input"]),
            output=_to_decimal(model, "output", spec["output"]),
            cached_input=None if cached is None else _to_decimal(model, "cached_input", cached),
        )
    return parsed


def _flat_library_rates(model: ModelInfo) -> Rates | None:
    """genai-prices' price as per-1K rates, if it is flat (not tiered, not dated) and covers input and output."""
    prices = model.prices
    if not isinstance(prices, ModelPrice):
        return None
    input_mtok, output_mtok, cache_mtok, write_mtok = (
        prices.input_mtok,
        prices.output_mtok,
        prices.cache_read_mtok,
        prices.cache_write_mtok,
    )
    if not isinstance(input_mtok, Decimal) or not isinstance(output_mtok, Decimal):
        return None
    if not isinstance(cache_mtok, Decimal | None) or not isinstance(write_mtok, Decimal | None):
        return None
    return Rates(
        input=input_mtok / _PER_MTOK_TO_PER_1K,
        output=output_mtok / _PER_MTOK_TO_PER_1K,
        cached_input=None if cache_mtok is None else cache_mtok / _PER_MTOK_TO_PER_1K,
        cache_write=None if write_mtok is None else write_mtok / _PER_MTOK_TO_PER_1K,
    )


def _with_library_cache_rates(rates: Rates, model: ModelInfo | None) -> Rates:
    """``rates`` with genai-prices' cache read and write prices of the model where it sets none."""
    flat = _flat_library_rates(model) if model is not None else None
    if flat is None:
        return rates
    return Rates(
        rates.input,
        rates.output,
        flat.cached_input if rates.cached_input is None else rates.cached_input,
        flat.cache_write if rates.cache_write is None else rates.cache_write,
    )


def _money(value: Decimal) -> float:
    return float(value.quantize(_PLACES))


class PriceBook:
    """Prices requests. Build one at startup (loading genai-prices' data is not free) and share it.

    ``overrides`` maps a model name to ``{"input": per_1k, "output": per_1k, "cached_input": per_1k?}``
    in USD; a bad entry raises ValueError here rather than mispricing later.
    """

    def __init__(self, overrides: Mapping[str, Mapping[str, PriceValue]] | None = None) -> None:
        self._overrides = _parse_overrides(overrides)
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # taken on the first sight of a model only
        # genai-prices' bundled data (never a fetched one); loading it here keeps it off the hot path
        self._library_providers = get_snapshot().providers

    def knows(self, provider: str, model: str) -> bool:
        """Whether ``cost`` would return a price for this model (without logging anything)."""
        return self._entry(provider, model) is not None

    def cost(self, provider: str, model: str, usage: Usage) -> Cost | None:
        """The USD cost of ``usage`` on ``model``, or None for a model with no known price."""
        entry = self._entry(provider, model)
        if entry is None:
            self._warn_once(
                provider,
                model,
                "no price known for model %r (provider %r); cost left empty",
            )
            return None
        prompt = max(usage.prompt_tokens, 0)
        completion = max(usage.completion_tokens, 0)
        cached = min(max(usage.cached_prompt_tokens, 0), prompt)
        written = min(max(usage.cache_write_tokens, 0), prompt - cached)
        if isinstance(entry, Rates):
            cached_rate = entry.input if entry.cached_input is None else entry.cached_input
            write_rate = entry.input * CACHE_WRITE_FACTOR if entry.cache_write is None else entry.cache_write
            fresh = prompt - cached - written
            prompt_cost = (fresh * entry.input + cached * cached_rate + written * write_rate) / _THOUSAND
            completion_cost = completion * entry.output / _THOUSAND
        else:
            try:
                calc = entry.model.calc_price(
                    genai_prices.Usage(
                        input_tokens=prompt,
                        cache_read_tokens=cached,
                        cache_write_tokens=written,
                        output_tokens=completion,
                    ),
                    entry.provider,
                )
            except Exception:  # library data trouble must not fail the request
                logger.exception(
                    "genai-prices failed to price model %r (provider %r)",
                    model,
                    provider,
                )
                return None
            prompt_cost, completion_cost = calc.input_price, calc.output_price
        return Cost(prompt_cost=_money(prompt_cost), completion_cost=_money(completion_cost))

    # -- resolution, once per (provider, model) --------------------------------------------------

    def _entry(self, provider: str, model: str) -> _Entry:
        key = (provider.strip().lower(), model.strip().lower())
        try:
            return self._entries[key]
        except KeyError:
            pass
        entry = self._resolve(*key)
        with self._lock:
            # model names come from requests: keep the table bounded, dropping the oldest
            if len(self._entries) >= _MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = entry
        return entry

    def _resolve(self, provider: str, name: str) -> _Entry:
        family = spec_family(name)
        found = self._library_lookup(provider, name)
        library_model = found[1] if found else None
        override = (
            self._overrides.get(name)
            or (self._overrides.get(family) if family else None)
            or (self._overrides.get(library_model.id.lower()) if library_model else None)
        )
        if override is not None:
            return _with_library_cache_rates(override, library_model)
        if family is not None:
            return _with_library_cache_rates(SPEC_PRICES[family], library_model)
        if found is None:
            return None
        flat = _flat_library_rates(found[1])
        return flat if flat is not None else _LibraryPriced(*found)

    def _library_lookup(self, provider: str, name: str) -> tuple[LibraryProvider, ModelInfo] | None:
        # Provider.find_model rather than genai_prices.calc_price: the latter memoises every model name it
        # is asked about in unbounded dicts, and this table already remembers the answer.
        try:
            lib_provider = find_provider_by_id(self._library_providers, provider)
            if lib_provider is None:
                return None
            lib_model = lib_provider.find_model(name, all_providers=self._library_providers)
        except Exception:
            logger.exception("genai-prices lookup failed for model %r (provider %r)", name, provider)
            return None
        return None if lib_model is None else (lib_provider, lib_model)

    def _warn_once(self, provider: str, model: str, message: str) -> None:
        key = (provider.strip().lower(), model.strip().lower())
        with self._lock:
            if key in self._warned or len(self._warned) >= _MAX_ENTRIES:
                return
            self._warned.add(key)
        logger.warning(message, model, provider)
