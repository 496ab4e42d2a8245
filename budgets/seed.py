"""Prices in USD per million tokens as published in late 2026 (input, 5-min cache write, 1-h cache
write, cache read, output). Seeded by migration 0002; from then on they are data: edit or add
prices (with a new effective date) in the admin."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

SEEDED_FROM = datetime(2026, 11, 1, tzinfo=UTC)

PRICES = [
    # prefix, family, input, write 5m, write 1h, read, output
    ("claude-opus-5-5", "opus", "4", "5", "8", "0.20", "20"),
    ("claude-opus-5", "opus", "5", "6.25", "10", "0.50", "25"),
    ("claude-opus-4-8", "opus", "5", "6.25", "10", "0.50", "25"),
    ("claude-opus-4-7", "opus", "5", "6.25", "10", "0.50", "25"),
    ("claude-opus-4-6", "opus", "5", "6.25", "10", "0.50", "25"),
    ("claude-opus-4-5", "opus", "5", "6.25", "10", "0.50", "25"),
    ("claude-sonnet-5-5", "sonnet", "2", "2.50", "4", "0.20", "10"),
    ("claude-sonnet-5", "sonnet", "2", "2.50", "4", "0.20", "10"),
    ("claude-sonnet-4-6", "sonnet", "3", "3.75", "6", "0.30", "15"),
    ("claude-sonnet-4-5", "sonnet", "3", "3.75", "6", "0.30", "15"),
    ("claude-haiku-5-5", "haiku", "0.10", "0.125", "0.20", "0.01", "0.50"),
    ("claude-haiku-4-5", "haiku", "1", "1.25", "2", "0.10", "5"),
]


def seed_prices(price_model: Any) -> None:
    """Create the seeded prices that are missing (migrations pass a historical model)."""
    for prefix, family, inp, w5, w1h, read, out in PRICES:
        price_model.objects.get_or_create(
            model_prefix=prefix,
            effective_from=SEEDED_FROM,
            defaults={
                "family": family,
                "input_per_mtok": Decimal(inp),
                "cache_write_5m_per_mtok": Decimal(w5),
                "cache_write_1h_per_mtok": Decimal(w1h),
                "cache_read_per_mtok": Decimal(read),
                "output_per_mtok": Decimal(out),
            },
        )
