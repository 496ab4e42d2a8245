from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from agents.approvals import approval_decide
from agents.errors import OrchestratorError
from agents.lifecycle import agent_archive
from agents.merges import merge_abandon, merge_request, merge_resolve
from agents.models import (
    Agent,
    ApprovalRequest,
    Merge,
    Message,
    PermissionRule,
    Project,
    PullRequest,
    Role,
    TranscriptEntry,
    Workspace,
)
from agents.selectors import agent_changes
from agents.services import agent_cancel, agent_retry
from budgets import selectors as money
from budgets.models import Budget, UsageRecord
from budgets.services import project_budget_apply


def _table(rows: list[dict], key: str) -> str:
    if not rows:
        return "No usage yet."
    return format_html(
        "<table><tr><th>{}</th><th>Cost $</th><th>Calls</th><th>Input</th><th>Output</th></tr>{}</table>",
        key,
        format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((r[key], r["cost_usd"], r["calls"], r["input_tokens"], r["output_tokens"]) for r in rows),
        ),
    )


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "repo_path", "base_branch", "monthly_budget_usd", "created_at"]
    list_filter = ["team"]
    search_fields = ["name", "repo_path"]
    readonly_fields = ["cost_by_role", "cost_by_model", "cost_by_day"]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if change and {"monthly_budget_usd", "monthly_budget_tokens"} & set(form.changed_data):
            project_budget_apply(project=obj)

    @admin.display(description="Cost by role")
    def cost_by_role(self, obj: Project) -> str:
        return _table(money.cost_by_role(project_id=obj.pk), "role")

    @admin.display(description="Cost by model")
    def cost_by_model(self, obj: Project) -> str:
        return _table(money.cost_by_model(project_id=obj.pk), "model")

    @admin.display(description="Cost by day")
    def cost_by_day(self, obj: Project) -> str:
        return _table(money.cost_by_day(project_id=obj.pk), "day")


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "default_model", "max_turns"]


class WorkspaceInline(admin.StackedInline):
    model = Workspace
    can_delete = False
    readonly_fields = ["path", "git_dir", "branch", "base_commit", "head_commit", "created_at"]
    extra = 0


