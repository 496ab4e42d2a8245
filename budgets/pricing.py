"""Choosing a price for a model and computing what a reply cost. Money is Decimal throughout."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from budgets.models import ModelPrice

MILLION = Decimal(1_000_000)
FAMILIES = ("opus", "sonnet", "haiku")


class PricingError(Exception):
    """No price can be found at all (the price table is empty)."""


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one reply, as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @classmethod
    def from_api(cls, usage: dict) -> TokenUsage:
        """Read the API's `usage` object. Cache writes without a 5m/1h split count as 5-minute."""
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        split = usage.get("cache_creation") or {}
        write_1h = int(split.get("ephemeral_1h_input_tokens") or 0)
        write_5m = int(split.get("ephemeral_5m_input_tokens") or 0) if split else cache_write - write_1h
        return cls(
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_write_5m_tokens=max(write_5m, 0),
            cache_write_1h_tokens=write_1h,
            cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
        )


@dataclass(frozen=True)
class ChosenPrice:
    price: ModelPrice
    rule: str


# Prices change rarely; a worker re-reads them at most this often (a new price applies within it).
CACHE_SECONDS = 60
_cache: dict[str, tuple[float, ChosenPrice]] = {}


def price_for_model(*, model: str, at: datetime | None = None) -> ChosenPrice:
    """The price in force for `model` now (cached briefly), or at `at` (never cached)."""
    if at is not None:
        return _price_for_model(model=model, at=at)
    cached = _cache.get(model)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    chosen = _price_for_model(model=model, at=timezone.now())
    _cache[model] = (time.monotonic() + CACHE_SECONDS, chosen)
    return chosen


def price_cache_clear() -> None:
    _cache.clear()


def _price_for_model(*, model: str, at: datetime) -> ChosenPrice:
    """The price in force for `model` at `at` (default now).

    Rule: the longest `model_prefix` the model id starts with. An unknown model is never free:
    it gets the most expensive price of its family (opus/sonnet/haiku named in its id), or the
    most expensive price of all when no family is named.
    """
    in_force = _prices_in_force(at)
    if not in_force:
        raise PricingError("No model prices are configured: add one in the admin (Budgets > Model prices).")
    matching = [p for p in in_force if model.startswith(p.model_prefix)]
    if matching:
        best = max(matching, key=lambda p: len(p.model_prefix))
        return ChosenPrice(best, f"prefix {best.model_prefix}")
    family = next((f for f in FAMILIES if f in model.lower()), None)
    same_family = [p for p in in_force if p.family == family]
    if same_family:
        dearest = max(same_family, key=lambda p: p.output_per_mtok)
        return ChosenPrice(dearest, f"unknown model: dearest {family} price ({dearest.model_prefix})")
    dearest = max(in_force, key=lambda p: p.output_per_mtok)
    return ChosenPrice(dearest, f"unknown model: dearest price ({dearest.model_prefix})")


def _prices_in_force(at: datetime) -> list[ModelPrice]:
    """For each prefix, its newest price that started on or before `at`."""
    newest: dict[str, ModelPrice] = {}
    for price in ModelPrice.objects.filter(effective_from__lte=at).order_by(
        "model_prefix", "-effective_from"
    ):
        newest.setdefault(price.model_prefix, price)
    return list(newest.values())


def cost_of(usage: TokenUsage, price: ModelPrice) -> Decimal:
    """USD, exact to the micro-dollar the database keeps."""
    total = (
        usage.input_tokens * price.input_per_mtok
        + usage.output_tokens * price.output_per_mtok
        + usage.cache_write_5m_tokens * price.cache_write_5m_per_mtok
        + usage.cache_write_1h_tokens * price.cache_write_1h_per_mtok
        + usage.cache_read_tokens * price.cache_read_per_mtok
    ) / MILLION
    return total.quantize(Decimal("0.000001"))
