from django.contrib import admin

from budgets.models import Budget, LedgerEntry, ModelPrice, UsageRecord


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model_prefix", "family", "input_per_mtok", "output_per_mtok", "cache_write_5m_per_mtok",
        "cache_write_1h_per_mtok", "cache_read_per_mtok", "effective_from",
    ]  # fmt: skip
    list_filter = ["family"]


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "agent",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "pricing_rule",
        "created_at",
    ]
    list_filter = ["model"]
    readonly_fields = [f.name for f in UsageRecord._meta.fields]


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "agent",
        "project",
        "month",
        "limit_usd",
        "spent_usd",
        "reserved_usd",
        "alerted_percent",
    ]
    readonly_fields = [f.name for f in Budget._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False  # budgets are set through spawn, set_budget and the project's monthly cap


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    """Append-only: readable, never edited."""

    list_display = [
        "id",
        "budget",
        "agent",
        "kind",
        "limit_usd",
        "spent_usd",
        "reserved_usd",
        "note",
        "created_at",
    ]
    list_filter = ["kind"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
