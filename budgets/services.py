"""Writes of the budgets app: recording what a model call used and cost."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from agents.models import Agent, TranscriptEntry
from budgets.models import UsageRecord
from budgets.pricing import TokenUsage, cost_of, price_for_model


@transaction.atomic
def usage_record(*, agent: Agent, entry: TranscriptEntry, model: str, usage: dict) -> UsageRecord:
    """Price one reply's usage and add it to the agent's totals, in one transaction.

    The one-to-one on `entry` makes a second record for the same reply fail loudly.
    """
    tokens = TokenUsage.from_api(usage)
    chosen = price_for_model(model=model)
    cost = cost_of(tokens, chosen.price)
    record = UsageRecord.objects.create(
        agent=agent,
        transcript_entry=entry,
        model=model,
        price=chosen.price,
        pricing_rule=chosen.rule,
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_write_5m_tokens=tokens.cache_write_5m_tokens,
        cache_write_1h_tokens=tokens.cache_write_1h_tokens,
        cache_read_tokens=tokens.cache_read_tokens,
        cost_usd=cost,
    )
    Agent.objects.filter(pk=agent.pk).update(
        input_tokens=F("input_tokens") + tokens.input_tokens,
        output_tokens=F("output_tokens") + tokens.output_tokens,
        cache_write_tokens=F("cache_write_tokens")
        + tokens.cache_write_5m_tokens
        + tokens.cache_write_1h_tokens,
        cache_read_tokens=F("cache_read_tokens") + tokens.cache_read_tokens,
        cost_usd=F("cost_usd") + cost,
    )
    return record
