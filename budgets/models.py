"""Prices as data, and the usage of every model call priced with them."""

from django.db import models


class ModelPrice(models.Model):
    """USD per million tokens for the models whose id starts with `model_prefix`.

    The longest matching prefix wins; among prices of one prefix, the newest `effective_from` not
    after the call. Unknown models are priced by the fallback rule in budgets.pricing.
    """

    model_prefix = models.CharField(max_length=100)
    family = models.CharField(max_length=20, help_text="opus, sonnet or haiku: used by the fallback rule.")
    input_per_mtok = models.DecimalField(max_digits=10, decimal_places=4)
    output_per_mtok = models.DecimalField(max_digits=10, decimal_places=4)
    cache_write_5m_per_mtok = models.DecimalField(max_digits=10, decimal_places=4)
    cache_write_1h_per_mtok = models.DecimalField(max_digits=10, decimal_places=4)
    cache_read_per_mtok = models.DecimalField(max_digits=10, decimal_places=4)
    effective_from = models.DateTimeField()

    class Meta:
        ordering = ["model_prefix", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_prefix", "effective_from"], name="price_prefix_date_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(input_per_mtok__gt=0) & models.Q(output_per_mtok__gt=0),
                name="price_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_prefix} from {self.effective_from:%Y-%m-%d}"


class UsageRecord(models.Model):
    """Tokens and cost of one successful model reply. One per reply, never more."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="usage")
    transcript_entry = models.OneToOneField(
        "agents.TranscriptEntry", on_delete=models.CASCADE, related_name="usage"
    )
    model = models.CharField(max_length=100)
    price = models.ForeignKey(ModelPrice, on_delete=models.PROTECT, related_name="+")
    pricing_rule = models.CharField(max_length=200, help_text="How the price was chosen.")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["agent", "created_at"])]

    def __str__(self) -> str:
        return f"{self.model} ${self.cost_usd}"
