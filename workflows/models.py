"""Workflows: a template of steps (YAML, validated), and runs of it whose steps are agents.

Invariants:
- A StepRun is unique per (workflow, step, item, round): the engine creates runs under the
  workflow row's lock, so no step (or item of a fan-out) runs twice in a round.
- A StepRun's agent is created in the same transaction as the run, so a run is never without
  its agent, and the agent's own lease guarantees it is never executed twice.
- `Workflow.spec` is the template as it was when the workflow started: editing the template
  later never changes a running workflow.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from agents.models import Agent, Project


class WorkflowTemplate(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=500, blank=True)
    yaml = models.TextField(help_text="The steps, as YAML (see docs/architecture.md).")
    builtin = models.BooleanField(
        default=False, help_text="Shipped with Orchestrator (workflows/templates/)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from workflows.services import template_validate

        try:
            spec = template_validate(self.yaml)
        except ValidationError as exc:
            raise ValidationError({"yaml": exc.messages}) from None
        if spec.name != self.name:
            raise ValidationError(
                {"name": f"The YAML says its name is {spec.name!r}; use the same name here."}
            )


class WorkflowStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed (retry a step)"
    CANCELLED = "cancelled", "Cancelled"


class Workflow(models.Model):
    template = models.ForeignKey(WorkflowTemplate, on_delete=models.PROTECT, related_name="runs")
    spec = models.JSONField(help_text="The template's steps when this workflow started.")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workflows")
    input = models.TextField()
    budget_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    status = models.CharField(max_length=20, choices=WorkflowStatus.choices, default=WorkflowStatus.RUNNING)
    status_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"#{self.pk} {self.template_id and self.template.name}"


class StepStatus(models.TextChoices):
    RUNNING = "running", "Running"  # its agent exists and has not finished
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (condition false)"
    CANCELLED = "cancelled", "Cancelled"


class StepRun(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="step_runs")
    step = models.CharField(max_length=100)
    item_index = models.IntegerField(default=-1, help_text="Index in the for_each list; -1: not a fan-out.")
    item = models.JSONField(null=True, blank=True)
    round = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.RUNNING)
    agent = models.OneToOneField(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="step_run"
    )
    consumed = models.JSONField(
        default=list, help_text="Ids of the runs whose results this run started from."
    )
    output = models.JSONField(null=True, blank=True, help_text="What it submitted with SubmitResult.")
    invalid_submissions = models.PositiveIntegerField(default=0)
    looped = models.BooleanField(default=False, help_text="Its loop was evaluated (once per run).")
    feedback = models.TextField(blank=True, help_text="Why it runs again (a reviewer's words).")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "step", "item_index", "round"], name="one_run_per_step_item_round"
            )
        ]
        ordering = ["workflow", "id"]

    def __str__(self) -> str:
        item = f"[{self.item_index}]" if self.item_index >= 0 else ""
        return f"{self.step}{item} round {self.round} ({self.status})"
