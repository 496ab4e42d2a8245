"""Cost is computed with Decimal from every usage field; unknown models are never free."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from budgets.models import ModelPrice
from budgets.pricing import PricingError, TokenUsage, cost_of, price_for_model

FULL_USAGE = {
    "input_tokens": 12_345,
    "output_tokens": 6_789,
    "cache_creation_input_tokens": 3_000,
    "cache_read_input_tokens": 50_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # 12345*3 + 6789*15 + 1000*3.75 + 2000*6 + 50000*0.30 = 169,620 micro-dollars
        ("claude-sonnet-4-6", Decimal("0.169620")),
        # 12345*1 + 6789*5 + 1000*1.25 + 2000*2 + 50000*0.10 = 56,540 micro-dollars
        ("claude-haiku-4-5-20251001", Decimal("0.056540")),
    ],
)
def test_cost_of_a_reply_with_every_usage_field(seeded, model, expected):
    chosen = price_for_model(model=model)
    assert cost_of(TokenUsage.from_api(FULL_USAGE), chosen.price) == expected


def test_cache_writes_without_a_split_are_priced_as_five_minute_writes():
    usage = TokenUsage.from_api({"input_tokens": 1, "cache_creation_input_tokens": 500})
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (500, 0)


def test_longest_prefix_wins(seeded):
    assert price_for_model(model="claude-opus-5-5").price.model_prefix == "claude-opus-5-5"
    assert price_for_model(model="claude-opus-5").price.model_prefix == "claude-opus-5"


def test_unknown_model_of_a_known_family_gets_that_familys_dearest_price(seeded):
    chosen = price_for_model(model="claude-haiku-9")
    assert chosen.price.family == "haiku" and chosen.price.output_per_mtok == Decimal("5")
    assert chosen.rule.startswith("unknown model: dearest haiku price")


def test_unknown_model_of_no_family_gets_the_dearest_price_of_all(seeded):
    chosen = price_for_model(model="some-compatible-model")
    assert chosen.price.output_per_mtok == max(p.output_per_mtok for p in ModelPrice.objects.all())
    assert cost_of(TokenUsage(input_tokens=1000, output_tokens=1000), chosen.price) > 0


def test_a_new_price_applies_from_its_date_only(seeded):
    ModelPrice.objects.create(
        model_prefix="claude-haiku-4-5",
        family="haiku",
        input_per_mtok=Decimal("2"),
        output_per_mtok=Decimal("10"),
        cache_write_5m_per_mtok=Decimal("2.5"),
        cache_write_1h_per_mtok=Decimal("4"),
        cache_read_per_mtok=Decimal("0.2"),
        effective_from=datetime(2030, 1, 1, tzinfo=UTC),
    )
    assert price_for_model(model="claude-haiku-4-5").price.input_per_mtok == Decimal("1")
    later = price_for_model(model="claude-haiku-4-5", at=datetime(2030, 6, 1, tzinfo=UTC))
    assert later.price.input_per_mtok == Decimal("2")


def test_an_empty_price_table_is_an_error_not_free(db):
    ModelPrice.objects.all().delete()
    with pytest.raises(PricingError, match="No model prices are configured"):
        price_for_model(model="claude-sonnet-5-5")
