"""Prices as data, and the usage of every model call priced with them."""

from django.db import models

from budgets.fields import MicroUSDField


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
    cost_usd = MicroUSDField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["agent", "created_at"])]

    def __str__(self) -> str:
        return f"{self.model} ${self.cost_usd}"


class Budget(models.Model):
    """A limit in dollars and/or tokens, and what is spent and reserved against it.

    Owned by one agent, or by a project for one month. A child's limit is carved out of its
    parent's at spawn and what it leaves unspent goes back when it finishes (`returned`).
    Invariants: the balances equal the sums of this budget's ledger entries (every change writes
    both in one transaction), and a CHECK keeps spent + reserved within the limit, so even a bug
    cannot overspend.
    """

    agent = models.OneToOneField(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="budget"
    )
    project = models.ForeignKey(
        "agents.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    month = models.DateField(null=True, blank=True, help_text="First day of the month, for project budgets.")
    limit_usd = MicroUSDField(null=True, blank=True, help_text="Blank: none.")
    limit_tokens = models.BigIntegerField(null=True, blank=True, help_text="Blank: none.")
    spent_usd = MicroUSDField(default=0)
    reserved_usd = MicroUSDField(default=0)
    spent_tokens = models.BigIntegerField(default=0)
    reserved_tokens = models.BigIntegerField(default=0)
    returned = models.BooleanField(default=False, help_text="Leftover handed back to the parent.")
    alerted_percent = models.PositiveSmallIntegerField(
        default=0, help_text="Highest alert raised: 50, 80, 100."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(agent__isnull=False) & models.Q(project__isnull=True))
                | (
                    models.Q(agent__isnull=True)
                    & models.Q(project__isnull=False)
                    & models.Q(month__isnull=False)
                ),
                name="budget_has_one_owner",
            ),
            models.UniqueConstraint(fields=["project", "month"], name="one_project_budget_per_month"),
            models.CheckConstraint(
                condition=models.Q(limit_usd__isnull=True)
                | models.Q(spent_usd__lte=models.F("limit_usd") - models.F("reserved_usd")),
                name="budget_usd_within_limit",
            ),
            models.CheckConstraint(
                condition=models.Q(limit_tokens__isnull=True)
                | models.Q(spent_tokens__lte=models.F("limit_tokens") - models.F("reserved_tokens")),
                name="budget_tokens_within_limit",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    spent_usd__gte=0, reserved_usd__gte=0, spent_tokens__gte=0, reserved_tokens__gte=0
                ),
                name="budget_balances_not_negative",
            ),
        ]

    def __str__(self) -> str:
        owner = (
            f"agent #{self.agent_id}" if self.agent_id else f"project {self.project_id} {self.month:%Y-%m}"
        )
        return (
            f"{owner}: ${self.spent_usd} of {self.limit_usd if self.limit_usd is not None else 'unlimited'}"
        )

    @property
    def available_usd(self):
        return None if self.limit_usd is None else self.limit_usd - self.spent_usd - self.reserved_usd

    @property
    def percent_used(self) -> int | None:
        if not self.limit_usd:
            return None
        return int(self.spent_usd * 100 / self.limit_usd)


class LedgerKind(models.TextChoices):
    SET = "set", "Limit set"
    ALLOCATE = "allocate", "Carved out for a child"
    RETURN = "return", "Leftover returned"
    RESERVE = "reserve", "Reserved before a call"
    SETTLE = "settle", "Settled to the real cost"
    RELEASE = "release", "Reservation released"


class LedgerEntry(models.Model):
    """One change to one budget. Append-only: rows are never updated or deleted."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="ledger")
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=LedgerKind.choices)
    limit_usd = MicroUSDField(default=0)
    spent_usd = MicroUSDField(default=0)
    reserved_usd = MicroUSDField(default=0)
    limit_tokens = models.BigIntegerField(default=0)
    spent_tokens = models.BigIntegerField(default=0)
    reserved_tokens = models.BigIntegerField(default=0)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.budget_id}"


class Reservation(models.Model):
    """Worst-case cost held before one model call, until it is settled or released."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="reservations")
    agent_budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="+")
    project_budget = models.ForeignKey(
        Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    usd = MicroUSDField()
    tokens = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["agent", "closed_at"])]

    def __str__(self) -> str:
        return f"${self.usd} for agent #{self.agent_id}"

    @property
    def budget_ids(self) -> list[int]:
        return [pk for pk in (self.agent_budget_id, self.project_budget_id) if pk]


class UsageDaily(models.Model):
    """Usage summed per project, day, role and model: what the cost rollups read.

    Upserted in the transaction that records each UsageRecord, so it always equals the sum of
    those rows; a rollup then reads a few hundred rows instead of millions.
    """

    project = models.ForeignKey("agents.Project", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    role = models.CharField(max_length=50)
    model = models.CharField(max_length=100)
    calls = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cost_usd = MicroUSDField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "day", "role", "model"], name="usage_daily_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.role} {self.model}"