class BudgetInline(admin.StackedInline):
    model = Budget
    fields = ["limit_usd", "spent_usd", "reserved_usd", "limit_tokens", "spent_tokens", "alerted_percent"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    verbose_name_plural = "Budget (raise it with `manage.py set_budget ID --usd N`)"


class TranscriptInline(admin.TabularInline):
    model = TranscriptEntry
    fields = ["seq", "kind", "payload", "duration_ms", "created_at"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    ordering = ["seq"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class UsageInline(admin.TabularInline):
    model = UsageRecord
    fields = [
        "model", "input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
        "cache_read_tokens", "cost_usd", "pricing_rule", "created_at",
    ]  # fmt: skip
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "role",
        "status",
        "waiting_for",
        "project",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "created_at",
    ]
    list_filter = ["status", "role", "project"]
    search_fields = ["task", "result"]
    readonly_fields = [
        "parent", "project", "status", "status_reason", "result", "attempts", "turns", "input_tokens",
        "output_tokens", "cache_write_tokens", "cache_read_tokens", "cost_usd", "spawned_by", "created_at",
        "started_at", "finished_at", "waiting_for", "subtree_cost", "archived_at", "changes",
    ]  # fmt: skip
    inlines = [WorkspaceInline, BudgetInline, UsageInline, TranscriptInline]
    actions = ["cancel", "retry", "merge", "archive"]

    @admin.display(description="Changes on its branch")
    def changes(self, obj: Agent) -> str:
        changes = agent_changes(agent=obj)
        if changes["error"]:
            return changes["error"]
        commits = format_html_join(
            "", "<li><code>{}</code> {}</li>", ((c.sha[:10], c.subject) for c in changes["commits"])
        )
        files = format_html_join(
            "",
            "<details><summary>{} <code>{}</code> +{} -{}</summary><pre>{}</pre></details>",
            (
                (
                    f.status,
                    f.path,
                    f.added if f.added is not None else "?",
                    f.deleted if f.deleted is not None else "?",
                    f.patch,
                )
                for f in changes["files"]
            ),
        )
        return format_html("<ul>{}</ul>{}", commits, files) if changes["files"] else "No changes."

    @admin.action(description="Queue merging the selected agents' branches (into parent or base)")
    def merge(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._each(
            request, queryset, lambda agent: merge_request(agent=agent, by=request.user), "queued for merging"
        )

    @admin.action(description="Archive the selected finished agents (remove worktrees, keep branches)")
    def archive(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._each(
            request,
            queryset,
            lambda agent: agent_archive(agent=agent, subtree=True, by=request.user),
            "archived",
        )

    @admin.display(description="Cost of it and its descendants")
    def subtree_cost(self, obj: Agent) -> str:
        totals = money.subtree_totals(agent=obj)
        return f"${totals['cost_usd'] or 0} over {totals['agents']} agents"

    @admin.action(description="Cancel the selected agents and their subtrees")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._each(request, queryset, lambda agent: agent_cancel(agent=agent, subtree=True), "cancelled")

    @admin.action(description="Retry the selected agents (resume from their transcripts)")
    def retry(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._each(request, queryset, lambda agent: agent_retry(agent=agent), "queued again")

    def _each(self, request, queryset, action, done: str) -> None:
        count = 0
        for agent in queryset:
            try:
                action(agent)
                count += 1
            except OrchestratorError as exc:
                self.message_user(request, f"Agent {agent.pk}: {exc}", messages.ERROR)
        if count:
            self.message_user(request, f"{count} agent(s) {done}.", messages.SUCCESS)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "recipient", "sender", "kind", "created_at", "delivered_at"]
    list_filter = ["kind"]


@admin.register(TranscriptEntry)
class TranscriptEntryAdmin(admin.ModelAdmin):
    list_display = ["agent", "seq", "kind", "duration_ms", "created_at"]
    list_filter = ["kind"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["agent", "branch", "path", "head_commit"]


@admin.register(Merge)
class MergeAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "source_branch", "target_branch", "status", "attempts", "updated_at"]
    list_filter = ["status", "project"]
    readonly_fields = [
        "project", "agent", "source_branch", "target_branch", "status", "reason", "conflicts", "test_output",
        "result_commit", "attempts", "resolver", "requested_by", "created_at", "updated_at",
    ]  # fmt: skip
    actions = ["resolve", "abandon"]

    @admin.action(description="Spawn a resolver agent for the selected conflicts")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Merge]) -> None:
        for merge in queryset:
            try:
                resolver = merge_resolve(merge=merge, by=request.user)
                self.message_user(
                    request, f"Merge {merge.pk}: agent {resolver.pk} resolves it.", messages.SUCCESS
                )
            except OrchestratorError as exc:
                self.message_user(request, f"Merge {merge.pk}: {exc}", messages.ERROR)

    @admin.action(description="Abandon the selected merges")
    def abandon(self, request: HttpRequest, queryset: QuerySet[Merge]) -> None:
        for merge in queryset:
            try:
                merge_abandon(merge=merge, by=request.user)
            except OrchestratorError as exc:
                self.message_user(request, f"Merge {merge.pk}: {exc}", messages.ERROR)


@admin.register(PullRequest)
class PullRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "head_branch", "base_branch", "title", "forge", "url", "created_at"]
    list_filter = ["forge", "project"]


@admin.register(PermissionRule)
class PermissionRuleAdmin(admin.ModelAdmin):
    list_display = ["project", "action", "pattern", "created_by", "created_at"]
    list_filter = ["action", "project"]

    def save_model(self, request, obj, form, change) -> None:
        obj.created_by = obj.created_by or request.user
        super().save_model(request, obj, form, change)


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    """The inbox in the admin (the dashboard's /approvals/ is the live one); decisions are audited."""

    list_display = ["id", "agent", "tool", "status", "created_at", "escalated_at", "decided_by", "decided_at"]
    list_filter = ["status", "tool"]
    readonly_fields = [
        "agent", "tool_use_id", "tool", "input", "approved_input", "reason", "status", "decided_by",
        "decided_at", "decision_note", "escalated_at", "created_at",
    ]  # fmt: skip
    actions = ["approve", "deny"]

    @admin.action(description="Approve the selected calls")
    def approve(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        for approval in queryset:
            try:
                approval_decide(request=approval, approve=True, by=request.user)
            except OrchestratorError as exc:
                self.message_user(request, f"Approval {approval.pk}: {exc}", messages.ERROR)

    @admin.action(description="Deny the selected calls")
    def deny(self, request: HttpRequest, queryset: QuerySet[ApprovalRequest]) -> None:
        for approval in queryset:
            try:
                approval_decide(request=approval, approve=False, by=request.user, note="Denied in the admin.")
            except OrchestratorError as exc:
                self.message_user(request, f"Approval {approval.pk}: {exc}", messages.ERROR)
