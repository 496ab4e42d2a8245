from django.contrib import admin

from budgets.models import ModelPrice, UsageRecord


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
