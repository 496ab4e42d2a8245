"""Money in the database as whole micro-dollars.

SQLite keeps DECIMAL columns as floating point, so sums and CHECK constraints drift by an epsilon
there (1.01 - 0.95 is not 0.06). Integers are exact on every engine. In Python the value is a
Decimal with six places; in queries wrap amounts with `usd_value()` so arithmetic stays integer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.db import models

SCALE = Decimal(1_000_000)
PLACES = Decimal("0.000001")


class MicroUSDField(models.BigIntegerField):
    description = "US dollars, stored as whole micro-dollars"

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Decimal | None:
        return None if value is None else (Decimal(value) / SCALE).quantize(PLACES)

    def to_python(self, value: Any) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(str(value)).quantize(PLACES)

    def get_prep_value(self, value: Any) -> int | None:
        if value is None:
            return None
        if hasattr(value, "resolve_expression"):
            return value
        return int((Decimal(str(value)) * SCALE).to_integral_value())

    def formfield(self, **kwargs: Any) -> forms.Field:
        return forms.DecimalField(decimal_places=6, max_digits=18, required=not self.null, **kwargs)


def usd_value(amount: Decimal) -> models.Value:
    """An amount to use in an F() expression against a MicroUSDField."""
    return models.Value(amount, output_field=MicroUSDField())
