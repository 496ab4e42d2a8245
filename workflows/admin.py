from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from agents.errors import OrchestratorError
from workflows.models import StepRun, Workflow, WorkflowTemplate
from workflows.services import workflow_cancel, workflow_step_retry


@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(admin.ModelAdmin):
    """The YAML is validated on save (model clean): unknown roles, cycles, missing references."""

    list_display = ["name", "description", "builtin", "updated_at"]


class StepRunInline(admin.TabularInline):
    model = StepRun
    fields = ["step", "item_index", "round", "status", "agent", "output", "feedback", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["id", "template", "project", "status", "created_at", "finished_at"]
    list_filter = ["status", "template", "project"]
    readonly_fields = [
        "template",
        "spec",
        "project",
        "input",
        "budget_usd",
        "status",
        "status_reason",
        "created_by",
    ]
    inlines = [StepRunInline]
    actions = ["cancel", "retry_failed_steps"]

    @admin.action(description="Cancel the selected workflows (and their running agents)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            try:
                workflow_cancel(workflow=workflow, by=request.user)
            except OrchestratorError as exc:
                self.message_user(request, f"Workflow {workflow.pk}: {exc}", messages.ERROR)

    @admin.action(description="Retry the failed steps of the selected workflows")
    def retry_failed_steps(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            for run in workflow.step_runs.filter(status__in=["failed", "cancelled"]):
                try:
                    workflow_step_retry(run=run, by=request.user)
                    self.message_user(
                        request, f"Workflow {workflow.pk}: step {run.step} retried.", messages.SUCCESS
                    )
                except OrchestratorError as exc:
                    self.message_user(request, f"Workflow {workflow.pk}: {exc}", messages.ERROR)
