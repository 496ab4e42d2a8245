"""Forms of the dashboard. They check shape only; the services decide what is allowed."""

from __future__ import annotations

from django import forms
from django.db.models import QuerySet

from agents.models import PermissionMode, Project, Role


class SpawnForm(forms.Form):
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), required=False, empty_label="(a repository path below)"
    )
    repo = forms.CharField(
        label="Or a repository path",
        required=False,
        help_text="A git repository on the server; it becomes a project of your team.",
    )
    role = forms.ModelChoiceField(queryset=Role.objects.order_by("name"), to_field_name="name")
    task = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}))
    model = forms.CharField(required=False, help_text="Blank: the role's default model.")
    budget_usd = forms.DecimalField(label="Budget (USD)", required=False, min_value=0, decimal_places=6)
    budget_tokens = forms.IntegerField(label="Budget (tokens)", required=False, min_value=0)
    permission_mode = forms.ChoiceField(
        choices=[("", "The role's default"), *PermissionMode.choices], required=False
    )
    parent = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, projects: QuerySet[Project], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("project") and not (data.get("repo") or "").strip() and not data.get("parent"):
            raise forms.ValidationError("Choose a project or give a repository path.")
        return data


class MessageForm(forms.Form):
    body = forms.CharField(max_length=20_000, strip=True)


class BudgetForm(forms.Form):
    usd = forms.CharField(required=False)
    tokens = forms.CharField(required=False)
